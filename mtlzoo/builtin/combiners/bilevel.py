"""Bilevel combiners: the task weights are learnt on a held-out batch.

``auto_lambda``, ``moml`` and ``forum`` are LibMTL's bilevel methods (``LibMTL/trainer.py``:
``_prepare_tw``, ``train_bilevel``, ``bacth_forward_AutoLambda``, ``bacth_forward_MOML``,
``bacth_forward_FORUM``). What the three share, as in LibMTL:

* the weights are ``w = softmax(a)`` of logits ``a`` (a buffer, initialised at ``1/T``),
  moved by an Adam of their own (``outer_lr``, torch's other defaults; its moments are
  buffers, so a resumed run continues exactly), not by the trainer's optimizer;
* the lower level is the weighted training loss ``sum_t w_t L_t`` over every trainable
  parameter of the model (shared and per task); the upper level is the held-out losses of
  the **primary tasks** (``tasks.<name>.primary``; every task when none is marked: LibMTL has
  no primary tasks, the Auto-Lambda paper and code do, for its auxiliary-learning mode).

Where they differ from LibMTL (the same for the three):

* the step's training batch is both the lower-level batch and the batch of the model
  update, and the upper-level batch is the step's held-out batch (``step.heldout``, from the
  ``heldout`` split: see :mod:`mtlzoo.contract.heldout`). LibMTL halves the batch size,
  draws the inner and the outer batch from one loader and, for Auto-Lambda and MOML, a third
  full batch for the update; the Auto-Lambda code updates on the inner batch, as here;
* the lower level's gradients at the current parameters reuse the step's own forward pass;
* the extra passes leave the BatchNorm running statistics as they were (LibMTL's
  finite-difference passes of Auto-Lambda update the model's);
* one process only (the trainer refuses them under ``torchrun``), and no partial steps (a
  task without labels in a batch has no lower-level loss to differentiate).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from scipy.optimize import minimize
from torch import Tensor

from ...contract.combine import Combiner, Step
from ...contract.heldout import HeldOut
from . import gradients as gr
from .basic import weight_logs
from .bilevel_options import AutoLambdaOptions, BilevelOptions, FORUMOptions, MOMLOptions


def _grads(output: Tensor, inputs: Sequence[Tensor], retain: bool) -> list[Tensor]:
    """``d output / d inputs``, zeros where an input does not reach it."""
    got = torch.autograd.grad(output, list(inputs), retain_graph=retain, allow_unused=True)
    return [torch.zeros_like(x) if g is None else g for g, x in zip(got, inputs)]


def _flat(tensors: Sequence[Tensor]) -> Tensor:
    return torch.cat([t.reshape(-1) for t in tensors])


def _unflat(vector: Tensor, like: dict[str, Tensor]) -> dict[str, Tensor]:
    """``vector`` cut into tensors shaped like ``like``'s, as new leaves that require grad."""
    parts = torch.split(vector.detach(), [t.numel() for t in like.values()])
    return {n: p.view_as(t).to(t.dtype).requires_grad_() for (n, t), p in zip(like.items(), parts)}


def softmax_vjp(s: Tensor, v: Tensor) -> Tensor:
    """``J_softmax(a)^T v`` at ``s = softmax(a)``: the gradient of ``sum_t s_t v_t`` w.r.t. ``a``."""
    return s * (v - (s * v).sum())


def forum_qp(M: Tensor, pi: Tensor, c: float) -> Tensor:
    """FORUM's weights: ``argmin_w  w^T M w - c w_P`` over ``w >= 0`` (P + 1 entries) with
    ``sum_{p<P} w_p = 1`` and ``w_P >= sum_{p<P} pi_p w_p`` (LibMTL solves it with cvxpy; here
    SLSQP on the trace-normalised problem, the same minimiser)."""
    M = M.detach().to("cpu", torch.float64).numpy()
    M = (M + M.T) / 2
    pi_np = pi.detach().to("cpu", torch.float64).numpy()
    P = len(pi_np)
    scale = max(float(np.trace(M)), 1e-30)
    Ms, cs = M / scale, c / scale
    e = np.zeros(P + 1)
    e[P] = 1.0
    ones = np.r_[np.ones(P), 0.0]
    cons = [
        {"type": "eq", "fun": lambda w: w[:P].sum() - 1.0, "jac": lambda w: ones},
        {"type": "ineq", "fun": lambda w: w[P] - pi_np @ w[:P], "jac": lambda w: np.r_[-pi_np, 1.0]},
    ]
    x0 = np.r_[np.full(P, 1.0 / P), max(0.0, float(pi_np.mean()))]
    res = minimize(
        lambda w: w @ Ms @ w - cs * w[P],
        x0,
        jac=lambda w: 2 * Ms @ w - cs * e,
        method="SLSQP",
        bounds=[(0.0, None)] * (P + 1),
        constraints=cons,
        options={"ftol": 1e-15, "maxiter": 1000},
    )
    return torch.from_numpy(np.maximum(res.x, 0.0))


class BilevelCombiner(Combiner):
    """Base of the bilevel combiners (see the module docstring): the logits, their Adam and
    the held-out context."""

    level = "bilevel"

    def __init__(self, task_names, options: BilevelOptions):
        super().__init__(task_names)
        self.heldout_split = options.heldout
        self.outer_lr = options.outer_lr
        T = len(self.task_names)
        self.register_buffer("logits", torch.full((T,), 1.0 / T, dtype=torch.float64))
        self.register_buffer("adam_m", torch.zeros(T, dtype=torch.float64))
        self.register_buffer("adam_v", torch.zeros(T, dtype=torch.float64))
        self.register_buffer("adam_t", torch.zeros((), dtype=torch.long))

    def task_weights(self) -> Tensor:
        """``softmax(logits)`` (float64, CPU, combiner task order)."""
        return torch.softmax(self.logits.cpu(), 0)

    def _context(self, step: Step) -> tuple[HeldOut, list[int], list[str]]:
        """The step's held-out context, the step order and the upper-level (primary) tasks."""
        idx = self.order(step)
        if step.heldout is None:
            raise RuntimeError(
                f"{type(self).__name__} learns its weights on a held-out batch, and this step has none "
                f"(step.heldout): the trainer gives one to a combiner whose heldout_split is set; a Step "
                f"made by hand needs step.heldout = mtlzoo.contract.heldout.HeldOut(...)"
            )
        primary = [t for t in step.heldout.primary if t in self.task_names] or list(self.task_names)
        return step.heldout, idx, primary

    def _adam(self, grad: Tensor) -> None:
        """One step of torch's Adam (betas 0.9, 0.999, eps 1e-8) on the logits."""
        g = grad.detach().to(self.logits)
        self.adam_t += 1
        t = int(self.adam_t)
        b1, b2 = 0.9, 0.999
        self.adam_m.mul_(b1).add_((1 - b1) * g)
        self.adam_v.mul_(b2).add_((1 - b2) * g * g)
        m_hat = self.adam_m / (1 - b1**t)
        v_hat = self.adam_v / (1 - b2**t)
        self.logits -= self.outer_lr * m_hat / (v_hat.sqrt() + 1e-8)

    def _update_model(self, step: Step, idx: list[int]) -> dict[str, float | Tensor]:
        """The model's update: ``sum_t w_t L_t`` of the training batch with the new weights."""
        w = self.task_weights()
        step.backward_weighted(w[idx], heads="weighted")
        return weight_logs(self.task_names, w)


class AutoLambdaCombiner(BilevelCombiner):
    """Auto-Lambda (Liu, Li, Kuang & Davison, TMLR 2022, "Auto-Lambda: Disentangling Dynamic
    Task Relationships"), as LibMTL implements it (``bacth_forward_AutoLambda``, from the
    authors' code ``auto_lambda.py``):

    1. a virtual SGD step ``theta' = theta - lr grad sum_t w_t L_t`` on the training batch
       (``lr``: ``inner_lr``, else the optimizer's current learning rate);
    2. ``d``: the gradient at ``theta'`` of the primary tasks' summed held-out losses;
    3. the logits' gradient ``-lr d^2(sum_t w_t L_t)/(d a d theta) d``, by central finite
       differences of the training losses at ``theta +- eps d``, ``eps = 0.01 / |d|``;
       one Adam step on the logits;
    4. the model's update: ``sum_t w_t L_t`` with the new weights.

    Variants: weights are ``softmax(a)`` (LibMTL; the authors' code learns raw weights from
    0.1), and the virtual step is plain SGD (LibMTL; the authors' code adds momentum and
    weight decay). **Cost per step** beyond a plain one: one more backward pass through the
    training batch's graph, one forward and one backward pass on the held-out batch, two
    forward passes (no gradient) on the training batch; memory: two more copies of the
    parameters.
    """

    def __init__(self, task_names, options: AutoLambdaOptions):
        super().__init__(task_names, options)
        self.inner_lr = options.inner_lr

    def backward(self, losses: dict[str, Tensor], step: Step) -> dict[str, float | Tensor]:
        """Meta-update of the weights on the held-out batch, then the weighted update."""
        h, idx, primary = self._context(step)
        lr = float(self.inner_lr) if self.inner_lr is not None else h.lr
        params = h.parameters
        s = self.task_weights()
        L = torch.stack([losses[t] for t in self.task_names])
        g = _grads((s.to(L) * L).sum(), list(params.values()), retain=True)
        virtual = {n: (p.detach() - lr * gi).requires_grad_() for (n, p), gi in zip(params.items(), g)}
        del g
        outer = h.losses("heldout", virtual)
        d = _grads(torch.stack([outer[t] for t in primary]).sum(), list(virtual.values()), retain=False)
        del outer, virtual
        norm = float(torch.linalg.vector_norm(_flat(d)))
        if norm > 0:
            eps = 0.01 / norm
            with torch.no_grad():
                values = []
                for sign in (1.0, -1.0):
                    moved = {n: p.detach() + sign * eps * di for (n, p), di in zip(params.items(), d)}
                    out = h.losses("train", moved)
                    values.append(torch.stack([out[t].detach() for t in self.task_names]).double().cpu())
            self._adam(-lr * softmax_vjp(s, (values[0] - values[1]) / (2 * eps)))
        else:  # the held-out loss is flat at theta': the weights have no direction to move in
            self._adam(torch.zeros_like(s))
        return self._update_model(step, idx)


class MOMLCombiner(BilevelCombiner):
    """MOML (Ye, Lin, Xie & Zhang, NeurIPS 2021, "Multi-Objective Meta Learning"; AIJ 2024),
    LibMTL's one-step implementation (``bacth_forward_MOML``):

    1. ``G_f``: the T x P matrix of the training losses' gradients (every parameter);
       ``theta' = theta - inner_lr w^T G_f``;
    2. for each primary task ``p``, its held-out gradient ``g_p`` at ``theta'`` gives the
       logits' gradient ``-inner_lr g_p G_f^T J_softmax(a)`` (one objective per primary task);
    3. MGDA over those gradients, each scaled to unit norm (LibMTL's ``l2`` normalisation;
       the exact min-norm point here, LibMTL runs Sener & Koltun's Frank-Wolfe solver);
       one Adam step on the logits along the min-norm combination;
    4. the model's update: ``sum_t w_t L_t`` with the new weights.

    **Cost per step** beyond a plain one: T backward passes through the training batch's graph
    (one per task), one forward and P backward passes on the held-out batch (P primary tasks);
    memory: the T x P matrix of every parameter's gradients (T copies of the parameters).
    """

    def __init__(self, task_names, options: MOMLOptions):
        super().__init__(task_names, options)
        self.inner_lr = options.inner_lr

    def backward(self, losses: dict[str, Tensor], step: Step) -> dict[str, float | Tensor]:
        """Multi-objective meta-update of the weights, then the weighted update."""
        h, idx, primary = self._context(step)
        params = h.parameters
        s = self.task_weights()
        Gf = torch.stack(
            [_flat(_grads(losses[t], list(params.values()), retain=True)) for t in self.task_names]
        )
        virtual = _unflat(_flat(list(params.values())) - self.inner_lr * (s.to(Gf) @ Gf), params)
        outer = h.losses("heldout", virtual)
        rows = [
            -self.inner_lr
            * (Gf @ _flat(_grads(outer[t], list(virtual.values()), retain=True))).double().cpu()
            for t in primary
        ]
        js = torch.diag(s) - torch.outer(s, s)
        A = torch.stack(rows) @ js  # P x T: each primary task's gradient w.r.t. the logits
        values = torch.stack([outer[t].detach() for t in primary])
        del Gf, virtual, outer
        G = A @ A.T
        n = gr.mgda_normalizers(G, values, "l2")
        sol = gr.min_norm_weights(G / (n[:, None] * n[None, :]))
        self._adam(sol @ (A / n[:, None]))
        return self._update_model(step, idx)


class FORUMCombiner(BilevelCombiner):
    """FORUM (Ye, Yao, Lin & Zhang, ECAI 2024, "A First-Order Multi-Gradient Algorithm for
    Multi-Objective Bi-Level Optimization"), as LibMTL implements it (``bacth_forward_FORUM``):

    1. ``g_f``: the gradient of ``f = sum_t w_t L_t`` (training batch) w.r.t. the logits and
       every parameter; ``theta_K``: ``inner_steps`` SGD steps (``inner_lr``) on ``f`` from
       ``theta`` (stopped early when ``f > 1e5``); ``g_q = g_f - (d f(theta_K) / d a, 0)``;
    2. ``g_p``: each primary task's held-out gradient at ``theta`` (w.r.t. the parameters),
       scaled to unit norm; ``pi_p = phi - <g_q, g_p> / (|g_q|^2 + 1e-8)``;
    3. the weights ``w`` of the quadratic program of :func:`forum_qp` on the Gramian of
       ``(g_p..., g_q)``; ``lambda``, their running average with rate ``(epoch + 1)^(-3/4)``
       (a buffer); ``nu = max(sum_p lambda_p pi_p, 0)``;
    4. the update ``sum_p lambda_p g_p + nu g_q``: its logits part moves the logits (Adam),
       its parameter part is written as every parameter's gradient (so, unlike Auto-Lambda and
       MOML, the model's update is not a weighted sum of the training losses).

    **Cost per step** beyond a plain one: ``inner_steps`` forward and backward passes and one
    forward pass on the training batch, one forward and P backward passes on the held-out
    batch; memory: the P x P matrix of the primary tasks' held-out gradients; a small
    quadratic program (scipy's SLSQP; LibMTL uses cvxpy).
    """

    def __init__(self, task_names, options: FORUMOptions):
        super().__init__(task_names, options)
        self.inner_lr, self.inner_steps, self.phi = options.inner_lr, options.inner_steps, options.phi
        self.register_buffer("lambdas", torch.zeros(len(self.task_names), dtype=torch.float64))

    def backward(self, losses: dict[str, Tensor], step: Step) -> dict[str, float | Tensor]:
        """FORUM's joint update of the logits and the parameters."""
        h, idx, primary = self._context(step)
        params = h.parameters
        T = len(self.task_names)
        s = self.task_weights()
        L = torch.stack([losses[t] for t in self.task_names])
        g_theta = _flat(_grads((s.to(L) * L).sum(), list(params.values()), retain=False))
        g_q = torch.cat([softmax_vjp(s, L.detach().double().cpu()).to(g_theta), g_theta])
        theta = {n: p.detach() for n, p in params.items()}
        for _ in range(self.inner_steps):
            leaves = {n: v.detach().requires_grad_() for n, v in theta.items()}
            inner = h.losses("train", leaves)
            f = (s.to(L) * torch.stack([inner[t] for t in self.task_names])).sum()
            if float(f.detach()) > 1e5:  # as LibMTL: a too large inner_lr or inner_steps diverges
                break
            theta = {
                n: x.detach() - self.inner_lr * g
                for (n, x), g in zip(leaves.items(), _grads(f, list(leaves.values()), False))
            }
        with torch.no_grad():
            final = h.losses("train", theta)
            at_k = torch.stack([final[t].detach() for t in self.task_names]).double().cpu()
        g_q[:T] -= softmax_vjp(s, at_k).to(g_q)
        outer = h.losses("heldout")
        G_F = torch.stack([_flat(_grads(outer[t], list(params.values()), retain=True)) for t in primary])
        del outer
        G_F = G_F / torch.linalg.vector_norm(G_F, dim=1, keepdim=True).clamp(min=1e-30)
        G_F = torch.cat([G_F.new_zeros(len(primary), T), G_F], 1)
        q2 = float(g_q @ g_q) + 1e-8
        pi = (self.phi - (G_F @ g_q) / q2).double().cpu()
        A = torch.cat([G_F, g_q[None]], 0)
        w = forum_qp((A @ A.T).double().cpu(), pi, self.phi * q2)
        rate = 1.0 / (int(step.epoch) + 1) ** 0.75
        rows = torch.tensor([self.task_names.index(t) for t in primary])
        lam = self.lambdas.cpu()[rows]
        lam = lam + rate * (w[: len(primary)] - lam)
        self.lambdas[rows] = lam.to(self.lambdas)
        nu = max(float(lam @ pi), 0.0)
        update = lam.to(G_F) @ G_F + nu * g_q
        self._adam(update[:T].double().cpu())
        for p, g in zip(params.values(), torch.split(update[T:], [p.numel() for p in params.values()])):
            g = g.view_as(p).to(p.dtype)
            p.grad = g.clone() if p.grad is None else p.grad + g
        step.sync_gradients()
        return {**weight_logs(self.task_names, self.task_weights()), "nu": nu}


__all__ = ["AutoLambdaCombiner", "MOMLCombiner", "FORUMCombiner", "forum_qp", "softmax_vjp"]
