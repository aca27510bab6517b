"""Gradient-level combiners from stochastic multi-objective optimisation.

Their statistics outlive one step or come from two samples of it:

* ``moco`` tracks every task gradient with a running estimate (a T x P state),
* ``excess_mtl`` accumulates squared task gradients (an AdaGrad-style diagonal, T x P state),
* ``modo`` and ``sdmgrad`` update their weights from the cross Gramian ``J_1 J_2^T`` of two
  independent samples, here the two halves of the batch (:class:`TwoSamples`).

Statistics kept across steps need coordinates that mean the same thing at every step. The
shared parameters have them (``wrt: params``: the T x P matrix, averaged over ranks). The
per-sample gradients of the shared representation do not: every batch holds other samples,
and two halves of a batch hold different samples, so their inner products across steps or
halves are zero or meaningless. With ``wrt: features`` these combiners therefore take their
statistics on the task gradients w.r.t. an additive offset of the feature maps that is shared
by every sample (the per-sample feature gradients summed over the samples; LibMTL reduces
representation gradients the same way), see :func:`offset_gradients`; their update still
goes through the backbone from the per-sample feature gradients.

The paper and the reference code of each method define it on parameter gradients (LibMTL
refuses representation gradients for MoCo, MoDo and SDMGrad): ``wrt: features`` is this
module's variant, stated in each class. The math lives in :mod:`.gradients`; the options
classes in :mod:`.stochastic_options`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ...contract.combine import Step
from ...contract.dist import all_reduce_mean
from . import gradients as gr
from .basic import weight_logs
from .gradient_level import GradientCombiner
from .stochastic_options import ExcessMTLOptions, MoCoOptions, MoDoOptions, SDMGradOptions


def _graph_features(step: Step) -> tuple[list[Tensor], int]:
    """The feature maps behind the rows of ``step.task_gradients("features")`` (the ones in
    the graph, as the Step takes them) and their common batch size (0 without any)."""
    feats = [f for f in step.features if f.requires_grad]
    sizes = sorted({int(f.shape[0]) for f in feats})
    if len(sizes) > 1:
        raise ValueError(f"the shared feature maps disagree on the batch size (dim 0): {sizes}")
    return feats, (sizes[0] if sizes else 0)


def _halves(batch: int) -> int:
    """Samples in the first half: ``ceil(batch / 2)``."""
    return (batch + 1) // 2


def offset_gradients(step: Step, halves: bool = False) -> Tensor:
    """Task gradients (rows in step task order) w.r.t. an additive offset of the shared
    feature maps, the same for every sample: each task's per-sample feature gradients summed
    over the samples, then averaged over ranks. A row has one sample's map sizes, so it means
    the same at every step (the per-sample rows of ``step.task_gradients("features")`` do not).

    With ``halves`` (and at least two samples) the rows are 2T: those of the first
    ``ceil(B/2)`` samples, then those of the rest, each scaled by ``B / (samples in the
    half)``, i.e. the gradients of each half's mean loss where the losses are means over
    samples.
    """
    J = step.task_gradients("features")
    feats, batch = _graph_features(step)
    T = J.shape[0]
    if not feats:
        return all_reduce_mean(J.new_zeros(T, 0))
    if J.shape[1] != sum(f.numel() for f in feats):
        raise RuntimeError("step.task_gradients('features') does not match the step's feature maps")
    parts = [p.reshape(T, batch, -1) for p in torch.split(J, [f.numel() for f in feats], dim=1)]
    h = _halves(batch)
    ranges = (
        [(0, h, batch / h), (h, batch, batch / (batch - h))] if halves and batch > 1 else [(0, batch, 1.0)]
    )
    blocks = [torch.cat([p[:, a:b].sum(1) for p in parts], 1) * s for a, b, s in ranges]
    return all_reduce_mean(torch.cat(blocks, 0).contiguous())


class TwoSamples:
    """The batch as two samples (MoDo, SDMGrad): its first ``ceil(B/2)`` samples and the rest.

    :attr:`cross` is the T x T cross Gramian ``<g_t^(1), g_s^(2)>`` of the gradients of the
    two halves' mean losses (float64, CPU, step task order); :meth:`backward` makes the whole
    batch's ``J^T w`` (the mean of the two halves' updates, for losses that are means over
    samples) the shared update, and gives the heads their own loss's gradient.

    ``params``: from the batch's feature gradients (one head pass per task), each task's loss
    is split into the part seen by the second half (a linear term: the feature gradients of
    those samples, held constant, times the features) and the rest; a second :class:`Step` on
    the same graph gets these 2T losses, and its layer-wise Gramian (2T x 2T) holds the cross
    block, its ``backward_weighted`` assembles ``J^T w``: no T x P matrix, one more head pass
    per task and 2T instead of T input-gradient passes through the backbone.
    ``features``: the offset gradients of the two halves (:func:`offset_gradients`).

    Under distributed training every rank splits its own samples. With the interleaved
    sharded sampler of the trainer (``ShardedSampler``) and an even per-rank batch, the
    ranks' first halves together are the first half of the global batch, so the result does
    not depend on the number of ranks. A batch of one sample cannot be split: both samples
    are then the whole batch.
    """

    def __init__(self, step: Step, wrt: str):
        self.step, self.wrt = step, wrt
        self._split: Step | None = None
        T = len(step.losses)
        if wrt == "features":
            rows = offset_gradients(step, halves=True).double()
            self.cross = (rows[:T] @ rows[-T:].T).cpu()
            return
        J = step.task_gradients("features")
        feats, batch = _graph_features(step)
        if batch < 2:
            self.cross = step.gramian("params")
            return
        h = _halves(batch)
        parts = torch.split(J, [f.numel() for f in feats], dim=1)
        losses, own = {}, {}
        for t, name in enumerate(step.task_names):
            second = sum((p[t].view_as(f)[h:] * f[h:]).sum() for p, f in zip(parts, feats))
            losses[f"{name}/1"], losses[f"{name}/2"] = step.losses[name] - second, second
            own[f"{name}/1"], own[f"{name}/2"] = step.task_params.get(name, []), []
        self._split = Step(
            losses, step.features, step.shared_params, own, step.step, step.epoch, step.chunk_size
        )
        G = self._split.gramian("params")  # rows: task 1 half 1, task 1 half 2, task 2 half 1, ...
        self.cross = G[0::2, 1::2] * ((batch / h) * (batch / (batch - h)))

    def backward(self, w: Tensor) -> None:
        """Write ``sum_t w_t g_t`` of the whole batch (heads: their own loss)."""
        if self._split is not None:
            self._split.backward_weighted(w.double().repeat_interleave(2), "params")
        else:
            self.step.backward_weighted(w, self.wrt)


# -- MoCo ----------------------------------------------------------------------------------------
class MoCoCombiner(GradientCombiner):
    """MoCo (Fernando et al., ICLR 2023, "Mitigating Gradient Bias in Multi-objective
    Learning: A Provably Convergent Approach"): stochastic MGDA on tracked gradients.

    Each step ``k = 1, 2, ...``: the tracked gradients move towards this step's,
    ``Y <- Y - beta_k (Y - G_k)`` with ``G_k``'s rows ``L_t g_t / ||g_t||`` (``normalize``, as
    in the authors' and LibMTL's code) or ``g_t``; the weights take one step
    ``lam <- Pi(lam - gamma_k (Y Y^T + rho I) lam)``; the update is ``Y^T lam``.
    ``beta_k = beta / k^beta_sigma``, ``gamma_k = gamma / k^gamma_sigma``. ``Pi`` is the
    Euclidean projection onto the simplex (the paper) or, with ``simplex: softmax``, LibMTL's
    softmax. The paper's projection of ``Y`` onto a bounded set (for its analysis) is left out,
    as in the reference code. Heads get their own loss's gradient.

    ``wrt: params`` is the method (T x P matrix and a T x P state). ``wrt: features``
    (variant; LibMTL refuses it): ``Y`` tracks the offset gradients of the feature maps
    (:func:`offset_gradients`), which have no per-sample form, so the update applies ``lam``
    to this batch's per-sample feature gradients, normalised the same way, instead of
    ``Y^T lam``. ``Y`` (resized on load), ``lam`` and ``k`` are buffers.
    """

    lazy_buffers = ("tracked",)

    def __init__(self, task_names, options: MoCoOptions):
        super().__init__(task_names, options)
        self.beta, self.beta_sigma = options.beta, options.beta_sigma
        self.gamma, self.gamma_sigma, self.rho = options.gamma, options.gamma_sigma, options.rho
        self.normalize, self.simplex = options.normalize, options.simplex
        T = len(self.task_names)
        self.register_buffer("tracked", torch.zeros(0))
        self.register_buffer("lam", torch.full((T,), 1.0 / T, dtype=torch.float64))
        self.register_buffer("calls", torch.zeros((), dtype=torch.long))

    def _scale(self, losses: Tensor, norms: Tensor) -> Tensor:
        return losses / (norms + 1e-8) if self.normalize else torch.ones_like(losses)

    def backward(self, losses: dict[str, Tensor], step: Step) -> dict[str, float]:
        """Track, take the weight step, write the update."""
        idx = self.order(step)
        L = step.global_losses().double().cpu()
        rows = step.task_gradients("params") if self.wrt == "params" else offset_gradients(step)
        if self.tracked.shape != rows.shape:  # first step (or feature maps of another size)
            self.tracked = torch.zeros_like(rows)
        self.calls += 1
        k = float(self.calls)
        norms = torch.linalg.vector_norm(rows, dim=1).double().cpu()
        gr.track_gradients(self.tracked, rows, self._scale(L, norms), self.beta / k**self.beta_sigma, idx)
        lam = gr.moco_weights(
            self.tracked, self.lam.cpu(), self.gamma / k**self.gamma_sigma, self.rho, self.simplex
        )
        self.lam.copy_(lam)
        if self.wrt == "params":
            step.set_shared_gradient(lam.to(self.tracked) @ self.tracked, "params")
        else:
            norms = torch.diagonal(step.gramian("features")).clamp(min=0).sqrt()
            step.backward_weighted(lam[idx] * self._scale(L, norms), "features")
        return weight_logs(self.task_names, lam)


# -- ExcessMTL -----------------------------------------------------------------------------------
class ExcessMTLCombiner(GradientCombiner):
    """ExcessMTL (He et al., ICML 2024, "Robust Multi-Task Learning with Excess Risks"):
    task weights that grow with each task's excess risk, the distance of its loss to its
    optimum, estimated from gradients.

    Each step: the squared task gradients are added to a running sum ``S`` and the excess
    risk of task ``t`` is estimated as ``g_t^T H_t^{-1} g_t`` with ``H_t = sqrt(S_t + 1e-7)``
    (the AdaGrad diagonal, Equations 6-7). The first step's estimates are the baseline (the
    paper's scale processing); from the second step on the weights take an exponentiated
    gradient step ``w_t <- w_t exp(step_size r_t / r_t^0)`` (Equation 9). The update is
    ``J^T w`` and the heads get the gradient of ``sum_t w_t L_t``.

    Variant: LibMTL's (and the official code's): weights start at 1 and are renormalised to
    sum to T (the paper's simplex weights times T: the update has the scale of ``sum``), and
    the first step only sets the baseline. torchjd's ``ExcessMTLWeighting`` differs in two
    ways: simplex weights, and without warm-up its first step already updates them.
    ``wrt: params`` needs the T x P matrix and keeps a T x P state; ``wrt: features`` (as
    LibMTL's representation-gradient mode) takes the estimates on the feature maps' offset
    gradients (:func:`offset_gradients`). ``S`` (resized on load), the weights and the
    baseline are buffers.
    """

    lazy_buffers = ("sq_sum",)

    def __init__(self, task_names, options: ExcessMTLOptions):
        super().__init__(task_names, options)
        self.step_size = options.step_size
        T = len(self.task_names)
        self.register_buffer("sq_sum", torch.zeros(0))
        self.register_buffer("loss_weights", torch.ones(T, dtype=torch.float64))
        self.register_buffer("baseline", torch.zeros(T, dtype=torch.float64))
        self.register_buffer("has_baseline", torch.zeros((), dtype=torch.bool))

    def backward(self, losses: dict[str, Tensor], step: Step) -> dict[str, float]:
        """Estimate the excess risks, update the weights, write the weighted update."""
        idx = self.order(step)
        rows = step.task_gradients("params") if self.wrt == "params" else offset_gradients(step)
        if self.sq_sum.shape != rows.shape:  # first step (or feature maps of another size)
            self.sq_sum = torch.zeros_like(rows)
            self.has_baseline.fill_(False)
        risks = torch.zeros(len(idx), dtype=torch.float64)
        risks[idx] = gr.excess_risks(rows, self.sq_sum, idx)
        if bool(self.has_baseline):
            new = gr.excess_mtl_weights(self.loss_weights, risks, self.baseline, self.step_size)
            self.loss_weights.copy_(new)
        else:
            self.baseline.copy_(risks)
            self.has_baseline.fill_(True)
        w = self.loss_weights.cpu()
        step.backward_weighted(w[idx], self.wrt, heads="weighted")
        return weight_logs(self.task_names, w)


# -- MoDo ----------------------------------------------------------------------------------------
class MoDoCombiner(GradientCombiner):
    """MoDo, multi-objective gradient with double sampling (Chen et al., NeurIPS 2023,
    "Three-Way Trade-Off in Multi-Objective Learning: Optimization, Generalization and
    Conflict-Avoidance"; JMLR 2024).

    Each step the MGDA weights take one projected step on an unbiased estimate of the
    Gramian, ``lam <- Pi_simplex(lam - gamma (J_1 J_2^T lam + rho lam))`` with ``J_1, J_2``
    the task gradients of two independent samples, and the update is ``J^T lam``.

    How the two samples are drawn: the paper and the reference code draw two (LibMTL:
    three) mini-batches per step; a Step holds one batch, so here the batch is split into its
    first ``ceil(B/2)`` samples and the rest (:class:`TwoSamples`), ``J_1, J_2`` are the
    gradients of the two halves' mean losses, and the update uses the whole batch, i.e. the
    mean of the two halves' gradients (the paper's two-sample variant, Equation 2.9b; LibMTL
    takes a third batch for it). Each sample has half the batch, so the estimate is noisier
    than with two full batches, at the cost of one batch. ``wrt: params`` (the method):
    layer-wise Gramian of the 2T half-batch gradients, no T x P matrix. ``wrt: features``
    (variant): the halves' offset gradients of the feature maps. Heads get their own loss's
    gradient; ``lam`` is a buffer.
    """

    def __init__(self, task_names, options: MoDoOptions):
        super().__init__(task_names, options)
        self.gamma, self.rho = options.gamma, options.rho
        T = len(self.task_names)
        self.register_buffer("lam", torch.full((T,), 1.0 / T, dtype=torch.float64))

    def backward(self, losses: dict[str, Tensor], step: Step) -> dict[str, float]:
        """Cross Gramian of the two halves -> weight step -> whole-batch update."""
        idx = self.order(step)
        two = TwoSamples(step, self.wrt)
        lam = gr.modo_weights(two.cross, self.lam.cpu()[idx], self.gamma, self.rho)
        self.lam[idx] = lam.to(self.lam)
        two.backward(lam)
        return weight_logs(step.task_names, lam)


# -- SDMGrad -------------------------------------------------------------------------------------
class SDMGradCombiner(GradientCombiner):
    """SDMGrad, stochastic direction-oriented multi-objective gradient descent (Xiao et al.,
    NeurIPS 2023, "Direction-oriented Multi-objective Learning: Simple and Provable Stochastic
    Algorithms").

    The update ``(J^T w + lam g_0) / (1 + lam)`` moves towards the mean gradient ``g_0``
    while avoiding conflicts: ``w`` minimises ``(w + lam/T)^T A w`` over the simplex, solved
    by ``n_iter`` projected SGD steps with momentum from the previous ``w`` on the cross
    Gramian ``A = J_1 J_2^T`` of two independent samples, scaled by its mean diagonal
    (:func:`~.gradients.sdmgrad_weights`; step size and momentum as LibMTL's code).

    How the samples are drawn: the paper uses two samples for ``A`` and a third for the
    update (LibMTL: three mini-batches per step); here ``A`` comes from the two halves of the
    batch (:class:`TwoSamples`) and the update from the whole batch (their union), so one
    batch serves all three. ``wrt: params`` (the method): layer-wise Gramian of the 2T
    half-batch gradients, no T x P matrix. ``wrt: features`` (variant): the halves' offset
    gradients of the feature maps. Heads get their own loss's gradient; ``w`` is a buffer.
    """

    def __init__(self, task_names, options: SDMGradOptions):
        super().__init__(task_names, options)
        self.lam, self.lr, self.momentum, self.n_iter = (
            options.lam,
            options.lr,
            options.momentum,
            options.n_iter,
        )
        T = len(self.task_names)
        self.register_buffer("w", torch.full((T,), 1.0 / T, dtype=torch.float64))

    def backward(self, losses: dict[str, Tensor], step: Step) -> dict[str, float]:
        """Cross Gramian of the two halves -> inner solve -> whole-batch update."""
        idx = self.order(step)
        two = TwoSamples(step, self.wrt)
        w, weights = gr.sdmgrad_weights(
            two.cross, self.w.cpu()[idx], self.lam, self.lr, self.momentum, self.n_iter
        )
        self.w[idx] = w.to(self.w)
        two.backward(weights)
        return weight_logs(step.task_names, weights)
