"""Inference: a trained model with its preprocessing, for images of any size.

:func:`mtlzoo.load` returns a :class:`Predictor`. The model normalises its input itself, so
images go in as raw RGB in [0, 1]; they are padded (bottom/right, with zeros) to a multiple of
the backbone's ``size_divisor`` and every dense prediction is cropped back to the image's size.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..contract.data import DatasetInfo, TargetInfo, TargetKind
from ..contract.errors import DataError, one_line
from ..contract.tasks import TaskInfo

CARD = "model.json"
CARD_FORMAT = 1


@dataclass
class PredictedTask:
    """What a prediction of one task is: its info and its target kind."""

    info: TaskInfo
    kind: TargetKind


def read_image(path: str | Path) -> Tensor:
    """An image file as float32 ``[3, H, W]`` in [0, 1] (any mode converted to RGB)."""
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            rgb = np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0
    except (OSError, UnidentifiedImageError) as exc:
        raise DataError(f"{path}: cannot read the image ({one_line(exc)})") from None
    return torch.from_numpy(rgb).permute(2, 0, 1).contiguous()


class AnySize(nn.Module):
    """A multi-task model that takes images of any size: pads them (bottom/right, with zeros) to
    a multiple of ``size_divisor``, runs the model and crops every dense prediction back.

    What :meth:`Predictor.predict` runs, and what ``mtlzoo export`` writes into its graph, so an
    exported file gives what ``predict`` gives at sizes off the divisor's grid too. Its output is
    the model's ``{task: tensor}``; ``dense`` names the tasks whose outputs are maps to crop.
    """

    def __init__(self, model: nn.Module, size_divisor: int, dense: Sequence[str]):
        super().__init__()
        self.model = model
        self.size_divisor = max(1, int(size_divisor))
        self.dense = tuple(dense)

    def forward(self, image: Tensor) -> dict[str, Tensor]:
        """``{task: prediction}`` of ``image`` ``[B, 3, H, W]``, dense ones ``[B, C, H, W]``."""
        h, w = image.shape[-2], image.shape[-1]
        d = self.size_divisor
        # ceil(h / d) * d, written with floor division so that torch.export keeps it symbolic
        ph, pw = (h + d - 1) // d * d, (w + d - 1) // d * d
        x = torch.nn.functional.pad(image, (0, pw - w, 0, ph - h)) if d > 1 else image
        preds = self.model(x)
        if d == 1:
            return preds
        # index_select rather than slicing: torch.export cannot prove h <= ph for a symbolic h,
        # and a slice guards on it (and on whether the crop is contiguous)
        rows, cols = torch.arange(h, device=image.device), torch.arange(w, device=image.device)
        return {
            n: (p.index_select(-2, rows).index_select(-1, cols) if n in self.dense else p)
            for n, p in preds.items()
        }


class Predictor:
    """A trained multi-task model ready to predict.

    Attributes:
        model: the architecture (eval mode). tasks: task -> :class:`PredictedTask`.
        size_divisor: inputs are padded to multiples of it. info: the dataset's info the model
        was trained with (class names, palettes). cfg: the run's spec. device.
    """

    def __init__(
        self,
        model: nn.Module,
        tasks: dict[str, PredictedTask],
        size_divisor: int,
        info: DatasetInfo,
        cfg: Any,
        device: str | torch.device = "cpu",
    ):
        self.model = model.eval()
        self.tasks = tasks
        self.size_divisor = max(1, int(size_divisor))
        self.info = info
        self.cfg = cfg
        self.device = torch.device(device)
        self.model.to(self.device)

    def to(self, device: str | torch.device) -> Predictor:
        """Move the model to ``device``."""
        self.device = torch.device(device)
        self.model.to(self.device)
        return self

    def any_size(self) -> AnySize:
        """The model padding its input to :attr:`size_divisor` and cropping dense outputs back
        (what :meth:`predict` runs on each batch, and what ``mtlzoo export`` exports)."""
        return AnySize(
            self.model, self.size_divisor, [n for n, t in self.tasks.items() if t.kind.dense]
        ).eval()

    def _as_batch(self, images: Any) -> list[Tensor]:
        if isinstance(images, (str, Path)):
            images = [images]
        if torch.is_tensor(images):
            images = list(images) if images.dim() == 4 else [images]
        out = []
        for img in images:
            t = read_image(img) if isinstance(img, (str, Path)) else torch.as_tensor(img)
            if t.dim() != 3 or t.shape[0] != 3:
                raise DataError(f"an image must be [3, H, W] (RGB in [0, 1]), got shape {list(t.shape)}")
            out.append(t.float())
        return out

    @torch.no_grad()
    def predict(self, images: Any, batch_size: int = 8) -> list[dict[str, Tensor]]:
        """Raw predictions (head outputs) of each image, cropped to its size.

        ``images``: a tensor ``[B, 3, H, W]`` or ``[3, H, W]`` (RGB in [0, 1]), image file
        paths, or a list of either (sizes may differ). Returns one ``{task: tensor}`` per image."""
        items = self._as_batch(images)
        results: list[dict[str, Tensor] | None] = [None] * len(items)
        by_size: dict[tuple[int, ...], list[int]] = {}
        for i, t in enumerate(items):
            by_size.setdefault(tuple(t.shape[-2:]), []).append(i)
        model = self.any_size()
        for idx in by_size.values():
            for start in range(0, len(idx), batch_size):
                chunk = idx[start : start + batch_size]
                preds = model(torch.stack([items[i] for i in chunk]).to(self.device))
                for j, i in enumerate(chunk):
                    results[i] = {name: preds[name][j].float().cpu() for name in self.tasks}
        return results  # type: ignore[return-value]

    def decode(self, prediction: dict[str, Tensor]) -> dict[str, Tensor]:
        """One image's raw predictions as values of each task's target kind (class indices,
        probabilities, unit normals ...), by each kind's ``decode``."""
        out = {}
        for name, value in prediction.items():
            task = self.tasks[name]
            out[name] = task.kind.decode(value, task.info.target_info) if task.kind.decode else value
        return out

    def __call__(self, images: Any) -> list[dict[str, Tensor]]:
        """:meth:`predict` then :meth:`decode` of every image."""
        return [self.decode(p) for p in self.predict(images)]


def card(
    info: DatasetInfo,
    tasks: dict[str, TaskInfo],
    kinds: dict[str, TargetKind],
    normalization: tuple[Sequence[float], Sequence[float]] | None,
    size_divisor: int,
) -> dict[str, Any]:
    """What a run folder's ``model.json`` records for inference without the training data."""
    return {
        "format": CARD_FORMAT,
        "dataset_info": dataclasses.asdict(info),
        "normalization": None if normalization is None else [list(normalization[0]), list(normalization[1])],
        "size_divisor": int(size_divisor),
        "tasks": {
            n: {
                "type": t.type,
                "target": t.target,
                "kind": kinds[n].name,
                "out_channels": t.out_channels,
                "class_names": list(t.class_names),
            }
            for n, t in tasks.items()
        },
    }


def info_from_card(data: dict[str, Any]) -> DatasetInfo:
    """The :class:`DatasetInfo` a ``model.json`` holds."""
    raw = data["dataset_info"]

    def target(t: dict[str, Any]) -> TargetInfo:
        return TargetInfo(
            t["kind"],
            int(t.get("num_classes", 0)),
            tuple(t.get("class_names") or ()),
            t.get("ignore_index"),
            tuple(t["class_weights"]) if t.get("class_weights") else None,
            tuple(tuple(c) for c in t["palette"]) if t.get("palette") else None,
        )

    mean, std = raw.get("mean"), raw.get("std")
    return DatasetInfo(
        raw["name"],
        {k: target(v) for k, v in raw["targets"].items()},
        tuple(mean) if mean else None,
        tuple(std) if std else None,
    )


__all__ = ["AnySize", "Predictor", "PredictedTask", "card", "info_from_card", "read_image", "CARD"]
