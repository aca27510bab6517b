"""Gradient-level combiners: each reconciles the per-task gradients of the shared part.

Every combiner takes ``wrt``: ``params`` (gradients of the shared parameters) or
``features`` (gradients of the shared representation, the MGDA-UB / "rep-grad" idea).
Methods whose update is a weighted sum ``sum_t w_t g_t`` of the task gradients only need
the T x T Gramian: they call :meth:`Step.gramian` and :meth:`Step.backward_weighted`, so
with ``wrt: params`` no T x P matrix is stored (layer-wise Gramian, see
:mod:`mtlzoo.combine`). ``graddrop`` (coordinate-wise masks) and ``db_mtl`` (a running
average of the gradients themselves) need the matrix (:meth:`Step.task_gradients`).

Head parameters are not shared: they receive the gradient of their own (unweighted) loss,
as in LibMTL and torchjd (``db_mtl``: of the log loss, as in its paper). Random choices
(PCGrad/GradVac orders, GradDrop draws) come from :meth:`Step.generator`, identical on
every rank. The math lives in :mod:`mtlzoo.gradients`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .. import gradients as gr
from ..combine import WRT_CHOICES, Combiner, Step, all_reduce_sum, world_size
from ..errors import ConfigError
from ..hookspecs import hookimpl


def _logs(names: list[str], w: Tensor) -> dict[str, float]:
    return {f"w/{t}": float(x) for t, x in zip(names, w)}


class GradientCombiner(Combiner):
    """Base of gradient-level combiners: validates ``wrt``.

    Args:
        task_names: the tasks.
        wrt: ``"params"`` or ``"features"``.
    """

    level = "gradient"

    def __init__(self, task_names, wrt: str = "params"):
        super().__init__(task_names)
        if wrt not in WRT_CHOICES:
            raise ConfigError(
                f"combiner {type(self).__name__}: wrt must be one of {', '.join(WRT_CHOICES)}, got {wrt!r}"
            )
        self.wrt = wrt


class GramianCombiner(GradientCombiner):
    """Base of combiners whose update is ``J^T w`` with ``w`` a function of the Gramian.

    Subclasses implement :meth:`weights`; :meth:`backward` asks the step for the Gramian
    and applies the weights with one assembled (``params``) or backbone (``features``) pass.
    """

    def weights(self, gramian: Tensor, step: Step) -> Tensor:
        """Weights (float64, step task order) from the T x T Gramian."""
        raise NotImplementedError

    def backward(self, losses: dict[str, Tensor], step: Step) -> dict[str, float]:
        """Gramian -> weights -> shared update ``sum_t w_t g_t``; heads get their own loss."""
        self.order(step)
        w = self.weights(step.gramian(self.wrt), step)
        step.backward_weighted(w, self.wrt)
        return _logs(step.task_names, w)


@dataclass
class WrtOptions:
    """Options of gradient-level combiners without further settings.

    Attributes:
        wrt: ``params`` (shared-parameter gradients) or ``features`` (shared-representation
            gradients).
    """

    wrt: str = "params"


# -- MGDA ----------------------------------------------------------------------------------------
@dataclass
class MGDAOptions:
    """Options of ``mgda``.

    Attributes:
        wrt: ``params`` or ``features`` (``features`` is MGDA-UB).
        normalization: scale of each task gradient when solving for the weights, as in the
            reference code: ``none``, ``l2`` (its norm), ``loss`` (its loss), ``loss+`` (both).
            The weights then apply to the raw gradients.
        max_iter: Frank-Wolfe iterations at most.
        tol: relative duality-gap tolerance of the min-norm solve.
    """

    wrt: str = "params"
    normalization: str = "none"
    max_iter: int = 1000
    tol: float = 1e-7


class MGDACombiner(GramianCombiner):
    """MGDA (Sener & Koltun, NeurIPS 2018, "Multi-Task Learning as Multi-Objective
    Optimization"): the update is the min-norm point of the convex hull of the (optionally
    normalised) task gradients, found by Frank-Wolfe on the Gramian."""

    def __init__(self, task_names, wrt: str = "params", normalization: str = "none", max_iter: int = 1000,
                 tol: float = 1e-7):
        super().__init__(task_names, wrt)
        if normalization not in ("none", "l2", "loss", "loss+"):
            raise ConfigError(
                f"combiner mgda: normalization must be none, l2, loss or loss+, got {normalization!r}"
            )
        if max_iter < 1 or tol <= 0:
            raise ConfigError(f"combiner mgda: max_iter must be >= 1 and tol > 0, got {max_iter}, {tol}")
        self.normalization, self.max_iter, self.tol = normalization, int(max_iter), float(tol)

    def weights(self, gramian: Tensor, step: Step) -> Tensor:
        """Min-norm weights of the normalised gradients."""
        n = gr.mgda_normalizers(gramian, step.global_losses(), self.normalization)
        return gr.min_norm_weights(gramian.double() / (n[:, None] * n[None, :]), self.max_iter, self.tol)


# -- PCGrad --------------------------------------------------------------------------------------
@dataclass
class PCGradOptions:
    """Options of ``pcgrad``.

    Attributes:
        wrt: ``params`` or ``features``.
        reduction: ``sum`` (the paper, LibMTL, torchjd) or ``mean`` of the projected gradients.
        seed: seed of the random projection orders (combined with the step number).
    """

    wrt: str = "params"
    reduction: str = "sum"
    seed: int = 0


class PCGradCombiner(GramianCombiner):
    """PCGrad (Yu et al., NeurIPS 2020, "Gradient Surgery for Multi-Task Learning"): each
    task gradient drops its component along every other task gradient it conflicts with
    (random order); the projected gradients are summed."""

    def __init__(self, task_names, wrt: str = "params", reduction: str = "sum", seed: int = 0):
        super().__init__(task_names, wrt)
        if reduction not in ("sum", "mean"):
            raise ConfigError(f"combiner pcgrad: reduction must be sum or mean, got {reduction!r}")
        self.reduction, self.seed = reduction, int(seed)

    def weights(self, gramian: Tensor, step: Step) -> Tensor:
        """Projection coefficients, summed (or averaged)."""
        w = gr.pcgrad_weights(gramian, step.generator(self.seed))
        return w / len(w) if self.reduction == "mean" else w


# -- CAGrad --------------------------------------------------------------------------------------
@dataclass
class CAGradOptions:
    """Options of ``cagrad``.

    Attributes:
        wrt: ``params`` or ``features``.
        c: radius of the ball around the mean gradient, relative to its norm (paper: 0.4-0.5).
        rescale: 0 none, 1 divide the update by ``1 + c^2`` (reference default), 2 by ``1 + c``.
    """

    wrt: str = "params"
    c: float = 0.5
    rescale: int = 1


class CAGradCombiner(GramianCombiner):
    """CAGrad (Liu et al., NeurIPS 2021, "Conflict-Averse Gradient Descent for Multi-task
    Learning"): the update maximising the worst task's improvement within a ball around the
    mean gradient (dual problem on the simplex solved with scipy's SLSQP, as the reference
    code does; no cvxpy needed)."""

    def __init__(self, task_names, wrt: str = "params", c: float = 0.5, rescale: int = 1):
        super().__init__(task_names, wrt)
        if c < 0 or rescale not in (0, 1, 2):
            raise ConfigError(f"combiner cagrad: c must be >= 0 and rescale 0, 1 or 2, got {c}, {rescale}")
        self.c, self.rescale = float(c), int(rescale)

    def weights(self, gramian: Tensor, step: Step) -> Tensor:
        """Mean weights plus the scaled worst-case direction."""
        return gr.cagrad_weights(gramian, self.c, self.rescale)


# -- Nash-MTL ------------------------------------------------------------------------------------
@dataclass
class NashMTLOptions:
    """Options of ``nash_mtl``.

    Attributes:
        wrt: ``params`` or ``features``.
        max_norm: the update's norm is clipped to this (0: no clipping; reference: 1).
        update_weights_every: solve for new weights every this many steps, reuse between.
        max_iter: Newton iterations at most per solve.
    """

    wrt: str = "params"
    max_norm: float = 1.0
    update_weights_every: int = 1
    max_iter: int = 100


class NashMTLCombiner(GramianCombiner):
    """Nash-MTL (Navon et al., ICML 2022, "Multi-Task Learning as a Bargaining Game"): the
    weights ``a > 0`` solving ``G a = 1/a`` on the Frobenius-normalised Gramian (the Nash
    bargaining solution), found by Newton's method on a convex potential (exact; the
    reference code approximates it with cvxpy, which is not needed here). The last weights
    and the step counter are buffers (checkpointed)."""

    def __init__(self, task_names, wrt: str = "params", max_norm: float = 1.0, update_weights_every: int = 1,
                 max_iter: int = 100):
        super().__init__(task_names, wrt)
        if max_norm < 0 or update_weights_every < 1 or max_iter < 1:
            raise ConfigError(
                "combiner nash_mtl: max_norm must be >= 0, update_weights_every and max_iter >= 1, "
                f"got {max_norm}, {update_weights_every}, {max_iter}"
            )
        self.max_norm, self.every, self.max_iter = float(max_norm), int(update_weights_every), int(max_iter)
        T = len(self.task_names)
        self.register_buffer("alpha", torch.ones(T, dtype=torch.float64))
        self.register_buffer("calls", torch.zeros((), dtype=torch.long))

    def weights(self, gramian: Tensor, step: Step) -> Tensor:
        """Bargaining weights (every ``update_weights_every`` steps), clipped to ``max_norm``."""
        idx = self.order(step)
        G = gramian.double()
        if int(self.calls) % self.every == 0:
            fro = float(torch.linalg.matrix_norm(G))
            Gn = G / fro if fro > 0 else G
            init = self.alpha.cpu()[idx]
            alpha = gr.nash_mtl_weights(Gn, init=init, max_iter=self.max_iter)
            self.alpha[idx] = alpha.to(self.alpha)
        self.calls += 1
        alpha = self.alpha.cpu()[idx].clone()
        if self.max_norm > 0:
            norm = float(alpha @ G @ alpha) ** 0.5
            if norm > self.max_norm:
                alpha = alpha * (self.max_norm / norm)
        return alpha


# -- IMTL-G --------------------------------------------------------------------------------------
class IMTLGCombiner(GramianCombiner):
    """IMTL-G, the gradient-balance part of Impartial Multi-Task Learning (Liu et al., ICLR
    2021, "Towards Impartial Multi-task Learning"): weights summing to one whose update has
    equal projections on every unit task gradient (closed form on the Gramian)."""

    def weights(self, gramian: Tensor, step: Step) -> Tensor:
        """``G^+ n / 1^T G^+ n``."""
        return gr.imtl_g_weights(gramian)


# -- Aligned-MTL ---------------------------------------------------------------------------------
@dataclass
class AlignedMTLOptions:
    """Options of ``aligned_mtl``.

    Attributes:
        wrt: ``params`` or ``features``.
        scale_mode: eigenvalue setting the common norm: ``min`` (paper), ``median``, ``rmse``.
        reduction: ``sum`` (reference code) or ``mean`` (torchjd) of the aligned gradients.
    """

    wrt: str = "params"
    scale_mode: str = "min"
    reduction: str = "sum"


class AlignedMTLCombiner(GramianCombiner):
    """Aligned-MTL (Senushkin et al., CVPR 2023, "Independent Component Alignment for
    Multi-Task Learning"): the task gradients are aligned into orthogonal directions of
    equal norm (eigendecomposition of the Gramian) and summed."""

    def __init__(self, task_names, wrt: str = "params", scale_mode: str = "min", reduction: str = "sum"):
        super().__init__(task_names, wrt)
        if scale_mode not in ("min", "median", "rmse") or reduction not in ("sum", "mean"):
            raise ConfigError(
                f"combiner aligned_mtl: scale_mode must be min, median or rmse and reduction sum or mean, "
                f"got {scale_mode!r}, {reduction!r}"
            )
        self.scale_mode, self.reduction = scale_mode, reduction

    def weights(self, gramian: Tensor, step: Step) -> Tensor:
        """Balance transformation applied to the preference vector."""
        T = gramian.shape[0]
        pref = torch.ones(T, dtype=torch.float64) / (T if self.reduction == "mean" else 1)
        return gr.aligned_mtl_weights(gramian, self.scale_mode, pref)


# -- GradVac -------------------------------------------------------------------------------------
@dataclass
class GradVacOptions:
    """Options of ``gradvac``.

    Attributes:
        wrt: ``params`` or ``features``.
        beta: EMA rate of the cosine-similarity targets (LibMTL/torchjd default 0.5).
        seed: seed of the random task orders (combined with the step number).
    """

    wrt: str = "params"
    beta: float = 0.5
    seed: int = 0


class GradVacCombiner(GramianCombiner):
    """GradVac (Wang et al., ICLR 2021, "Gradient Vaccine: Investigating and Improving
    Multi-task Optimization in Massively Multilingual Models"): pulls the cosine similarity
    of each task pair up to an EMA target, on the whole shared part (one group). The
    targets are a T x T buffer (checkpointed)."""

    def __init__(self, task_names, wrt: str = "params", beta: float = 0.5, seed: int = 0):
        super().__init__(task_names, wrt)
        if not 0.0 <= beta <= 1.0:
            raise ConfigError(f"combiner gradvac: beta must be in [0, 1], got {beta}")
        self.beta, self.seed = float(beta), int(seed)
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
@dataclass
class GradDropOptions:
    """Options of ``graddrop``.

    Attributes:
        wrt: ``params`` or ``features`` (the paper applies it to activations: ``features``).
        leak: fraction of every task gradient let through unmasked (0: none).
        seed: seed of the per-coordinate draws (combined with the step number).
    """

    wrt: str = "params"
    leak: float = 0.0
    seed: int = 0


class GradDropCombiner(GradientCombiner):
    """GradDrop (Chen et al., NeurIPS 2020, "Just Pick a Sign: Optimizing Deep Multitask
    Models with Gradient Sign Dropout"): per coordinate, keep only the task gradients of
    the sign drawn with probability given by the sign purity. Needs the T x P matrix."""

    def __init__(self, task_names, wrt: str = "params", leak: float = 0.0, seed: int = 0):
        super().__init__(task_names, wrt)
        if not 0.0 <= leak <= 1.0:
            raise ConfigError(f"combiner graddrop: leak must be in [0, 1], got {leak}")
        self.leak, self.seed = float(leak), int(seed)

    def backward(self, losses: dict[str, Tensor], step: Step) -> dict[str, float]:
        """Masked sum of the task gradients."""
        self.order(step)
        J = step.task_gradients(self.wrt)
        u = torch.rand(J.shape[1], generator=step.generator(self.seed), dtype=J.dtype).to(J.device)
        leak = torch.full((J.shape[0],), self.leak)
        step.set_shared_gradient(gr.graddrop(J, u, leak), self.wrt)
        return {}


# -- DB-MTL --------------------------------------------------------------------------------------
@dataclass
class DBMTLOptions:
    """Options of ``db_mtl``.

    Attributes:
        wrt: ``params`` or ``features``.
        beta: EMA factor of the gradient buffer (LibMTL default 0.9).
        beta_sigma: decay exponent of that factor over steps, ``beta / step**beta_sigma``.
    """

    wrt: str = "params"
    beta: float = 0.9
    beta_sigma: float = 0.5


class DBMTLCombiner(GradientCombiner):
    """DB-MTL (Lin et al., 2023, "Dual-Balancing Multi-Task Learning"): balances loss scales
    with a log transform (gradients of ``log L_t``) and gradient magnitudes by scaling each
    task's running-average gradient to the largest norm. The running average is defined on
    the gradients themselves, so this needs the T x P matrix (not a loss-level cost); the
    T x P buffer is checkpointed and resized on load."""

    lazy_buffers = ("grad_buffer",)

    def __init__(self, task_names, wrt: str = "params", beta: float = 0.9, beta_sigma: float = 0.5):
        super().__init__(task_names, wrt)
        if not 0.0 <= beta <= 1.0 or beta_sigma < 0:
            raise ConfigError(
                f"combiner db_mtl: beta must be in [0, 1] and beta_sigma >= 0, got {beta}, {beta_sigma}"
            )
        self.beta, self.beta_sigma = float(beta), float(beta_sigma)
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
        return _logs(self.task_names, alpha)


@hookimpl
def register_combiners(register):
    """Register the gradient-level combiners."""
    register("mgda", MGDACombiner, MGDAOptions,
             "MGDA min-norm point of the task gradients (Sener & Koltun 2018)")
    register("pcgrad", PCGradCombiner, PCGradOptions,
             "PCGrad projection of conflicting gradients (Yu et al. 2020)")
    register("cagrad", CAGradCombiner, CAGradOptions,
             "CAGrad conflict-averse gradient descent (Liu et al. 2021)")
    register("nash_mtl", NashMTLCombiner, NashMTLOptions,
             "Nash-MTL bargaining weights G a = 1/a (Navon et al. 2022)")
    register("imtl_g", IMTLGCombiner, WrtOptions,
             "IMTL-G equal projections on unit gradients (Liu et al. 2021)")
    register("aligned_mtl", AlignedMTLCombiner, AlignedMTLOptions,
             "Aligned-MTL eigen-aligned task gradients (Senushkin et al. 2023)")
    register("gradvac", GradVacCombiner, GradVacOptions,
             "GradVac cosine-similarity targets (Wang et al. 2021)")
    register("graddrop", GradDropCombiner, GradDropOptions,
             "GradDrop gradient sign dropout (Chen et al. 2020)")
    register("upgrad", UPGradCombiner, WrtOptions, "UPGrad dual-cone projections (Quinton & Rey 2024)")
    register("config", ConFIGCombiner, WrtOptions, "ConFIG conflict-free update (Liu et al. 2024)")
    register("db_mtl", DBMTLCombiner, DBMTLOptions,
             "DB-MTL log-loss and gradient-magnitude balancing (Lin et al. 2023)")
