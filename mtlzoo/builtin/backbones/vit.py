"""Plain vision transformers (ViT, DeiT, DINOv2, EVA, SAM's encoder ...) as backbones of the
``timm`` backbone: what they accept as input, and a feature pyramid for the heads.

A plain ViT gives one map at its patch stride (14 or 16) however many blocks it returns;
the dense heads and architectures expect a pyramid, fine to coarse. :class:`SimplePyramid`
builds one the way ViTDet does (Li, Mao, Girshick & He, "Exploring Plain Vision Transformer
Backbones for Object Detection", ECCV 2022, detectron2's ``SimpleFeaturePyramid``): from the
last block's map (or one chosen block per level), 2x2 transposed convs upsample, max-pooling
downsamples, and each level is projected to ``channels`` (1x1 conv, LayerNorm, 3x3 conv,
LayerNorm). The levels are at strides 4, 8, 16 and 32 whatever the patch, ``ceil(input /
stride)`` in size: with a 16-pixel patch the scale factors are exactly 4, 2, 1 and 1/2
(ViTDet's) and give those sizes; with another patch the nearest powers of two are used and a
level of another size is resized (bilinear), e.g. 14-pixel patches on a 70x70 image give 20x20
at scale 4, resized to 18x18.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from timm.layers import LayerNorm2d
from torch import Tensor, nn

from ...contract.errors import ConfigError
from ...contract.features import FeatureInfo

#: the pyramid's strides, fine to coarse (ViTDet's P2 to P5)
STRIDES = (4, 8, 16, 32)


def _scale_ops(channels: int, octaves: int) -> tuple[nn.Module, int]:
    """Resample a map by ``2**octaves``: transposed 2x2 convs halving the channels each
    (LayerNorm and GELU between them, as ViTDet), identity, or a ``2**-octaves`` max-pool
    (ceil mode: an odd side keeps its last row). Returns the module and its output channels."""
    if octaves == 0:
        return nn.Identity(), channels
    if octaves < 0:
        k = 2**-octaves
        return nn.MaxPool2d(k, k, ceil_mode=True), channels
    layers: list[nn.Module] = []
    c = channels
    for i in range(octaves):
        if i:
            layers += [LayerNorm2d(c), nn.GELU()]
        out = max(c // 2, 1)
        layers.append(nn.ConvTranspose2d(c, out, 2, 2))
        c = out
    return nn.Sequential(*layers), c


class SimplePyramid(nn.Module):
    """ViTDet's simple feature pyramid at strides 4, 8, 16, 32 (see the module docstring).

    Args:
        in_channels: channels of the block maps it reads: one (every level from it) or four
            (level ``i`` from map ``i``, fine to coarse).
        patch: the transformer's patch size (its maps' stride).
        channels: width of every level after its projection; ``None``: no projection (the
            levels keep ``C / 2**octaves`` channels, ``C`` below scale 1).
    """

    def __init__(self, in_channels: Sequence[int], patch: int, channels: int | None):
        super().__init__()
        if len(in_channels) not in (1, len(STRIDES)):
            raise ConfigError(
                f"out_indices: the feature pyramid of a plain ViT reads one block or {len(STRIDES)} (one per "
                f"level), got {len(in_channels)}; give one block index or four"
            )
        self.patch = int(patch)
        self.one = len(in_channels) == 1
        self.scales = nn.ModuleList()
        self.proj = nn.ModuleList()
        widths = []
        for i, stride in enumerate(STRIDES):
            octaves = round(math.log2(self.patch / stride))
            op, c = _scale_ops(int(in_channels[0 if self.one else i]), octaves)
            self.scales.append(op)
            if channels is None:
                self.proj.append(nn.Identity())
                widths.append(c)
            else:
                self.proj.append(
                    nn.Sequential(
                        nn.Conv2d(c, channels, 1, bias=False),
                        LayerNorm2d(channels),
                        nn.Conv2d(channels, channels, 3, padding=1, bias=False),
                        LayerNorm2d(channels),
                    )
                )
                widths.append(channels)
        self.feature_info = [FeatureInfo(c, s) for c, s in zip(widths, STRIDES)]

    def forward(self, maps: Sequence[Tensor], size: Sequence[int]) -> list[Tensor]:
        """The levels (fine to coarse) for block ``maps`` of an input of ``size``: level ``i``
        is ``ceil(size / stride_i)``, resized to it when the scale op gives another size (no
        ``int()`` of a size, so torch.export keeps the image size dynamic)."""
        h, w = size[0], size[1]
        out = []
        for i, (stride, op, proj) in enumerate(zip(STRIDES, self.scales, self.proj)):
            x = op(maps[0 if self.one else i])
            target = ((h + stride - 1) // stride, (w + stride - 1) // stride)
            if tracing() or tuple(x.shape[-2:]) != target:
                x = F.interpolate(x, size=target, mode="bilinear", align_corners=False)
            out.append(proj(x))
        return out


def patch_embed(model: nn.Module) -> Any:
    """The ``patch_embed`` of a timm features model's transformer (``FeatureGetterNet`` wraps it
    as ``.model``), or ``None``."""
    inner = getattr(model, "model", model)
    pe = getattr(inner, "patch_embed", None)
    return pe if pe is not None and hasattr(pe, "patch_size") else None


class InputSize:
    """What input sizes a transformer with a patch embedding takes: multiples of its patch
    (unless it pads), exactly its ``img_size`` when it is strict (not built with
    ``dynamic_img_size``)."""

    def __init__(self, arch: str, pe: Any):
        self.arch = arch
        self.patch = tuple(int(p) for p in pe.patch_size)
        self.pad = bool(getattr(pe, "dynamic_img_pad", False))
        strict = bool(getattr(pe, "strict_img_size", False)) and getattr(pe, "img_size", None) is not None
        self.fixed = tuple(int(s) for s in pe.img_size) if strict else None

    @property
    def divisor(self) -> int:
        """The backbone's ``size_divisor``: the patch (1 when it pads)."""
        return 1 if self.pad else max(self.patch)

    def check(self, h: int, w: int) -> None:
        """Raise a one-line :class:`ConfigError` for a size the transformer cannot take."""
        if self.fixed is not None and (h, w) != self.fixed:
            raise ConfigError(
                f"model.backbone: timm {self.arch!r} was built for {self.fixed[0]}x{self.fixed[1]} images "
                f"and got {h}x{w}; set dynamic_img_size: true (any multiple of its patch) or img_size: [{h}, {w}]"
            )
        if not self.pad and (h % self.patch[0] or w % self.patch[1]):
            raise ConfigError(
                f"model.backbone: timm {self.arch!r} takes images whose height and width are multiples of its "
                f"{self.patch[0]}-pixel patch, got {h}x{w}; resize or crop the data to a multiple "
                f"(e.g. {(h // self.patch[0]) * self.patch[0]}x{(w // self.patch[1]) * self.patch[1]}) "
                f"or set dynamic_img_pad: true"
            )


def tracing() -> bool:
    """True while torch.compile, torch.export or the JIT trace the model (no Python checks then)."""
    compiler = getattr(torch, "compiler", None)
    exporting = getattr(compiler, "is_exporting", lambda: False)
    return bool(torch.jit.is_tracing() or (compiler is not None and compiler.is_compiling()) or exporting())


__all__ = ["SimplePyramid", "InputSize", "STRIDES", "patch_embed", "tracing"]
