"""The plugin module named by this package's ``mtlzoo`` entry point: registration only.

It imports nothing heavy (no torch): the parts are registered as ``"module:attribute"``
strings and :mod:`mtlzoo_example.parts` is imported only when a part is first built, so
``mtlzoo list`` stays fast with this package installed. It uses only mtlzoo's public API.
"""

from __future__ import annotations

from dataclasses import dataclass

from mtlzoo import hookimpl, option

PARTS = "mtlzoo_example.parts"


@dataclass
class TinyConvNetOptions:
    """Options of ``tiny_convnet``.

    Attributes:
        width: channels of the first stage (the next two double it).
    """

    width: int = option(8, ge=1)


@dataclass
class TinyHeadOptions:
    """Options of ``tiny_head``.

    Attributes:
        hidden: width of the hidden 1x1 conv.
    """

    hidden: int = option(16, ge=1)


@dataclass
class StripesOptions:
    """Options of ``stripes``.

    Attributes:
        size: image size ``[H, W]``.
        length: samples per split.
        seed: base seed; sample ``i`` depends only on ``(seed, split, i)``.
    """

    size: tuple[int, int] = option((32, 32), ge=4)
    length: int = option(64, ge=1)
    seed: int = option(0, ge=0)


@dataclass
class SoftDiceOptions:
    """Options of ``soft_dice``.

    Attributes:
        smooth: added to numerator and denominator (keeps empty masks finite).
    """

    smooth: float = option(1.0, gt=0)


@dataclass
class SaliencyTaskOptions:
    """Options of the ``saliency`` task type.

    Attributes:
        background: with ``from: <mask>``, the class index that is not salient.
    """

    background: int = option(0, ge=0)


@dataclass
class TaskAdaptersOptions:
    """Options of ``task_adapters``.

    Attributes:
        rank: rank of each task's residual adapter on every feature map.
    """

    rank: int = option(4, ge=1)


@hookimpl
def register_architectures(register):
    """Register ``task_adapters``."""
    register(
        "task_adapters",
        f"{PARTS}:TaskAdapters",
        TaskAdaptersOptions,
        "Per-task low-rank residual adapters on a shared backbone, from mtlzoo-example",
    )


@hookimpl
def register_backbones(register):
    """Register ``tiny_convnet``."""
    register(
        "tiny_convnet", f"{PARTS}:TinyConvNet", TinyConvNetOptions, "Three-stage CNN from mtlzoo-example"
    )


@hookimpl
def register_heads(register):
    """Register ``tiny_head``."""
    register(
        "tiny_head",
        f"{PARTS}:TinyHead",
        TinyHeadOptions,
        "1x1-conv head from mtlzoo-example",
        targets=("segmentation", "saliency"),
    )


@hookimpl
def register_losses(register):
    """Register ``soft_dice``."""
    register(
        "soft_dice",
        f"{PARTS}:SoftDiceLoss",
        SoftDiceOptions,
        "Soft Dice loss on saliency logits",
        targets=("saliency",),
    )


@hookimpl
def register_metrics(register):
    """Register ``saliency_mae``."""
    register(
        "saliency_mae",
        f"{PARTS}:SaliencyMAE",
        None,
        "Mean absolute error of saliency probabilities",
        targets=("saliency",),
    )


@hookimpl
def register_combiners(register):
    """Register ``max_weighted``."""
    register("max_weighted", f"{PARTS}:MaxWeighted", None, "Loss-share weighting from mtlzoo-example")


@hookimpl
def register_datasets(register):
    """Register ``stripes``."""
    register(
        "stripes", f"{PARTS}:Stripes", StripesOptions, "Coloured stripes (segmentation) from mtlzoo-example"
    )


@hookimpl
def register_tasks(register):
    """Register ``saliency`` (learnable from a saliency target, or derived from a segmentation mask)."""
    register(
        "saliency",
        f"{PARTS}:saliency_task",
        SaliencyTaskOptions,
        "Foreground saliency, derivable from a segmentation mask (from mtlzoo-example)",
    )


@hookimpl
def register_target_kinds(register):
    """Register the ``saliency`` target kind."""
    register("saliency", f"{PARTS}:saliency_kind", None, "float32 [1,H,W] foreground map in {0, 1}")
