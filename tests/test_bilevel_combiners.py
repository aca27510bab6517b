"""The combiners of issue 23: torchjd's Krum and TrimmedMean, LibMTL's bilevel Auto-Lambda, MOML
and FORUM.

Krum and TrimmedMean are compared with torchjd's own aggregators (installed) on identical
inputs. The bilevel combiners are compared with LibMTL's procedures, re-implemented here from
its source (``LibMTL/trainer.py`` at commit 4336804: ``_prepare_tw`` lines 349-361,
``bacth_forward_AutoLambda`` 454-541, ``bacth_forward_MOML`` 543-612, ``bacth_forward_FORUM``
614-722; ``LibMTL/weighting/MGDA.py`` ``_find_min_norm_element`` 22-108 and
``_gradient_normalizers`` 110-122), on the same float64 toy model and batches, with the
deviations the combiners' docstrings state switched to LibMTL's choice where they matter (the
model update here uses the inner batch, as the combiners do). Then through the trainer: they
train, resume exactly (the held-out batches are reproducible) and are refused where they
cannot work."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchjd.aggregation as tjd
from scipy.optimize import LinearConstraint, minimize
from torch import nn

import mtlzoo.builtin.combiners as C
from mtlzoo.apps.cli import main
from mtlzoo.builtin.combiners import bilevel as bl
from mtlzoo.builtin.combiners import robust as rb
from mtlzoo.contract.combine import Step
from mtlzoo.contract.errors import ConfigError
from mtlzoo.contract.heldout import HeldOut
from mtlzoo.runtime.checkpoint import load_weights
from mtlzoo.runtime.train import Trainer, new_run_dir

NAMES = ["t0", "t1", "t2"]
NEW = ["krum", "trimmed_mean", "auto_lambda", "moml", "forum"]


# -- Krum and TrimmedMean against torchjd ---------------------------------------------------------
def matrices():
    g = torch.Generator().manual_seed(11)
    out = [torch.randn(T, 9, generator=g, dtype=torch.float64) for T in (3, 4, 5, 7)]
    outlier = torch.randn(5, 9, generator=g, dtype=torch.float64)
    outlier[2] *= 50  # one far-away task gradient
    return [*out, outlier]


@pytest.mark.parametrize("J", matrices(), ids=lambda J: f"T{J.shape[0]}")
def test_krum_weights_equal_torchjd(J):
    T = J.shape[0]
    G = J @ J.T
    for f in range(0, T - 2):
        for k in range(1, T + 1):
            ours = rb.krum_weights(G, f, k)
            theirs = tjd.KrumWeighting(n_byzantine=f, n_selected=k)(G)
            assert torch.equal(ours, theirs), (f, k)
            assert torch.allclose(J.T @ ours, tjd.Krum(n_byzantine=f, n_selected=k)(J), atol=1e-12)


def test_krum_leaves_out_the_far_away_task_gradient():
    J = matrices()[-1]
    w = rb.krum_weights(J @ J.T, n_byzantine=1, n_selected=3)
    assert w[2] == 0 and torch.isclose(w.sum(), torch.tensor(1.0, dtype=torch.float64))


@pytest.mark.parametrize("J", matrices(), ids=lambda J: f"T{J.shape[0]}")
def test_trimmed_mean_equals_torchjd(J):
    for k in range(0, (J.shape[0] - 1) // 2 + 1):
        assert torch.allclose(rb.trimmed_mean(J, k), tjd.TrimmedMean(trim_number=k)(J), atol=1e-14)


class Linear(nn.Module):
    """Shared ``theta`` (P), loss of task t ``<A_t, theta> + b_t``: the task-gradient matrix is A."""

    def __init__(self, A: torch.Tensor):
        super().__init__()
        self.A = A.float()
        self.theta = nn.Parameter(torch.zeros(A.shape[1]))
        self.b = nn.ParameterList([nn.Parameter(torch.zeros(())) for _ in range(A.shape[0])])

    def step(self, names):
        feats = (self.theta * 1.0)[None]
        losses = {n: (self.A[i] * feats[0]).sum() + self.b[i] for i, n in enumerate(names)}
        own = {n: [self.b[i]] for i, n in enumerate(names)}
        return losses, Step(losses, [feats], [self.theta], own)


@pytest.mark.parametrize("wrt", ["params", "features"])
def test_krum_and_trimmed_mean_through_a_step(wrt):
    J = matrices()[-1]
    names = [f"t{i}" for i in range(J.shape[0])]
    for combiner, expected in (
        (rb.KrumCombiner(names, C.KrumOptions(wrt=wrt, n_byzantine=1, n_selected=2)), tjd.Krum(1, 2)(J)),
        (rb.TrimmedMeanCombiner(names, C.TrimmedMeanOptions(wrt=wrt, trim_number=1)), tjd.TrimmedMean(1)(J)),
    ):
        model = Linear(J)
        losses, step = model.step(names)
        combiner.backward(losses, step)
        assert torch.allclose(model.theta.grad.double(), expected, rtol=1e-5, atol=1e-4), type(combiner)
        assert all(float(b.grad) == 1.0 for b in model.b)  # heads: their own loss's gradient


def test_too_few_tasks_are_refused_in_one_line():
    with pytest.raises(
        ConfigError, match=r"combiner.n_byzantine: Krum with n_byzantine 1 needs at least 4 tasks"
    ):
        rb.KrumCombiner(NAMES, C.KrumOptions(n_byzantine=1))
    with pytest.raises(ConfigError, match=r"combiner.n_selected: 4 is more than the 3 tasks"):
        rb.KrumCombiner(NAMES, C.KrumOptions(n_selected=4))
    with pytest.raises(
        ConfigError, match=r"combiner.trim_number: trimming 2 from each end needs at least 5 tasks"
    ):
        rb.TrimmedMeanCombiner(NAMES, C.TrimmedMeanOptions(trim_number=2))


# -- the bilevel combiners against LibMTL ---------------------------------------------------------
class Toy(nn.Module):
    """A shared tanh layer and one linear head per task (float64); squared-error losses."""

    def __init__(self, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.shared = nn.Linear(4, 6)
        self.heads = nn.ModuleList([nn.Linear(6, 1) for _ in NAMES])
        self.double()

    def features(self, x):
        return torch.tanh(self.shared(x))

    def forward(self, x):
        f = self.features(x)
        return [h(f).squeeze(1) for h in self.heads]


def task_losses(preds, y):
    return [((p - y[:, i]) ** 2).mean() for i, p in enumerate(preds)]


def batches(seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return {
        k: (
            torch.randn(8, 4, generator=g, dtype=torch.float64),
            torch.randn(8, 3, generator=g, dtype=torch.float64),
        )
        for k in ("train", "heldout")
    }


def our_step(model: Toy, data, lr: float, primary=(), epoch: int = 0):
    """The model's step through mtlzoo's contract: a Step with a HeldOut over the same batches."""
    x, y = data["train"]
    feats = model.features(x)
    losses = dict(zip(NAMES, task_losses([h(feats).squeeze(1) for h in model.heads], y)))
    own = {n: list(h.parameters()) for n, h in zip(NAMES, model.heads)}
    step = Step(losses, [feats], list(model.shared.parameters()), own, epoch=epoch)

    def forward(which, params):
        xb, yb = data[which]
        return dict(
            zip(NAMES, task_losses(torch.func.functional_call(model, dict(params), (xb,), strict=False), yb))
        )

    step.heldout = HeldOut(forward, dict(model.named_parameters()), lr, list(primary))
    return losses, step


def forward4loss(model, data):
    """LibMTL's ``forward4loss`` (trainer.py 199-218) for one input: the stacked task losses."""
    x, y = data
    return torch.stack(task_losses(model(x), y))


class TW(nn.Module):
    """LibMTL's task-weight module (trainer.py 349-361): softmax of logits initialised at 1/T."""

    def __init__(self):
        super().__init__()
        self.weights = nn.Parameter(torch.full((len(NAMES),), 1 / len(NAMES), dtype=torch.float64))

    def forward(self, loss):
        return torch.sum(F.softmax(self.weights, dim=-1) * loss)


def libmtl_update(model, tw, data):
    """The model update of LibMTL's Auto-Lambda and MOML on the given batch: ``tw(losses)``
    backpropagated into the model's gradients."""
    for p in model.parameters():
        p.grad = None
    tw(forward4loss(model, data)).sum().backward()
    return [p.grad.clone() for p in model.parameters()]


def libmtl_auto_lambda(model, tw, opt, inner, outer, inner_lr):
    """``bacth_forward_AutoLambda`` (trainer.py 454-541): virtual step, outer gradient, finite
    difference Hessian-vector product, Adam on the logits."""
    meta = copy.deepcopy(model)
    loss = tw(forward4loss(meta, inner)).sum()
    grads = torch.autograd.grad(loss, meta.parameters())
    with torch.no_grad():
        for w, g in zip(meta.parameters(), grads):
            w.copy_(w - inner_lr * g)
    loss = forward4loss(meta, outer).sum()
    d_model = torch.autograd.grad(loss, meta.parameters(), allow_unused=True)
    eps = 0.01 / torch.cat([g.view(-1) for g in d_model]).norm()
    with torch.no_grad():
        for p, d in zip(model.parameters(), d_model):
            p += eps * d
    d_p = torch.autograd.grad(tw(forward4loss(model, inner)), tw.parameters())
    with torch.no_grad():
        for p, d in zip(model.parameters(), d_model):
            p -= 2 * eps * d
    d_n = torch.autograd.grad(tw(forward4loss(model, inner)), tw.parameters())
    with torch.no_grad():
        for p, d in zip(model.parameters(), d_model):
            p += eps * d
    hessian = [(p - n) / (2.0 * eps) for p, n in zip(d_p, d_n)]
    for mw, h in zip(tw.parameters(), hessian):
        mw.grad = -inner_lr * h
    opt.step()
    return -inner_lr * hessian[0]


def libmtl_min_norm(grads):
    """LibMTL's MGDA ``_find_min_norm_element`` (MGDA.py 22-108): Sener & Koltun's Frank-Wolfe."""

    def from2(v1v1, v1v2, v2v2):
        if v1v2 >= v1v1:
            return 0.999, v1v1
        if v1v2 >= v2v2:
            return 0.001, v2v2
        gamma = -1.0 * ((v1v2 - v2v2) / (v1v1 + v2v2 - 2 * v1v2))
        return gamma, v2v2 + gamma * (v1v2 - v2v2)

    def proj(y):
        m = len(y)
        s = torch.sort(y, descending=True)[0]
        tmpsum, tmax_f = 0.0, (torch.sum(y) - 1.0) / m
        for i in range(m - 1):
            tmpsum += s[i]
            tmax = (tmpsum - 1) / (i + 1.0)
            if tmax > s[i + 1]:
                tmax_f = tmax
                break
        return torch.max(y - tmax_f, torch.zeros(m, dtype=y.dtype))

    def next_point(cur, grad, n):
        pg = grad - torch.sum(grad) / n
        tm1 = -1.0 * cur[pg < 0] / pg[pg < 0]
        tm2 = (1.0 - cur[pg > 0]) / pg[pg > 0]
        t = torch.ones(1, dtype=grad.dtype)
        if (tm1 > 1e-7).sum() > 0:
            t = torch.min(tm1[tm1 > 1e-7])
        if (tm2 > 1e-7).sum() > 0:
            t = torch.min(t, torch.min(tm2[tm2 > 1e-7]))
        return proj(pg * t + cur)

    M = grads @ grads.T
    n = grads.shape[0]
    dmin, sol = 1e8, None
    for i in range(n):
        for j in range(i + 1, n):
            c, d = from2(M[i, i], M[i, j], M[j, j])
            if d < dmin:
                dmin, sol = d, [(i, j), c]
    vec = torch.zeros(n, dtype=grads.dtype)
    vec[sol[0][0]], vec[sol[0][1]] = sol[1], 1 - sol[1]
    if n < 3:  # optimal for two gradients
        return vec
    for _ in range(250):
        new = next_point(vec, -1.0 * (M @ vec), n)
        v1v1, v1v2, v2v2 = vec @ M @ vec, vec @ M @ new, new @ M @ new
        nc, _ = from2(v1v1, v1v2, v2v2)
        new_vec = nc * vec + (1 - nc) * new
        if torch.sum(torch.abs(new_vec - vec)) < 1e-5:
            return vec
        vec = new_vec
    return vec


def libmtl_moml(model, tw, opt, inner, outer, inner_lr, upper=(0, 1, 2)):
    """``bacth_forward_MOML`` (trainer.py 543-612); returns the logits' gradient. ``upper``: the
    tasks whose held-out losses are objectives (LibMTL: all; mtlzoo: the primary tasks)."""
    meta = copy.deepcopy(model)
    losses = forward4loss(meta, inner)
    g_f = torch.stack([flat_grad(losses[t], meta.parameters()) for t in range(3)])
    alpha = tw.weights.data.clone()
    beg = 0
    for p in meta.parameters():
        p.data -= inner_lr * (F.softmax(alpha, dim=-1) @ g_f[:, beg : beg + p.numel()]).view(p.size())
        beg += p.numel()
    g_s = torch.autograd.functional.jacobian(lambda a: F.softmax(a, dim=-1), alpha)
    losses = forward4loss(meta, outer)
    alpha_grad = torch.zeros(len(upper), 3, dtype=torch.float64)
    for i, t in enumerate(upper):
        alpha_grad[i] = -inner_lr * flat_grad(losses[t], meta.parameters()) @ g_f.t() @ g_s
    alpha_grad = alpha_grad / alpha_grad.pow(2).sum(-1).sqrt().unsqueeze(1)  # 'l2' normalisation
    sol = libmtl_min_norm(alpha_grad) if len(upper) > 1 else torch.ones(1, dtype=torch.float64)
    grad = sum(sol[i] * alpha_grad[i] for i in range(len(upper)))
    tw.weights.grad = grad.clone()
    opt.step()
    return grad


def flat_grad(output, params):
    return torch.cat([g.view(-1) for g in torch.autograd.grad(output, list(params), retain_graph=True)])


def qp_reference(M, pi, c):
    """FORUM's quadratic program (LibMTL solves it with cvxpy, not installed here) by scipy's
    trust-constr: an independent solver of the same problem."""
    P = len(pi)
    A = np.vstack([np.r_[np.ones(P), 0.0], np.r_[-pi, 1.0]])
    res = minimize(
        lambda w: w @ M @ w - c * w[P],
        np.r_[np.full(P, 1 / P), max(0, pi.mean())],
        jac=lambda w: 2 * M @ w - c * np.eye(P + 1)[P],
        method="trust-constr",
        constraints=[LinearConstraint(A, [1.0, 0.0], [1.0, np.inf])],
        bounds=[(0, None)] * (P + 1),
        options={"gtol": 1e-12, "xtol": 1e-14, "maxiter": 5000},
    )
    return np.maximum(res.x, 0)


def libmtl_forum(model, tw, opt, inner, outer, inner_lr, inner_step, phi, epoch, lam):
    """``bacth_forward_FORUM`` (trainer.py 614-722) with the QP solved by :func:`qp_reference`;
    returns the logits' gradient and each parameter's gradient."""
    T = 3
    loss = tw(forward4loss(model, inner))
    g_f = torch.cat(
        [g.view(-1) for g in torch.autograd.grad(loss, list(tw.parameters()) + list(model.parameters()))]
    )
    inner_model = copy.deepcopy(model)
    inner_optim = torch.optim.SGD(inner_model.parameters(), lr=inner_lr, weight_decay=0)
    for _ in range(inner_step):
        loss = tw(forward4loss(inner_model, inner))
        if loss.item() > 1e5:
            break
        inner_optim.zero_grad()
        loss.backward()
        inner_optim.step()
    g_hat = torch.cat(
        [g.view(-1) for g in torch.autograd.grad(tw(forward4loss(inner_model, inner)), tw.parameters())]
    )
    g_q = g_f.clone()
    g_q[:T] = g_q[:T] - g_hat
    losses = forward4loss(model, outer)
    G = torch.stack(
        [
            torch.cat(
                [g.view(-1) for g in torch.autograd.grad(losses[t], model.parameters(), retain_graph=True)]
            )
            for t in range(T)
        ]
    )
    G = G / G.pow(2).sum(-1).sqrt().unsqueeze(1)
    G = torch.cat([torch.zeros(T, T, dtype=G.dtype), G], dim=1)
    pi = np.array([phi - ((g_q * G[t]).sum() / (g_q.norm().pow(2) + 1e-8)).item() for t in range(T)])
    w_constant = phi * (g_q.norm().pow(2) + 1e-8).item()
    A = torch.cat([G, g_q.unsqueeze(0)], dim=0)
    w = qp_reference((A @ A.t()).detach().numpy(), pi, w_constant)
    for t in range(T):
        lam[t] = lam[t] + (1 / (epoch + 1) ** (3 / 4)) * (w[t] - lam[t])
    nu = max(sum(lam[t] * pi[t] for t in range(T)), 0)
    g_final = sum(lam[t] * G[t] for t in range(T)) + nu * g_q
    tw.weights.grad = g_final[:T].clone()
    opt.step()
    grads, beg = [], T
    for p in model.parameters():
        grads.append(g_final[beg : beg + p.numel()].view(p.size()))
        beg += p.numel()
    return g_final[:T], grads


def run_ours(combiner, model, data, lr, epoch=0):
    for p in model.parameters():
        p.grad = None
    losses, step = our_step(model, data, lr, epoch=epoch)
    combiner.backward(losses, step)
    return [p.grad.clone() for p in model.parameters()]


def test_auto_lambda_matches_libmtl_over_three_steps():
    ours_model, ref_model = Toy(), Toy()
    comb = bl.AutoLambdaCombiner(NAMES, C.AutoLambdaOptions(outer_lr=0.05))
    tw = TW()
    opt = torch.optim.Adam(tw.parameters(), lr=0.05)
    for k in range(3):
        data = batches(k)
        lr = 0.3
        grads = run_ours(comb, ours_model, data, lr)
        meta_grad = libmtl_auto_lambda(ref_model, tw, opt, data["train"], data["heldout"], lr)
        ref = libmtl_update(ref_model, tw, data["train"])
        if k == 0:  # Adam's first moment is 0.1 x the first gradient
            assert torch.allclose(comb.adam_m / 0.1, meta_grad, rtol=1e-7, atol=1e-12)
        assert torch.allclose(comb.task_weights(), F.softmax(tw.weights.detach(), -1), rtol=1e-9, atol=0)
        for a, b in zip(grads, ref):
            assert torch.allclose(a, b, rtol=1e-9, atol=1e-12)
        with torch.no_grad():  # both models take the same SGD step
            for p, q in zip(ours_model.parameters(), ref_model.parameters()):
                p -= lr * p.grad
                q -= lr * q.grad
    assert not torch.allclose(comb.task_weights(), torch.full((3,), 1 / 3, dtype=torch.float64))


def test_auto_lambda_upper_level_is_the_primary_tasks():
    """With primary tasks the held-out loss is theirs alone (the Auto-Lambda code's ``pri_tasks``)."""
    data = batches(3)
    seen = []
    model = Toy()
    losses, step = our_step(model, data, 0.3, primary=["t1"])
    inner = step.heldout._forward

    def spy(which, params):
        out = inner(which, params)
        seen.append((which, sorted(out)))
        return out

    step.heldout._forward = spy
    comb = bl.AutoLambdaCombiner(NAMES, C.AutoLambdaOptions())
    comb.backward(losses, step)
    ref = Toy()
    meta = copy.deepcopy(ref)
    tw = TW()
    g = torch.autograd.grad(tw(forward4loss(meta, data["train"])), meta.parameters())
    with torch.no_grad():
        for w, gi in zip(meta.parameters(), g):
            w -= 0.3 * gi
    only_t1 = torch.autograd.grad(
        forward4loss(meta, data["heldout"])[1], meta.parameters(), allow_unused=True
    )
    all_tasks = torch.autograd.grad(forward4loss(meta, data["heldout"]).sum(), meta.parameters())
    assert [w for w, _ in seen] == ["heldout", "train", "train"]
    assert not all(torch.allclose(a, b) for a, b in zip(only_t1, all_tasks))  # the choice matters


def test_moml_with_every_task_upper_level_agrees_with_libmtl_on_a_stationary_point():
    """LibMTL's setting (every task's held-out loss an objective): the T meta-gradients are
    T vectors in the (T-1)-dimensional image of the softmax Jacobian, here with the origin in
    their convex hull, so the min-norm point is 0. Both solvers say so (LibMTL's Frank-Wolfe to
    a norm below 1e-6, the exact one to rounding); Adam then turns LibMTL's remainder into a
    full step of outer_lr."""
    model = Toy(2)
    comb = bl.MOMLCombiner(NAMES, C.MOMLOptions(inner_lr=0.5, outer_lr=0.05))
    tw = TW()
    data = batches(10)
    run_ours(comb, model, data, 0.1)
    meta_grad = libmtl_moml(
        Toy(2), tw, torch.optim.Adam(tw.parameters(), lr=0.05), data["train"], data["heldout"], 0.5
    )
    assert 1e-7 < float(meta_grad.norm()) < 1e-6 and float((comb.adam_m / 0.1).norm()) < 1e-12


def test_moml_matches_libmtl_with_primary_tasks():
    ours_model, ref_model = Toy(2), Toy(2)
    comb = bl.MOMLCombiner(NAMES, C.MOMLOptions(inner_lr=0.5, outer_lr=0.05))
    tw = TW()
    opt = torch.optim.Adam(tw.parameters(), lr=0.05)
    for k in range(3):
        data = batches(10 + k)
        before_m = comb.adam_m.clone()
        for p in ours_model.parameters():
            p.grad = None
        losses, step = our_step(ours_model, data, 0.1, primary=["t0", "t1"])
        comb.backward(losses, step)
        grads = [p.grad.clone() for p in ours_model.parameters()]
        meta_grad = libmtl_moml(ref_model, tw, opt, data["train"], data["heldout"], 0.5, upper=(0, 1))
        ref = libmtl_update(ref_model, tw, data["train"])
        ours_grad = (comb.adam_m - 0.9 * before_m) / 0.1  # Adam's first moment update
        assert float(meta_grad.norm()) > 0.1  # not a stationary point
        assert torch.allclose(ours_grad, meta_grad, rtol=1e-7, atol=1e-12)
        assert torch.allclose(comb.task_weights(), F.softmax(tw.weights.detach(), -1), rtol=1e-9)
        for a, b in zip(grads, ref):
            assert torch.allclose(a, b, rtol=1e-9, atol=1e-12)
        with torch.no_grad():
            for p, q in zip(ours_model.parameters(), ref_model.parameters()):
                p -= 0.1 * p.grad
                q -= 0.1 * q.grad


def test_forum_matches_libmtl():
    ours_model, ref_model = Toy(3), Toy(3)
    comb = bl.FORUMCombiner(NAMES, C.FORUMOptions(inner_lr=0.2, inner_steps=3, phi=0.1, outer_lr=0.05))
    tw = TW()
    opt = torch.optim.Adam(tw.parameters(), lr=0.05)
    lam = np.zeros(3)
    for epoch in range(2):
        data = batches(20 + epoch)
        before_m = comb.adam_m.clone()
        grads = run_ours(comb, ours_model, data, 0.1, epoch=epoch)
        ref_alpha, ref_grads = libmtl_forum(
            ref_model, tw, opt, data["train"], data["heldout"], 0.2, 3, 0.1, epoch, lam
        )
        ours_alpha = (comb.adam_m - 0.9 * before_m) / 0.1
        assert torch.allclose(ours_alpha, ref_alpha.detach(), rtol=1e-5, atol=1e-10)
        assert np.allclose(comb.lambdas.numpy(), lam, rtol=1e-5, atol=1e-8)
        for a, b in zip(grads, ref_grads):
            assert torch.allclose(a, b.detach(), rtol=1e-5, atol=1e-10)
        with torch.no_grad():
            for p, q, g in zip(ours_model.parameters(), ref_model.parameters(), grads):
                p -= 0.1 * g
                q -= 0.1 * g


def test_forum_qp_matches_an_independent_solver():
    g = torch.Generator().manual_seed(4)
    for P in (2, 3, 5):
        A = torch.randn(P + 1, 7, generator=g, dtype=torch.float64)
        M = A @ A.T
        pi = torch.randn(P, generator=g, dtype=torch.float64) * 0.3
        c = float(torch.rand((), generator=g, dtype=torch.float64)) * 2
        ours = bl.forum_qp(M, pi, c).numpy()
        ref = qp_reference(M.numpy(), pi.numpy(), c)

        Mn = M.numpy()
        assert abs(ours[:P].sum() - 1) < 1e-9 and ours[P] >= pi.numpy() @ ours[:P] - 1e-9
        assert ours @ Mn @ ours - c * ours[P] <= ref @ Mn @ ref - c * ref[P] + 1e-8
        assert np.allclose(ours, ref, atol=1e-5)


def test_a_bilevel_combiner_without_a_heldout_batch_says_what_is_missing():
    model = Toy()
    losses, step = our_step(model, batches(), 0.1)
    step.heldout = None
    with pytest.raises(RuntimeError, match="learns its weights on a held-out batch, and this step has none"):
        bl.MOMLCombiner(NAMES, C.MOMLOptions()).backward(losses, step)


# -- registry, kit and trainer ---------------------------------------------------------------------
def test_list_combiner_shows_the_new_names_with_their_options(capsys):
    assert main(["list", "combiner", "--json"]) == 0
    names = [r["name"] for r in __import__("json").loads(capsys.readouterr().out)]
    assert set(NEW) <= set(names) and len(names) == 32
    assert main(["config", "show", "configs/quickstart.yaml", "combiner.name=forum"]) == 0
    out = capsys.readouterr().out
    assert "heldout: train" in out and "inner_steps: 5" in out and "phi: 0.1" in out


def test_the_conformance_kit_passes_for_the_new_combiners(zoo, tmp_path):
    from mtlzoo.testing.kit.combiner import check_combiner

    for name in NEW:
        results = check_combiner(zoo, zoo.entry("combiner", name), tmp_path)
        bad = [r for r in results if not r.ok]
        assert results and not bad, [(r.check, r.message) for r in bad]


BILEVEL = [
    {"name": "auto_lambda"},
    {"name": "moml", "inner_lr": 0.01},
    {"name": "forum", "inner_steps": 2, "inner_lr": 0.01},
    {"name": "auto_lambda", "heldout": "val"},
]


@pytest.mark.parametrize("combiner", BILEVEL, ids=lambda c: "-".join(str(v) for v in c.values()))
def test_bilevel_combiners_train_and_resume_exactly(zoo, tmp_path, spec_factory, combiner):
    spec = spec_factory(
        **{
            "combiner": combiner,
            "train.epochs": 2,
            "tasks.depth.primary": True,
            "train.max_steps_per_epoch": 2,
        }
    )
    straight = Trainer(zoo.build(spec), new_run_dir(tmp_path, "straight"))
    assert straight.primary == ["depth"] and straight.heldout.split == combiner.get("heldout", "train")
    full = straight.fit()
    assert full["best"]["metric"] == "depth.abs_err"  # the primary task chooses the checkpoint
    part = new_run_dir(tmp_path, "part")
    Trainer(zoo.build(spec), part).fit(until_epoch=1)
    resumed = Trainer(zoo.build(spec), part, resume=part / "checkpoints" / "last")
    assert resumed.fit()["final"] == full["final"]
    for (k, a), b in zip(straight.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), k
    for k, v in straight.combiner.state_dict().items():
        assert torch.equal(v, resumed.combiner.state_dict()[k]), k
    fresh = Trainer(zoo.build(part / "config.yaml"), None)
    load_weights(part / "checkpoints" / "last", fresh.model, fresh.combiner)
    learnt = fresh.combiner.lambdas if combiner["name"] == "forum" else fresh.combiner.logits
    assert learnt.abs().sum() > 0 and not torch.equal(learnt, torch.full((3,), 1 / 3, dtype=torch.float64))


def test_the_heldout_batches_leave_batchnorm_statistics_alone(zoo, spec_factory):
    """The extra passes run in training mode but put the running statistics back."""
    spec = spec_factory(
        **{
            "combiner": {"name": "auto_lambda"},
            "model.backbone.norm": "batch",
            "train.max_steps_per_epoch": 1,
        }
    )
    trainer = Trainer(zoo.build(spec), None)
    bn = [m for m in trainer.model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bn
    batch = next(iter(trainer.train_loader))
    calls = []
    original = trainer.compute_losses

    def counting(*args, **kwargs):
        calls.append(bool(args[2:] and args[2]))
        if calls[-1]:  # an extra pass: record the statistics it must not keep
            before.append([m.running_mean.clone() for m in bn])
        return original(*args, **kwargs)

    before: list = []
    trainer.compute_losses = counting
    trainer.train_step(batch)
    assert calls[0] is False and calls.count(True) == 3  # the step's own pass, virtual, +eps, -eps
    for a, b in zip(before[0], [m.running_mean for m in bn]):
        assert torch.equal(a, b)


def test_bilevel_combiners_are_refused_under_torchrun(zoo, spec_factory, monkeypatch):
    import mtlzoo.runtime.heldout as heldout

    monkeypatch.setattr(heldout, "is_distributed", lambda: True)
    with pytest.raises(ConfigError, match="implemented for one process only; train without torchrun"):
        Trainer(zoo.build(spec_factory(**{"combiner": {"name": "moml"}})), None)


def test_krum_and_trimmed_mean_train_the_tiny_spec(zoo, spec_factory):
    for node in ({"name": "krum"}, {"name": "trimmed_mean", "wrt": "features"}):
        trainer = Trainer(zoo.build(spec_factory(**{"combiner": node})), None)
        before = [p.detach().clone() for p in trainer.model.shared_parameters()]
        summary = trainer.fit()
        assert all(np.isfinite(v) for m in summary["final"].values() for v in m.values())
        assert any(not torch.equal(a, b) for a, b in zip(before, trainer.model.shared_parameters()))


def test_a_two_task_spec_with_trimmed_mean_is_refused_at_build(zoo, spec_factory):
    spec = spec_factory(**{"combiner": {"name": "trimmed_mean"}})
    del spec["tasks"]["labels"]
    with pytest.raises(ConfigError, match="trim_number: trimming 1 from each end needs at least 3 tasks"):
        zoo.build(spec)


def test_the_extra_passes_work_under_bf16_autocast_and_channels_last(zoo, spec_factory):
    """The device settings of a GPU run (bf16 autocast, channels-last), here on the CPU."""
    spec = spec_factory(
        **{
            "combiner": {"name": "auto_lambda"},
            "train.amp": "bf16",
            "train.channels_last": True,
            "train.max_steps_per_epoch": 2,
        }
    )
    trainer = Trainer(zoo.build(spec), None)
    summary = trainer.fit()
    assert summary["steps"] == 2
    assert not torch.equal(trainer.combiner.logits, torch.full((3,), 1 / 3, dtype=torch.float64))
