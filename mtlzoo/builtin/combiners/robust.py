"""torchjd's robust aggregators from Byzantine-tolerant distributed learning, applied to task
gradients: ``krum`` and ``trimmed_mean``.

Both treat the T task gradients as T "workers" of which some may be outliers. ``krum`` keeps
the gradient(s) closest to their neighbours (a weighting of the Gramian, so ``wrt: params``
needs no T x P matrix); ``trimmed_mean`` works coordinate by coordinate and needs the T x P
matrix (:meth:`~mtlzoo.contract.combine.Step.task_gradients`). Head parameters receive their
own loss's gradient, as in torchjd. The options classes live in :mod:`.robust_options`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ...contract.combine import Step
from ...contract.errors import ConfigError
from .gradient_level import GradientCombiner, GramianCombiner
from .robust_options import KrumOptions, TrimmedMeanOptions


def krum_weights(G: Tensor, n_byzantine: int, n_selected: int = 1) -> Tensor:
    """Krum's weights from the Gramian (float64): each task gradient is scored by the sum of
    its distances to its ``T - n_byzantine - 2`` nearest other task gradients; the
    ``n_selected`` lowest scores get weight ``1 / n_selected`` each, the others 0 (Blanchard
    et al. 2017; Multi-Krum for ``n_selected > 1``). Distances come from the Gramian,
    ``|g_i - g_j|^2 = G_ii + G_jj - 2 G_ij``."""
    G = G.detach().to("cpu", torch.float64)
    T = G.shape[0]
    sq = torch.diagonal(G)
    dist = (sq[:, None] + sq[None, :] - 2 * G).clamp(min=0).sqrt()
    # the k + 1 smallest of a row include its own distance 0; drop it
    nearest, _ = torch.topk(dist, k=T - n_byzantine - 1, largest=False)
    scores = nearest[:, 1:].sum(1)
    _, chosen = torch.topk(scores, k=n_selected, largest=False)
    return F.one_hot(chosen, num_classes=T).sum(0).to(torch.float64) / n_selected


def trimmed_mean(J: Tensor, trim_number: int) -> Tensor:
    """Per column of ``J`` (T x P), the mean of its values without the ``trim_number``
    largest and ``trim_number`` smallest (Yin et al. 2018)."""
    ordered, _ = torch.sort(J, dim=0)
    return ordered[trim_number : J.shape[0] - trim_number].mean(0)


class KrumCombiner(GramianCombiner):
    """Krum (Blanchard et al., NeurIPS 2017, "Machine Learning with Adversaries: Byzantine
    Tolerant Gradient Descent"), torchjd's ``Krum`` aggregator: the update is the task
    gradient closest to its ``T - f - 2`` nearest neighbours (``f = n_byzantine``), or the
    mean of the ``n_selected`` best-scored ones (Multi-Krum). It needs ``T >= f + 3`` tasks;
    a step with fewer (partial labels) cannot be scored, so it does not take partial steps."""

    partial_steps = False

    def __init__(self, task_names, options: KrumOptions):
        super().__init__(task_names, options)
        self.n_byzantine, self.n_selected = options.n_byzantine, options.n_selected
        T = len(self.task_names)
        if T < self.n_byzantine + 3:
            raise ConfigError(
                f"combiner.n_byzantine: Krum with n_byzantine {self.n_byzantine} needs at least "
                f"{self.n_byzantine + 3} tasks (n_byzantine + 3), the spec has {T}; lower n_byzantine"
            )
        if T < self.n_selected:
            raise ConfigError(
                f"combiner.n_selected: {self.n_selected} is more than the {T} tasks; lower n_selected"
            )

    def weights(self, gramian: Tensor, step: Step) -> Tensor:
        """One-hot (or 1/n_selected) weights of the chosen task gradients."""
        return krum_weights(gramian, self.n_byzantine, self.n_selected)


class TrimmedMeanCombiner(GradientCombiner):
    """Trimmed mean (Yin et al., ICML 2018, "Byzantine-Robust Distributed Learning: Towards
    Optimal Statistical Rates"), torchjd's ``TrimmedMean`` aggregator: per coordinate of the
    shared gradient, the mean of the task-gradient values without the ``trim_number`` largest
    and smallest. Coordinate-wise, so it needs the T x P matrix; ``T >= 2 trim_number + 1``."""

    def __init__(self, task_names, options: TrimmedMeanOptions):
        super().__init__(task_names, options)
        self.trim_number = options.trim_number
        T = len(self.task_names)
        if T < 2 * self.trim_number + 1:
            raise ConfigError(
                f"combiner.trim_number: trimming {self.trim_number} from each end needs at least "
                f"{2 * self.trim_number + 1} tasks (2 * trim_number + 1), the spec has {T}; lower trim_number"
            )

    def backward(self, losses: dict[str, Tensor], step: Step) -> dict[str, float | Tensor]:
        """The coordinate-wise trimmed mean of the task gradients as the shared update."""
        self.order(step)
        J = step.task_gradients(self.wrt)
        step.set_shared_gradient(trimmed_mean(J, self.trim_number), self.wrt)
        return {}


__all__ = ["KrumCombiner", "TrimmedMeanCombiner", "krum_weights", "trimmed_mean"]
