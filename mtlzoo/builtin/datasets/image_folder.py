"""``image_folder``: your own images plus one folder of PNG targets per task, matched by stem
(the layouts and file formats are described by :class:`ImageFolderOptions`)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from ...contract.data import DatasetInfo, TargetInfo
from ...contract.errors import DataError, SplitNotFound, raise_problems
from . import ImageFolderOptions
from .files import (
    IMAGE_EXTENSIONS,
    bad_values,
    data_root,
    decode_image,
    header_hw,
    hw_text,
    read_image,
    read_single_channel,
    resize_sample,
)


def stem_index(folder: Path, exts: tuple[str, ...]) -> tuple[dict[str, Path], list[str]]:
    """Stem -> file of the files in ``folder`` with one of ``exts``, and one problem per
    stem that two files share."""
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

    The factory of ``image_folder``: ``ImageFolderDataset(split, options: ImageFolderOptions)``.

    Attributes:
        root, split, base (folder holding the image and target folders), samples (list of
        dicts key -> path), targets (key -> folder), kinds (target key -> kind), classes,
        ignore_index, depth_scale, size.
    """

    def __init__(self, split: str, options: ImageFolderOptions):
        self.split = split
        self.targets = dict(options.targets)
        self.kinds = options.target_kinds()
        self.classes, self.ignore_index = tuple(options.classes), int(options.ignore_index)
        self.depth_scale = float(options.depth_scale)
        self.size = tuple(options.size) if options.size is not None else None
        images = options.images
        layout = (
            f"{images}/ and one folder per target "
            f"({', '.join(f'{f}/' for f in self.targets.values()) or 'none'}), "
            f"either inside split folders <split>/ or next to split files <split>.txt"
        )
        self.root = data_root(options.root, "image_folder", layout)
        self.base, stems = self._split_layout(split, self.root, images)
        self.info = DatasetInfo(
            "image_folder",
            {
                key: (
                    TargetInfo("segmentation", len(self.classes), self.classes, self.ignore_index)
                    if kind == "segmentation"
                    else TargetInfo(kind)
                )
                for key, kind in self.kinds.items()
            },
        )
        # every problem found while listing and scanning is kept: check() reports them with the
        # rest, and a dataset with problems is refused as a whole (DataProblems)
        self.samples, self.problems = self._match(images, stems)
        if options.scan:
            self.problems += self._scan()
        raise_problems(f"image_folder {self.split}", self.problems, self)

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
                raise DataError(
                    f"image_folder {split}: {root / f'{split}.txt'} lists no samples (empty split)"
                )
        else:
            raise SplitNotFound(
                f"image_folder has no split {split!r} in {root}: expected a folder "
                f"{root / split}/ or a split file {root / f'{split}.txt'}"
            )
        for folder in [images, *self.targets.values()]:
            if not (base / folder).is_dir():
                raise DataError(f"image_folder {split}: folder {base / folder} is missing")
        return base, stems

    def _match(self, images: str, stems: Optional[list[str]]) -> tuple[list[dict[str, Path]], list[str]]:
        """The complete samples (image and every target found) and one problem per missing,
        duplicated or orphaned file."""
        img_index, problems = stem_index(self.base / images, IMAGE_EXTENSIONS)
        tgt_index = {}
        for key, folder in self.targets.items():
            tgt_index[key], dup = stem_index(self.base / folder, IMAGE_EXTENSIONS)
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
                    problems.append(
                        f"{self.base / folder / stem}.png: {key} target of image {stem!r} not found"
                    )
            if all(v is not None for v in sample.values()):
                samples.append(sample)
        # with split files one folder serves every split: an orphan is a target with no image at all
        wanted = set(stems) if self.base != self.root else set(img_index)
        for key in self.targets:
            for stem in sorted(set(tgt_index[key]) - wanted):
                problems.append(
                    f"{tgt_index[key][stem]}: {key} target without an image {stem!r} in {images}/"
                )
        if not stems:
            raise DataError(f"image_folder {self.split}: no images in {self.base / images} (empty split)")
        return samples, problems

    def _scan(self) -> list[str]:
        problems = []
        for s in self.samples:
            try:
                hw = header_hw(s["image"])
                for key in self.targets:
                    th = header_hw(s[key])
                    if th != hw:
                        problems.append(
                            f"{s[key]}: {key} is {hw_text(th)} but its image "
                            f"{s['image'].name} is {hw_text(hw)} (HxW)"
                        )
            except DataError as exc:
                problems.append(str(exc))
        return problems

    def __len__(self) -> int:
        return len(self.samples)

    def __repr__(self) -> str:
        return (
            f"ImageFolderDataset(split={self.split!r}, base={str(self.base)!r}, len={len(self)}, "
            f"targets={self.kinds})"
        )

    def _read_target(self, key: str, path: Path) -> Tensor:
        kind = self.kinds[key]
        if kind == "segmentation":
            a = read_single_channel(path, "segmentation mask")
            bad = bad_values(a, len(self.classes), (self.ignore_index,))
            if bad:
                raise DataError(
                    f"{path}: label values {bad} outside the classes 0..{len(self.classes) - 1} "
                    f"and the ignore value {self.ignore_index}"
                )
            return torch.from_numpy(a.astype(np.int64))
        if kind == "depth":
            a = read_single_channel(path, "depth map")
            d = a.astype(np.float32)
            if a.dtype.kind != "f":
                d /= self.depth_scale
            elif not np.isfinite(d).all():
                raise DataError(
                    f"{path}: depth holds {int((~np.isfinite(d)).sum())} NaN or infinite values (use 0 "
                    f"for no measurement)"
                )
            return torch.from_numpy(d)[None]
        im = decode_image(path)
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
                raise DataError(
                    f"{s[key]}: {key} is {hw_text(t.shape[-2:])} but its image "
                    f"{s['image'].name} is {hw_text(image.shape[-2:])} (HxW)"
                )
            out[key] = t
        return resize_sample(out, self.size) if self.size else out

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        return self._sample(self.samples[index])

    def check(self) -> list[str]:
        """Every problem found while listing the files, and every bad file when each image and
        target is decoded: one message per problem."""
        problems = list(self.problems)
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
        return list(dict.fromkeys(problems))  # the listing scan and the decode may name one file alike

    def _check_target(self, key: str, s: dict[str, Path]) -> None:
        t = self._read_target(key, s[key])
        hw = header_hw(s["image"])
        if tuple(t.shape[-2:]) != hw:
            raise DataError(
                f"{s[key]}: {key} is {hw_text(t.shape[-2:])} but its image {s['image'].name} is "
                f"{hw_text(hw)} (HxW)"
            )
