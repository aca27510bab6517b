"""The ``classification`` head: pooled coarsest map -> MLP (options in :mod:`mtlzoo.builtin.heads`)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from . import ClassificationOptions
from .common import Head, feature_infos


class ClassificationHead(Head):
    """Image-level head: global pooling of the coarsest map -> [Linear + ReLU] -> dropout ->
    Linear, returning logits ``[B, out_channels]`` (``size`` is ignored).

    The same head serves single-label classification (cross-entropy over the logits) and
    multi-label classification (binary cross-entropy per logit): only the loss differs.
    """

    def __init__(self, feature_info: Sequence, out_channels: int, options: ClassificationOptions):
        super().__init__()
        infos = feature_infos(feature_info, out_channels, "classification")
        self.pool = options.pool
        width = infos[-1].channels * (2 if self.pool == "avgmax" else 1)
        layers: list[nn.Module] = []
        if options.hidden:
            layers += [nn.Linear(width, options.hidden), nn.ReLU(inplace=True)]
            width = options.hidden
        layers += [nn.Dropout(options.dropout), nn.Linear(width, out_channels)]
        self.mlp = nn.Sequential(*layers)

    def forward(self, features: Sequence[Tensor], size: Sequence[int] | None = None) -> Tensor:
        """Logits ``[B, out_channels]``."""
        x = features[-1]
        if self.pool == "avg":
            pooled = x.mean(dim=(2, 3))
        elif self.pool == "max":
            pooled = x.amax(dim=(2, 3))
        else:
            pooled = torch.cat([x.mean(dim=(2, 3)), x.amax(dim=(2, 3))], dim=1)
        return self.mlp(pooled)
