"""Tasks: what a task type supplies, and what heads, losses and metrics learn about a task."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .data import TargetInfo

if TYPE_CHECKING:
    from torch import Tensor


@dataclass(frozen=True)
class TaskInfo:
    """Everything a head, loss or metric factory may need to know about its task.

    Attributes:
        name: the task's name in the spec (``semseg``).
        type: the task type (``segmentation``).
        target: the batch key of its target.
        out_channels: channels the head must produce.
        target_info: what the dataset says about the target (kind, classes, ignore index ...).
    """

    name: str
    type: str
    target: str
    out_channels: int
    target_info: TargetInfo

    @property
    def kind(self) -> str:
        """The target kind (``segmentation``, ``depth`` ...)."""
        return self.target_info.kind

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
class Derivation:
    """A target computed by the data pipeline from another target of the same sample.

    Attributes:
        info: what the derived target is (its kind, classes, ignore index).
        fn: ``fn(source) -> target``, applied to the source tensor after augmentation (so
            the derived target matches what the model sees). It runs in data-loader
            workers: make it picklable (a module-level function or ``functools.partial``).
    """

    info: TargetInfo
    fn: Callable[[Tensor], Tensor]


def _classes_or_one(info: TargetInfo) -> int:
    return max(info.num_classes, 1)


@dataclass(frozen=True)
class TaskType:
    """Defaults for one kind of task, so a spec can say only ``{type: depth}``.

    Attributes:
        name: type name (``segmentation``).
        target_kinds: target kinds this type can learn.
        target: default batch key of the target.
        head: default head node (``{"name": "fcn"}``).
        loss: default loss node.
        metrics: default metric nodes; the first selects checkpoints.
        out_channels: maps the target's :class:`TargetInfo` to the head's output channels;
            raise :class:`~mtlzoo.ConfigError` for a target it cannot learn.
        derive: how ``from: <key>`` computes this task's target from another target:
            ``derive(source_info) -> Derivation``; ``None``: the type's target cannot be
            derived.
        derive_from: target kinds ``derive`` accepts as its source.
    """

    name: str
    target_kinds: tuple[str, ...]
    target: str
    head: dict[str, Any]
    loss: dict[str, Any]
    metrics: list[dict[str, Any]] = field(default_factory=list)
    out_channels: Callable[[TargetInfo], int] = _classes_or_one
    derive: Callable[[TargetInfo], Derivation] | None = None
    derive_from: tuple[str, ...] = ()


__all__ = ["TaskInfo", "TaskType", "Derivation"]
