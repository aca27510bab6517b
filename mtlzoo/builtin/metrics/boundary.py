"""The boundary metric ``boundary_f1``: boundary F-measure at a pixel tolerance."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ...contract.tasks import TaskInfo
from . import BoundaryF1Options
from .common import MtlMetric, safe_ratio, shape_mismatch


def _dilate(mask: Tensor, radius: int) -> Tensor:
    """Binary dilation of ``[B,1,H,W]`` by a ``(2r+1)^2`` square (Chebyshev ball)."""
    if radius == 0:
        return mask
    return F.max_pool2d(mask.float(), 2 * radius + 1, stride=1, padding=radius) > 0


class BoundaryF1(MtlMetric):
    """Boundary F-measure at a pixel tolerance, from split-wide counts.

    precision = predicted boundary pixels within ``tolerance`` of a true boundary pixel /
    predicted boundary pixels; recall = true boundary pixels within ``tolerance`` of a
    predicted one / true boundary pixels; F1 = 2PR / (P + R). Pixels whose target is
    ``ignore_index`` are neither predictions nor targets. Matching is by dilation, not a
    one-to-one assignment (a cheaper, slightly more lenient form of the BSDS measure).
    A split with no true and no predicted boundary pixel scores 1; a ratio with a zero
    denominator is otherwise 0.
    """

    higher_is_better = True

    def __init__(
        self,
        ignore_index: int | None,
        tolerance: int,
        threshold: float,
        key: str = "boundary_f1",
        **kwargs: Any,
    ):
        super().__init__(key, **kwargs)
        self.ignore_index = ignore_index
        self.tolerance = int(tolerance)
        self.threshold = float(threshold)
        for name in ("tp_pred", "n_pred", "tp_true", "n_true"):
            self._sum_state(name, torch.long)

    def update(self, pred: Tensor, target: Tensor) -> None:
        """Add a batch of logits ``[B,1,H,W]`` against boundary maps ``[B,1,H,W]``."""
        if target.dim() == 3:
            target = target.unsqueeze(1)
        if pred.shape != target.shape:
            raise shape_mismatch("boundary_f1", pred, target)
        target = target.float()
        valid = torch.ones_like(target, dtype=torch.bool)
        if self.ignore_index is not None:
            valid = target != float(self.ignore_index)
        true = valid & (target > 0.5)
        predicted = valid & (pred.float().sigmoid() > self.threshold)
        self.tp_pred += (predicted & _dilate(true, self.tolerance)).sum()
        self.n_pred += predicted.sum()
        self.tp_true += (true & _dilate(predicted, self.tolerance)).sum()
        self.n_true += true.sum()

    def compute(self) -> Tensor:
        """F1 of the split."""
        if int(self.n_pred) == 0 and int(self.n_true) == 0:
            return torch.tensor(1.0, device=self.n_pred.device)
        p = safe_ratio(self.tp_pred, self.n_pred)
        r = safe_ratio(self.tp_true, self.n_true)
        return safe_ratio(2 * p * r, p + r)


def make_boundary_f1(task: TaskInfo, options: BoundaryF1Options) -> BoundaryF1:
    """Build ``boundary_f1`` for a boundary task."""
    return BoundaryF1(task.ignore_index, options.tolerance, options.threshold)


__all__ = [
    "BoundaryF1",
    "make_boundary_f1",
]
