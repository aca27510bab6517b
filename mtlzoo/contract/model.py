"""Hard parameter sharing, the model every spec without ``model.architecture`` builds: input
normalisation, one backbone, one head per task.

Public (``mtlzoo.MultiTaskModel``): the built-in ``hps`` architecture returns it, and a
plugin's architecture may build on it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import torch
from torch import Tensor, nn

from .architecture import Architecture, ArchitectureOutput
from .features import FeatureInfo


class Normalize(nn.Module):
    """``(x - mean) / std`` per channel: the model's first operation.

    The statistics are buffers that are not saved in checkpoints (``persistent=False``):
    they come from the spec, the backbone and the dataset, which the run folder records."""

    mean: Tensor
    std: Tensor

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        self.register_buffer(
            "mean", torch.tensor([float(m) for m in mean]).view(1, -1, 1, 1), persistent=False
        )
        self.register_buffer("std", torch.tensor([float(s) for s in std]).view(1, -1, 1, 1), persistent=False)

    def forward(self, images: Tensor) -> Tensor:
        """Normalised images (same shape and dtype)."""
        return (images - self.mean.to(images.dtype)) / self.std.to(images.dtype)

    def extra_repr(self) -> str:
        return f"mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()}"


def _size(images: Tensor) -> tuple[int, int]:
    """``(H, W)`` of a batch, as the shape gives them (symbolic while a graph is exported, so the
    exported model keeps taking any size)."""
    return cast(tuple[int, int], tuple(images.shape[-2:]))


class MultiTaskModel(Architecture):
    """Hard parameter sharing (the ``hps`` architecture): input normalisation, one shared
    backbone and one head per task.

    ``forward(images) -> {task: prediction}`` for raw ``[0, 1]`` images. The shared
    representation is the list of backbone feature maps (:meth:`encode`); heads consume it
    (:meth:`decode`). Every backbone parameter is shared; every head parameter belongs to
    exactly one task.
    """

    def __init__(self, backbone: nn.Module, heads: dict[str, nn.Module], normalize: Normalize | None = None):
        super().__init__()
        if normalize is not None:
            self.normalize = normalize
        self.backbone = backbone
        self.heads = nn.ModuleDict(heads)

    @property
    def feature_info(self) -> list[FeatureInfo]:
        """Channels and stride of each shared feature map, fine to coarse."""
        return [FeatureInfo(int(c), int(s)) for c, s in cast(Any, self.backbone).feature_info]

    @property
    def task_names(self) -> list[str]:
        """Task names in spec order."""
        return list(self.heads.keys())

    def encode(self, images: Tensor) -> list[Tensor]:
        """Shared representation: the backbone's feature maps of the normalised images."""
        return list(self.backbone(self.normalize(images)))

    def decode(self, features: list[Tensor], size: tuple[int, int]) -> dict[str, Tensor]:
        """Run every head on the shared features; dense outputs have spatial ``size``."""
        return {name: head(features, size) for name, head in self.heads.items()}

    def run(self, images: Tensor) -> ArchitectureOutput:
        """Backbone maps of the normalised ``images`` (the shared representation), then every head."""
        features = list(self.backbone(images))
        return ArchitectureOutput(self.decode(features, _size(images)), {}, features)

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        """Predict every task for a batch of images ``[B, 3, H, W]``."""
        return self.decode(self.encode(images), _size(images))

    def shared_parameters(self) -> list[nn.Parameter]:
        """Trainable parameters shared by all tasks (the backbone's)."""
        return [p for p in self.backbone.parameters() if p.requires_grad]

    def named_shared_parameters(self) -> list[tuple[str, nn.Parameter]]:
        """:meth:`shared_parameters` with their names (``backbone.<...>``)."""
        return [(f"backbone.{n}", p) for n, p in self.backbone.named_parameters() if p.requires_grad]

    def task_parameters(self, task: str) -> list[nn.Parameter]:
        """Trainable parameters of one task's head."""
        return [p for p in self.heads[task].parameters() if p.requires_grad]

    @torch.no_grad()
    def num_parameters(self) -> dict[str, int]:
        """Parameter counts: ``shared``, each task, and ``total``."""
        counts = {"shared": sum(p.numel() for p in self.backbone.parameters())}
        for name, head in self.heads.items():
            counts[name] = sum(p.numel() for p in head.parameters())
        counts["total"] = sum(p.numel() for p in self.parameters())
        return counts


__all__ = ["MultiTaskModel", "Normalize"]
