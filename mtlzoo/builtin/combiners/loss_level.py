"""Loss-level combiners: each weights the task losses and backpropagates once.

Weights that depend on loss values are computed from :meth:`Step.global_losses` (averaged
over ranks) and treated as constants, then ``sum_t w_t L_t`` of the local losses is
backpropagated: under distributed training every rank applies the same weights, which is
the exact gradient of the method on the global batch. Random weights come from
:meth:`Step.generator` (same on every rank, reproducible on resume).

``gradnorm`` needs per-task gradient norms: by default w.r.t. the shared features (the
heads are backpropagated once per task, the backbone once), or w.r.t. all shared
parameters (``wrt: params``, the layer-wise Gramian of :class:`~mtlzoo.contract.combine.Step`).
The options classes live in :mod:`.loss_level_options`.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ...contract.combine import Combiner, Step
from ...contract.dist import all_reduce_mean
from .basic import weight_logs
from .loss_level_options import (
    DWAOptions,
    FAMOOptions,
    GradNormOptions,
    RLWOptions,
    STCHOptions,
    UncertaintyOptions,
)

_EPS = 1e-8


class _LossWeighting(Combiner):
    """Loss-level base: subclasses give detached weights in step order; this backpropagates
    ``sum_t w_t L_t`` once (heads get the weighted gradient too)."""

    def weights(self, losses: Tensor, step: Step) -> Tensor:
        """Detached weights (float64, step order) from the global loss values."""
        raise NotImplementedError

    def backward(self, losses: dict[str, Tensor], step: Step) -> dict[str, float]:
        """Weight the losses with :meth:`weights` and backpropagate once."""
        self.order(step)
        w = self.weights(step.global_losses(), step)
        step.backward_weighted(w, heads="weighted")
        return weight_logs(step.task_names, w)


# -- uncertainty ------------------------------------------------------------------------------------
class UncertaintyCombiner(Combiner):
    """Uncertainty weighting (Kendall, Gal & Cipolla, CVPR 2018, "Multi-Task Learning Using
    Uncertainty to Weigh Losses for Scene Geometry and Semantics").

    ``L = sum_t exp(-s_t) L_t / 2 + s_t / 2`` with learnable log-variances ``s_t``
    (``nn.Parameter``, optimised with the model; the torchjd ``UW`` convention).
    """

    partial_steps = True

    def __init__(self, task_names, options: UncertaintyOptions):
        super().__init__(task_names)
        self.log_vars = nn.Parameter(torch.full((len(self.task_names),), float(options.init)))

    def backward(self, losses: dict[str, Tensor], step: Step) -> dict[str, float]:
        """Backpropagate the uncertainty-weighted loss (model and log-variances)."""
        idx = self.order(step)
        stacked = torch.stack([losses[t] for t in step.task_names])
        s = self.log_vars[idx].to(stacked)
        step.backward((0.5 * torch.exp(-s) * stacked + 0.5 * s).sum())
        w = 0.5 * torch.exp(-self.log_vars.detach())
        return weight_logs(self.task_names, w)


# -- DWA -------------------------------------------------------------------------------------------
class DWACombiner(_LossWeighting):
    """Dynamic Weight Average (Liu, Johns & Davison, CVPR 2019, "End-to-End Multi-Task
    Learning with Attention").

    ``w_t = T softmax_t(r / temperature)`` with ``r_t = L_t(e-1) / L_t(e-2)`` the ratio of
    the task's average loss over the two previous epochs; equal weights during the first
    two epochs. The running epoch sums and the two previous averages are buffers (resumed
    with the checkpoint); epochs are read from ``step.epoch``.
    """

    def __init__(self, task_names, options: DWAOptions):
        super().__init__(task_names)
        self.temperature = options.temperature
        T = len(self.task_names)
        self.register_buffer("epoch_sum", torch.zeros(T, dtype=torch.float64))
        self.register_buffer("epoch_count", torch.zeros((), dtype=torch.long))
        self.register_buffer("epoch", torch.full((), -1, dtype=torch.long))
        self.register_buffer("history", torch.zeros(2, T, dtype=torch.float64))  # [older, newer]
        self.register_buffer("num_history", torch.zeros((), dtype=torch.long))

    def _roll(self, epoch: int) -> None:
        if int(self.epoch) >= 0 and int(self.epoch_count) > 0:
            average = self.epoch_sum / self.epoch_count
            self.history[0] = self.history[1]
            self.history[1] = average
            self.num_history.fill_(min(int(self.num_history) + 1, 2))
        self.epoch_sum.zero_()
        self.epoch_count.zero_()
        self.epoch.fill_(epoch)

    def weights(self, losses: Tensor, step: Step) -> Tensor:
        """Weights from the two previous epochs; accumulates this batch into the current one."""
        idx = self.order(step)
        if int(step.epoch) != int(self.epoch):
            self._roll(int(step.epoch))
        T = len(self.task_names)
        if int(self.num_history) < 2:
            w = torch.ones(T, dtype=torch.float64)
        else:
            ratio = self.history[1] / self.history[0].clamp(min=_EPS)
            w = T * torch.softmax(ratio.cpu() / self.temperature, dim=0)
        current = torch.zeros(T, dtype=torch.float64)
        current[idx] = losses.double().cpu()
        self.epoch_sum += current.to(self.epoch_sum.device)
        self.epoch_count += 1
        return w.cpu()[idx]


# -- RLW -------------------------------------------------------------------------------------------
class RLWCombiner(_LossWeighting):
    """Random Loss Weighting (Lin et al., TMLR 2022, "Reasonable Effectiveness of Random
    Weighting: A Litmus Test for Multi-Task Learning", arXiv 2021).

    ``w = softmax(z)``, ``z ~ N(0, I)`` drawn anew every step (the same on every rank).
    """

    partial_steps = True

    def __init__(self, task_names, options: RLWOptions):
        super().__init__(task_names)
        self.seed = options.seed

    def weights(self, losses: Tensor, step: Step) -> Tensor:
        """Fresh random weights summing to one."""
        z = torch.randn(len(losses), generator=step.generator(self.seed), dtype=torch.float64)
        return torch.softmax(z, dim=0)


# -- GLS -------------------------------------------------------------------------------------------
class GLSCombiner(_LossWeighting):
    """Geometric Loss Strategy (Chennupati et al., CVPR Workshops 2019, "MultiNet++:
    Multi-Stream Feature Aggregation and Geometric Loss Strategy for Multi-Task Learning").

    ``L = (prod_t L_t)^(1/T)``, backpropagated as its exact gradient
    ``sum_t L / (T L_t) grad L_t``. Losses must be positive.
    """

    partial_steps = True

    def weights(self, losses: Tensor, step: Step) -> Tensor:
        """``L_gls / (T L_t)`` from the global loss values."""
        L = losses.double().cpu().clamp(min=_EPS)
        gls = torch.exp(torch.log(L).mean())
        return gls / (len(L) * L)


# -- IMTL-L ----------------------------------------------------------------------------------------
class IMTLLCombiner(Combiner):
    """IMTL-L, the loss-balance part of Impartial Multi-Task Learning (Liu et al., ICLR
    2021, "Towards Impartial Multi-task Learning").

    ``L = sum_t exp(s_t) L_t - s_t`` with learnable scales ``s_t`` (``nn.Parameter``,
    initialised at 0, optimised with the model).
    """

    partial_steps = True

    def __init__(self, task_names):
        super().__init__(task_names)
        self.log_scales = nn.Parameter(torch.zeros(len(self.task_names)))

    def backward(self, losses: dict[str, Tensor], step: Step) -> dict[str, float]:
        """Backpropagate the scaled losses (model and scales)."""
        idx = self.order(step)
        stacked = torch.stack([losses[t] for t in step.task_names])
        s = self.log_scales[idx].to(stacked)
        step.backward((torch.exp(s) * stacked - s).sum())
        return weight_logs(self.task_names, torch.exp(self.log_scales.detach()))


# -- FAMO ------------------------------------------------------------------------------------------
class FAMOCombiner(_LossWeighting):
    """Fast Adaptive Multitask Optimization (Liu et al., NeurIPS 2023, "FAMO: Fast Adaptive
    Multitask Optimization"): one backward pass per step.

    Backpropagates ``c sum_t z_t log(L_t - b)`` with ``z = softmax(xi)`` and
    ``c = 1 / sum_t z_t / (L_t - b)`` (a constant), i.e. weights ``c z_t / (L_t - b)``.
    The logits ``xi`` are then moved by Adam along ``J_softmax^T delta`` with
    ``delta_t = log(L_t^before - b) - log(L_t^after - b)``; see :class:`FAMOOptions` for
    which "after" losses are used. Logits, Adam moments and the previous losses are
    buffers (the trainer's optimizer does not touch them; checkpoints carry them).
    """

    def __init__(self, task_names, options: FAMOOptions):
        super().__init__(task_names)
        self.lr, self.weight_decay = options.lr, options.weight_decay
        self.min_loss, self.update = options.min_loss, options.update
        T = len(self.task_names)
        self.register_buffer("logits", torch.zeros(T, dtype=torch.float64))
        self.register_buffer("adam_m", torch.zeros(T, dtype=torch.float64))
        self.register_buffer("adam_v", torch.zeros(T, dtype=torch.float64))
        self.register_buffer("adam_t", torch.zeros((), dtype=torch.long))
        self.register_buffer("prev_losses", torch.zeros(T, dtype=torch.float64))
        self.register_buffer("has_prev", torch.zeros((), dtype=torch.bool))

    @property
    def needs_losses_after_step(self) -> bool:
        """True with ``update: same_batch``."""
        return self.update == "same_batch"

    def _update(self, after: Tensor) -> None:
        """One Adam step on the logits from the change of the losses (combiner order)."""
        if not bool(self.has_prev):
            return
        before = (self.prev_losses - self.min_loss + _EPS).log()
        after = (after.double().to(self.logits.device) - self.min_loss + _EPS).log()
        delta = before - after
        z = torch.softmax(self.logits, 0)
        grad = z * (delta - (z * delta).sum())  # J_softmax^T delta
        grad = grad + self.weight_decay * self.logits  # torch Adam's (L2) weight decay
        self.adam_t += 1
        t = int(self.adam_t)
        b1, b2 = 0.9, 0.999
        self.adam_m.mul_(b1).add_((1 - b1) * grad)
        self.adam_v.mul_(b2).add_((1 - b2) * grad * grad)
        m_hat = self.adam_m / (1 - b1**t)
        v_hat = self.adam_v / (1 - b2**t)
        self.logits -= self.lr * m_hat / (v_hat.sqrt() + 1e-8)
        self.has_prev.fill_(False)

    def after_step(self, losses: dict[str, Tensor]) -> None:
        """``same_batch`` mode: update the logits from this batch's losses after the step."""
        values = torch.stack([losses[t].detach().float().reshape(()) for t in self.task_names])
        self._update(all_reduce_mean(values.clone()))

    def weights(self, losses: Tensor, step: Step) -> Tensor:
        """FAMO's loss weights; in ``next_batch`` mode first updates the logits."""
        idx = self.order(step)
        mine = torch.zeros(len(idx), dtype=torch.float64, device=self.logits.device)
        mine[idx] = losses.double().to(self.logits.device)
        if self.update == "next_batch":
            self._update(mine)
        z = torch.softmax(self.logits, 0)
        shifted = mine - self.min_loss + _EPS
        c = 1.0 / (z / shifted).sum()
        self.prev_losses.copy_(mine)
        self.has_prev.fill_(True)
        return (c * z / shifted).cpu()[idx]


# -- GradNorm --------------------------------------------------------------------------------------
class GradNormCombiner(Combiner):
    """GradNorm (Chen et al., ICML 2018, "GradNorm: Gradient Normalization for Adaptive
    Loss Balancing in Deep Multitask Networks").

    Learnable loss weights ``w`` (``nn.Parameter``, optimised by the trainer's optimizer,
    renormalised to sum to T before each use). Each step backpropagates ``sum_t w_t L_t``
    and sets ``w.grad`` to the gradient of ``sum_t |w_t n_t - mean(w n) r_t^alpha|`` w.r.t.
    ``w`` (the target is a constant, as in the paper), where ``n_t`` is the norm of the
    gradient of ``L_t`` (see ``wrt``) and ``r_t`` the task's loss ratio to its first-step
    value over the mean ratio. The first-step losses are a buffer.
    """

    def __init__(self, task_names, options: GradNormOptions):
        super().__init__(task_names)
        self.alpha, self.wrt = options.alpha, options.wrt
        T = len(self.task_names)
        self.weights = nn.Parameter(torch.ones(T))
        self.register_buffer("initial_losses", torch.zeros(T, dtype=torch.float64))
        self.register_buffer("has_initial", torch.zeros((), dtype=torch.bool))

    def backward(self, losses: dict[str, Tensor], step: Step) -> dict[str, float]:
        """Backpropagate the weighted loss and write the GradNorm gradient of the weights."""
        idx = self.order(step)
        T = len(self.task_names)
        with torch.no_grad():  # renormalise after the previous optimizer step
            self.weights.clamp_(min=1e-6)
            self.weights.mul_(T / self.weights.sum())
        L = torch.zeros(T, dtype=torch.float64)
        L[idx] = step.global_losses().double().cpu()
        if not bool(self.has_initial):
            self.initial_losses.copy_(L.clamp(min=_EPS))
            self.has_initial.fill_(True)
        n = torch.zeros(T, dtype=torch.float64)
        n[idx] = torch.diagonal(step.gramian(self.wrt)).clamp(min=0).sqrt()
        w = self.weights.detach().double().cpu()
        gw = w * n
        ratio = L / self.initial_losses.cpu()
        target = gw.mean() * (ratio / ratio.mean()) ** self.alpha
        grad = torch.sign(gw - target) * n
        g = grad.to(self.weights)
        self.weights.grad = g if self.weights.grad is None else self.weights.grad + g
        step.backward_weighted(w[idx], self.wrt, heads="weighted")
        out = weight_logs(self.task_names, w)
        out["gradnorm_loss"] = float((gw - target).abs().sum().detach())
        return out


# -- STCH ------------------------------------------------------------------------------------------
class STCHCombiner(_LossWeighting):
    """Smooth Tchebycheff scalarisation (Lin et al., ICML 2024, "Smooth Tchebycheff
    Scalarization for Multi-Objective Optimization"), in its multi-task form (the authors'
    STCH_MTL code and LibMTL).

    From epoch ``nadir_epoch + 1`` on, the loss is
    ``T mu log sum_t exp(l_t / mu)`` with ``l_t = log(L_t / z_t)`` (equal preferences, ``z``
    the nadir point); before, it is ``sum_t log L_t``, and the global losses of epoch
    ``nadir_epoch`` are averaged into ``z``. Backpropagated as its exact gradient, the loss
    weights ``T softmax(l / mu)_t / L_t`` (``1 / L_t`` during the warm-up) of the global loss
    values (``1e-20`` keeps the logarithms finite, as in the reference). The running sums and
    ``z`` are buffers (resumed with the checkpoint); epochs are read from ``step.epoch``.
    """

    def __init__(self, task_names, options: STCHOptions):
        super().__init__(task_names)
        self.mu, self.nadir_epoch = options.mu, options.nadir_epoch
        T = len(self.task_names)
        self.register_buffer("loss_sum", torch.zeros(T, dtype=torch.float64))
        self.register_buffer("loss_count", torch.zeros((), dtype=torch.long))
        self.register_buffer("nadir", torch.zeros(T, dtype=torch.float64))
        self.register_buffer("has_nadir", torch.zeros((), dtype=torch.bool))

    def weights(self, losses: Tensor, step: Step) -> Tensor:
        """Log-loss weights during the warm-up, smooth Tchebycheff weights after."""
        idx = self.order(step)
        T = len(self.task_names)
        L = torch.zeros(T, dtype=torch.float64)
        L[idx] = losses.double().cpu()
        if int(step.epoch) <= self.nadir_epoch:
            if int(step.epoch) == self.nadir_epoch:
                self.loss_sum += L.to(self.loss_sum.device)
                self.loss_count += 1
            w = 1.0 / (L + 1e-20)
        else:
            if not bool(self.has_nadir):
                count = int(self.loss_count)
                self.nadir.copy_(self.loss_sum / count if count else L.to(self.nadir.device))
                self.has_nadir.fill_(True)
            z = self.nadir.cpu().clamp(min=1e-20)  # a zero nadir loss would make every log infinite
            p = torch.softmax(torch.log(L / z + 1e-20) / self.mu, 0)
            w = T * p / (L + 1e-20 * z)
        return w[idx]
