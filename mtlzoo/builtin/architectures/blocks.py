"""Building blocks of the built-in architectures: residual and attention blocks, splitting a
backbone stage, and probes of what a head or a stage gives."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...contract.features import FeatureInfo
from ...contract.layers import make_norm

T = TypeVar("T")


def conv(cin: int, cout: int, kernel: int, norm: str) -> nn.Conv2d:
    """A ``kernel x kernel`` conv keeping the size; with a bias only when no norm follows it."""
    return nn.Conv2d(cin, cout, kernel, padding=kernel // 2, bias=norm == "none")


def _shortcut(cin: int, cout: int, norm: str) -> nn.Module:
    return nn.Identity() if cin == cout else nn.Sequential(conv(cin, cout, 1, norm), make_norm(norm, cout))


class BasicBlock(nn.Module):
    """ResNet's basic block (He et al. 2016): ``3x3 -> norm -> ReLU -> 3x3 -> norm``, plus the
    input (through ``1x1 -> norm`` when the width changes), then ReLU."""

    def __init__(self, cin: int, cout: int, norm: str):
        super().__init__()
        self.body = nn.Sequential(
            conv(cin, cout, 3, norm),
            make_norm(norm, cout),
            nn.ReLU(),
            conv(cout, cout, 3, norm),
            make_norm(norm, cout),
        )
        self.shortcut = _shortcut(cin, cout, norm)

    def forward(self, x: Tensor) -> Tensor:
        """Same size, ``cout`` channels."""
        return F.relu(self.body(x) + self.shortcut(x))


class Bottleneck(nn.Module):
    """ResNet's bottleneck block: ``1x1 (mid) -> 3x3 -> 1x1 (cout)`` with norms and ReLUs,
    plus the input (through ``1x1 -> norm`` when the width changes), then ReLU. ``mid``
    defaults to ``cout / 4``."""

    def __init__(self, cin: int, cout: int, norm: str, mid: int | None = None):
        super().__init__()
        mid = max(cout // 4, 1) if mid is None else mid
        self.body = nn.Sequential(
            conv(cin, mid, 1, norm),
            make_norm(norm, mid),
            nn.ReLU(),
            conv(mid, mid, 3, norm),
            make_norm(norm, mid),
            nn.ReLU(),
            conv(mid, cout, 1, norm),
            make_norm(norm, cout),
        )
        self.shortcut = _shortcut(cin, cout, norm)

    def forward(self, x: Tensor) -> Tensor:
        """Same size, ``cout`` channels."""
        return F.relu(self.body(x) + self.shortcut(x))


class SpatialAttention(nn.Module):
    """PAD-Net's attention-guided message (Xu et al. 2018, as Vandenhende et al.'s ``SABlock``):
    ``conv3x3(x) * sigmoid(conv3x3(x))``, a spatial gate computed from the sending task's
    features."""

    def __init__(self, channels: int):
        super().__init__()
        self.gate = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.message = nn.Conv2d(channels, channels, 3, padding=1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        """The gated message, shaped like ``x``."""
        return self.message(x) * torch.sigmoid(self.gate(x))


class SqueezeExcitation(nn.Module):
    """Squeeze-and-excitation (Hu et al. 2018), reduction 16: channel gates from the pooled map."""

    def __init__(self, channels: int):
        super().__init__()
        hidden = max(channels // 16, 1)
        self.gates = nn.Sequential(
            nn.Linear(channels, hidden), nn.ReLU(), nn.Linear(hidden, channels), nn.Sigmoid()
        )

    def forward(self, x: Tensor) -> Tensor:
        """``x`` with each channel scaled by its gate."""
        return x * self.gates(x.mean((2, 3)))[:, :, None, None]


def resize(x: Tensor, size: Sequence[int]) -> Tensor:
    """Bilinearly resize ``x [B,C,h,w]`` to ``size`` (no-op when already that size)."""
    size = (int(size[0]), int(size[1]))
    if tuple(x.shape[-2:]) == size:
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def as_prediction(x: Tensor, size: Sequence[int], dense: bool) -> Tensor:
    """A deep-supervision prediction shaped like the task's final one: a dense map resized to
    the image ``size`` (bilinear, as the papers' losses upsample them), or the spatial mean
    ``[B, C]`` for an image-level task."""
    return resize(x, size) if dense else x.mean((2, 3))


# -- backbone stages -------------------------------------------------------------------------------------
def _leaves(module: nn.Module) -> list[nn.Module]:
    """``module``'s modules in the order it runs them: plain ``nn.Sequential`` s flattened
    (subclasses may override ``forward``, so they stay whole)."""
    if type(module) is nn.Sequential:
        return [leaf for child in module for leaf in _leaves(child)]
    return [module]


def _has_weights(module: nn.Module) -> bool:
    return any(isinstance(m, (nn.modules.conv._ConvNd, nn.Linear)) for m in module.modules())


class SplitStage:
    """One backbone stage run as ``u = body(x)``, ``p = last(u)``: ``last`` is its last unit
    (the last module holding conv/linear weights and what follows it), ``body`` everything
    before. For ResNet stages ``u`` is the output of all residual blocks but the last, as in
    the authors' MTAN-ResNet; a stage of one unit gives ``u = p``. Not a module: the stage's
    modules stay the backbone's."""

    def __init__(self, stage: nn.Module):
        leaves = _leaves(stage)
        starts = [i for i, m in enumerate(leaves) if _has_weights(m)]
        cut = starts[-1] if len(starts) > 1 else 0
        self.body, self.last = leaves[:cut], leaves[cut:]

    def __call__(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(u, p)`` for the previous map (or the images) ``x``; ``u is p`` without a body."""
        for m in self.body:
            x = m(x)
        u = x
        for m in self.last:
            x = m(x)
        return (u if self.body else x), x


def probe_size(backbone: nn.Module) -> tuple[int, int]:
    """A small input size the backbone accepts (a multiple of its ``size_divisor``)."""
    div = int(getattr(backbone, "size_divisor", 1) or 1)
    side = div * max(1, -(-64 // div))
    return side, side


@torch.no_grad()
def probe(module: nn.Module, fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` with ``module`` in eval mode (no batch statistics touched), then its mode back."""
    was = module.training
    module.eval()
    try:
        return fn(*args)
    finally:
        module.train(was)


def is_dense(head: nn.Module, feature_info: Sequence[FeatureInfo]) -> bool:
    """True when ``head`` predicts a map (``[B, C, H, W]``) rather than ``[B, C]``, from one
    forward pass on zero maps shaped like ``feature_info``."""
    top = max(fi.stride for fi in feature_info) * 2
    maps = [
        torch.zeros(1, fi.channels, max(top // fi.stride, 1), max(top // fi.stride, 1)) for fi in feature_info
    ]
    return probe(head, head, maps, (top, top)).dim() == 4


def select_scales(feature_info: Sequence[FeatureInfo], min_stride: int) -> list[int]:
    """Indices of the maps of stride >= ``min_stride`` (fine to coarse), or of the coarsest
    map alone when none is that coarse."""
    chosen = [i for i, fi in enumerate(feature_info) if fi.stride >= min_stride]
    return chosen or [len(feature_info) - 1]


__all__ = [
    "BasicBlock",
    "Bottleneck",
    "SpatialAttention",
    "SqueezeExcitation",
    "SplitStage",
    "conv",
    "resize",
    "as_prediction",
    "probe",
    "probe_size",
    "is_dense",
    "select_scales",
]
