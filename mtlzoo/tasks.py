"""Tasks: what a task type supplies and what heads, losses and metrics learn about a task."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .data import TargetInfo


@dataclass(frozen=True)
class TaskInfo:
    """Everything a head, loss or metric factory may need to know about its task.

    Attributes:
        name: the task's name in the spec (``semseg``).
        type: the task type (``segmentation``).
        target: the batch key of its target.
        out_channels: channels the head must produce.
        target_info: what the dataset says about the target (classes, ignore index ...).
    """

    name: str
    type: str
    target: str
    out_channels: int
    target_info: TargetInfo

    @property
    def num_classes(self) -> int:
        """Number of evaluated classes of the target (0 for regression targets)."""
        return self.target_info.num_classes

    @property
    def ignore_index(self) -> int | None:
        """Ignored target value, if any."""
        return self.target_info.ignore_index

    @property
    def class_names(self) -> tuple[str, ...]:
        """Class names of the target, in index order."""
        return self.target_info.class_names

    @property
    def class_weights(self) -> tuple[float, ...] | None:
        """Per-class loss weights offered by the dataset, if any."""
        return self.target_info.class_weights


@dataclass(frozen=True)
class TaskType:
    """Defaults for one kind of task, so a spec can say only ``{type: depth}``.

    Attributes:
        name: type name (``segmentation``).
        target_kinds: target kinds this type can learn (see :mod:`mtlzoo.data`).
        target: default batch key of the target.
        head: default head spec (``{"name": "fcn"}``).
        loss: default loss spec.
        metrics: default metric specs; the first is the one that selects checkpoints.
        out_channels: maps the dataset's :class:`TargetInfo` to the head's output channels.
    """

    name: str
    target_kinds: tuple[str, ...]
    target: str
    head: dict[str, Any]
    loss: dict[str, Any]
    metrics: list[dict[str, Any]] = field(default_factory=list)
    out_channels: Callable[[TargetInfo], int] = lambda info: max(info.num_classes, 1)
