"""The fusion heads ``fcn``, ``dense``, ``normals`` and ``boundary``: one class, four option sets.

All four are ``[fusion] -> conv3x3+norm+ReLU (once or twice) -> conv1x1 -> bilinear
upsample to size -> output``; they differ only in their options and defaults:

==========  =======================  ======  ====================================
name        fusion                   convs   output
==========  =======================  ======  ====================================
fcn         ``use: all``: from       1       raw scores
            ``min_stride`` (4);
            ``use: last``: none
dense       from ``min_stride`` (4)  1       ``activation`` (softplus)
normals     from ``min_stride`` (4)  1       unit vectors (L2-normalised per pixel)
boundary    from ``min_stride`` (2)  2       raw logits
==========  =======================  ======  ====================================

Options are in :mod:`mtlzoo.builtin.heads`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...contract.errors import ConfigError
from ...contract.features import FeatureInfo
from . import BoundaryOptions, DenseOptions, FCNOptions, NormalsOptions
from .common import Head, conv_norm_relu, feature_infos, resize


def _identity(x: Tensor) -> Tensor:
    return x


def _unit(x: Tensor) -> Tensor:
    return F.normalize(x, dim=1, eps=1e-6)


#: the output transforms: the dense activations, and ``unit`` (per-pixel unit vectors)
OUTPUTS = {
    "none": _identity,
    "relu": F.relu,
    "softplus": F.softplus,
    "sigmoid": torch.sigmoid,
    "exp": torch.exp,
    "unit": _unit,
}

# parameter names of the classes FusionHead replaced: FCNHead's 1x1 conv was "classifier"
# (DenseHead's and NormalsHead's "out"); their single block was "conv.<layer>",
# BoundaryHead's two blocks "conv.<block>.<layer>"
_OLD_BLOCKS = re.compile(r"conv\.(\d+\.\d+\..+)")
_OLD_BLOCK = re.compile(r"conv\.(\d+\..+)")


def _renamed(key: str) -> str | None:
    """The current name of a parameter saved under an old layout's ``key``, or ``None``."""
    if key.startswith("classifier."):
        return "out." + key[len("classifier.") :]
    m = _OLD_BLOCKS.fullmatch(key)
    if m:
        return "convs." + m.group(1)
    m = _OLD_BLOCK.fullmatch(key)
    if m:
        return "convs.0." + m.group(1)
    return None


class Fusion(nn.Module):
    """Light FPN-like fusion: project each map of stride >= ``min_stride`` to ``channels``
    (1x1 conv), resize them to the finest such map's resolution and sum. Output:
    ``[B, channels, h, w]`` at that resolution. ``min_stride`` bounds the cost: fusing at
    stride 2 costs four times fusing at stride 4 and rarely helps."""

    def __init__(self, feature_info: Sequence[FeatureInfo], channels: int, min_stride: int):
        super().__init__()
        strides = [fi.stride for fi in feature_info]
        # keep at least the coarsest map, whatever min_stride says
        self.first = next((i for i, st in enumerate(strides) if st >= min_stride), len(strides) - 1)
        self.proj = nn.ModuleList(nn.Conv2d(fi.channels, channels, 1) for fi in feature_info[self.first :])

    def forward(self, features: Sequence[Tensor]) -> Tensor:
        """Fuse ``features`` (as many as ``feature_info`` had, fine to coarse)."""
        features = features[self.first :]
        target = features[0].shape[-2:]
        out = self.proj[0](features[0])
        for proj, x in zip(self.proj[1:], features[1:]):
            out = out + resize(proj(x), target)
        return out


class FusionHead(Head):
    """Dense head ``[fusion] -> convs x (conv3x3+norm+ReLU) -> conv1x1 -> bilinear upsample
    to size -> output``, returning ``[B, out_channels, *size]``.

    Args:
        name: the registered name, for error messages.
        feature_info, out_channels: what every head factory receives.
        channels: width of the fusion and of the hidden convs.
        min_stride: finest backbone stride fused (:class:`Fusion`); ``None``: no fusion,
            the coarsest map alone.
        convs: number of conv3x3+norm+ReLU blocks.
        norm: ``batch``, ``group`` or ``none``.
        output: a key of :data:`OUTPUTS` applied after the upsampling (``none``: raw scores).

    Modules: ``fuse`` (or ``None``), ``convs``, ``out``. State dicts saved by the classes it
    replaced (``FCNHead``, ``DenseHead``, ``NormalsHead``, ``BoundaryHead``) load too: their
    keys are renamed on load.
    """

    def __init__(
        self,
        name: str,
        feature_info: Sequence,
        out_channels: int,
        *,
        channels: int,
        min_stride: int | None,
        convs: int,
        norm: str,
        output: str,
    ):
        super().__init__()
        infos = feature_infos(feature_info, out_channels, name)
        self.output = output
        self.fuse = Fusion(infos, channels, min_stride) if min_stride is not None else None
        cin = channels if self.fuse is not None else infos[-1].channels
        self.convs = nn.Sequential(
            *(conv_norm_relu(cin if i == 0 else channels, channels, norm) for i in range(convs))
        )
        self.out = nn.Conv2d(channels, out_channels, 1)

    def forward(self, features: Sequence[Tensor], size: Sequence[int]) -> Tensor:
        """Predictions ``[B, out_channels, *size]`` (after the ``output`` transform)."""
        x = self.fuse(features) if self.fuse is not None else features[-1]
        return OUTPUTS[self.output](resize(self.out(self.convs(x)), size))

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
        """Rename the keys of an old layout (see the class docstring), then load as usual."""
        for key in [k for k in state_dict if k.startswith(prefix)]:
            new = _renamed(key[len(prefix) :])
            if new is not None:
                state_dict[prefix + new] = state_dict.pop(key)
        super()._load_from_state_dict(state_dict, prefix, *args)


def make_fcn(feature_info: Sequence, out_channels: int, options: FCNOptions) -> FusionHead:
    """The ``fcn`` head: raw scores from the coarsest map (``use: last``) or from the fusion
    of the maps of stride >= ``min_stride`` (``use: all``), through one hidden conv."""
    return FusionHead(
        "fcn",
        feature_info,
        out_channels,
        channels=options.channels,
        min_stride=options.min_stride if options.use == "all" else None,
        convs=1,
        norm=options.norm,
        output="none",
    )


def make_dense(feature_info: Sequence, out_channels: int, options: DenseOptions) -> FusionHead:
    """The ``dense`` regression head (depth, ...): fusion of all maps, one hidden conv, then
    the ``activation``.

    Unlike the other dense heads it returns the prediction itself, not raw scores. Its
    default ``softplus`` keeps depth strictly positive while its gradient never vanishes
    (``relu`` can die at 0, ``exp`` can overflow early in training)."""
    return FusionHead(
        "dense",
        feature_info,
        out_channels,
        channels=options.channels,
        min_stride=options.min_stride,
        convs=1,
        norm=options.norm,
        output=options.activation,
    )


def make_normals(feature_info: Sequence, out_channels: int, options: NormalsOptions) -> FusionHead:
    """The ``normals`` head: like ``dense`` with 3 outputs, L2-normalised per pixel after
    upsampling, so every output pixel is a unit vector (x right, y down, z towards the
    camera, as in :mod:`mtlzoo.contract.data`). ``out_channels`` must be 3."""
    if out_channels != 3:
        raise ConfigError(
            f"head 'normals' predicts unit 3-vectors: out_channels must be 3, got {out_channels}"
        )
    return FusionHead(
        "normals",
        feature_info,
        3,
        channels=options.channels,
        min_stride=options.min_stride,
        convs=1,
        norm=options.norm,
        output="unit",
    )


def make_boundary(feature_info: Sequence, out_channels: int, options: BoundaryOptions) -> FusionHead:
    """The ``boundary`` head: edges need resolution, so every map is fused at the finest
    map's resolution (the finest map enters at full weight, coarser ones add context), then
    two hidden convs give raw logits (one channel for binary boundaries; the loss applies
    the sigmoid)."""
    return FusionHead(
        "boundary",
        feature_info,
        out_channels,
        channels=options.channels,
        min_stride=options.min_stride,
        convs=2,
        norm=options.norm,
        output="none",
    )
