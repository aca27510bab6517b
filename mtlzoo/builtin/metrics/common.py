"""What the built-in metrics share: the :class:`MtlMetric` base and small helpers.

Every built-in metric is a :class:`MtlMetric` (a :class:`torchmetrics.Metric` with a log
``key``). Running sums are kept in float64 (counts in int64) so that a split of millions of
pixels sums exactly enough for batch-size independence; backends without float64 (Apple MPS)
are not supported.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric

from ...contract.errors import ConfigError
from ...contract.tasks import TaskInfo


class MtlMetric(Metric):
    """Base of the built-in metrics: adds the log ``key`` and zero-initialised sum states;
    other keyword arguments go to :class:`torchmetrics.Metric` (``sync_on_compute`` ...)."""

    is_differentiable = False
    full_state_update = False  # states are reductions of batch states
    higher_is_better: bool = True

    def __init__(self, key: str, **kwargs: Any):
        super().__init__(**kwargs)
        self.key = key

    def _sum_state(self, name: str, dtype: torch.dtype = torch.float64, shape: tuple[int, ...] = ()) -> None:
        self.add_state(name, default=torch.zeros(shape, dtype=dtype), dist_reduce_fx="sum")


def safe_ratio(num: Tensor, den: Tensor, empty: float = 0.0) -> Tensor:
    """``num / den`` as float, ``empty`` when ``den`` is 0."""
    num = num.double()
    den = den.double()
    return torch.where(den > 0, num / den.clamp_min(1e-300), torch.full_like(num, empty)).float()


def shape_mismatch(what: str, pred: Tensor, target: Tensor, need: str = "") -> ValueError:
    """The error for a prediction that does not fit its target (a head/task mismatch)."""
    shapes = f"prediction {tuple(pred.shape)} does not match target {tuple(target.shape)}"
    return ValueError(f"{what}: {shapes}{need}")


def class_count(task: TaskInfo, what: str) -> int:
    """The task's number of classes; a :class:`ConfigError` naming metric and task when it has none."""
    n = task.num_classes or task.out_channels
    if n < 1:
        raise ConfigError(f"metric {what!r} of task {task.name!r}: the target declares no classes")
    return int(n)


__all__ = ["MtlMetric", "class_count", "safe_ratio", "shape_mismatch"]
