"""Surface-normal metrics from per-pixel angular errors: ``normal_mean_angle``,
``normal_median_angle`` and ``normal_within``."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ...contract.tasks import TaskInfo
from . import NormalWithinOptions
from .common import MtlMetric, safe_ratio, shape_mismatch


def normal_angle_map(pred: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    """Angular error in degrees ``[B,H,W]`` of every pixel, and the mask of valid pixels
    (target not all zero).

    Computed as ``atan2(|p x t|, p . t)`` of the normalised vectors, which stays accurate
    for small angles where ``acos`` does not. A zero prediction counts as 90 degrees.
    """
    if pred.shape != target.shape or pred.dim() != 4 or pred.shape[1] != 3:
        raise shape_mismatch("normals metric", pred, target, "; both must be [B,3,H,W]")
    target = target.float()
    valid = target.abs().sum(dim=1) > 0  # all-zero or NaN = no measurement
    t = F.normalize(torch.where(valid[:, None], target, torch.zeros_like(target)), dim=1)
    p = F.normalize(pred.float(), dim=1)
    cross = torch.linalg.vector_norm(torch.linalg.cross(p, t, dim=1), dim=1)
    angle = torch.rad2deg(torch.atan2(cross, (p * t).sum(dim=1)))
    angle = torch.where(p.abs().sum(dim=1) == 0, torch.full_like(angle, 90.0), angle)
    return angle, valid


def normal_angles(pred: Tensor, target: Tensor) -> Tensor:
    """Angular errors in degrees of the valid pixels only, as a 1-D tensor."""
    angle, valid = normal_angle_map(pred, target)
    return angle[valid]


class NormalMeanAngle(MtlMetric):
    """Mean angular error (degrees) over every valid normal pixel of the split."""

    higher_is_better = False

    def __init__(self, key: str = "mean_angle", **kwargs: Any):
        super().__init__(key, **kwargs)
        self._sum_state("total")
        self._sum_state("count", torch.long)

    def update(self, pred: Tensor, target: Tensor) -> None:
        """Add a batch of normals ``[B,3,H,W]``."""
        angle, valid = normal_angle_map(pred, target)
        self.total += torch.where(valid, angle, torch.zeros_like(angle)).double().sum()
        self.count += valid.sum()

    def compute(self) -> Tensor:
        """Mean angle of the split."""
        return safe_ratio(self.total, self.count)


class NormalMedianAngle(MtlMetric):
    """Exact median angular error (degrees) over every valid normal pixel of the split.

    Keeps every angle (a ``cat`` state, 4 bytes per valid pixel); for an even count the
    median is the mean of the two middle values (as numpy's).
    """

    higher_is_better = False

    def __init__(self, key: str = "median_angle", **kwargs: Any):
        super().__init__(key, **kwargs)
        self.add_state("angles", default=[], dist_reduce_fx="cat")

    def update(self, pred: Tensor, target: Tensor) -> None:
        """Add a batch of normals ``[B,3,H,W]``."""
        self.angles.append(normal_angles(pred, target).float())

    def compute(self) -> Tensor:
        """Median angle of the split (0 with no valid pixel)."""
        angles = self.angles
        if isinstance(angles, list):  # not synced: still a list of batches
            angles = torch.cat(angles) if angles else torch.zeros(0)
        n = angles.numel()
        if n == 0:
            return torch.tensor(0.0)
        # kthvalue: exact, O(n), and free of torch.quantile's size limit
        lo = torch.kthvalue(angles, (n + 1) // 2).values
        hi = torch.kthvalue(angles, n // 2 + 1).values
        return (lo.double() + hi.double()).div(2).float()


class NormalWithin(MtlMetric):
    """Percentage (0-100) of valid normal pixels with an angular error below ``threshold`` degrees."""

    higher_is_better = True

    def __init__(self, threshold: float, key: str | None = None, **kwargs: Any):
        super().__init__(key or f"within_{threshold:g}", **kwargs)
        self.threshold = float(threshold)
        self._sum_state("below", torch.long)
        self._sum_state("count", torch.long)

    def update(self, pred: Tensor, target: Tensor) -> None:
        """Add a batch of normals ``[B,3,H,W]``."""
        angle, valid = normal_angle_map(pred, target)
        self.below += (valid & (angle < self.threshold)).sum()
        self.count += valid.sum()

    def compute(self) -> Tensor:
        """Percentage of the split."""
        return 100 * safe_ratio(self.below, self.count)


def make_normal_mean_angle(task: TaskInfo) -> NormalMeanAngle:
    """Build ``normal_mean_angle``."""
    return NormalMeanAngle()


def make_normal_median_angle(task: TaskInfo) -> NormalMedianAngle:
    """Build ``normal_median_angle``."""
    return NormalMedianAngle()


def make_normal_within(task: TaskInfo, options: NormalWithinOptions) -> NormalWithin:
    """Build ``normal_within`` (key ``within_<threshold>``)."""
    return NormalWithin(options.threshold)


__all__ = [
    "NormalMeanAngle",
    "NormalMedianAngle",
    "NormalWithin",
    "normal_angle_map",
    "normal_angles",
    "make_normal_mean_angle",
    "make_normal_median_angle",
    "make_normal_within",
]
