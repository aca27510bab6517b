"""Built-in combiners of the core: ``sum`` and ``weighted``."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from ..combine import Combiner, Step
from ..errors import ConfigError
from ..hookspecs import hookimpl


class SumCombiner(Combiner):
    """Equal weighting: ``L = sum_t L_t`` (one backward pass)."""

    def backward(self, losses: dict[str, Tensor], step: Step) -> dict[str, float]:
        """Backpropagate the plain sum of the task losses."""
        step.backward(self.stack(losses).sum())
        return {}


@dataclass
class WeightedOptions:
    """Options of ``weighted``: a static weight per task (tasks not named get ``default``)."""

    weights: dict[str, float] = field(default_factory=dict)
    default: float = 1.0


class WeightedCombiner(Combiner):
    """Static weighting: ``L = sum_t w_t L_t`` with weights fixed in the spec."""

    def __init__(self, task_names, weights: dict[str, float] | None = None, default: float = 1.0):
        super().__init__(task_names)
        weights = dict(weights or {})
        unknown = sorted(set(weights) - set(self.task_names))
        if unknown:
            raise ConfigError(
                f"combiner.weights names unknown task(s) {unknown}; tasks are {self.task_names}"
            )
        w = [float(weights.get(t, default)) for t in self.task_names]
        if any(x < 0 for x in w):
            raise ConfigError(f"combiner.weights must be >= 0, got {dict(zip(self.task_names, w))}")
        self.register_buffer("weights", torch.tensor(w, dtype=torch.float32))

    def backward(self, losses: dict[str, Tensor], step: Step) -> dict[str, float]:
        """Backpropagate the weighted sum of the task losses."""
        stacked = self.stack(losses)
        step.backward((self.weights.to(stacked) * stacked).sum())
        return {f"w/{t}": float(w) for t, w in zip(self.task_names, self.weights)}


@hookimpl
def register_combiners(register):
    """Register ``sum`` and ``weighted``."""
    register("sum", SumCombiner, None, "Equal weighting: L = sum_t L_t")
    register("weighted", WeightedCombiner, WeightedOptions, "Static per-task weights: L = sum_t w_t L_t")
