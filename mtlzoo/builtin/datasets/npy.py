"""``nyuv2`` and ``cityscapes``: the preprocessed ``.npy`` layout of MTAN / LibMTL."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from ...contract.data import DatasetInfo, TargetInfo
from ...contract.errors import DataError, raise_problems
from . import IGNORE_INDEX, NYUV2_FOLDERS, CityscapesOptions, NYUv2Options
from .files import bad_values, data_root, hw_text, split_error

NYUV2_CLASSES = (
    "bed",
    "books",
    "ceiling",
    "chair",
    "floor",
    "furniture",
    "objects",
    "picture",
    "sofa",
    "table",
    "tv",
    "wall",
    "window",
)
CITYSCAPES_7 = ("flat", "construction", "object", "nature", "sky", "human", "vehicle")
CITYSCAPES_19 = (
    "road",
    "sidewalk",
    "building",
    "wall",
    "fence",
    "pole",
    "traffic light",
    "traffic sign",
    "vegetation",
    "terrain",
    "sky",
    "person",
    "rider",
    "car",
    "truck",
    "bus",
    "train",
    "motorcycle",
    "bicycle",
)
NPY_SPLITS = ("train", "val")
NPY_TEST_NOTE = (
    "; the preprocessed release has no test folder: its val folder is the benchmark's test set "
    "(what MTAN and LibMTL report), so evaluate on val"
)

#: where each dataset's preprocessed .npy release comes from (mtlzoo never downloads)
NPY_SOURCES = {
    "nyuv2": "MTAN's preprocessed NYUv2 (288x384), linked from github.com/lorenmt/mtan (and LibMTL's examples/nyu)",
    "cityscapes": "MTAN's preprocessed Cityscapes (128x256), linked from github.com/lorenmt/mtan",
}

# key in the sample -> (kind, channels): how each folder of the layout is read
_NPY_KINDS = {
    "image": ("image", 3),
    "semseg": ("segmentation", 0),
    "depth": ("depth", 1),
    "normals": ("normals", 3),
}


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
    want = {
        "image": "HxWx3 or 3xHxW",
        "semseg": "HxW",
        "depth": "HxW, HxWx1 or 1xHxW",
        "normals": "HxWx3 or 3xHxW",
    }[key]
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
            raise split_error(name, split, NPY_SPLITS, NPY_TEST_NOTE if split == "test" else "")
        self.name, self.split, self.folders, self.classes = name, split, dict(folders), tuple(classes)
        layout = f"train/ and val/, each with {', '.join(f'{f}/' for f in folders.values())} of <i>.npy files"
        where = Path(os.path.expanduser(str(root))).resolve()
        if not where.is_dir():
            source = NPY_SOURCES.get(name, "the MTAN/LibMTL preprocessing")
            raise DataError(
                f"{name}: no data folder at {where} (data.root); it takes the MTAN/LibMTL .npy layout ({layout}): "
                f"download {source} and set data.root to its folder"
            )
        self.root = data_root(root, name, f"the MTAN/LibMTL preprocessed layout ({layout})")
        base = self.root / split
        for folder in self.folders.values():
            if not (base / folder).is_dir():
                raise DataError(f"{name} {split}: folder {base / folder} is missing; the layout is {layout}")
        self.info = DatasetInfo(
            name,
            {
                key: (
                    TargetInfo("segmentation", len(classes), self.classes, IGNORE_INDEX)
                    if key == "semseg"
                    else TargetInfo(_NPY_KINDS[key][0])
                )
                for key in self.folders
                if key != "image"
            },
        )
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
            raise DataError(
                f"{self.name} {self.split}: no <i>.npy files in {base / self.folders['image']} (empty split)"
            )
        for key, folder in self.folders.items():
            for i in sorted(every - stems[key]):
                problems.append(
                    f"{base / folder / f'{i}.npy'}: file not found (other folders have sample {i})"
                )
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
        return [
            f"{self.path(k, stem)}: {k} is {hw_text(s)} but image {stem}.npy is {hw_text(hw)} (HxW)"
            for k, s in sizes.items()
            if hw is not None and k != "image" and s != hw
        ]

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
                bad = bad_values(a, len(self.classes), (-1, IGNORE_INDEX))
                if bad:
                    raise DataError(
                        f"{self.path(key, stem)}: label values {bad} outside the classes "
                        f"0..{len(self.classes) - 1} and the ignore value -1"
                    )
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


def make_nyuv2(split: str, options: NYUv2Options) -> NpyMTLDataset:
    """Factory of ``nyuv2``: ``{"image", "semseg" (13 classes), "depth", "normals"}``."""
    return NpyMTLDataset("nyuv2", split, options.root, NYUV2_FOLDERS, NYUV2_CLASSES)


def make_cityscapes(split: str, options: CityscapesOptions) -> NpyMTLDataset:
    """Factory of ``cityscapes``: ``{"image", "semseg" (7 or 19 classes), "depth"}``."""
    classes = CITYSCAPES_7 if options.num_classes == 7 else CITYSCAPES_19
    label = f"label_{options.num_classes}"
    split_dir = Path(os.path.expanduser(str(options.root))) / split
    if options.num_classes == 7 and not (split_dir / label).is_dir() and (split_dir / "label").is_dir():
        label = "label"  # LibMTL's copy names the 7-class folder plainly
    folders = {"image": "image", "semseg": label, "depth": "depth"}
    return NpyMTLDataset("cityscapes", split, options.root, folders, classes)
