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
``mmoe``          MMoE (Ma et al., KDD 2018): shared conv experts on the backbone's maps, one
                  softmax gate per task (pooled or per pixel)
``cgc``           CGC (Tang et al., RecSys 2020): shared and task-specific experts, a gate per task
``ple``           PLE (Tang et al., RecSys 2020): stacked CGC levels with a shared path and gates
``dselect_k``     DSelect-k (Hazimeh et al., NeurIPS 2021): MMoE with sparse differentiable
                  k-expert gates, whose regulariser joins each task's loss
``ltb``           Learning to Branch (Guo et al., ICML 2020): a tree of conv blocks whose parents
                  are Gumbel-sampled in training, the argmax path at evaluation
``lora``          per-task LoRA (Hu et al., ICLR 2022) on a frozen shared encoder
================  =================================================================================

Each factory is ``factory(parts, options)`` (``factory(parts)`` for ``hps``) and returns a
:class:`mtlzoo.Architecture` (see :mod:`mtlzoo.contract.architecture`). ``mtan``,
``cross_stitch`` and ``nddr`` act between backbone stages and refuse a backbone without
them (``Backbone.staged()``); ``padnet`` and ``mti_net`` read the backbone's maps. ``mtan``,
``padnet`` and ``mti_net`` have a shared representation (``wrt: features`` works);
``cross_stitch`` and ``nddr`` have none (one network per task), so ``wrt: features``
combiners are refused there in one line. docs/architectures.md compares them, with their
parameter counts.

The mixture-of-experts family (``mmoe``, ``cgc``, ``ple``, ``dselect_k``, ``ltb``) reads the
backbone's maps, so any backbone and input size work; its shared representation is the
backbone's maps and the shared experts' outputs. ``lora`` runs the frozen encoder once per task
and has no shared representation.

This module only declares options and registers the architectures; they live in
:mod:`.mtan`, :mod:`.stitch` (``cross_stitch`` and ``nddr``), :mod:`.distill` (``padnet`` and
``mti_net``), :mod:`.moe` (``mmoe``, ``cgc``, ``ple``, ``dselect_k``), :mod:`.branch` (``ltb``)
and :mod:`.lora`, their building blocks in :mod:`.blocks` and :mod:`.experts`.
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


#: how a mixture-of-experts gate sees the maps: one weight per expert per image, or per position
GateMode = Literal["pooled", "pixel"]


@dataclass
class ExpertOptions:
    """Options every expert-based architecture (``mmoe``, ``cgc``, ``ple``, ``dselect_k``,
    ``ltb``) has.

    Attributes:
        min_stride: the experts act on the backbone maps of stride >= ``min_stride`` (the
            coarsest map alone when none is that coarse); finer maps reach the heads as the
            backbone gives them.
        reduction: an expert is a residual bottleneck block per chosen map, ``1x1 -> 3x3 ->
            1x1`` through ``C / reduction`` channels (``C`` the map's).
        norm: the experts' normalisation: ``batch``, ``group`` or ``none``.
    """

    min_stride: int = option(8, ge=1, le=256)
    reduction: int = option(4, ge=1, le=1024)
    norm: Norm = "batch"


@dataclass
class GatedOptions(ExpertOptions):
    """:class:`ExpertOptions` plus the gates' input.

    Attributes:
        gate: ``pooled``: each gate reads the chosen maps averaged over space and gives one
            weight per expert per image (the papers' per-example gates); ``pixel``: a 1x1 conv
            per map gives one weight per expert per position.
    """

    gate: GateMode = "pooled"


@dataclass
class MMoEOptions(GatedOptions):
    """Options of ``mmoe`` (and :class:`GatedOptions`).

    Attributes:
        experts: number of experts, shared by every task.
    """

    experts: int = option(4, ge=1, le=256)


@dataclass
class DSelectKOptions(GatedOptions):
    """Options of ``dselect_k`` (and :class:`GatedOptions`).

    Attributes:
        experts: number of experts, shared by every task.
        k: number of single-expert selectors per gate (LibMTL's ``num_nonzeros``): each task
            ends up using at most ``k`` experts.
        gamma: width of the smooth-step (LibMTL's ``kgamma``).
        entropy_reg: weight of the selectors' entropy in each task's loss (LibMTL's 1e-6).
    """

    experts: int = option(4, ge=2, le=256)
    k: int = option(2, ge=1, le=256)
    gamma: float = option(1.0, gt=0)
    entropy_reg: float = option(1e-6, ge=0)


@dataclass
class CGCOptions(GatedOptions):
    """Options of ``cgc`` (and :class:`GatedOptions`).

    Attributes:
        shared_experts: number of experts shared by every task.
        task_experts: number of experts of each task.
    """

    shared_experts: int = option(2, ge=1, le=256)
    task_experts: int = option(1, ge=1, le=256)


@dataclass
class PLEOptions(CGCOptions):
    """Options of ``ple`` (and :class:`CGCOptions`).

    Attributes:
        levels: number of stacked extraction levels (1 is CGC).
    """

    levels: int = option(2, ge=1, le=64)


@dataclass
class LTBOptions(ExpertOptions):
    """Options of ``ltb`` (and :class:`ExpertOptions`).

    Attributes:
        layers: number of branching layers after the backbone (the last has one block per task).
        branches: blocks per inner layer; ``null``: one per task.
        tau: Gumbel-softmax temperature of the parent sampling in training.
        tau_decay_steps: ``null``: constant ``tau``; else ``tau / sqrt(1 + step /
            tau_decay_steps)`` (LibMTL's ``1/sqrt(epoch)`` decay with ``tau_decay_steps`` steps
            per epoch).
        warmup_steps: training steps during which every block reads the mean of all its
            possible parents (before any sampling).
    """

    layers: int = option(2, ge=1, le=64)
    branches: Optional[int] = option(None, ge=1, le=256)
    tau: float = option(1.0, gt=0)
    tau_decay_steps: Optional[int] = option(None, ge=1, le=1_000_000_000)
    warmup_steps: int = option(0, ge=0, le=1_000_000_000)


@dataclass
class LoRAOptions:
    """Options of ``lora``.

    Attributes:
        rank: rank of each task's low-rank update of every adapted layer.
        alpha: the updates are scaled by ``alpha / rank``; ``null``: ``alpha = rank`` (scale 1).
        targets: shell patterns of the backbone's module names to adapt (its linear layers
            and plain convs among them), e.g. ``["*attn.qkv", "*attn.proj"]``; default every one.
        shared_rank: rank of a low-rank update shared by all tasks, added to every adapted
            layer (MTLoRA's task-agnostic module); 0: none.
        trainable: shell patterns of backbone parameter names that stay trainable (shared);
            the rest of the backbone is frozen. Default: a ViT's feature pyramid, which is new.
        freeze_norm: keep the frozen BatchNorm layers' running statistics as loaded.
    """

    rank: int = option(8, ge=1, le=4096)
    alpha: Optional[float] = option(None, gt=0)
    targets: list[str] = option(["*"], min_len=1)
    shared_rank: int = option(0, ge=0, le=4096)
    trainable: list[str] = option(["pyramid.*"])
    freeze_norm: bool = True


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


def mmoe_examples(folder: Path) -> list[dict]:
    """Experts on the kit's coarsest map, and on every map with per-pixel gates."""
    return [{"experts": 3}, {"experts": 2, "min_stride": 1, "gate": "pixel", "norm": "none"}]


def dselect_k_examples(folder: Path) -> list[dict]:
    """A power of two of experts, and three (the regulariser's non-existent-expert term), per pixel."""
    return [{"experts": 4}, {"experts": 3, "k": 1, "min_stride": 1, "gate": "pixel", "entropy_reg": 0.1}]


def cgc_examples(folder: Path) -> list[dict]:
    """Default and per-pixel gates on every map."""
    return [{}, {"shared_experts": 1, "task_experts": 2, "min_stride": 1, "gate": "pixel"}]


def ple_examples(folder: Path) -> list[dict]:
    """Two levels, three levels per pixel, and one level (CGC)."""
    return [{}, {"levels": 3, "min_stride": 1, "gate": "pixel", "norm": "group"}, {"levels": 1}]


def ltb_examples(folder: Path) -> list[dict]:
    """Two layers, three with two branches and warm-up, and a single layer."""
    return [{}, {"layers": 3, "branches": 2, "min_stride": 1, "warmup_steps": 1}, {"layers": 1}]


def lora_examples(folder: Path) -> list[dict]:
    """The defaults at rank 2 (no shared parameter at all: the encoder is frozen), every layer
    with a shared update, and the kit backbone's last conv with a trainable first stage."""
    return [
        {"rank": 2},
        {"rank": 2, "shared_rank": 1},
        {"rank": 1, "targets": ["blocks.2.*"], "trainable": ["blocks.0.*"]},
    ]


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
    register(
        "mmoe",
        f"{IMPL}.moe:MMoE",
        MMoEOptions,
        "MMoE (Ma et al. 2018): shared conv experts on the backbone's maps, one softmax gate per task",
        examples=mmoe_examples,
    )
    register(
        "cgc",
        f"{IMPL}.moe:CGC",
        CGCOptions,
        "CGC (Tang et al. 2020): shared and task-specific conv experts, one gate per task",
        examples=cgc_examples,
    )
    register(
        "ple",
        f"{IMPL}.moe:PLE",
        PLEOptions,
        "PLE (Tang et al. 2020): stacked CGC levels with a shared path and shared gates",
        examples=ple_examples,
    )
    register(
        "dselect_k",
        f"{IMPL}.moe:DSelectK",
        DSelectKOptions,
        "DSelect-k (Hazimeh et al. 2021): MMoE with sparse differentiable k-expert gates",
        examples=dselect_k_examples,
    )
    register(
        "ltb",
        f"{IMPL}.branch:LTB",
        LTBOptions,
        "Learning to Branch (Guo et al. 2020): Gumbel-sampled tree of conv blocks, argmax path at evaluation",
        examples=ltb_examples,
    )
    register(
        "lora",
        f"{IMPL}.lora:LoRA",
        LoRAOptions,
        "Per-task LoRA (Hu et al. 2022) on a frozen shared encoder: low-rank updates of its linear and conv layers",
        examples=lora_examples,
    )


__all__ = [
    "register_architectures",
    "MTANOptions",
    "CrossStitchOptions",
    "NDDROptions",
    "PADNetOptions",
    "MTINetOptions",
    "ExpertOptions",
    "GatedOptions",
    "MMoEOptions",
    "DSelectKOptions",
    "CGCOptions",
    "PLEOptions",
    "LTBOptions",
    "LoRAOptions",
]
