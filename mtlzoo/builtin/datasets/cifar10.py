"""``cifar10``: CIFAR-10 from torchvision's on-disk format (the python batches), never downloaded."""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from ...contract.data import DatasetInfo, TargetInfo
from ...contract.errors import ConfigError, DataError
from . import Cifar10Options
from .files import bad_values, split_error

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
CIFAR10_VEHICLES = (0, 1, 8, 9)
CIFAR10_SPLITS = ("train", "val", "test")
CIFAR10_FOLDER = "cifar-10-batches-py"
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar.html"


class _BatchUnpickler(pickle.Unpickler):
    """Unpickles CIFAR batches only: numpy arrays, lists, dicts; no other global is allowed,
    so a tampered batch file cannot run code."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        ("_codecs", "encode"),
    }

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

    The factory of ``cifar10``: ``Cifar10Dataset(split, options: Cifar10Options)``.

    Attributes:
        root, split, images (uint8 N x 3 x 32 x 32), labels (int64 N).
    """

    def __init__(self, split: str, options: Cifar10Options):
        if split not in CIFAR10_SPLITS:
            raise split_error("cifar10", split, CIFAR10_SPLITS)
        self.split = split
        val_size = options.val_size
        base = Path(os.path.expanduser(str(options.root)))
        folder = base if (base / "data_batch_1").is_file() else base / CIFAR10_FOLDER
        names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
        missing = [n for n in names if not (folder / n).is_file()]
        if missing:
            raise DataError(
                f"cifar10: no CIFAR-10 batches in {folder.resolve()} "
                f"(missing {', '.join(missing)}); "
                f"download cifar-10-python.tar.gz from {CIFAR10_URL} and extract it into "
                f"{base.resolve()} (it creates {CIFAR10_FOLDER}/); mtlzoo never downloads data"
            )
        self.root = folder
        use_test = split == "test" or (split == "val" and val_size == 0)
        files = ["test_batch"] if use_test else names[:5]
        images, labels = zip(*(self._load(folder / f) for f in files))
        self.images = np.concatenate(images)
        self.labels = np.concatenate(labels)
        if not use_test and val_size:
            if val_size >= len(self.labels):
                raise ConfigError(
                    f"cifar10: val_size {val_size} leaves no training images (the batches in "
                    f"{folder} hold {len(self.labels)})"
                )
            cut = len(self.labels) - val_size
            sl = slice(cut, None) if split == "val" else slice(0, cut)
            self.images, self.labels = self.images[sl], self.labels[sl]
        if not len(self.labels):
            raise DataError(f"cifar10 {split}: no images (empty split)")
        self.info = DatasetInfo(
            "cifar10",
            {
                "class": TargetInfo("class", 10, CIFAR10_CLASSES),
                "vehicle": TargetInfo("class", 2, ("animal", "vehicle")),
            },
        )
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
            raise DataError(
                f"{path}: 'data' must be uint8 N x 3072 with one label per row, "
                f"got {data.dtype} {data.shape} and {len(labels)} labels"
            )
        bad = bad_values(labels, 10, ())
        if bad:
            raise DataError(f"{path}: label values {bad} outside the classes 0..9")
        return data.reshape(-1, 3, 32, 32), labels

    def __len__(self) -> int:
        return len(self.labels)

    def __repr__(self) -> str:
        return f"Cifar10Dataset(split={self.split!r}, root={str(self.root)!r}, len={len(self)})"

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        label = torch.tensor(int(self.labels[index]), dtype=torch.int64)
        return {
            "image": torch.from_numpy(self.images[index]).float().div_(255.0),
            "class": label,
            "vehicle": self._vehicle[label],
        }

    def check(self) -> list[str]:
        """Nothing left to check: the batches were fully read and validated when built."""
        return []
