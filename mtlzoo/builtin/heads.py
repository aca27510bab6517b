"""Built-in task heads.

A head is built by ``factory(feature_info, out_channels, **options)`` and called as
``head(features, size)`` with the backbone's feature maps (fine to coarse) and the input's
spatial size. Dense heads return ``[B, out_channels, *size]`` at exactly ``size`` (any size,
not only multiples of 32); ``classification`` returns ``[B, out_channels]``.

=================  ==========================================================================
name               what it is
=================  ==========================================================================
``fcn``            light FCN: coarsest map (or an FPN-like sum of all) -> conv3x3 -> 1x1
``unet``           smp's ``UnetDecoder`` over every map -> conv3x3
``fpn``            smp's ``FPNDecoder`` over the last four maps -> conv1x1
``deeplabv3plus``  smp's ``DeepLabV3PlusDecoder`` (ASPP on the coarsest map + stride-4 skip)
``dense``          dense regression (depth): fusion of all maps + an output activation
``normals``        surface normals: 3 channels, unit length per pixel
``boundary``       boundary logits from the finest maps fused with coarser ones
``classification`` image-level logits from the pooled coarsest map
=================  ==========================================================================

Dense heads except ``dense`` and ``normals`` return raw scores: the task's loss applies
any activation. Heads with a ``norm`` option accept ``batch`` (default), ``group`` or
``none``; the last two keep no batch statistics.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError
from ..hookspecs import hookimpl
from ..model import FeatureInfo
from ..layers import check_norm, make_norm

ACTIVATIONS = ("none", "relu", "softplus", "sigmoid", "exp")
POOLS = ("avg", "max", "avgmax")


# -- helpers --------------------------------------------------------------------------------

def _infos(feature_info: Sequence, head: str) -> list[FeatureInfo]:
    infos = [FeatureInfo(int(c), int(s)) for c, s in feature_info]
    if not infos:
        raise ConfigError(f"head {head!r}: the backbone gives no feature maps")
    return infos


def _size(size: Sequence[int]) -> tuple[int, int]:
    h, w = size
    return int(h), int(w)


def resize(x: Tensor, size: Sequence[int]) -> Tensor:
    """Bilinearly resize ``x [B,C,h,w]`` to ``size`` (no-op when already that size)."""
    size = _size(size)
    if tuple(x.shape[-2:]) == size:
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def _positive(value: int, name: str, head: str) -> None:
    if int(value) < 1:
        raise ConfigError(f"head {head!r}: {name} must be >= 1, got {value}")


def conv_norm_relu(cin: int, cout: int, norm: str, kernel: int = 3) -> nn.Sequential:
    """``conv kxk -> norm -> ReLU`` (conv bias only when there is no norm)."""
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, padding=kernel // 2, bias=norm == "none"),
                         make_norm(norm, cout), nn.ReLU(inplace=True))


def convert_norm(module: nn.Module, norm: str) -> nn.Module:
    """Replace every ``BatchNorm2d`` inside ``module`` by the ``norm`` layer (for smp decoders,
    which are built with batch norm)."""
    if norm == "batch":
        return module
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            setattr(module, name, make_norm(norm, child.num_features))
        else:
            convert_norm(child, norm)
    return module


class Fusion(nn.Module):
    """Light FPN-like fusion: project each map of stride >= ``min_stride`` to ``channels``
    (1x1 conv), resize them to the finest such map's resolution and sum. Output:
    ``[B, channels, h, w]`` at that resolution. ``min_stride`` bounds the cost: fusing at
    stride 2 costs four times fusing at stride 4 and rarely helps."""

    def __init__(self, feature_info: Sequence[FeatureInfo], channels: int, min_stride: int = 1):
        super().__init__()
        strides = [fi.stride for fi in feature_info]
        # keep at least the coarsest map, whatever min_stride says
        self.first = next((i for i, st in enumerate(strides) if st >= min_stride), len(strides) - 1)
        self.proj = nn.ModuleList(nn.Conv2d(fi.channels, channels, 1) for fi in feature_info[self.first:])

    def forward(self, features: Sequence[Tensor]) -> Tensor:
        """Fuse ``features`` (as many as ``feature_info`` had, fine to coarse)."""
        features = features[self.first:]
        target = features[0].shape[-2:]
        out = self.proj[0](features[0])
        for proj, x in zip(self.proj[1:], features[1:]):
            out = out + resize(proj(x), target)
        return out


# -- fcn ------------------------------------------------------------------------------------

@dataclass
class FCNOptions:
    """Options of the ``fcn`` head.

    Attributes:
        channels: width of the hidden 3x3 conv (and of the fusion with ``use: all``).
        use: ``all`` (FPN-like sum of the maps of stride >= ``min_stride``, at the finest of
            them: sharp masks) or ``last`` (coarsest map only, classic FCN: cheapest, coarse).
        min_stride: finest stride fused with ``use: all``.
        norm: ``batch``, ``group`` or ``none``.
    """

    channels: int = 64
    use: str = "all"
    min_stride: int = 4
    norm: str = "batch"


class FCNHead(nn.Module):
    """Light FCN-style dense head: ``[fusion] -> conv3x3+norm+ReLU -> conv1x1 -> bilinear
    upsample to size``. Returns raw scores ``[B, out_channels, *size]``."""

    def __init__(self, feature_info, out_channels: int, channels: int = 64, use: str = "all",
                 min_stride: int = 4, norm: str = "batch"):
        super().__init__()
        infos = _infos(feature_info, "fcn")
        _positive(out_channels, "out_channels", "fcn")
        _positive(channels, "channels", "fcn")
        check_norm(norm, "head 'fcn'")
        if use not in ("last", "all"):
            raise ConfigError(f"head 'fcn': use must be 'last' or 'all', got {use!r}")
        self.use = use
        self.fuse = Fusion(infos, channels, min_stride) if use == "all" else None
        cin = channels if use == "all" else infos[-1].channels
        self.conv = conv_norm_relu(cin, channels, norm)
        self.classifier = nn.Conv2d(channels, out_channels, 1)

    def forward(self, features: Sequence[Tensor], size: Sequence[int]) -> Tensor:
        """Scores ``[B, out_channels, *size]``."""
        x = self.fuse(features) if self.fuse is not None else features[-1]
        return resize(self.classifier(self.conv(x)), size)


# -- unet -----------------------------------------------------------------------------------

@dataclass
class UnetOptions:
    """Options of the ``unet`` head.

    Attributes:
        decoder_channels: width of each decoder block, coarse to fine; the first N are used
            for a backbone with N maps (so it needs at least N entries).
        attention: ``null`` or ``scse`` (smp's attention in each decoder block).
        norm: ``batch``, ``group`` or ``none``.
    """

    decoder_channels: list[int] = field(default_factory=lambda: [128, 64, 32, 16, 8])
    attention: Optional[str] = None
    norm: str = "batch"


class UnetHead(nn.Module):
    """U-Net decoder (smp's ``UnetDecoder``) + a 3x3 conv to ``out_channels``.

    Block ``i`` upsamples to the next finer map and concatenates it (skip connection); the
    last block upsamples straight to ``size`` without a skip, so the output has exactly the
    input's size whatever the finest stride (2 for resnet, 4 for convnext).
    """

    def __init__(self, feature_info, out_channels: int, decoder_channels: list[int] | None = None,
                 attention: Optional[str] = None, norm: str = "batch"):
        super().__init__()
        from segmentation_models_pytorch.decoders.unet.decoder import UnetDecoder

        infos = _infos(feature_info, "unet")
        _positive(out_channels, "out_channels", "unet")
        check_norm(norm, "head 'unet'")
        channels = list(decoder_channels) if decoder_channels is not None else [128, 64, 32, 16, 8]
        if len(channels) < len(infos) or any(int(c) < 1 for c in channels):
            raise ConfigError(f"head 'unet': decoder_channels needs {len(infos)} positive widths (one per "
                              f"feature map), got {channels}")
        if attention not in (None, "scse"):
            raise ConfigError(f"head 'unet': attention must be null or 'scse', got {attention!r}")
        channels = channels[: len(infos)]
        # smp's decoder drops the first of its encoder maps (the stride-1 input) and only
        # reads its size: a 0-channel placeholder of the output size plays that part
        self.decoder = convert_norm(UnetDecoder(
            encoder_channels=[0] + [fi.channels for fi in infos],
            decoder_channels=channels,
            n_blocks=len(channels),
            use_norm="batchnorm",
            attention_type=attention,
        ), norm)
        self.classifier = nn.Conv2d(channels[-1], out_channels, 3, padding=1)

    def forward(self, features: Sequence[Tensor], size: Sequence[int]) -> Tensor:
        """Scores ``[B, out_channels, *size]``."""
        first = features[0]
        placeholder = first.new_empty((first.shape[0], 0, *_size(size)))
        return self.classifier(self.decoder([placeholder, *features]))


# -- fpn ------------------------------------------------------------------------------------

@dataclass
class FPNOptions:
    """Options of the ``fpn`` head.

    Attributes:
        pyramid_channels: width of the top-down pyramid.
        segmentation_channels: width of each upsampled level (a multiple of 32: smp uses
            GroupNorm with 32 groups).
        dropout: channel dropout before the classifier.
    """

    pyramid_channels: int = 128
    segmentation_channels: int = 64
    dropout: float = 0.0


class FPNHead(nn.Module):
    """FPN decoder (smp's ``FPNDecoder``) on the four coarsest maps + a 1x1 conv, upsampled to
    ``size``. The four maps must have strides ``s, 2s, 4s, 8s``; at sizes that are not a
    multiple of the coarsest stride the finer maps are resized to exact doublings first
    (smp's top-down path upsamples by exactly 2)."""

    def __init__(self, feature_info, out_channels: int, pyramid_channels: int = 128,
                 segmentation_channels: int = 64, dropout: float = 0.0):
        super().__init__()
        from segmentation_models_pytorch.decoders.fpn.decoder import FPNDecoder

        infos = _infos(feature_info, "fpn")
        _positive(out_channels, "out_channels", "fpn")
        _positive(pyramid_channels, "pyramid_channels", "fpn")
        if len(infos) < 4:
            raise ConfigError(f"head 'fpn' needs at least 4 feature maps, the backbone gives {len(infos)}; "
                              f"use head 'unet' or 'fcn', or a deeper backbone")
        last4 = infos[-4:]
        if any(b.stride != 2 * a.stride for a, b in zip(last4, last4[1:])):
            raise ConfigError(f"head 'fpn' needs its 4 coarsest maps at strides s, 2s, 4s, 8s; got "
                              f"{[fi.stride for fi in last4]}")
        if segmentation_channels < 32 or segmentation_channels % 32:
            raise ConfigError(f"head 'fpn': segmentation_channels must be a multiple of 32, got "
                              f"{segmentation_channels}")
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"head 'fpn': dropout must be in [0, 1), got {dropout}")
        self.decoder = FPNDecoder(
            encoder_channels=[fi.channels for fi in last4],
            encoder_depth=3,  # only the 4 maps above are read
            pyramid_channels=pyramid_channels,
            segmentation_channels=segmentation_channels,
            dropout=dropout,
        )
        self.classifier = nn.Conv2d(self.decoder.out_channels, out_channels, 1)

    def forward(self, features: Sequence[Tensor], size: Sequence[int]) -> Tensor:
        """Scores ``[B, out_channels, *size]``."""
        maps = list(features[-4:])
        h, w = maps[-1].shape[-2:]
        maps = [resize(m, (h * 2 ** (3 - i), w * 2 ** (3 - i))) for i, m in enumerate(maps)]
        return resize(self.classifier(self.decoder(maps)), size)


# -- deeplabv3plus --------------------------------------------------------------------------

@dataclass
class DeepLabV3PlusOptions:
    """Options of the ``deeplabv3plus`` head.

    Attributes:
        channels: width of the ASPP and of the decoder.
        atrous_rates: dilation rates of the three ASPP branches.
        dropout: dropout inside the ASPP.
        norm: ``batch``, ``group`` or ``none``.
    """

    channels: int = 128
    atrous_rates: list[int] = field(default_factory=lambda: [12, 24, 36])
    dropout: float = 0.5
    norm: str = "batch"


class DeepLabV3PlusHead(nn.Module):
    """DeepLabV3+ decoder from smp's ``DeepLabV3PlusDecoder``: ASPP on the coarsest map,
    upsampled to the high-resolution map (the one at stride 4, or the nearest to it) and
    fused with it, then a 1x1 conv upsampled to ``size``.

    Its ASPP image-pooling branch uses batch norm on a 1x1 map, so training with
    ``norm: batch`` needs batches of at least 2 images.
    """

    def __init__(self, feature_info, out_channels: int, channels: int = 128,
                 atrous_rates: list[int] | None = None, dropout: float = 0.5, norm: str = "batch"):
        super().__init__()
        from segmentation_models_pytorch.decoders.deeplabv3.decoder import DeepLabV3PlusDecoder

        infos = _infos(feature_info, "deeplabv3plus")
        _positive(out_channels, "out_channels", "deeplabv3plus")
        _positive(channels, "channels", "deeplabv3plus")
        check_norm(norm, "head 'deeplabv3plus'")
        rates = list(atrous_rates) if atrous_rates is not None else [12, 24, 36]
        if len(rates) != 3 or any(int(r) < 1 for r in rates):
            raise ConfigError(f"head 'deeplabv3plus': atrous_rates must be 3 positive ints, got {rates}")
        if len(infos) < 2:
            raise ConfigError("head 'deeplabv3plus' needs at least 2 feature maps (a fine and a coarse one)")
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"head 'deeplabv3plus': dropout must be in [0, 1), got {dropout}")
        fine = infos[:-1]
        self.high = min(range(len(fine)), key=lambda i: (abs(fine[i].stride - 4), -fine[i].stride))
        # smp reads channels [-1] (ASPP input) and [2] (high-res skip) of its encoder list
        decoder = DeepLabV3PlusDecoder(
            encoder_channels=[0, 0, infos[self.high].channels, infos[-1].channels],
            encoder_depth=3, out_channels=channels, atrous_rates=tuple(int(r) for r in rates),
            output_stride=16, aspp_separable=True, aspp_dropout=dropout,
        )
        # its fixed-factor upsampling assumes a dilated encoder: resize to the skip instead
        del decoder.up
        self.decoder = convert_norm(decoder, norm)
        self.classifier = nn.Conv2d(channels, out_channels, 1)

    def forward(self, features: Sequence[Tensor], size: Sequence[int]) -> Tensor:
        """Scores ``[B, out_channels, *size]``."""
        high = features[self.high]
        x = resize(self.decoder.aspp(features[-1]), high.shape[-2:])
        x = self.decoder.block2(torch.cat([x, self.decoder.block1(high)], dim=1))
        return resize(self.classifier(x), size)


# -- dense (depth) --------------------------------------------------------------------------

@dataclass
class DenseOptions:
    """Options of the ``dense`` regression head.

    Attributes:
        channels: width of the fusion and of the hidden conv.
        activation: output activation: ``softplus`` (default: strictly positive and smooth,
            right for depth), ``relu``, ``exp``, ``sigmoid`` (values in (0, 1)) or ``none``.
        min_stride: finest backbone stride fused (see :class:`Fusion`).
        norm: ``batch``, ``group`` or ``none``.
    """

    channels: int = 64
    activation: str = "softplus"
    min_stride: int = 4
    norm: str = "batch"


_ACT = {"none": lambda x: x, "relu": F.relu, "softplus": F.softplus, "sigmoid": torch.sigmoid,
        "exp": torch.exp}


class DenseHead(nn.Module):
    """Dense regression head (depth, ...): fusion of all maps at the finest resolution ->
    conv3x3+norm+ReLU -> conv1x1 -> bilinear upsample -> activation.

    Unlike the other dense heads it returns the prediction itself, not raw scores. Its
    default ``softplus`` keeps depth strictly positive while its gradient never vanishes
    (``relu`` can die at 0, ``exp`` can overflow early in training).
    """

    def __init__(self, feature_info, out_channels: int, channels: int = 64, activation: str = "softplus",
                 min_stride: int = 4, norm: str = "batch"):
        super().__init__()
        infos = _infos(feature_info, "dense")
        _positive(out_channels, "out_channels", "dense")
        _positive(channels, "channels", "dense")
        check_norm(norm, "head 'dense'")
        if activation not in _ACT:
            raise ConfigError(f"head 'dense': activation must be one of {', '.join(ACTIVATIONS)}, "
                              f"got {activation!r}")
        self.activation = activation
        self.fuse = Fusion(infos, channels, min_stride)
        self.conv = conv_norm_relu(channels, channels, norm)
        self.out = nn.Conv2d(channels, out_channels, 1)

    def forward(self, features: Sequence[Tensor], size: Sequence[int]) -> Tensor:
        """Predictions ``[B, out_channels, *size]`` after the activation."""
        x = resize(self.out(self.conv(self.fuse(features))), size)
        return _ACT[self.activation](x)


# -- normals --------------------------------------------------------------------------------

@dataclass
class NormalsOptions:
    """Options of the ``normals`` head.

    Attributes:
        channels: width of the fusion and of the hidden conv.
        min_stride: finest backbone stride fused (see :class:`Fusion`).
        norm: ``batch``, ``group`` or ``none``.
    """

    channels: int = 64
    min_stride: int = 4
    norm: str = "batch"


class NormalsHead(nn.Module):
    """Surface normal head: like ``dense`` with 3 outputs, L2-normalised per pixel after
    upsampling, so every output pixel is a unit vector (x right, y down, z towards the
    camera, as in :mod:`mtlzoo.data`). ``out_channels`` must be 3."""

    def __init__(self, feature_info, out_channels: int = 3, channels: int = 64, min_stride: int = 4,
                 norm: str = "batch"):
        super().__init__()
        infos = _infos(feature_info, "normals")
        if out_channels != 3:
            raise ConfigError(f"head 'normals' predicts unit 3-vectors: out_channels must be 3, "
                              f"got {out_channels}")
        _positive(channels, "channels", "normals")
        check_norm(norm, "head 'normals'")
        self.fuse = Fusion(infos, channels, min_stride)
        self.conv = conv_norm_relu(channels, channels, norm)
        self.out = nn.Conv2d(channels, 3, 1)

    def forward(self, features: Sequence[Tensor], size: Sequence[int]) -> Tensor:
        """Unit normals ``[B, 3, *size]``."""
        x = resize(self.out(self.conv(self.fuse(features))), size)
        return F.normalize(x, dim=1, eps=1e-6)


# -- boundary -------------------------------------------------------------------------------

@dataclass
class BoundaryOptions:
    """Options of the ``boundary`` head.

    Attributes:
        channels: width of the fusion and of the two hidden convs.
        min_stride: finest backbone stride fused (see :class:`Fusion`).
        norm: ``batch``, ``group`` or ``none``.
    """

    channels: int = 32
    min_stride: int = 2
    norm: str = "batch"


class BoundaryHead(nn.Module):
    """Boundary head: edges need resolution, so every map is fused at the finest map's
    resolution (the finest map enters at full weight, coarser ones add context), then two
    conv3x3+norm+ReLU and a 1x1 conv give raw logits ``[B, out_channels, *size]`` (one
    channel for binary boundaries; the loss applies the sigmoid)."""

    def __init__(self, feature_info, out_channels: int = 1, channels: int = 32, min_stride: int = 2,
                 norm: str = "batch"):
        super().__init__()
        infos = _infos(feature_info, "boundary")
        _positive(out_channels, "out_channels", "boundary")
        _positive(channels, "channels", "boundary")
        check_norm(norm, "head 'boundary'")
        self.fuse = Fusion(infos, channels, min_stride)
        self.conv = nn.Sequential(conv_norm_relu(channels, channels, norm),
                                  conv_norm_relu(channels, channels, norm))
        self.out = nn.Conv2d(channels, out_channels, 1)

    def forward(self, features: Sequence[Tensor], size: Sequence[int]) -> Tensor:
        """Logits ``[B, out_channels, *size]``."""
        return resize(self.out(self.conv(self.fuse(features))), size)


# -- classification -------------------------------------------------------------------------

@dataclass
class ClassificationOptions:
    """Options of the ``classification`` head.

    Attributes:
        pool: ``avg``, ``max`` or ``avgmax`` (both, concatenated).
        hidden: width of an optional hidden layer (Linear + ReLU); 0 for none.
        dropout: dropout before the last Linear.
    """

    pool: str = "avg"
    hidden: int = 0
    dropout: float = 0.0


class ClassificationHead(nn.Module):
    """Image-level head: global pooling of the coarsest map -> [Linear + ReLU] -> dropout ->
    Linear, returning logits ``[B, out_channels]`` (``size`` is ignored).

    The same head serves single-label classification (cross-entropy over the logits) and
    multi-label classification (binary cross-entropy per logit): only the loss differs.
    """

    def __init__(self, feature_info, out_channels: int, pool: str = "avg", hidden: int = 0,
                 dropout: float = 0.0):
        super().__init__()
        infos = _infos(feature_info, "classification")
        _positive(out_channels, "out_channels", "classification")
        if pool not in POOLS:
            raise ConfigError(f"head 'classification': pool must be one of {', '.join(POOLS)}, got {pool!r}")
        if hidden < 0:
            raise ConfigError(f"head 'classification': hidden must be >= 0, got {hidden}")
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"head 'classification': dropout must be in [0, 1), got {dropout}")
        self.pool = pool
        width = infos[-1].channels * (2 if pool == "avgmax" else 1)
        layers: list[nn.Module] = []
        if hidden:
            layers += [nn.Linear(width, hidden), nn.ReLU(inplace=True)]
            width = hidden
        layers += [nn.Dropout(dropout), nn.Linear(width, out_channels)]
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


@hookimpl
def register_heads(register):
    """Register the built-in heads."""
    register("fcn", FCNHead, FCNOptions, "Light FCN: coarsest map (or all, FPN-like) -> conv3x3 -> 1x1")
    register("unet", UnetHead, UnetOptions, "U-Net decoder (smp UnetDecoder) with skips from every map")
    register("fpn", FPNHead, FPNOptions, "FPN decoder (smp FPNDecoder) on the 4 coarsest maps")
    register("deeplabv3plus", DeepLabV3PlusHead, DeepLabV3PlusOptions,
             "DeepLabV3+ decoder (smp): ASPP on the coarsest map + stride-4 skip")
    register("dense", DenseHead, DenseOptions, "Dense regression (depth): fused maps + activation (softplus)")
    register("normals", NormalsHead, NormalsOptions, "Surface normals: 3 channels, unit length per pixel")
    register("boundary", BoundaryHead, BoundaryOptions,
             "Boundary logits from the finest maps fused with coarser ones")
    register("classification", ClassificationHead, ClassificationOptions,
             "Image-level logits from the pooled coarsest map (single- or multi-label)")
