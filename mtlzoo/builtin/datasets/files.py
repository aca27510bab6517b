"""File helpers shared by the datasets that read files (camvid, nyuv2, cityscapes,
image_folder, cifar10).

Their common behaviour: nothing is ever downloaded, a missing root is a
:class:`~mtlzoo.contract.errors.DataError` that says which files to put where;
construction runs a cheap scan (directory listings and file headers); ``check()`` decodes
every file (``mtlzoo data check``) and returns one message per bad file; ``__getitem__``
raises a DataError naming the file for anything the scan could not see (a truncated file, a
label outside the class range).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torchvision.transforms.v2 import functional as TF

from ...contract.errors import DataError, SplitNotFound, did_you_mean

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
SINGLE_CHANNEL_MODES = ("1", "L", "P", "I", "I;16", "I;16B", "I;16L", "F")


def data_root(root: str, what: str, layout: str) -> Path:
    """The dataset folder ``root`` (``~`` expanded); a DataError describing ``layout`` when it
    is no folder."""
    path = Path(os.path.expanduser(str(root)))
    if not path.is_dir():
        raise DataError(
            f"{what}: data root {str(root)!r} ({path.resolve()}) is not a folder; "
            f"set data.root to a folder holding {layout}"
        )
    return path


def open_image(path: Path) -> Image.Image:
    """Open an image file (header only); raises DataError naming the file."""
    try:
        return Image.open(path)
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except Exception as exc:  # noqa: BLE001 - PIL raises many types for broken files
        raise DataError(f"{path}: unreadable image ({type(exc).__name__}: {exc})") from None


def decode_image(path: Path) -> Image.Image:
    """Open and fully decode an image file (a truncated file fails here)."""
    im = open_image(path)
    try:
        im.load()
    except Exception as exc:  # noqa: BLE001
        raise DataError(f"{path}: unreadable image ({type(exc).__name__}: {exc})") from None
    return im


def read_image(path: Path) -> Tensor:
    """An image file as float32 ``[3,H,W]`` in [0, 1] (grey and RGBA converted to RGB)."""
    im = decode_image(path)
    if im.mode != "RGB":
        im = im.convert("RGB")
    # converted in numpy: small strided torch ops are slow when threads are contended
    x = np.asarray(im, dtype=np.uint8).transpose(2, 0, 1).astype(np.float32)
    x /= 255.0
    return torch.from_numpy(x)


def read_single_channel(path: Path, what: str = "mask") -> np.ndarray:
    """A single-channel image file (8/16-bit grey, palette indices, float) as a 2-D array."""
    im = decode_image(path)
    if im.mode not in SINGLE_CHANNEL_MODES:
        raise DataError(
            f"{path}: a {what} must be a single-channel image (grey or palette indices), got mode {im.mode}"
        )
    return np.array(im)


def header_hw(path: Path) -> tuple[int, int]:
    """Height and width of an image file, from its header."""
    with open_image(path) as im:
        w, h = im.size
    return h, w


def hw_text(hw: tuple[int, ...]) -> str:
    """``HxW`` of a size."""
    return f"{hw[0]}x{hw[1]}"


def bad_values(values: np.ndarray, num_classes: int, allowed: tuple[int, ...]) -> list[int | float]:
    """Up to 8 distinct values that are neither a class index ``0..num_classes-1`` nor in ``allowed``."""
    u = np.unique(values)
    bad = u[((u < 0) | (u >= num_classes) | (u != np.round(u))) & ~np.isin(u, allowed)]
    return [int(v) if float(v).is_integer() else float(v) for v in bad[:8]]


def listing(folder: Path, cache: dict[Path, set[str]]) -> set[str]:
    """The file names in ``folder`` (empty when it is no folder), listed once per ``cache``."""
    if folder not in cache:
        cache[folder] = set(os.listdir(folder)) if folder.is_dir() else set()
    return cache[folder]


def split_error(name: str, split: str, splits: tuple[str, ...], note: str = "") -> SplitNotFound:
    """The error of a split the dataset ``name`` does not have (``splits``: those it has)."""
    return SplitNotFound(
        f"{name} has no split {split!r}{did_you_mean(str(split), splits)}; "
        f"its splits are {', '.join(splits)}{note}"
    )


def resize_sample(sample: dict[str, Tensor], size: tuple[int, int]) -> dict[str, Tensor]:
    """Resize a sample of dense tensors to ``size`` (H, W): the image bilinearly with
    antialiasing, every target with nearest neighbour (labels never mix, unit normals stay
    unit). Tensors already of that size are returned as they are."""
    size = [int(size[0]), int(size[1])]
    out = {}
    for key, value in sample.items():
        if list(value.shape[-2:]) == size:
            out[key] = value
        elif key == "image":
            out[key] = TF.resize_image(value, size, antialias=True)
        else:
            out[key] = TF.resize_mask(value, size)
    return out
