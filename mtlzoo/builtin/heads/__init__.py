"""Built-in task heads.

A head is built by ``factory(feature_info, out_channels, options)`` and called as
``head(features, size)`` with the backbone's feature maps (fine to coarse) and the input's
spatial size. Dense heads return ``[B, out_channels, *size]`` at exactly ``size`` (any size,
not only multiples of 32); ``classification`` returns ``[B, out_channels]``.

==================  ======================  =========================================================
name                targets                 what it is
==================  ======================  =========================================================
``fcn``             any dense kind          light FCN: coarsest map (or an FPN-like sum of all) ->
                                            conv3x3 -> 1x1
``unet``            any dense kind          smp's ``UnetDecoder`` over every map -> conv3x3
``fpn``             any dense kind          smp's ``FPNDecoder`` over the last four maps -> conv1x1
``deeplabv3plus``   any dense kind          smp's ``DeepLabV3PlusDecoder`` (ASPP on the coarsest map +
                                            stride-4 skip)
``dense``           depth                   dense regression: fusion of all maps + an output activation
``normals``         normals                 surface normals: 3 channels, unit length per pixel
``boundary``        boundary                boundary logits from the finest maps fused with coarser ones
``classification``  labels, class           image-level logits from the pooled coarsest map
==================  ======================  =========================================================

("any dense kind": segmentation, boundary, depth, normals.) ``fcn``, ``dense``, ``normals``
and ``boundary`` are one head, :class:`~mtlzoo.builtin.heads.fusion.FusionHead`, with
different options. Dense heads except ``dense`` and ``normals`` return raw scores: the
task's loss applies any activation. Heads with a ``norm`` option accept ``batch`` (default),
``group`` or ``none``; the last two keep no batch statistics.

This module only declares options and registers the heads (no torch or smp is imported);
the modules live in :mod:`.fusion`, :mod:`.unet`, :mod:`.fpn`, :mod:`.deeplabv3plus` and
:mod:`.classification`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional

from ...contract.hooks import hookimpl
from ...contract.layers import Norm
from ...contract.options import option

#: normalisation layers (:func:`mtlzoo.contract.layers.make_norm`)

#: the dense target kinds whose raw scores the generic decoders predict


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

    channels: int = option(64, ge=1, le=8192)
    use: Literal["all", "last"] = "all"
    min_stride: int = option(4, ge=1, le=256)
    norm: Norm = "batch"


@dataclass
class UnetOptions:
    """Options of the ``unet`` head.

    Attributes:
        decoder_channels: width of each decoder block, coarse to fine; the first N are used
            for a backbone with N maps (so it needs at least N entries).
        attention: ``null`` or ``scse`` (smp's attention in each decoder block).
        norm: ``batch``, ``group`` or ``none``.
    """

    decoder_channels: list[int] = option([128, 64, 32, 16, 8], ge=1, le=8192, min_len=1)
    attention: Optional[Literal["scse"]] = None
    norm: Norm = "batch"


@dataclass
class FPNOptions:
    """Options of the ``fpn`` head.

    Attributes:
        pyramid_channels: width of the top-down pyramid.
        segmentation_channels: width of each upsampled level (a multiple of 32: smp uses
            GroupNorm with 32 groups).
        dropout: channel dropout before the classifier.
    """

    pyramid_channels: int = option(128, ge=1, le=8192)
    segmentation_channels: int = option(64, ge=32, le=8192)
    dropout: float = option(0.0, ge=0, lt=1)

    def check(self) -> None:
        """``segmentation_channels`` is a multiple of 32."""
        if self.segmentation_channels % 32:
            raise ValueError(
                f"segmentation_channels: must be a multiple of 32 (smp normalises it with 32 "
                f"groups), got {self.segmentation_channels}"
            )


@dataclass
class DeepLabV3PlusOptions:
    """Options of the ``deeplabv3plus`` head.

    Attributes:
        channels: width of the ASPP and of the decoder.
        atrous_rates: dilation rates of the three ASPP branches.
        dropout: dropout inside the ASPP.
        norm: ``batch``, ``group`` or ``none``.
    """

    channels: int = option(128, ge=1, le=8192)
    atrous_rates: tuple[int, int, int] = option((12, 24, 36), ge=1, le=1024)
    dropout: float = option(0.5, ge=0, lt=1)
    norm: Norm = "batch"


@dataclass
class DenseOptions:
    """Options of the ``dense`` regression head.

    Attributes:
        channels: width of the fusion and of the hidden conv.
        activation: output activation: ``softplus`` (default: strictly positive and smooth,
            right for depth), ``relu``, ``exp``, ``sigmoid`` (values in (0, 1)) or ``none``.
        min_stride: finest backbone stride fused.
        norm: ``batch``, ``group`` or ``none``.
    """

    channels: int = option(64, ge=1, le=8192)
    activation: Literal["none", "relu", "softplus", "sigmoid", "exp"] = "softplus"
    min_stride: int = option(4, ge=1, le=256)
    norm: Norm = "batch"


@dataclass
class NormalsOptions:
    """Options of the ``normals`` head.

    Attributes:
        channels: width of the fusion and of the hidden conv.
        min_stride: finest backbone stride fused.
        norm: ``batch``, ``group`` or ``none``.
    """

    channels: int = option(64, ge=1, le=8192)
    min_stride: int = option(4, ge=1, le=256)
    norm: Norm = "batch"


@dataclass
class BoundaryOptions:
    """Options of the ``boundary`` head.

    Attributes:
        channels: width of the fusion and of the two hidden convs.
        min_stride: finest backbone stride fused.
        norm: ``batch``, ``group`` or ``none``.
    """

    channels: int = option(32, ge=1, le=8192)
    min_stride: int = option(2, ge=1, le=256)
    norm: Norm = "batch"


@dataclass
class ClassificationOptions:
    """Options of the ``classification`` head.

    Attributes:
        pool: ``avg``, ``max`` or ``avgmax`` (both, concatenated).
        hidden: width of an optional hidden layer (Linear + ReLU); 0 for none.
        dropout: dropout before the last Linear.
    """

    pool: Literal["avg", "max", "avgmax"] = "avg"
    hidden: int = option(0, ge=0, le=65536)
    dropout: float = option(0.0, ge=0, lt=1)


@hookimpl
def register_heads(register):
    """Register the built-in heads."""
    pkg = "mtlzoo.builtin.heads"
    register(
        "fcn",
        f"{pkg}.fusion:make_fcn",
        FCNOptions,
        "Light FCN: coarsest map (or all, FPN-like) -> conv3x3 -> 1x1",
        targets=("dense",),
    )
    register(
        "unet",
        f"{pkg}.unet:UnetHead",
        UnetOptions,
        "U-Net decoder (smp UnetDecoder) with skips from every map",
        targets=("dense",),
    )
    register(
        "fpn",
        f"{pkg}.fpn:FPNHead",
        FPNOptions,
        "FPN decoder (smp FPNDecoder) on the 4 coarsest maps",
        targets=("dense",),
    )
    register(
        "deeplabv3plus",
        f"{pkg}.deeplabv3plus:DeepLabV3PlusHead",
        DeepLabV3PlusOptions,
        "DeepLabV3+ decoder (smp): ASPP on the coarsest map + stride-4 skip",
        targets=("dense",),
    )
    register(
        "dense",
        f"{pkg}.fusion:make_dense",
        DenseOptions,
        "Dense regression (depth): fused maps + activation (softplus)",
        targets=("dense",),
    )
    register(
        "normals",
        f"{pkg}.fusion:make_normals",
        NormalsOptions,
        "Surface normals: 3 channels, unit length per pixel",
        targets=("normals",),
    )
    register(
        "boundary",
        f"{pkg}.fusion:make_boundary",
        BoundaryOptions,
        "Boundary logits from the finest maps fused with coarser ones",
        targets=("dense",),
    )
    register(
        "classification",
        f"{pkg}.classification:ClassificationHead",
        ClassificationOptions,
        "Image-level logits from the pooled coarsest map (single- or multi-label)",
        targets=("image",),
    )


__all__ = [
    "FCNOptions",
    "UnetOptions",
    "FPNOptions",
    "DeepLabV3PlusOptions",
    "DenseOptions",
    "NormalsOptions",
    "BoundaryOptions",
    "ClassificationOptions",
    "Norm",
    "register_heads",
]
