"""What the zoo builds from a spec, and what the trainer runs."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from omegaconf import DictConfig
from torch import nn

from ..contract.architecture import Architecture
from ..contract.combine import Combiner
from ..contract.data import DatasetInfo, TargetKind
from ..contract.tasks import TaskInfo


@dataclass
class Task:
    """One task of a built experiment: where its target is, how it is scored.

    Attributes:
        name, type, target: as in the spec. info: what heads, losses and metrics were built
        for. kind: its target kind. loss: the loss module. metrics: log key ->
        ``torchmetrics.Metric``. labels: part -> ``"loss 'ce' (plugin ...)"`` for errors.
    """

    name: str
    type: str
    target: str
    info: TaskInfo
    kind: TargetKind
    loss: nn.Module
    metrics: dict[str, Any]
    labels: dict[str, str] = field(default_factory=dict)

    def metric_directions(self) -> dict[str, bool]:
        """Metric key -> ``higher_is_better``."""
        return {k: bool(m.higher_is_better) for k, m in self.metrics.items()}


@dataclass
class Experiment:
    """Everything :meth:`mtlzoo.Zoo.build` makes from a spec.

    Attributes:
        cfg: the validated spec. model, tasks, combiner: the parts. info: the dataset's
        info (derived targets included). datasets: split -> pipeline dataset built so far.
        labels: part -> its name and plugin, for error messages (``"combiner"``,
        ``"backbone"``). normalization: the model's input ``(mean, std)``, or ``None``.
        size_divisor: the backbone's (inputs are padded to multiples of it for inference).
        relative_paths: dotted key -> resolved value of each path option the spec gave as a
            relative path (``config.yaml`` of a run writes them relative to the run folder).
    """

    cfg: DictConfig
    model: Architecture
    tasks: dict[str, Task]
    combiner: Combiner
    info: DatasetInfo
    datasets: dict[str, Any]
    make_dataset: Callable[[str], Any]
    labels: dict[str, str] = field(default_factory=dict)
    normalization: tuple[list[float], list[float]] | None = None
    size_divisor: int = 1
    relative_paths: dict[str, str] = field(default_factory=dict)

    def card(self) -> dict[str, Any]:
        """What the run folder's ``model.json`` records, so the model loads without its data."""
        from .predictor import card

        return card(
            self.info,
            {n: t.info for n, t in self.tasks.items()},
            {n: t.kind for n, t in self.tasks.items()},
            self.normalization,
            self.size_divisor,
        )

    def dataset(self, split: str) -> Any:
        """The dataset of ``split``, built (with its pipeline) on first use."""
        if split not in self.datasets:
            self.datasets[split] = self.make_dataset(split)
        return self.datasets[split]


__all__ = ["Experiment", "Task"]
