"""Built-in multi-task architectures (registration and options; torch-free).

================  =================================================================================
name              what it is
================  =================================================================================
``hps``           hard parameter sharing: one backbone feeding one head per task (the model
                  without ``model.architecture``)
``mtan``          MTAN (Liu, Johns & Davison, CVPR 2019): a shared backbone run stage by stage, a
                  task-specific soft-attention module at every stage; the heads read the attended maps
``cross_stitch``  cross-stitch networks (Misra et al., CVPR 2016): one backbone per task, learned
                  linear combinations of the task networks' maps after every stage
``nddr``          NDDR-CNN (Gao et al., CVPR 2019): one backbone per task, a 1x1 conv + BN + ReLU over
                  the concatenated task maps after every stage
``padnet``        PAD-Net (Xu et al., CVPR 2018): initial per-task predictions (deep supervision),
                  multi-modal distillation with spatial attention, final predictions
``mti_net``       MTI-Net (Vandenhende et al., ECCV 2020): PAD-Net's distillation at every scale,
                  feature propagation from coarse to fine scales, per-scale deep supervision
================  =================================================================================

Each factory is ``factory(parts, options)`` (``factory(parts)`` for ``hps``) and returns a
:class:`mtlzoo.Architecture` (see :mod:`mtlzoo.contract.architecture`). ``mtan``,
``cross_stitch`` and ``nddr`` act between backbone stages and refuse a backbone without
them (``Backbone.staged()``); ``padnet`` and ``mti_net`` read the backbone's maps. ``mtan``,
``padnet`` and ``mti_net`` have a shared representation (``wrt: features`` works);
``cross_stitch`` and ``nddr`` have none (one network per task), so ``wrt: features``
combiners are refused there in one line. docs/architectures.md compares them, with their
parameter counts.

This module only declares options and registers the architectures; they live in
:mod:`.mtan`, :mod:`.stitch` (``cross_stitch`` and ``nddr``) and :mod:`.distill`
(``padnet`` and ``mti_net``), their building blocks in :mod:`.blocks`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional

from ...contract.hooks import hookimpl
from ...contract.layers import Norm
from ...contract.options import option

IMPL = "mtlzoo.builtin.architectures"


@dataclass
class MTANOptions:
    """Options of ``mtan``.

    Attributes:
        design: ``bottleneck`` (default): the authors' MTAN-DeepLabv3/ResNet design, attention
            modules ``1x1 conv (width C/4) -> norm -> ReLU -> 1x1 conv -> norm -> sigmoid`` and
            a residual bottleneck as the feature extractor between stages; ``conv``: the
            paper's SegNet-MTAN, attention width ``C`` and a ``3x3 conv -> norm -> ReLU``
            extractor.
        share_extractors: ``false`` (default): each task has its own extractor between stages,
            so the backbone's maps stay a shared representation (``wrt: features`` works);
            ``true``: one extractor per stage shared by the tasks, as in the reference code
            (fewer parameters, but then shared weights sit between task-specific ones and the
            model has no shared representation).
        norm: the attention modules' and extractors' normalisation: ``batch`` (the paper),
            ``group`` or ``none``.
    """

    design: Literal["bottleneck", "conv"] = "bottleneck"
    share_extractors: bool = False
    norm: Norm = "batch"


@dataclass
class CrossStitchOptions:
    """Options of ``cross_stitch``.

    Attributes:
        alphas: ``layer``: one T x T matrix of scalars per stage (the paper's unit);
            ``channel``: one per channel (Vandenhende et al.'s implementation).
        alpha_self: initial weight of a task's own map (the paper: 0.9).
        alpha_other: initial weight of each other task's map; ``null``: ``(1 - alpha_self) /
            (T - 1)``, so that every initial combination is convex as in the paper's two-task
            ``(0.9, 0.1)`` (Vandenhende et al. use 0.1 for every other task).
    """

    alphas: Literal["layer", "channel"] = "layer"
    alpha_self: float = option(0.9, ge=0, le=1)
    alpha_other: Optional[float] = option(None, ge=0, le=1)


@dataclass
class NDDROptions:
    """Options of ``nddr``.

    Attributes:
        alpha: the paper's diagonal initialisation: weight of the identity block on a task's
            own channels (0.9).
        beta: weight of the identity block on each other task's channels; ``null``: ``(1 -
            alpha) / (T - 1)`` (0.1 for two tasks, as in the paper and Vandenhende et al.).
        norm: normalisation after the 1x1 conv: ``batch`` (the paper, momentum 0.05 as the
            NDDR-CNN code), ``group`` or ``none``.
    """

    alpha: float = option(0.9, ge=0, le=1)
    beta: Optional[float] = option(None, ge=0, le=1)
    norm: Norm = "batch"


@dataclass
class PADNetOptions:
    """Options of ``padnet``.

    Attributes:
        channels: width of every task's intermediate features (Vandenhende et al.: 256).
        min_stride: PAD-Net works at the finest backbone stride >= ``min_stride``: the maps of
            stride >= it are resized to that stride and concatenated (the HRNet fusion of
            Vandenhende et al., at stride 4); the coarsest map alone when none is that coarse.
        norm: normalisation of the intermediate branches: ``batch`` (the paper), ``group`` or
            ``none``.
        aux_weight: weight of the initial (deep-supervision) predictions' losses in each
            task's loss: ``L_t = L_t(final) + aux_weight * L_t(initial)`` (1: Vandenhende et
            al.'s PAD-Net loss, which adds both with the task's weight; 0 disables them).
    """

    channels: int = option(256, ge=4, le=8192)
    min_stride: int = option(4, ge=1, le=256)
    norm: Norm = "batch"
    aux_weight: float = option(1.0, ge=0)


@dataclass
class MTINetOptions:
    """Options of ``mti_net``.

    Attributes:
        channels: width of the per-task features at each scale, fine to coarse (one per scale);
            ``null``: the backbone's widths (as the paper on HRNet-18: 18, 36, 72, 144).
            Wide backbones need narrower ones: the feature propagation module convolves the
            concatenation of all tasks' features (T x width channels).
        min_stride: the scales are the backbone maps of stride >= ``min_stride`` (the paper:
            1/4 to 1/32); the coarsest map alone when none is that coarse.
        norm: normalisation inside the modules: ``batch`` (the paper), ``group`` or ``none``.
        aux_weight: weight of the mean of the per-scale initial predictions' losses in each
            task's loss; ``null``: the number of scales, i.e. every scale's loss added with
            weight 1 as in Vandenhende et al.'s MTI-Net loss.
    """

    channels: Optional[list[int]] = option(None, ge=1, le=8192, min_len=1)
    min_stride: int = option(4, ge=1, le=256)
    norm: Norm = "batch"
    aux_weight: Optional[float] = option(None, ge=0)


# -- examples (the conformance kit builds each architecture with these) ----------------------------
def mtan_examples(folder: Path) -> list[dict]:
    """Both designs, shared extractors, a norm without batch statistics."""
    return [{}, {"design": "conv", "share_extractors": True}, {"norm": "group"}]


def cross_stitch_examples(folder: Path) -> list[dict]:
    """Per-stage and per-channel units."""
    return [{}, {"alphas": "channel", "alpha_other": 0.1}]


def nddr_examples(folder: Path) -> list[dict]:
    """Default and an explicit initialisation without batch statistics."""
    return [{}, {"alpha": 0.8, "beta": 0.2, "norm": "none"}]


def padnet_examples(folder: Path) -> list[dict]:
    """A narrow PAD-Net on the kit's stride-4 and stride-8 maps, and one on its finest."""
    return [{"channels": 8}, {"channels": 4, "min_stride": 1, "norm": "group"}]


def mti_net_examples(folder: Path) -> list[dict]:
    """Two scales at the backbone's widths, and three narrow ones."""
    return [{}, {"channels": [4, 4, 8], "min_stride": 1, "norm": "none", "aux_weight": 0.5}]


@hookimpl
def register_architectures(register):
    """Register the built-in architectures."""
    register("hps", f"{IMPL}.hps:make_hps", None, "Hard parameter sharing: one backbone, one head per task")
    register(
        "mtan",
        f"{IMPL}.mtan:MTAN",
        MTANOptions,
        "MTAN (Liu et al. 2019): task-specific soft attention over a shared backbone's stages",
        examples=mtan_examples,
    )
    register(
        "cross_stitch",
        f"{IMPL}.stitch:CrossStitch",
        CrossStitchOptions,
        "Cross-stitch networks (Misra et al. 2016): one backbone per task, learned mixing after each stage",
        examples=cross_stitch_examples,
    )
    register(
        "nddr",
        f"{IMPL}.stitch:NDDR",
        NDDROptions,
        "NDDR-CNN (Gao et al. 2019): one backbone per task, 1x1 conv + BN over the concatenated maps",
        examples=nddr_examples,
    )
    register(
        "padnet",
        f"{IMPL}.distill:PADNet",
        PADNetOptions,
        "PAD-Net (Xu et al. 2018): initial predictions, multi-modal distillation, final predictions",
        examples=padnet_examples,
    )
    register(
        "mti_net",
        f"{IMPL}.distill:MTINet",
        MTINetOptions,
        "MTI-Net (Vandenhende et al. 2020): multi-scale distillation with feature propagation",
        examples=mti_net_examples,
    )


__all__ = [
    "register_architectures",
    "MTANOptions",
    "CrossStitchOptions",
    "NDDROptions",
    "PADNetOptions",
    "MTINetOptions",
]
