"""Image-level metrics: ``accuracy`` (class and multi-label targets) and ``map`` (multi-label
mean average precision)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ...contract.tasks import TaskInfo
from . import AccuracyOptions
from .common import MtlMetric, class_count, safe_ratio, shape_mismatch


class Accuracy(MtlMetric):
    """Accuracy over the split.

    Single-label targets ``[B]`` (int): top-1 of the logits ``[B,C]``; targets equal to
    ``ignore_index`` are skipped. Multi-hot targets ``[B,C]``: exact match of the predicted
    label set (``multilabel="exact"``) or the fraction of right label decisions
    (``"per_label"``). Exact match is the default because per-label accuracy is inflated by
    the many easy negatives of sparse label sets.
    """

    higher_is_better = True

    def __init__(self, ignore_index: int | None, multilabel: str, key: str | None = None, **kwargs: Any):
        super().__init__(key or ("accuracy" if multilabel == "exact" else "label_accuracy"), **kwargs)
        self.ignore_index = ignore_index
        self.multilabel = multilabel
        self._sum_state("correct", torch.long)
        self._sum_state("total", torch.long)

    def update(self, pred: Tensor, target: Tensor) -> None:
        """Add a batch of logits ``[B,C]`` against class indices ``[B]`` or multi-hot ``[B,C]``."""
        if target.shape == pred.shape:  # multi-hot labels
            right = (pred.float().sigmoid() > 0.5) == (target.float() > 0.5)
            if self.multilabel == "exact":
                right = right.all(dim=1)
            self.correct += right.sum()
            self.total += right.numel()
            return
        if target.dim() == 2 and target.shape[1] == 1:
            target = target[:, 0]
        if target.shape != pred.shape[:1]:
            raise shape_mismatch("accuracy", pred, target)
        target = target.long()
        valid = torch.ones_like(target, dtype=torch.bool)
        if self.ignore_index is not None:
            valid = target != self.ignore_index
        self.correct += ((pred.argmax(dim=1) == target) & valid).sum()
        self.total += valid.sum()

    def compute(self) -> Tensor:
        """Accuracy in [0, 1]."""
        return safe_ratio(self.correct, self.total)


def make_accuracy(task: TaskInfo, options: AccuracyOptions) -> Accuracy:
    """Build ``accuracy`` for a class or labels task."""
    return Accuracy(task.ignore_index, options.multilabel)


def average_precision(scores: Tensor, labels: Tensor) -> Tensor:
    """Average precision of one class: ``sum_k (R_k - R_{k-1}) P_k`` over the distinct score
    thresholds, highest first (no interpolation; tied scores form one threshold), as
    scikit-learn's ``average_precision_score``. ``labels`` must hold at least one positive."""
    order = torch.argsort(scores, descending=True, stable=True)
    s = scores[order]
    y = labels[order].double()
    tp = torch.cumsum(y, 0)
    fp = torch.cumsum(1 - y, 0)
    # the last index of every run of equal scores is one threshold
    end = torch.tensor([s.numel() - 1], device=s.device)
    last = torch.cat([torch.nonzero(s[1:] != s[:-1]).flatten(), end])
    tp, fp = tp[last], fp[last]
    precision = tp / (tp + fp)
    recall = tp / tp[-1]
    prev = torch.cat([recall.new_zeros(1), recall[:-1]])
    return ((recall - prev) * precision).sum()


class MeanAveragePrecision(MtlMetric):
    """Multi-label mean average precision over the split (macro).

    Scores and targets of every image are kept (``cat`` states) and AP is computed per class
    on the raw logits (a sigmoid would tie saturated scores); the mean is over the classes
    with at least one positive image in the split (AP is undefined without one). With no
    such class the value is 0.
    """

    higher_is_better = True

    def __init__(self, num_classes: int, key: str = "map", **kwargs: Any):
        super().__init__(key, **kwargs)
        self.num_classes = int(num_classes)
        self.add_state("scores", default=[], dist_reduce_fx="cat")
        self.add_state("targets", default=[], dist_reduce_fx="cat")

    def update(self, pred: Tensor, target: Tensor) -> None:
        """Add a batch of logits ``[B,C]`` against multi-hot targets ``[B,C]``."""
        if pred.shape != target.shape or pred.dim() != 2:
            raise shape_mismatch("map", pred, target, "; both must be [B,C]")
        self.scores.append(pred.detach().float())
        self.targets.append((target > 0.5).float())  # float like the scores, so ranks gather alike

    def compute(self) -> Tensor:
        """Mean AP over the classes with a positive."""
        scores, targets = self.scores, self.targets
        if isinstance(scores, list):
            if not scores:
                return torch.tensor(0.0)
            scores, targets = torch.cat(scores), torch.cat(targets)
        scores = scores.reshape(-1, self.num_classes)
        targets = targets.reshape(-1, self.num_classes)
        aps = [
            average_precision(scores[:, c], targets[:, c])
            for c in range(self.num_classes)
            if bool(targets[:, c].any())
        ]
        if not aps:
            return torch.tensor(0.0, device=scores.device)
        return torch.stack(aps).mean().float()


def make_map(task: TaskInfo) -> MeanAveragePrecision:
    """Build ``map`` for a multi-label task."""
    return MeanAveragePrecision(class_count(task, "map"))


__all__ = [
    "Accuracy",
    "MeanAveragePrecision",
    "average_precision",
    "make_accuracy",
    "make_map",
]
