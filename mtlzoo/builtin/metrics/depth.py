"""Depth metrics over the valid pixels (``gt > 0``) of a split: ``depth_abs_err``,
``depth_rel_err``, ``depth_rmse``, ``depth_log10`` and ``depth_delta``."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ...contract.tasks import TaskInfo
from . import DepthDeltaOptions, DepthLogOptions
from .common import MtlMetric, safe_ratio, shape_mismatch


class DepthError(MtlMetric):
    """Mean absolute (``relative=False``) or absolute relative error over every valid pixel
    (``gt > 0``) of the split: ``sum |pred - gt| [/ gt]`` over the split / number of pixels."""

    higher_is_better = False

    def __init__(self, relative: bool = False, key: str | None = None, **kwargs: Any):
        super().__init__(key or ("rel_err" if relative else "abs_err"), **kwargs)
        self.relative = relative
        self._sum_state("total")
        self._sum_state("count", torch.long)

    def update(self, pred: Tensor, target: Tensor) -> None:
        """Add a batch of depth predictions ``[B,1,H,W]`` against ``[B,1,H,W]``."""
        if target.dim() == pred.dim() - 1:
            target = target.unsqueeze(1)
        if pred.shape != target.shape:
            raise shape_mismatch("depth metric", pred, target)
        target = target.float()
        valid = target > 0  # also False for NaN
        # masks, not boolean indexing: no host-device sync per batch
        gt = torch.where(valid, target, torch.ones_like(target)).double()
        err = (pred.double() - gt).abs()
        if self.relative:
            err = err / gt
        self.total += torch.where(valid, err, torch.zeros_like(err)).sum()
        self.count += valid.sum()

    def compute(self) -> Tensor:
        """Mean error of the split (0 with no valid pixel)."""
        return safe_ratio(self.total, self.count)


def make_depth_abs_err(task: TaskInfo) -> DepthError:
    """Build ``depth_abs_err``."""
    return DepthError(relative=False)


def make_depth_rel_err(task: TaskInfo) -> DepthError:
    """Build ``depth_rel_err``."""
    return DepthError(relative=True)


def _depth_pair(pred: Tensor, target: Tensor, what: str) -> tuple[Tensor, Tensor, Tensor]:
    """``(pred, gt, valid)`` in float64, ``[B,1,H,W]``; invalid pixels (``gt <= 0`` or NaN)
    get ``gt = 1`` so that every elementwise expression stays finite (masks, no indexing: no
    host-device sync per batch)."""
    if target.dim() == pred.dim() - 1:
        target = target.unsqueeze(1)
    if pred.shape != target.shape:
        raise shape_mismatch(what, pred, target)
    target = target.float()
    valid = target > 0  # also False for NaN
    gt = torch.where(valid, target, torch.ones_like(target)).double()
    return pred.double(), gt, valid


class DepthRMSE(MtlMetric):
    """Root mean squared error over every valid pixel (``gt > 0``) of the split:
    ``sqrt(sum (pred - gt)^2 / number of pixels)`` (pixels of the whole split, not a mean of
    per-image RMSEs)."""

    higher_is_better = False

    def __init__(self, key: str = "rmse", **kwargs: Any):
        super().__init__(key, **kwargs)
        self._sum_state("total")
        self._sum_state("count", torch.long)

    def update(self, pred: Tensor, target: Tensor) -> None:
        """Add a batch of depth predictions ``[B,1,H,W]`` against ``[B,1,H,W]``."""
        pred, gt, valid = _depth_pair(pred, target, "depth_rmse")
        sq = (pred - gt).square()
        self.total += torch.where(valid, sq, torch.zeros_like(sq)).sum()
        self.count += valid.sum()

    def compute(self) -> Tensor:
        """RMSE of the split (0 with no valid pixel)."""
        return safe_ratio(self.total, self.count).sqrt()


class DepthLog10(MtlMetric):
    """Mean ``|log10(pred) - log10(gt)|`` over every valid pixel (``gt > 0``) of the split;
    predictions below ``min_depth`` are raised to it first (the log of a depth <= 0 is
    undefined)."""

    higher_is_better = False

    def __init__(self, min_depth: float = 1e-3, key: str = "log10", **kwargs: Any):
        super().__init__(key, **kwargs)
        self.min_depth = float(min_depth)
        self._sum_state("total")
        self._sum_state("count", torch.long)

    def update(self, pred: Tensor, target: Tensor) -> None:
        """Add a batch of depth predictions ``[B,1,H,W]`` against ``[B,1,H,W]``."""
        pred, gt, valid = _depth_pair(pred, target, "depth_log10")
        err = (pred.clamp_min(self.min_depth).log10() - gt.log10()).abs()
        self.total += torch.where(valid, err, torch.zeros_like(err)).sum()
        self.count += valid.sum()

    def compute(self) -> Tensor:
        """Mean log10 error of the split (0 with no valid pixel)."""
        return safe_ratio(self.total, self.count)


class DepthDelta(MtlMetric):
    """Threshold accuracy: the fraction (0-1) of valid pixels (``gt > 0``) of the split with
    ``max(pred / gt, gt / pred) < 1.25 ** power``; predictions below ``min_depth`` are raised
    to it first. Key ``delta<power>``."""

    higher_is_better = True

    def __init__(self, power: int = 1, min_depth: float = 1e-3, key: str | None = None, **kwargs: Any):
        super().__init__(key or f"delta{int(power)}", **kwargs)
        self.threshold = 1.25 ** int(power)
        self.min_depth = float(min_depth)
        self._sum_state("below", torch.long)
        self._sum_state("count", torch.long)

    def update(self, pred: Tensor, target: Tensor) -> None:
        """Add a batch of depth predictions ``[B,1,H,W]`` against ``[B,1,H,W]``."""
        pred, gt, valid = _depth_pair(pred, target, "depth_delta")
        pred = pred.clamp_min(self.min_depth)
        ratio = torch.maximum(pred / gt, gt / pred)
        self.below += (valid & (ratio < self.threshold)).sum()
        self.count += valid.sum()

    def compute(self) -> Tensor:
        """Fraction of the split's valid pixels under the threshold (0 with none)."""
        return safe_ratio(self.below, self.count)


def make_depth_rmse(task: TaskInfo) -> DepthRMSE:
    """Build ``depth_rmse``."""
    return DepthRMSE()


def make_depth_log10(task: TaskInfo, options: DepthLogOptions) -> DepthLog10:
    """Build ``depth_log10``."""
    return DepthLog10(options.min_depth)


def make_depth_delta(task: TaskInfo, options: DepthDeltaOptions) -> DepthDelta:
    """Build ``depth_delta`` (key ``delta<power>``)."""
    return DepthDelta(options.power, options.min_depth)


__all__ = [
    "DepthError",
    "DepthRMSE",
    "DepthLog10",
    "DepthDelta",
    "make_depth_abs_err",
    "make_depth_rel_err",
    "make_depth_rmse",
    "make_depth_log10",
    "make_depth_delta",
]
