"""The simplest combiners, ``sum`` and ``weighted``, and the log helper every combiner uses."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor

from ...contract.combine import Combiner, Step
from ...contract.errors import ConfigError
from .loss_level_options import WeightedOptions


def weight_logs(
    names: Iterable[str], w: Iterable[float] | Tensor, prefix: str = "w"
) -> dict[str, float | Tensor]:
    """``{"<prefix>/<task>": weight}``: what a combiner returns to log its task weights. A
    tensor's entries stay tensors (detached): the trainer copies every logged tensor to the
    host together with the losses, once per step, instead of one synchronisation per task."""
    if torch.is_tensor(w):
        return {f"{prefix}/{t}": x for t, x in zip(names, w.detach())}
    return {f"{prefix}/{t}": float(x) for t, x in zip(names, w)}


class SumCombiner(Combiner):
    """Equal weighting: ``L = sum_t L_t`` (one backward pass)."""

    partial_steps = True

    def backward(self, losses: dict[str, Tensor], step: Step) -> dict[str, float]:
        """Backpropagate the plain sum of the task losses."""
        self.order(step)
        step.backward(torch.stack([losses[t] for t in step.task_names]).sum())
        return {}


class WeightedCombiner(Combiner):
    """Static weighting: ``L = sum_t w_t L_t`` with weights fixed in the spec."""

    partial_steps = True

    def __init__(self, task_names, options: WeightedOptions):
        super().__init__(task_names)
        unknown = sorted(set(options.weights) - set(self.task_names))
        if unknown:
            raise ConfigError(
                f"combiner.weights names unknown task(s) {unknown}; tasks are {self.task_names}"
            )
        w = [float(options.weights.get(t, options.default)) for t in self.task_names]
        self.register_buffer("weights", torch.tensor(w, dtype=torch.float32))

    def backward(self, losses: dict[str, Tensor], step: Step) -> dict[str, float]:
        """Backpropagate the weighted sum of the task losses."""
        idx = self.order(step)
        stacked = torch.stack([losses[t] for t in step.task_names])
        step.backward((self.weights[idx].to(stacked) * stacked).sum())
        return weight_logs(self.task_names, self.weights)
