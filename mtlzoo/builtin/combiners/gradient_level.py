"""Gradient-level combiners: each reconciles the per-task gradients of the shared part.

Every combiner takes ``wrt``: ``params`` (gradients of the shared parameters) or
``features`` (gradients of the shared representation, the MGDA-UB / "rep-grad" idea).
Methods whose update is a weighted sum ``sum_t w_t g_t`` of the task gradients only need
the T x T Gramian: they call :meth:`Step.gramian` and :meth:`Step.backward_weighted`, so
with ``wrt: params`` no T x P matrix is stored (layer-wise Gramian, see
:mod:`mtlzoo.contract.combine`). ``graddrop`` (coordinate-wise masks) and ``db_mtl`` (a running
average of the gradients themselves) need the matrix (:meth:`Step.task_gradients`).

Head parameters are not shared: they receive the gradient of their own (unweighted) loss,
as in LibMTL and torchjd (``db_mtl``: of the log loss, as in its paper; ``fairgrad``: of the
weighted loss, as in its reference code). Random choices
(PCGrad/GradVac orders, GradDrop draws) come from :meth:`Step.generator`, identical on
every rank. The math lives in :mod:`.gradients` (imported with scipy, by this module only);
the options classes live in :mod:`.gradient_level_options`.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor

from ...contract.combine import Combiner, Step
from ...contract.dist import all_reduce_sum, world_size
from . import gradients as gr
from .basic import weight_logs
from .gradient_level_options import (
    AlignedMTLOptions,
    CAGradOptions,
    DBMTLOptions,
    FairGradOptions,
    GradDropOptions,
    GradVacOptions,
    MGDAOptions,
    NashMTLOptions,
    PCGradOptions,
    WrtOptions,
)


class GradientCombiner(Combiner):
    """Base of gradient-level combiners: keeps ``wrt``.

    Args:
        task_names: the tasks.
        options: ``wrt`` (``"params"`` or ``"features"``) and the method's own settings.
    """

    level = "gradient"

    def __init__(self, task_names, options: WrtOptions):
        super().__init__(task_names)
        self.wrt = options.wrt


class GramianCombiner(GradientCombiner):
    """Base of combiners whose update is ``J^T w`` with ``w`` a function of the Gramian.

    Subclasses implement :meth:`weights`; :meth:`backward` asks the step for the Gramian
    and applies the weights with one assembled (``params``) or backbone (``features``) pass.
    Head parameters get their own loss's gradient, or the weighted one where :attr:`heads`
    is ``"weighted"`` (methods whose reference code backpropagates ``sum_t w_t L_t``).
    """

    #: what head parameters receive (see :meth:`Step.backward_weighted`)
    heads: str = "own"
    #: the weights come from the Gramian of the step's tasks: a task without labels in the
    #: batch is simply not a row of it
    partial_steps = True

    def weights(self, gramian: Tensor, step: Step) -> Tensor:
        """Weights (float64, step task order) from the T x T Gramian."""
        raise NotImplementedError

    def backward(self, losses: dict[str, Tensor], step: Step) -> dict[str, float]:
        """Gramian -> weights -> shared update ``sum_t w_t g_t``; heads get their own loss."""
        self.order(step)
        w = self.weights(step.gramian(self.wrt), step)
        step.backward_weighted(w, self.wrt, heads=self.heads)
        return weight_logs(step.task_names, w)


# -- MGDA ----------------------------------------------------------------------------------------
class MGDACombiner(GramianCombiner):
    """MGDA (Sener & Koltun, NeurIPS 2018, "Multi-Task Learning as Multi-Objective
    Optimization"): the update is the min-norm point of the convex hull of the (optionally
    normalised) task gradients, found by Frank-Wolfe on the Gramian."""

    def __init__(self, task_names, options: MGDAOptions):
        super().__init__(task_names, options)
        self.normalization, self.max_iter, self.tol = options.normalization, options.max_iter, options.tol

    def weights(self, gramian: Tensor, step: Step) -> Tensor:
        """Min-norm weights of the normalised gradients."""
        n = gr.mgda_normalizers(gramian, step.global_losses(), self.normalization)
        return gr.min_norm_weights(gramian.double() / (n[:, None] * n[None, :]), self.max_iter, self.tol)


# -- PCGrad --------------------------------------------------------------------------------------
class PCGradCombiner(GramianCombiner):
    """PCGrad (Yu et al., NeurIPS 2020, "Gradient Surgery for Multi-Task Learning"): each
    task gradient drops its component along every other task gradient it conflicts with
    (random order); the projected gradients are summed."""

    def __init__(self, task_names, options: PCGradOptions):
        super().__init__(task_names, options)
        self.reduction, self.seed = options.reduction, options.seed

    def weights(self, gramian: Tensor, step: Step) -> Tensor:
        """Projection coefficients, summed (or averaged)."""
        w = gr.pcgrad_weights(gramian, step.generator(self.seed))
        return w / len(w) if self.reduction == "mean" else w


# -- CAGrad --------------------------------------------------------------------------------------
class CAGradCombiner(GramianCombiner):
    """CAGrad (Liu et al., NeurIPS 2021, "Conflict-Averse Gradient Descent for Multi-task
    Learning"): the update maximising the worst task's improvement within a ball around the
    mean gradient (dual problem on the simplex solved with scipy's SLSQP, as the reference
    code does; no cvxpy needed)."""

    def __init__(self, task_names, options: CAGradOptions):
        super().__init__(task_names, options)
        self.c, self.rescale = options.c, options.rescale

    def weights(self, gramian: Tensor, step: Step) -> Tensor:
        """Mean weights plus the scaled worst-case direction."""
        return gr.cagrad_weights(gramian, self.c, self.rescale)


def _no_solution(combiner: GramianCombiner, name: str, found: gr.AlphaFairSolution, fallback: str) -> None:
    """Remember whether this step's alpha-fair equation had no solution (logged as
    ``no_solution``) and warn once per combiner (once per run) when it had none."""
    combiner.no_solution = not found.solved
    if combiner.no_solution and not getattr(combiner, "_warned_no_solution", False):
        combiner._warned_no_solution = True
        warnings.warn(
            f"combiner {name!r}: its equation has no positive solution at this step (the task gradients "
            f"are Pareto-stationary: a non-negative combination of them is zero, e.g. a zero or two opposite "
            f"gradients); it uses {fallback} on such steps (logged as no_solution: the share of an epoch's "
            f"steps); shown once per run",
            RuntimeWarning,
            stacklevel=2,
        )


# -- Nash-MTL ------------------------------------------------------------------------------------
class NashMTLCombiner(GramianCombiner):
    """Nash-MTL (Navon et al., ICML 2022, "Multi-Task Learning as a Bargaining Game"): the
    weights ``a > 0`` solving ``G a = 1/a`` on the Frobenius-normalised Gramian (the Nash
    bargaining solution), found by Newton's method on a convex potential (exact; the
    reference code approximates it with cvxpy, which is not needed here). The last weights
    and the step counter are buffers (checkpointed). A step whose equation has no positive
    solution keeps the previous weights (the reference code's answer to a failed solve), warns
    once and logs ``no_solution`` (see :func:`~.gradients.nash_mtl_solve`)."""

    def __init__(self, task_names, options: NashMTLOptions):
        super().__init__(task_names, options)
        self.max_norm, self.every = options.max_norm, options.update_weights_every
        self.max_iter = options.max_iter
        T = len(self.task_names)
        self.register_buffer("alpha", torch.ones(T, dtype=torch.float64))
        self.register_buffer("calls", torch.zeros((), dtype=torch.long))
        self.no_solution = False

    def backward(self, losses: dict[str, Tensor], step: Step) -> dict[str, float]:
        """The bargaining update, then (as the reference code) the shared parameters' gradient
        clipped to norm ``max_norm``: in both ``wrt`` modes it bounds the parameter update."""
        logs = super().backward(losses, step)
        logs["no_solution"] = float(self.no_solution)
        if self.max_norm > 0:
            grads = [p.grad for p in step.shared_params if p.grad is not None]
            if grads:
                norm = float(
                    torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
                )
                if norm > self.max_norm:
                    for g in grads:
                        g.mul_(self.max_norm / norm)
        return logs

    def weights(self, gramian: Tensor, step: Step) -> Tensor:
        """Bargaining weights (every ``update_weights_every`` steps), not yet clipped."""
        idx = self.order(step)
        G = gramian.double()
        if int(self.calls) % self.every == 0:
            fro = float(torch.linalg.matrix_norm(G))
            Gn = G / fro if fro > 0 else G
            init = self.alpha.cpu()[idx]
            found = gr.nash_mtl_solve(Gn, init=init, max_iter=self.max_iter)
            _no_solution(self, "nash_mtl", found, "the previous step's weights")
            self.alpha[idx] = found.weights.to(self.alpha)
        self.calls += 1
        return self.alpha.cpu()[idx].clone()


# -- IMTL-G --------------------------------------------------------------------------------------
class IMTLGCombiner(GramianCombiner):
    """IMTL-G, the gradient-balance part of Impartial Multi-Task Learning (Liu et al., ICLR
    2021, "Towards Impartial Multi-task Learning"): weights summing to one whose update has
    equal projections on every unit task gradient (closed form on the Gramian)."""

    def weights(self, gramian: Tensor, step: Step) -> Tensor:
        """``G^+ n / 1^T G^+ n``."""
        return gr.imtl_g_weights(gramian)


# -- Aligned-MTL ---------------------------------------------------------------------------------
class AlignedMTLCombiner(GramianCombiner):
    """Aligned-MTL (Senushkin et al., CVPR 2023, "Independent Component Alignment for
    Multi-Task Learning"): the task gradients are aligned into orthogonal directions of
    equal norm (eigendecomposition of the Gramian) and summed."""

    def __init__(self, task_names, options: AlignedMTLOptions):
        super().__init__(task_names, options)
        self.scale_mode, self.reduction = options.scale_mode, options.reduction

    def weights(self, gramian: Tensor, step: Step) -> Tensor:
        """Balance transformation applied to the preference vector."""
        T = gramian.shape[0]
        pref = torch.ones(T, dtype=torch.float64) / (T if self.reduction == "mean" else 1)
        return gr.aligned_mtl_weights(gramian, self.scale_mode, pref)


# -- GradVac -------------------------------------------------------------------------------------
class GradVacCombiner(GramianCombiner):
    """GradVac (Wang et al., ICLR 2021, "Gradient Vaccine: Investigating and Improving
    Multi-task Optimization in Massively Multilingual Models"): pulls the cosine similarity
    of each task pair up to an EMA target, on the whole shared part (one group). The
    targets are a T x T buffer (checkpointed)."""

    def __init__(self, task_names, options: GradVacOptions):
        super().__init__(task_names, options)
        self.beta, self.seed = options.beta, options.seed
        T = len(self.task_names)
        self.register_buffer("phi_hat", torch.zeros(T, T, dtype=torch.float64))

    def weights(self, gramian: Tensor, step: Step) -> Tensor:
        """Vaccinated coefficients, summed; updates the targets."""
        idx = self.order(step)
        phi = self.phi_hat.cpu()[idx][:, idx]
        w, phi = gr.gradvac_weights(gramian, phi, self.beta, step.generator(self.seed))
        self.phi_hat[torch.tensor(idx)[:, None], torch.tensor(idx)[None, :]] = phi.to(self.phi_hat)
        return w


# -- UPGrad --------------------------------------------------------------------------------------
class UPGradCombiner(GramianCombiner):
    """UPGrad (Quinton & Rey, 2024, "Jacobian Descent for Multi-Objective Optimization"):
    each task gradient (scaled 1/T) is projected onto the dual cone of all task gradients
    and the projections are added; the update conflicts with no task (exact NNLS solve)."""

    def weights(self, gramian: Tensor, step: Step) -> Tensor:
        """Sum of the dual-cone projection weights."""
        return gr.upgrad_weights(gramian)


# -- ConFIG --------------------------------------------------------------------------------------
class ConFIGCombiner(GramianCombiner):
    """ConFIG (Liu et al., ICLR 2025, arXiv 2024, "ConFIG: Towards Conflict-free Training of
    Physics Informed Neural Networks"): the direction with equal cosine to every task
    gradient, scaled by the sum of the task gradients' projections on it."""

    def weights(self, gramian: Tensor, step: Step) -> Tensor:
        """Conflict-free weights from the unit-gradient Gramian."""
        return gr.config_weights(gramian)


# -- GradDrop ------------------------------------------------------------------------------------
class GradDropCombiner(GradientCombiner):
    """GradDrop (Chen et al., NeurIPS 2020, "Just Pick a Sign: Optimizing Deep Multitask
    Models with Gradient Sign Dropout"): per coordinate, keep only the task gradients of
    the sign drawn with probability given by the sign purity. Needs the T x P matrix."""

    partial_steps = True

    def __init__(self, task_names, options: GradDropOptions):
        super().__init__(task_names, options)
        self.leak, self.seed = float(options.leak), options.seed  # float: it fills a tensor

    def backward(self, losses: dict[str, Tensor], step: Step) -> dict[str, float]:
        """Masked sum of the task gradients."""
        self.order(step)
        J = step.task_gradients(self.wrt)
        u = torch.rand(J.shape[1], generator=step.generator(self.seed), dtype=J.dtype).to(J.device)
        leak = torch.full((J.shape[0],), self.leak)
        step.set_shared_gradient(gr.graddrop(J, u, leak), self.wrt)
        return {}


# -- DB-MTL --------------------------------------------------------------------------------------
class DBMTLCombiner(GradientCombiner):
    """DB-MTL (Lin et al., 2023, "Dual-Balancing Multi-Task Learning"): balances loss scales
    with a log transform (gradients of ``log L_t``) and gradient magnitudes by scaling each
    task's running-average gradient to the largest norm. The running average is defined on
    the gradients themselves, so this needs the T x P matrix (not a loss-level cost); the
    T x P buffer is checkpointed and resized on load."""

    lazy_buffers = ("grad_buffer",)

    def __init__(self, task_names, options: DBMTLOptions):
        super().__init__(task_names, options)
        self.beta, self.beta_sigma = options.beta, options.beta_sigma
        self.register_buffer("grad_buffer", torch.zeros(0))
        self.register_buffer("calls", torch.zeros((), dtype=torch.long))

    def backward(self, losses: dict[str, Tensor], step: Step) -> dict[str, float]:
        """EMA of log-loss gradients, magnitude-balanced, as the shared update."""
        idx = self.order(step)
        L = step.global_losses().double().clamp(min=1e-8)
        J = step.task_gradients(self.wrt)
        if self.grad_buffer.shape != J.shape:
            self.grad_buffer = torch.zeros_like(J)
        self.calls += 1
        factor = self.beta / float(self.calls) ** self.beta_sigma
        buffer = self.grad_buffer if self.grad_buffer.dtype == J.dtype else self.grad_buffer.to(J)
        with torch.no_grad():  # in place, row by row: buffer <- (1 - f) grad log L + f buffer
            for t, i in enumerate(idx):
                buffer[i].mul_(factor).add_(J[t], alpha=(1 - factor) / float(L[t]))
        self.grad_buffer = buffer
        sq = torch.linalg.vector_norm(self.grad_buffer, dim=1).double() ** 2
        if self.wrt == "features":  # rows hold this rank's samples: norms of the global rows
            sq = all_reduce_sum(sq) / world_size() ** 2
        u = sq.sqrt().to(self.grad_buffer)
        alpha = u.max() / (u + 1e-8)
        direction = alpha.to(self.grad_buffer) @ self.grad_buffer
        step.set_shared_gradient(direction, self.wrt, head_weights=(1.0 / L).tolist())
        return weight_logs(self.task_names, alpha)


# -- FairGrad ------------------------------------------------------------------------------------
class FairGradCombiner(GramianCombiner):
    """FairGrad (Ban & Ji, ICML 2024, "Fair Resource Allocation in Multi-Task Learning"): the
    update ``J^T w`` whose per-task improvements ``G w`` are alpha-fair, i.e. the weights
    solve ``G w = w^(-1/alpha)`` (Equation 4 of the paper) on the raw Gramian.

    Variant: solved exactly (damped Newton on the convex potential of that equation, see
    :func:`~.gradients.alpha_fair_weights`) instead of the reference code's
    ``scipy.optimize.least_squares`` from uniform weights; they agree to the least-squares
    tolerance. As in the reference code (and LibMTL), the heads receive the gradient of
    ``sum_t w_t L_t``. The paper and LibMTL define it on parameter gradients; ``wrt:
    features`` applies the same rule to the shared representation's gradients. A step whose
    equation has no positive solution uses equal weights at the method's scale, warns once and
    logs ``no_solution`` (see :func:`~.gradients.fairgrad_solve`).
    """

    heads = "weighted"

    def __init__(self, task_names, options: FairGradOptions):
        super().__init__(task_names, options)
        self.alpha, self.max_iter = options.alpha, options.max_iter
        self.no_solution = False

    def backward(self, losses: dict[str, Tensor], step: Step) -> dict[str, float]:
        """The weighted update; logs the weights and ``no_solution``."""
        logs = super().backward(losses, step)
        logs["no_solution"] = float(self.no_solution)
        return logs

    def weights(self, gramian: Tensor, step: Step) -> Tensor:
        """Alpha-fair weights (equal ones at the method's scale when no solution exists)."""
        found = gr.fairgrad_solve(gramian, self.alpha, self.max_iter)
        _no_solution(self, "fairgrad", found, "equal weights at the method's scale")
        return found.weights


# -- DualProj ------------------------------------------------------------------------------------
class DualProjCombiner(GramianCombiner):
    """DualProj, torchjd's aggregator (Quinton & Rey, 2024, "Jacobian Descent for
    Multi-Objective Optimization"; Equation 11 of Lopez-Paz & Ranzato, NeurIPS 2017,
    "Gradient Episodic Memory for Continual Learning"): the mean task gradient projected onto
    the dual cone of the task gradients, so the update conflicts with no task
    (``<update, g_t> >= 0``). Weights from the exact NNLS form of the projection (torchjd
    solves the same quadratic program with quadprog)."""

    def weights(self, gramian: Tensor, step: Step) -> Tensor:
        """Dual-cone projection weights of the mean."""
        T = gramian.shape[0]
        return gr.dual_cone_weights(gramian, torch.full((T,), 1.0 / T, dtype=torch.float64))
