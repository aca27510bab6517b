"""Built-in losses: ``ce``, ``weighted_bce``, ``bce``, ``l1``, ``l2``, ``berhu`` and ``cosine``.

=============  =================  ==========================================================
name           targets            value
=============  =================  ==========================================================
ce             segmentation,      softmax cross-entropy, mean over the non-ignored targets
               class              (weighted by class when ``class_weights: dataset``)
weighted_bce   boundary           class-balanced BCE on logits (HED), summed over the valid
                                  pixels and divided by their number
bce            labels             BCE on logits, mean over images and labels
l1             depth              mean ``|pred - gt|`` over valid pixels (``gt > 0``)
l2             depth              mean ``(pred - gt)**2`` over valid pixels
berhu          depth              reverse Huber over valid pixels, ``c = 0.2 max|pred - gt|``
cosine         normals            mean ``1 - cos(pred, gt)`` over pixels with a normal
=============  =================  ==========================================================

Each factory is ``factory(task: TaskInfo, options)`` (``factory(task)`` for the losses
without options) and returns an ``nn.Module`` whose ``forward(pred, target)`` returns a
scalar. ``pred`` is the raw head output (logits for classification-like tasks) and
``target`` follows the target kinds of :mod:`mtlzoo.contract.data`. Pixels without a valid
target (void, unknown boundary, no depth, no normal) are skipped; a batch with no valid
pixel gives a loss of 0 that still has a gradient (of zeros), so a training step never sees
NaN because of an empty crop.

This module only declares options and registers the losses; the modules live in
:mod:`mtlzoo.builtin.losses.impl`, imported (with torch) when a loss is first built.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional

from ...contract.hooks import hookimpl
from ...contract.options import option

_IMPL = "mtlzoo.builtin.losses.impl"


@dataclass
class CrossEntropyOptions:
    """Options of ``ce``.

    Attributes:
        class_weights: ``"none"`` or ``"dataset"`` (per-class weights the dataset offers,
            e.g. median frequency balancing; an error if it offers none).
        label_smoothing: amount of label smoothing in [0, 1).
    """

    class_weights: Literal["none", "dataset"] = "none"
    label_smoothing: float = option(0.0, ge=0, lt=1)


@dataclass
class WeightedBCEOptions:
    """Options of ``weighted_bce``.

    Attributes:
        pos_weight: fixed weight ``beta`` in [0, 1] of the boundary pixels (non-boundary
            pixels get ``1 - beta``), instead of the batch's fraction of non-boundary pixels.
    """

    pos_weight: Optional[float] = option(None, ge=0, le=1, help="boundary share of the weight, e.g. 0.95")


@dataclass
class BCEOptions:
    """Options of ``bce``.

    Attributes:
        pos_weight: factor (> 0) on the loss of positive labels, negatives keep weight 1
            (PyTorch's ``pos_weight``); ``None`` weighs both alike.
    """

    pos_weight: Optional[float] = option(None, gt=0)


@hookimpl
def register_losses(register):
    """Register the built-in losses."""
    register(
        "ce",
        f"{_IMPL}:make_ce",
        CrossEntropyOptions,
        "Cross-entropy for segmentation or single-label classes (ignore_index, class weights)",
        targets=("segmentation", "class"),
    )
    register(
        "weighted_bce",
        f"{_IMPL}:make_weighted_bce",
        WeightedBCEOptions,
        "Class-balanced BCE on logits for boundary maps (HED), ignored pixels skipped",
        targets=("boundary",),
    )
    register(
        "bce",
        f"{_IMPL}:make_bce",
        BCEOptions,
        "BCE on logits for multi-label image labels",
        targets=("labels",),
    )
    register(
        "l1",
        f"{_IMPL}:make_l1",
        None,
        "Mean absolute error over valid depth pixels (target > 0)",
        targets=("depth",),
    )
    register(
        "l2",
        f"{_IMPL}:make_l2",
        None,
        "Mean squared error over valid depth pixels (target > 0)",
        targets=("depth",),
    )
    register(
        "berhu",
        f"{_IMPL}:make_berhu",
        None,
        "Reverse Huber loss over valid depth pixels (target > 0)",
        targets=("depth",),
    )
    register(
        "cosine",
        f"{_IMPL}:make_cosine",
        None,
        "1 - cosine similarity over valid surface-normal pixels",
        targets=("normals",),
    )


__all__ = ["CrossEntropyOptions", "WeightedBCEOptions", "BCEOptions", "register_losses"]
