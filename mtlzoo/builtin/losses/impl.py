"""The built-in loss modules and their factories (options in :mod:`mtlzoo.builtin.losses`).

Every factory is ``factory(task: TaskInfo, options)``, or ``factory(task)`` for a loss
without options, and returns an ``nn.Module`` whose ``forward(pred, target)`` returns a
scalar. Checks that need the task (the dataset's class weights) raise
:class:`~mtlzoo.ConfigError` naming the loss and the task.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...contract.errors import ConfigError
from ...contract.tasks import TaskInfo
from . import BCEOptions, CrossEntropyOptions, WeightedBCEOptions

# smallest denominator used for weighted means; real weight sums are far larger
_TINY = 1e-12


def _dense_target(pred: Tensor, target: Tensor, what: str) -> Tensor:
    """Return ``target`` shaped like ``pred`` (``[B,H,W]`` gains its channel axis) or raise."""
    if target.dim() == pred.dim() - 1 and pred.dim() == 4 and pred.shape[1] == 1:
        target = target.unsqueeze(1)
    if target.shape != pred.shape:
        raise ValueError(
            f"{what}: prediction {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape; "
            f"the head must predict at the target's resolution"
        )
    return target


def _masked_mean(values: Tensor, valid: Tensor) -> Tensor:
    """Mean of ``values`` over ``valid``; 0 (with a zero gradient) when nothing is valid."""
    # torch.where, not a product: invalid entries may hold NaN/inf that must not leak
    total = torch.where(valid, values, torch.zeros((), dtype=values.dtype, device=values.device)).sum()
    return total / valid.sum().clamp_min(1)


# -- cross-entropy --------------------------------------------------------------------------
class CrossEntropyLoss(nn.Module):
    """Softmax cross-entropy for segmentation (``[B,C,H,W]`` vs ``[B,H,W]``) and single-label
    classification (``[B,C]`` vs ``[B]``).

    Targets equal to ``ignore_index`` (``None``: none) are skipped. The mean is over the
    non-ignored targets, weighted by their class weight when ``weight`` is given (as PyTorch
    does); a batch whose targets are all ignored gives 0.
    """

    def __init__(self, ignore_index: int | None, weight: Tensor | None, label_smoothing: float):
        super().__init__()
        # -100 is PyTorch's "ignore nothing real" default
        self.ignore_index = -100 if ignore_index is None else int(ignore_index)
        self.label_smoothing = float(label_smoothing)
        self.register_buffer("weight", None if weight is None else weight.detach().float().clone())

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        """Mean cross-entropy over the non-ignored targets."""
        if target.dim() == pred.dim() and target.shape[1] == 1:  # [B,1,H,W] masks
            target = target[:, 0]
        target = target.long()
        if target.shape != (pred.shape[0], *pred.shape[2:]):
            raise ValueError(
                f"ce: prediction {tuple(pred.shape)} needs a target of shape "
                f"{(pred.shape[0], *pred.shape[2:])}, got {tuple(target.shape)}"
            )
        pred = pred.float()
        weight = None if self.weight is None else self.weight.to(pred.device)
        total = F.cross_entropy(
            pred,
            target,
            weight=weight,
            ignore_index=self.ignore_index,
            reduction="sum",
            label_smoothing=self.label_smoothing,
        )
        # sum / (weighted) count equals PyTorch's mean, but is 0 instead of NaN when all are ignored
        valid = target != self.ignore_index
        if weight is None:
            denom = valid.sum().to(total.dtype)
        else:
            w = weight[target.clamp(0, weight.numel() - 1)]
            denom = torch.where(valid, w, torch.zeros_like(w)).sum()
        return total / denom.clamp_min(_TINY)


def make_ce(task: TaskInfo, options: CrossEntropyOptions) -> CrossEntropyLoss:
    """Build ``ce`` for a segmentation or class task; ``class_weights: dataset`` needs one
    weight per class from the dataset."""
    weight = None
    if options.class_weights == "dataset":
        if not task.class_weights:
            raise ConfigError(
                f"loss 'ce' of task {task.name!r}: class_weights='dataset' but the dataset offers no class "
                f"weights for target {task.target!r}; use class_weights: none"
            )
        weight = torch.tensor(task.class_weights, dtype=torch.float32)
        if weight.numel() != task.out_channels:
            raise ConfigError(
                f"loss 'ce' of task {task.name!r}: the dataset gives {weight.numel()} class weights for "
                f"{task.out_channels} classes; use class_weights: none"
            )
    return CrossEntropyLoss(task.ignore_index, weight, options.label_smoothing)


# -- boundary: class-balanced BCE -----------------------------------------------------------
class WeightedBCELoss(nn.Module):
    """Class-balanced binary cross-entropy on logits, for boundary maps (HED, Xie & Tu 2015).

    Over the valid pixels of the batch (target not equal to ``ignore_index``), boundary
    pixels are weighted by ``beta = n_negative / n_valid`` and the others by ``1 - beta``,
    so the rare boundary class is not drowned out; ``pos_weight`` (``None``: the batch's
    fraction) fixes ``beta`` instead. The weighted sum is divided by the number of valid
    pixels (as in Vandenhende et al.'s multi-task benchmark code), so the loss is small when
    boundaries are rare: give the task a larger weight in the combiner rather than expecting
    the scale of ``ce``.
    """

    def __init__(self, ignore_index: int | None, pos_weight: float | None):
        super().__init__()
        self.ignore_index = ignore_index
        self.pos_weight = pos_weight

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        """Balanced BCE averaged over the valid pixels; 0 if there is none."""
        pred = pred.float()
        target = _dense_target(pred, target.float(), "weighted_bce")
        if self.ignore_index is None:
            valid = torch.ones_like(target, dtype=torch.bool)
        else:
            valid = target != float(self.ignore_index)
        pos = valid & (target > 0.5)
        neg = valid & ~pos
        n_valid = valid.sum()
        if self.pos_weight is None:
            beta = neg.sum() / n_valid.clamp_min(1)
        else:
            beta = torch.tensor(float(self.pos_weight), device=pred.device)
        clean = torch.where(valid, target, torch.zeros_like(target))  # ignore values are not probabilities
        bce = F.binary_cross_entropy_with_logits(pred, clean, reduction="none")
        weight = torch.where(pos, beta, torch.where(neg, 1 - beta, torch.zeros_like(beta)))
        return (weight * bce).sum() / n_valid.clamp_min(1)


def make_weighted_bce(task: TaskInfo, options: WeightedBCEOptions) -> WeightedBCELoss:
    """Build ``weighted_bce`` for a boundary task."""
    return WeightedBCELoss(task.ignore_index, options.pos_weight)


# -- multi-label BCE ------------------------------------------------------------------------
class BCELoss(nn.Module):
    """Binary cross-entropy on logits for multi-hot labels ``[B,C]``, mean over all entries;
    ``pos_weight`` (``None``: 1) multiplies the loss of the positive labels."""

    def __init__(self, pos_weight: float | None):
        super().__init__()
        self.pos_weight = pos_weight

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        """Mean BCE over images and labels."""
        pred = pred.float()
        target = target.float()
        if target.shape != pred.shape:
            raise ValueError(
                f"bce: prediction {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape"
            )
        pw = None if self.pos_weight is None else torch.tensor(float(self.pos_weight), device=pred.device)
        return F.binary_cross_entropy_with_logits(pred, target, pos_weight=pw)


def make_bce(task: TaskInfo, options: BCEOptions) -> BCELoss:
    """Build ``bce`` for a multi-label task."""
    return BCELoss(options.pos_weight)


# -- depth regression -----------------------------------------------------------------------
class _DepthLoss(nn.Module):
    """Base of the depth losses: mean of :meth:`pointwise` over pixels with ``target > 0``."""

    name = "depth"

    def pointwise(self, diff: Tensor, valid: Tensor) -> Tensor:  # pragma: no cover - abstract
        """Loss of each pixel from ``diff = pred - target``."""
        raise NotImplementedError

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        """Mean loss over valid pixels (``target > 0``); 0 if there is none."""
        pred = pred.float()
        target = _dense_target(pred, target.float(), self.name)
        valid = target > 0  # also False for NaN
        diff = torch.where(valid, pred - target, torch.zeros_like(pred))
        return _masked_mean(self.pointwise(diff, valid), valid)


class L1Loss(_DepthLoss):
    """Mean absolute error over valid depth pixels."""

    name = "l1"

    def pointwise(self, diff: Tensor, valid: Tensor) -> Tensor:
        """``|d|``."""
        return diff.abs()


class L2Loss(_DepthLoss):
    """Mean squared error over valid depth pixels."""

    name = "l2"

    def pointwise(self, diff: Tensor, valid: Tensor) -> Tensor:
        """``d**2``."""
        return diff.square()


class BerHuLoss(_DepthLoss):
    """Reverse Huber (Laina et al. 2016): ``|d|`` up to ``c``, ``(d**2 + c**2) / (2c)`` beyond,
    with ``c = 0.2 * max|d|`` over the valid pixels of the batch (treated as a constant)."""

    name = "berhu"

    def pointwise(self, diff: Tensor, valid: Tensor) -> Tensor:
        """BerHu of each pixel."""
        a = diff.abs()
        c = (0.2 * a.detach().max()).clamp_min(_TINY) if a.numel() else a.new_tensor(1.0)
        return torch.where(a <= c, a, (a.square() + c * c) / (2 * c))


def make_l1(task: TaskInfo) -> L1Loss:
    """Build ``l1`` (no options)."""
    return L1Loss()


def make_l2(task: TaskInfo) -> L2Loss:
    """Build ``l2`` (no options)."""
    return L2Loss()


def make_berhu(task: TaskInfo) -> BerHuLoss:
    """Build ``berhu`` (no options)."""
    return BerHuLoss()


# -- surface normals ------------------------------------------------------------------------
class CosineLoss(nn.Module):
    """``1 - cos(pred, target)`` averaged over pixels with a normal (target not all zero).

    Both vectors are normalised first, so the head's scale does not matter.
    """

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        """Mean ``1 - cosine similarity`` over valid pixels; 0 if there is none."""
        pred = pred.float()
        target = target.float()
        if target.shape != pred.shape or pred.dim() != 4 or pred.shape[1] != 3:
            raise ValueError(
                f"cosine: prediction {tuple(pred.shape)} and target {tuple(target.shape)} "
                f"must both be [B,3,H,W]"
            )
        valid = target.abs().sum(dim=1) > 0  # all-zero (or NaN) = no measurement
        t = F.normalize(torch.where(valid[:, None], target, torch.zeros_like(target)), dim=1)
        p = F.normalize(pred, dim=1)
        cos = (p * t).sum(dim=1)
        return _masked_mean(1 - cos, valid)


def make_cosine(task: TaskInfo) -> CosineLoss:
    """Build ``cosine`` (no options)."""
    return CosineLoss()


__all__ = [
    "CrossEntropyLoss",
    "WeightedBCELoss",
    "BCELoss",
    "L1Loss",
    "L2Loss",
    "BerHuLoss",
    "CosineLoss",
    "make_ce",
    "make_weighted_bce",
    "make_bce",
    "make_l1",
    "make_l2",
    "make_berhu",
    "make_cosine",
]
