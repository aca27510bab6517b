"""The shared-parameter multi-task model: one backbone feeding every task head."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn


class FeatureInfo(NamedTuple):
    """Channels and stride (input pixels per feature pixel) of one backbone feature map."""

    channels: int
    stride: int


class MultiTaskModel(nn.Module):
    """One shared backbone and one head per task.

    ``forward(images) -> {task: prediction}``. The shared representation is the list of
    backbone feature maps (:meth:`encode`); heads consume it (:meth:`decode`). Every
    backbone parameter is shared; every head parameter belongs to exactly one task.
    """

    def __init__(self, backbone: nn.Module, heads: dict[str, nn.Module]):
        super().__init__()
        if not hasattr(backbone, "feature_info"):
            raise TypeError("a backbone must expose feature_info: list[FeatureInfo]")
        self.backbone = backbone
        self.heads = nn.ModuleDict(heads)

    @property
    def feature_info(self) -> list[FeatureInfo]:
        """Channels and stride of each shared feature map, fine to coarse."""
        return list(self.backbone.feature_info)

    @property
    def task_names(self) -> list[str]:
        """Task names in spec order."""
        return list(self.heads.keys())

    def encode(self, images: Tensor) -> list[Tensor]:
        """Shared representation: the backbone's feature maps, fine to coarse."""
        return list(self.backbone(images))

    def decode(self, features: list[Tensor], size: tuple[int, int]) -> dict[str, Tensor]:
        """Run every head on the shared features; dense outputs have spatial ``size``."""
        return {name: head(features, size) for name, head in self.heads.items()}

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        """Predict every task for a batch of images ``[B, 3, H, W]``."""
        return self.decode(self.encode(images), tuple(images.shape[-2:]))

    def shared_parameters(self) -> list[nn.Parameter]:
        """Trainable parameters shared by all tasks (the backbone's)."""
        return [p for p in self.backbone.parameters() if p.requires_grad]

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
