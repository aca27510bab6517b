"""Built-in backbones: ``timm`` (any timm model), ``smp`` (any smp encoder) and ``cnn``.

Every backbone is a :class:`mtlzoo.Backbone` whose ``forward(images)`` returns a list of
feature maps ordered fine to coarse, with ``feature_info`` (channels and stride of each
map), ``input_mean``/``input_std`` (what its weights expect) and ``size_divisor`` (see
:func:`mtlzoo.contract.hooks.register_backbones`):

=======  =======================================  ====================================
name     input_mean / input_std                   size_divisor
=======  =======================================  ====================================
timm     timm's ``pretrained_cfg`` with weights   largest stride of ``feature_info``
smp      ImageNet's (``tu-``: timm's) with        largest stride of ``feature_info``
         weights
cnn      ``None``                                 1
=======  =======================================  ====================================

Without a ``weights`` file (random init) the statistics are ``None``: the model normalises
with the dataset's own.

mtlzoo never downloads weights. ``pretrained: true`` only states that pretrained weights
are wanted; they come from a local file named by ``weights`` (``.safetensors``, or
``.pth``/``.pt``/``.bin`` read with ``torch.load(weights_only=True)``, see
:mod:`mtlzoo.runtime.weights`).

This module only declares options and registers the backbones (no torch, timm or smp is
imported); the modules live in :mod:`.timm`, :mod:`.smp` and :mod:`.cnn`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from ...contract.hooks import hookimpl
from ...contract.layers import Norm
from ...contract.options import option

NO_DOWNLOAD = "mtlzoo never downloads weights: download them yourself and set model.backbone.weights: /path"

#: normalisation layers (:func:`mtlzoo.contract.layers.make_norm`)


def _no_download(pretrained: bool, weights: Optional[str]) -> None:
    if pretrained and not weights:
        raise ValueError(f"pretrained: {NO_DOWNLOAD}")


def timm_names() -> list[str]:
    """Every architecture name timm can build (``timm.list_models()``)."""
    import timm

    return timm.list_models()


def smp_names() -> list[str]:
    """Encoder names smp builds (``smp.encoders.get_encoder_names()``); any timm model also
    works as ``tu-<timm name>``."""
    from segmentation_models_pytorch.encoders import get_encoder_names

    return list(get_encoder_names())


@dataclass
class TimmOptions:
    """Options of the ``timm`` backbone.

    Attributes:
        arch: any name of ``timm.list_models()`` (``mtlzoo list backbone 'timm:*convnext*'``).
        pretrained: pretrained weights are wanted; they must come from ``weights`` (mtlzoo
            never downloads), so ``pretrained: true`` alone is an error.
        weights: local weights file: either timm's own checkpoint of the classifier model
            (as published, ``model.safetensors``) or a state dict of the features model.
        out_indices: which feature levels to return (timm's default: all, usually 0..4).
        drop_path_rate: stochastic depth rate, for architectures that support it.
    """

    arch: str = "resnet18"
    pretrained: bool = False
    weights: Optional[str] = None
    out_indices: Optional[list[int]] = option(None, min_len=1)
    drop_path_rate: float = option(0.0, ge=0, lt=1)

    def check(self) -> None:
        """``pretrained: true`` needs a local ``weights`` file."""
        _no_download(self.pretrained, self.weights)


@dataclass
class SmpOptions:
    """Options of the ``smp`` backbone.

    Attributes:
        arch: an smp encoder name (``mtlzoo list backbone 'smp:*'``), or ``tu-<timm name>``.
        depth: number of downsampling stages, 1..5 (maps at strides 2 .. 2**depth).
        weights: local weights file holding a state dict of the smp encoder.
        pretrained: pretrained weights are wanted; they must come from ``weights``.
    """

    arch: str = "resnet18"
    depth: int = option(5, ge=1, le=5)
    weights: Optional[str] = None
    pretrained: bool = False

    def check(self) -> None:
        """``pretrained: true`` needs a local ``weights`` file."""
        _no_download(self.pretrained, self.weights)


@dataclass
class CNNOptions:
    """Options of the ``cnn`` backbone.

    Attributes:
        channels: width of each stage; stage ``i`` halves the resolution (stride ``2**(i+1)``).
        norm: ``batch``, ``group`` or ``none`` (the last two keep no batch statistics).
    """

    channels: list[int] = option([16, 32, 64, 128], ge=1, min_len=1)
    norm: Norm = "batch"


@hookimpl
def register_backbones(register):
    """Register ``timm``, ``smp`` and ``cnn``."""
    register(
        "timm",
        "mtlzoo.builtin.backbones.timm:TimmBackbone",
        TimmOptions,
        "Any timm model as a feature extractor (features_only); arch: resnet18, convnext_atto ...",
        variants=timm_names,
    )
    register(
        "smp",
        "mtlzoo.builtin.backbones.smp:SmpBackbone",
        SmpOptions,
        "Any segmentation-models-pytorch encoder (or tu-<timm name>); arch: resnet18 ...",
        variants=smp_names,
    )
    register(
        "cnn",
        "mtlzoo.builtin.backbones.cnn:CNNBackbone",
        CNNOptions,
        "Small plain CNN (conv3x3 s2 + conv3x3 per stage) for tests and quick demos",
    )


__all__ = [
    "TimmOptions",
    "SmpOptions",
    "CNNOptions",
    "NO_DOWNLOAD",
    "Norm",
    "timm_names",
    "smp_names",
    "register_backbones",
]
