"""The combiners added from LibMTL and torchjd: fairgrad, excess_mtl, moco, modo, sdmgrad, stch,
dualproj (dualproj's torchjd check lives with upgrad in test_grad_combiners.py).

Each is checked on its defining property, against LibMTL's update re-implemented here on
replayed loss/gradient sequences, against torchjd's weighting where torchjd has one, through a
Step on a model whose per-sample and per-task gradients are known exactly, through the
trainer (resume is exact, the quickstart trains), and in the registry."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchjd.aggregation as tjd
from scipy.optimize import least_squares
from torch import nn
from torchjd.aggregation._utils.simplex import project_onto_simplex

import mtlzoo.builtin.combiners as C
from mtlzoo import Zoo
from mtlzoo.apps.cli import main
from mtlzoo.builtin.combiners import gradient_level as gc
from mtlzoo.builtin.combiners import gradients as gr
from mtlzoo.builtin.combiners import loss_level as lc
from mtlzoo.builtin.combiners import stochastic as sc
from mtlzoo.contract.combine import Step
from mtlzoo.contract.errors import ConfigError
from mtlzoo.runtime.checkpoint import load_weights
from mtlzoo.runtime.train import Trainer, new_run_dir

NEW = ["fairgrad", "excess_mtl", "moco", "modo", "sdmgrad", "stch", "dualproj"]
NEW_GRADIENT = [n for n in NEW if n != "stch"]
J3 = torch.tensor([[1.0, 0.2, -0.5, 0.3], [-0.8, 1.0, 0.4, 0.0], [0.3, -0.6, 1.0, 0.7]], dtype=torch.float64)
J_RAND = torch.randn(4, 7, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
MATRICES = [J3, J_RAND, torch.tensor([[2.0, 0.0], [-1.0, 1.0]], dtype=torch.float64)]


def gram(J):
    return J @ J.T


class Batched(nn.Module):
    """Shared ``theta`` (P); the features are ``theta`` for each of B samples (B x P); the loss
    of task t is ``mean_i A[t, i] . F_i + b_t + c_t``. So the gradient of task t on any set of
    samples is the mean of ``A[t, i]`` over them, its per-sample feature gradients are
    ``A[t, i] / B`` and its offset gradient is its parameter gradient."""

    def __init__(self, T: int, B: int, P: int):
        super().__init__()
        self.B = B
        self.theta = nn.Parameter(torch.zeros(P))
        self.b = nn.ParameterList([nn.Parameter(torch.zeros(())) for _ in range(T)])

    def step(self, A: torch.Tensor, k: int = 0, c: torch.Tensor | None = None, order=None):
        T = A.shape[0]
        c = torch.full((T,), 2.0) if c is None else c
        order = range(T) if order is None else order
        self.theta.grad = None
        for b in self.b:
            b.grad = None
        feats = self.theta.expand(self.B, -1) * 1.0
        losses = {f"t{i}": (A[i].float() * feats).sum(1).mean() + self.b[i] + float(c[i]) for i in order}
        own = {f"t{i}": [self.b[i]] for i in order}
        return losses, Step(losses, [feats], [self.theta], own, step=k)

    def head_grads(self) -> torch.Tensor:
        return torch.stack([b.grad for b in self.b]).double()


def sequence(T=3, B=4, P=5, steps=4, seed=0):
    """Replayed per-sample gradients A (T x B x P) and loss offsets, one per step."""
    g = torch.Generator().manual_seed(seed)
    return [
        (torch.randn(T, B, P, generator=g, dtype=torch.float64), 1.0 + torch.rand(T, generator=g))
        for _ in range(steps)
    ]


NAMES3 = ["t0", "t1", "t2"]


# -- math: properties ---------------------------------------------------------------------------
@pytest.mark.parametrize("alpha", [0.5, 1.0, 2.0, 5.0])
@pytest.mark.parametrize("J", MATRICES)
def test_fairgrad_weights_solve_the_alpha_fair_equation(J, alpha):
    G = gram(J)
    w = gr.fairgrad_weights(G, alpha)
    assert (w > 0).all()
    assert torch.allclose(G @ w, w ** (-1 / alpha), rtol=1e-6)
    # scaling the gradients by c scales the weights by c^(-2 alpha / (1 + alpha)), exactly
    c = 1e3
    assert torch.allclose(
        gr.fairgrad_weights(c**2 * G, alpha), w * c ** (-2 * alpha / (1 + alpha)), rtol=1e-6
    )


def test_fairgrad_with_alpha_one_is_the_nash_mtl_equation():
    G = gram(J3)
    assert torch.allclose(gr.fairgrad_weights(G, 1.0), gr.nash_mtl_weights(G), rtol=1e-6)


def test_fairgrad_large_alpha_approaches_equal_improvements():
    # max-min fairness: every task improves by the same amount (G w = const)
    J = torch.tensor([[3.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    w = gr.fairgrad_weights(gram(J), alpha=200.0, max_iter=500)
    improvements = gram(J) @ w
    assert float(improvements.max() / improvements.min()) < 1.05


@pytest.mark.parametrize("J", MATRICES)
def test_dualproj_conflicts_with_no_task_and_keeps_at_least_the_mean(J):
    w = gr.dual_cone_weights(gram(J), torch.full((J.shape[0],), 1.0 / J.shape[0], dtype=torch.float64))
    assert (w >= 1.0 / J.shape[0] - 1e-12).all()
    assert (J @ (J.T @ w) >= -1e-9).all()


def test_dualproj_of_agreeing_gradients_is_their_mean():
    J = torch.tensor([[1.0, 0.5], [0.8, 1.0], [1.0, 0.0]], dtype=torch.float64)
    comb = gc.DualProjCombiner(NAMES3, C.WrtOptions())
    assert torch.allclose(comb.weights(gram(J), None), torch.full((3,), 1 / 3, dtype=torch.float64))


def libmtl_projection(y: np.ndarray) -> np.ndarray:
    """LibMTL's (MoDo) projection onto the simplex, re-implemented."""
    m = len(y)
    s = np.sort(y)[::-1]
    tmpsum, tmax_f = 0.0, (y.sum() - 1.0) / m
    for i in range(m - 1):
        tmpsum += s[i]
        tmax = (tmpsum - 1) / (i + 1.0)
        if tmax > s[i + 1]:
            tmax_f = tmax
            break
    return np.maximum(y - tmax_f, 0)


def test_simplex_projection_matches_the_reference_code_and_is_idempotent():
    g = torch.Generator().manual_seed(5)
    for _ in range(20):
        y = torch.randn(5, generator=g, dtype=torch.float64) * 2
        p = gr.project_simplex(y)
        assert p.min() >= 0 and abs(float(p.sum()) - 1) < 1e-12
        assert np.allclose(p.numpy(), libmtl_projection(y.numpy()), atol=1e-12)
        assert torch.allclose(p, project_onto_simplex(y), atol=1e-12)
        assert torch.allclose(gr.project_simplex(p), p, atol=1e-12)


# -- math: against LibMTL's formulas and torchjd's weightings -----------------------------------
@pytest.mark.parametrize("alpha", [0.5, 1.0, 2.0])
@pytest.mark.parametrize("J", MATRICES)
def test_fairgrad_matches_libmtl_and_torchjd(J, alpha):
    G = gram(J)
    A = G.numpy()
    T = len(A)
    # LibMTL / the official code: least squares on G x - x^(-1/alpha) from uniform weights
    libmtl = least_squares(lambda x: A @ x - np.power(1 / x, 1 / alpha), np.ones(T) / T, bounds=(0, np.inf)).x
    ours = gr.fairgrad_weights(G, alpha)
    assert np.allclose(ours.numpy(), libmtl, rtol=1e-4)
    assert torch.allclose(ours, tjd.FairGradWeighting(alpha)(G), rtol=1e-4)
    # ours solves the equation to ~1e-10 relative (the 1e-10 ridge), least squares to its tolerance
    residual = float((G @ ours - ours ** (-1 / alpha)).norm())
    assert residual < 1e-8 * float((ours ** (-1 / alpha)).norm())


def test_modo_weights_match_torchjd_over_steps():
    theirs = tjd.MoDoWeighting(gamma=0.3, rho=0.1)
    lam = torch.full((3,), 1 / 3, dtype=torch.float64)
    for A, _ in sequence():
        G12 = A[:, :2].mean(1) @ A[:, 2:].mean(1).T
        lam = gr.modo_weights(G12, lam, 0.3, 0.1)
        assert torch.allclose(lam, theirs(G12), atol=1e-12)


def libmtl_sdmgrad(GG: torch.Tensor, w: torch.Tensor, lamda: float, niter: int) -> torch.Tensor:
    """LibMTL's SDMGrad weight solve, re-implemented (torch SGD, lr 5, momentum 0.5, and the
    numpy simplex projection of the reference code)."""

    def proj(v, s=1):
        n = len(v)
        u = np.sort(v)[::-1]
        cssv = np.cumsum(u)
        rho = np.nonzero(u * np.arange(1, n + 1) > (cssv - s))[0][-1]
        return (v - float(cssv[rho] - s) / (rho + 1)).clip(min=0)

    d = torch.diag(GG).clamp(min=0)
    GG = GG / (torch.mean(torch.sqrt(d)).pow(2) + 1e-8)
    Gg = GG.mean(1)
    w = w.clone().requires_grad_(True)
    opt = torch.optim.SGD([w], lr=5, momentum=0.5)
    for _ in range(niter):
        opt.zero_grad()
        w.grad = torch.mv(GG, w.detach()) + lamda * Gg
        opt.step()
        w.data.copy_(torch.from_numpy(proj(w.data.numpy())))
    return w.detach()


def test_sdmgrad_weights_match_libmtl_and_torchjd_over_steps():
    theirs = tjd.SDMGradWeighting(lr=5.0, momentum=0.5, n_iter=20, lambda_=0.3)
    w = ref_w = torch.full((3,), 1 / 3, dtype=torch.float64)
    for A, _ in sequence():
        G12 = A[:, :2].mean(1) @ A[:, 2:].mean(1).T
        w, weights = gr.sdmgrad_weights(G12, w, 0.3)
        ref_w = libmtl_sdmgrad(G12, ref_w, 0.3, 20)
        assert torch.allclose(w, ref_w, atol=1e-9)
        assert torch.allclose(weights, (ref_w + 0.3 / 3) / 1.3, atol=1e-9)
        assert torch.allclose(weights, theirs(G12), atol=1e-9)
        assert abs(float(w.sum()) - 1) < 1e-12 and w.min() >= 0


# -- combiners through a Step, against LibMTL's updates on replayed sequences -------------------
def libmtl_moco(seq, beta=0.5, beta_sigma=0.5, gamma=0.1, gamma_sigma=0.5, rho=0.0, simplex="softmax"):
    """LibMTL's MoCo update (``simplex='projection'``: the paper's), re-implemented; yields
    (weights, shared update) per step of (J, L)."""
    y, lam = None, None
    for k, (J, L) in enumerate(seq, 1):
        T = J.shape[0]
        y = torch.zeros_like(J) if y is None else y
        lam = torch.full((T,), 1.0 / T, dtype=J.dtype) if lam is None else lam
        G = J / (J.norm(dim=1, keepdim=True) + 1e-8) * L[:, None]
        y = y - (beta / k**beta_sigma) * (y - G)
        z = lam - (gamma / k**gamma_sigma) * (y @ y.T + rho * torch.eye(T, dtype=J.dtype)) @ lam
        lam = torch.softmax(z, -1) if simplex == "softmax" else torch.from_numpy(libmtl_projection(z.numpy()))
        yield lam, y.T @ lam


@pytest.mark.parametrize("simplex", ["softmax", "projection"])
def test_moco_params_matches_libmtl_on_a_replayed_sequence(simplex):
    seq = sequence()
    model = Batched(3, 4, 5)
    comb = sc.MoCoCombiner(NAMES3, C.MoCoOptions(gamma=0.5, rho=0.1, simplex=simplex))
    ref = libmtl_moco([(A.mean(1), c.double()) for A, c in seq], gamma=0.5, rho=0.1, simplex=simplex)
    for k, ((A, c), (lam, update)) in enumerate(zip(seq, ref)):
        losses, step = model.step(A, k, c)
        logs = comb.backward(losses, step)
        assert torch.allclose(comb.lam, lam, atol=1e-6)
        assert torch.allclose(model.theta.grad.double(), update, atol=1e-5)
        assert torch.equal(model.head_grads(), torch.ones(3, dtype=torch.float64))  # heads: own loss
        assert abs(sum(logs.values()) - 1) < 1e-9 and min(logs.values()) >= 0  # on the simplex


def test_moco_features_tracks_offset_gradients_and_applies_the_weights_to_this_batch():
    seq = sequence()
    model = Batched(3, 4, 5)
    params = sc.MoCoCombiner(NAMES3, C.MoCoOptions(wrt="params"))
    feats = sc.MoCoCombiner(NAMES3, C.MoCoOptions(wrt="features"))
    for k, (A, c) in enumerate(seq):
        losses, step = model.step(A, k, c)
        params.backward(losses, step)
        losses, step = model.step(A, k, c)
        feats.backward(losses, step)
        # on this model the offset gradient is the parameter gradient: the same statistics
        assert torch.allclose(feats.lam, params.lam, atol=1e-6)
        assert torch.allclose(feats.tracked, params.tracked, atol=1e-6)
        per_sample_norm = (A / 4).flatten(1).norm(dim=1)  # the feature-gradient norm of each task
        w = feats.lam * c.double() / (per_sample_norm + 1e-8)
        assert torch.allclose(model.theta.grad.double(), A.mean(1).T @ w, atol=1e-5)


def test_moco_does_not_depend_on_the_order_of_the_tasks_in_the_step():
    seq = sequence()
    a, b = Batched(3, 4, 5), Batched(3, 4, 5)
    ca = sc.MoCoCombiner(NAMES3, C.MoCoOptions(rho=0.1))
    cb = sc.MoCoCombiner(NAMES3, C.MoCoOptions(rho=0.1))
    for k, (A, c) in enumerate(seq):
        losses, step = a.step(A, k, c)
        ca.backward(losses, step)
        losses, step = b.step(A, k, c, order=[2, 0, 1])
        cb.backward(losses, step)
        assert torch.allclose(a.theta.grad, b.theta.grad, atol=1e-6)
    assert torch.allclose(ca.lam, cb.lam, atol=1e-9)


def libmtl_excess(seq, step_size):
    """LibMTL's ExcessMTL weights, re-implemented; yields the weights used at each step of J."""
    weight, grad_sum, initial = None, None, None
    for J in seq:
        T = J.shape[0]
        weight = torch.ones(T, dtype=J.dtype) if weight is None else weight
        grad_sum = torch.zeros_like(J) if grad_sum is None else grad_sum
        w = torch.zeros(T, dtype=J.dtype)
        for i in range(T):
            grad_sum[i] += J[i] ** 2
            w[i] = J[i] * (1 / torch.sqrt(grad_sum[i] + 1e-7)) @ J[i]
        if initial is None:
            initial = w
        else:
            weight = weight * torch.exp(w / initial * step_size)
            weight = weight / weight.sum() * T
        yield weight


@pytest.mark.parametrize("wrt", ["params", "features"])
def test_excess_mtl_matches_libmtl_and_torchjd_on_a_replayed_sequence(wrt):
    seq = sequence(steps=5)
    model = Batched(3, 4, 5)
    comb = sc.ExcessMTLCombiner(NAMES3, C.ExcessMTLOptions(wrt=wrt, step_size=0.5))
    theirs = tjd.ExcessMTLWeighting(robust_step_size=0.5, n_warmup_steps=1)  # = LibMTL / T
    for k, ((A, c), w) in enumerate(zip(seq, libmtl_excess([A.mean(1) for A, _ in seq], 0.5))):
        losses, step = model.step(A, k, c)
        comb.backward(losses, step)
        J = A.mean(1)
        assert torch.allclose(comb.loss_weights, w, rtol=1e-5)
        assert torch.allclose(3 * theirs(J), w, rtol=1e-5)
        assert abs(float(w.sum()) - 3) < 1e-9
        assert torch.allclose(model.theta.grad.double(), J.T @ w, atol=1e-5)
        assert torch.allclose(model.head_grads(), w, atol=1e-6)  # heads: the weighted loss
    assert not torch.allclose(comb.loss_weights, torch.ones(3, dtype=torch.float64))


@pytest.mark.parametrize("wrt", ["params", "features"])
def test_modo_combiner_uses_the_two_halves_and_matches_torchjd_and_libmtl(wrt):
    model = Batched(3, 5, 4)  # odd batch: halves of 3 and 2 samples
    comb = sc.MoDoCombiner(NAMES3, C.MoDoOptions(wrt=wrt, gamma=0.5, rho=0.1))
    theirs = tjd.MoDoWeighting(gamma=0.5, rho=0.1)
    lam = np.full(3, 1 / 3)
    for k, (A, c) in enumerate(sequence(B=5, P=4)):
        losses, step = model.step(A, k, c)
        logs = comb.backward(losses, step)
        J1, J2, J = A[:, :3].mean(1), A[:, 3:].mean(1), A.mean(1)
        # LibMTL: lam <- proj(lam - gamma (J1 (J2^T lam) + rho lam)); update J^T lam
        lam = libmtl_projection(lam - 0.5 * (J1.numpy() @ (J2.numpy().T @ lam) + 0.1 * lam))
        assert np.allclose(comb.lam.numpy(), lam, atol=1e-6)
        assert torch.allclose(comb.lam, theirs(J1 @ J2.T), atol=1e-6)
        assert torch.allclose(model.theta.grad.double(), J.T @ comb.lam, atol=1e-5)
        assert torch.equal(model.head_grads(), torch.ones(3, dtype=torch.float64))
        assert abs(sum(logs.values()) - 1) < 1e-9


@pytest.mark.parametrize("wrt", ["params", "features"])
def test_sdmgrad_combiner_matches_libmtl_and_torchjd(wrt):
    model = Batched(3, 4, 5)
    comb = sc.SDMGradCombiner(NAMES3, C.SDMGradOptions(wrt=wrt))
    theirs = tjd.SDMGradWeighting(lr=5.0, momentum=0.5, n_iter=20, lambda_=0.3)
    ref_w = torch.full((3,), 1 / 3, dtype=torch.float64)
    for k, (A, c) in enumerate(sequence()):
        losses, step = model.step(A, k, c)
        comb.backward(losses, step)
        J1, J2, J = A[:, :2].mean(1), A[:, 2:].mean(1), A.mean(1)
        ref_w = libmtl_sdmgrad(J1 @ J2.T, ref_w, 0.3, 20)
        update = (J.T @ ref_w + 0.3 * J.mean(0)) / 1.3  # LibMTL: (g_w + lamda g_0) / (1 + lamda)
        assert torch.allclose(comb.w, ref_w, atol=1e-5)
        assert torch.allclose(model.theta.grad.double(), update, atol=1e-5)
        assert torch.allclose(J.T @ theirs(J1 @ J2.T), update, atol=1e-5)


@pytest.mark.parametrize("wrt", ["params", "features"])
def test_two_samples_of_one_sample_are_the_whole_batch(wrt):
    model = Batched(3, 1, 5)
    A, c = sequence(B=1)[0]
    losses, step = model.step(A, 0, c)
    two = sc.TwoSamples(step, wrt)
    J = A.mean(1)
    assert torch.allclose(two.cross, gram(J), atol=1e-5)
    two.backward(torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64))
    assert torch.allclose(model.theta.grad.double(), J.T @ torch.tensor([1.0, 2.0, 3.0]).double(), atol=1e-5)


@pytest.mark.parametrize("wrt", ["params", "features"])
def test_fairgrad_and_dualproj_combiners_write_the_reference_updates(wrt):
    J = J3
    model = Batched(3, 2, 4)
    A = J[:, None, :].expand(3, 2, 4)  # both samples see the same gradients: J is the task matrix
    fair = gc.FairGradCombiner(NAMES3, C.FairGradOptions(wrt=wrt, alpha=2.0))
    losses, step = model.step(A)
    fair.backward(losses, step)
    # features: the Gramian of the per-sample feature gradients (A / B) is G / 2
    G = gram(J) / (2 if wrt == "features" else 1)
    w = tjd.FairGradWeighting(2.0)(G)
    assert torch.allclose(model.theta.grad.double(), J.T @ w, rtol=1e-4)
    assert torch.allclose(model.head_grads(), w, rtol=1e-4)  # heads: the weighted loss
    dual = gc.DualProjCombiner(NAMES3, C.WrtOptions(wrt=wrt))
    losses, step = model.step(A)
    dual.backward(losses, step)
    d = model.theta.grad.double()
    assert (J @ d >= -1e-6).all()
    assert torch.allclose(d, J.T @ gr.dual_cone_weights(gram(J), torch.full((3,), 1 / 3).double()), atol=1e-5)
    assert torch.equal(model.head_grads(), torch.ones(3, dtype=torch.float64))


# -- STCH -----------------------------------------------------------------------------------------
def libmtl_stch_grad(L: torch.Tensor, epoch: int, warmup: int, mu: float, nadir):
    """d loss / d L of LibMTL's STCH loss at the loss values ``L`` (autograd on its formula)."""
    losses = L.clone().requires_grad_(True)
    if epoch <= warmup:
        loss = torch.log(losses + 1e-20).sum()
    else:
        logs = torch.log(losses / nadir + 1e-20)
        loss = mu * torch.log(torch.sum(torch.exp((logs - logs.max().detach()) / mu))) * len(L)
    loss.backward()
    return losses.grad


def test_stch_matches_libmtl_over_epochs():
    mu, warmup = 0.5, 1
    comb = lc.STCHCombiner(NAMES3, C.STCHOptions(mu=mu, nadir_epoch=warmup))
    model = Batched(3, 2, 4)
    g = torch.Generator().manual_seed(2)
    average, count, nadir = torch.zeros(3, dtype=torch.float64), 0, None
    for k in range(8):
        epoch = k // 2
        c = 0.5 + torch.rand(3, generator=g, dtype=torch.float64)
        A = torch.randn(3, 2, 4, generator=g, dtype=torch.float64)
        losses, step = model.step(A, k, c)
        step.epoch = epoch
        comb.backward(losses, step)
        L = c.clone()  # theta = 0: the losses are the offsets
        if epoch == warmup:
            average, count = average + L, count + 1
        if epoch > warmup and nadir is None:
            nadir = average / count
        w = libmtl_stch_grad(L, epoch, warmup, mu, nadir)
        assert torch.allclose(model.head_grads(), w, rtol=1e-5)  # heads get the weighted loss too
        assert torch.allclose(model.theta.grad.double(), A.mean(1).T @ w, atol=1e-5)
    assert torch.allclose(comb.nadir, nadir)


def test_stch_approaches_the_max_of_the_normalised_log_losses():
    comb = lc.STCHCombiner(["a", "b"], C.STCHOptions(mu=1e-3, nadir_epoch=0))
    step = type("S", (), {"task_names": ["a", "b"], "epoch": 0})()
    comb.weights(torch.tensor([1.0, 1.0]), step)
    step.epoch = 1
    w = comb.weights(torch.tensor([2.0, 1.5]), step)
    # all weight on the task furthest above its nadir, scaled by d log L / dL
    assert torch.allclose(w, torch.tensor([2 / 2.0, 0.0], dtype=torch.float64), atol=1e-6)


# -- through the trainer ------------------------------------------------------------------------
STATEFUL = [
    {"name": "moco", "wrt": "params"},
    {"name": "excess_mtl", "wrt": "features"},
    {"name": "modo", "wrt": "params"},
    {"name": "sdmgrad", "wrt": "features"},
    {"name": "stch", "nadir_epoch": 0},
]


@pytest.mark.parametrize("combiner", STATEFUL, ids=lambda c: c["name"])
def test_stateful_new_combiners_resume_exactly(zoo, tmp_path, spec_factory, combiner):
    spec = spec_factory(**{"combiner": combiner, "train.epochs": 2})
    straight = Trainer(zoo.build(spec), new_run_dir(tmp_path, "straight"))
    full = straight.fit()
    part = new_run_dir(tmp_path, "part")
    Trainer(zoo.build(spec), part).fit(until_epoch=1)
    fresh = Trainer(zoo.build(part / "config.yaml"), None)
    load_weights(part / "checkpoints" / "last", fresh.model, fresh.combiner)
    state = fresh.combiner.state_dict()
    assert state and all(v.numel() > 0 for v in state.values()), "state is kept in buffers"
    resumed = Trainer(zoo.build(spec), part, resume=part / "checkpoints" / "last")
    assert resumed.fit()["final"] == full["final"]
    for (k, a), b in zip(straight.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), k
    for k, v in straight.combiner.state_dict().items():
        assert torch.equal(v, resumed.combiner.state_dict()[k]), k


@pytest.mark.slow  # trains the quickstart ResNet-18 once per combiner
@pytest.mark.parametrize("name", NEW)
def test_each_new_combiner_trains_the_quickstart_by_its_name_alone(zoo, root, name):
    overrides = [
        f"combiner.name={name}",
        "train.epochs=1",
        "data.train_size=32",
        "data.val_size=16",
        "data.test_size=16",
        "train.batch_size=16",
        "train.progress=false",
    ]
    trainer = Trainer(zoo.build(root / "configs" / "quickstart.yaml", overrides), None)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items() if v.is_floating_point()}
    summary = trainer.fit()
    assert summary["steps"] == 2
    assert all(np.isfinite(v) for m in summary["final"].values() for v in m.values())
    after = trainer.model.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before if "backbone" in k)


# -- registry -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def combiners() -> Zoo:
    """A zoo of the combiner plugin only."""
    return Zoo.load(entry_points=False, plugins=[("builtin_combiners", C)], strict=True)


def test_list_combiner_shows_32(capsys):
    assert main(["list", "combiner", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    names = [r["name"] for r in rows]
    assert len(names) == 32 and set(NEW) <= set(names)


def test_new_names_are_registered_after_the_gradient_level_ones(combiners, capsys):
    assert main(["plugins", "--json"]) == 0
    records = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    names = records["builtin_combiners"]["registered"]["combiner"]
    assert names[names.index("db_mtl") :][:8] == ["db_mtl", *NEW]
    for name in NEW_GRADIENT:
        comb = combiners.make("combiner", {"name": name, "wrt": "features"}, ["a", "b"], path="combiner")
        assert comb.level == "gradient" and comb.wrt == "features"
    assert combiners.make("combiner", {"name": "stch"}, ["a", "b"], path="combiner").level == "loss"


def config_error(zoo: Zoo, node: dict) -> str:
    with pytest.raises(ConfigError) as err:
        zoo.make("combiner", node, ["a", "b"], path="combiner")
    return str(err.value)


@pytest.mark.parametrize(
    "node, message",
    [
        ({"name": "fairgrad", "alpha": 0.0}, "combiner.alpha: must be > 0, got 0"),
        ({"name": "fairgrad", "max_iter": 0}, "combiner.max_iter: must be >= 1 and <= 1000000, got 0"),
        ({"name": "excess_mtl", "step_size": -1.0}, "combiner.step_size: must be > 0, got -1"),
        ({"name": "moco", "beta": 1.5}, "combiner.beta: must be > 0 and <= 1, got 1.5"),
        ({"name": "moco", "gamma_sigma": -0.5}, "combiner.gamma_sigma: must be >= 0, got -0.5"),
        ({"name": "moco", "normalize": 1}, "combiner.normalize: expected true or false, got 1 (int)"),
        (
            {"name": "moco", "simplex": "project"},
            "combiner.simplex: 'project' is not one of 'projection', 'softmax' (did you mean 'projection'?)",
        ),
        ({"name": "modo", "rho": -0.1}, "combiner.rho: must be >= 0, got -0.1"),
        ({"name": "sdmgrad", "momentum": 1.0}, "combiner.momentum: must be >= 0 and < 1, got 1"),
        ({"name": "sdmgrad", "n_iter": 0}, "combiner.n_iter: must be >= 1 and <= 100000, got 0"),
        ({"name": "stch", "mu": 0.0}, "combiner.mu: must be > 0, got 0"),
        ({"name": "stch", "nadir_epoch": -1}, "combiner.nadir_epoch: must be >= 0 and <= 100000, got -1"),
    ],
)
def test_bad_options_are_config_errors(combiners, node, message):
    assert config_error(combiners, node) == message


def test_feature_maps_of_different_batch_sizes_are_refused():
    theta = nn.Parameter(torch.zeros(3))
    feats = [theta.expand(2, -1) * 1.0, theta.expand(3, -1) * 1.0]
    losses = {"a": feats[0].sum() + feats[1].sum(), "b": feats[0].mean() + feats[1].mean()}
    step = Step(losses, feats, [theta], {"a": [], "b": []})
    with pytest.raises(ValueError, match="disagree on the batch size"):
        sc.offset_gradients(step)


def test_offset_gradients_are_the_parameter_gradients_of_a_broadcast_representation():
    # features that are one parameter vector broadcast to every sample: offset = parameter gradient
    theta = nn.Parameter(torch.randn(4, generator=torch.Generator().manual_seed(0)))
    x = torch.randn(3, 4, generator=torch.Generator().manual_seed(1))
    feats = theta.expand(3, -1) * 1.0
    losses = {"a": F.mse_loss(feats, x), "b": (feats * x).mean()}
    step = Step(losses, [feats], [theta], {"a": [], "b": []})
    rows = sc.offset_gradients(step)
    J = torch.stack([torch.autograd.grad(v, theta, retain_graph=True)[0] for v in losses.values()])
    assert torch.allclose(rows, J, atol=1e-6)


# -- alpha-fair numerics: any scale, and no silent answer when there is none (issue 21) --------
def _exact_alpha_fair(G: torch.Tensor, alpha: float, near: torch.Tensor) -> np.ndarray:
    """The solution of ``G w = w^(-1/alpha)`` by scipy (Levenberg-Marquardt on float64, in log
    space: ``(G w)_i / w_i^(-1/alpha) = 1``), from the orthogonal-gradient solution or, where
    that start does not converge, from ``near`` off by 10% (the solution is unique: it is the
    minimum of a strictly convex potential)."""
    A = G.numpy()
    p = -1.0 / alpha

    def f(x):
        return (A @ np.exp(x)) / np.exp(p * x) - 1.0

    for x0 in (np.log(np.diag(A) ** (-alpha / (1 + alpha))), np.log(near.numpy() * 1.1)):
        x = least_squares(f, x0, method="lm", xtol=1e-15, ftol=1e-15, gtol=1e-15, max_nfev=10_000).x
        if np.abs(f(x)).max() < 1e-12:
            return np.exp(x)
    raise AssertionError("scipy found no solution")


@pytest.mark.parametrize("alpha", [0.5, 1.0, 2.0])
@pytest.mark.parametrize("norms", [(0.065, 676.0), (1e-3, 1.0, 1e3), (1.0, 1.0, 1.0)])
def test_fairgrad_weights_are_exact_whatever_the_gradient_scales(norms, alpha):
    # task-gradient norms 0.065 vs 676 (issue 21: an absolute 1e-10 ridge on G / s moved the
    # small task's weight by 4.5e-3 relative); correlated gradients
    g = torch.Generator().manual_seed(0)
    J = torch.randn(len(norms), 50, generator=g, dtype=torch.float64)
    J[1] += 0.5 * J[0]
    J = J / J.norm(dim=1, keepdim=True) * torch.tensor(norms, dtype=torch.float64)[:, None]
    G = gram(J)
    found = gr.fairgrad_solve(G, alpha)
    exact = _exact_alpha_fair(G, alpha, found.weights)
    assert found.solved and found.ridge_share < 1e-6
    assert np.abs(found.weights.numpy() / exact - 1).max() < 1e-8
    assert np.abs(gr.fairgrad_weights(G, alpha).numpy() / exact - 1).max() < 1e-8
    if alpha == 1.0:  # Nash-MTL's equation on the normalised Gramian: its weights scale by sqrt(||G||)
        fro = float(torch.linalg.matrix_norm(G))
        assert np.abs(gr.nash_mtl_weights(G / fro).numpy() / (exact * fro**0.5) - 1).max() < 1e-8


NO_SOLUTION = {
    "opposite gradients": torch.tensor([[1.0, 2.0], [-1.0, -2.0]], dtype=torch.float64),
    "a zero gradient": torch.tensor([[1.0, 2.0], [0.0, 0.0]], dtype=torch.float64),
    "three gradients summing to zero": torch.tensor(
        [[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]], dtype=torch.float64
    ),
}


@pytest.mark.parametrize("J", NO_SOLUTION.values(), ids=NO_SOLUTION.keys())
def test_no_positive_solution_is_detected_and_falls_back(J):
    G = gram(J)
    T = G.shape[0]
    ridged = gr.alpha_fair_solve(G, 1.0)
    assert not ridged.solved and ridged.ridge_share > 0.1  # the weights the ridge alone bounds
    # fairgrad: equal weights at the method's scale, s^(-alpha/(1+alpha)) with s the mean squared norm
    s = float(torch.diagonal(G).mean())
    for alpha in (0.5, 1.0, 2.0):
        found = gr.fairgrad_solve(G, alpha)
        assert not found.solved
        assert torch.allclose(
            found.weights, torch.full((T,), s ** (-alpha / (1 + alpha)), dtype=torch.float64)
        )
    # nash_mtl: the previous step's weights (ones without them)
    Gn = G / torch.linalg.matrix_norm(G)
    previous = torch.linspace(1.0, 2.0, T, dtype=torch.float64)
    assert torch.equal(gr.nash_mtl_solve(Gn, init=previous).weights, previous)
    assert torch.equal(gr.nash_mtl_weights(Gn), torch.ones(T, dtype=torch.float64))
    # a solvable problem next to it is solved (the quadrant: no combination is zero)
    ok = gram(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], dtype=torch.float64))
    assert gr.fairgrad_solve(ok, 1.0).solved and gr.nash_mtl_solve(ok).solved


@pytest.mark.parametrize("name", ["fairgrad", "nash_mtl"])
def test_a_step_without_solution_warns_once_and_logs_the_flag(name):
    J = NO_SOLUTION["opposite gradients"]
    names = ["t0", "t1"]
    combiner = (
        gc.FairGradCombiner(names, C.FairGradOptions())
        if name == "fairgrad"
        else gc.NashMTLCombiner(names, C.NashMTLOptions(max_norm=0.0))
    )
    model = Linear2(J)
    with pytest.warns(RuntimeWarning, match=rf"combiner '{name}': its equation has no positive solution"):
        logs = combiner.backward(*model.step())
    assert logs["no_solution"] == 1.0 and torch.isfinite(model.theta.grad).all()
    w = torch.tensor([logs["w/t0"], logs["w/t1"]], dtype=torch.float64)
    assert float(w.max()) < 10  # not the ridge-bounded 1e4-1e5
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once per run: no second warning
        assert combiner.backward(*model.step(1))["no_solution"] == 1.0
    solvable = Linear2(torch.tensor([[1.0, 0.0], [0.5, 1.0]], dtype=torch.float64))
    assert combiner.backward(*solvable.step(2))["no_solution"] == 0.0


class Linear2(nn.Module):
    """Shared theta; loss_t = a_t . theta + b_t, so grad_theta L_t = a_t (rows of ``A``)."""

    def __init__(self, A):
        super().__init__()
        self.A = A.float()
        self.theta = nn.Parameter(torch.zeros(A.shape[1]))
        self.b = nn.ParameterList([nn.Parameter(torch.zeros(())) for _ in range(A.shape[0])])

    def step(self, k=0):
        self.theta.grad = None
        f = self.theta * 1.0
        losses = {f"t{i}": self.A[i] @ f + self.b[i] + 2.0 for i in range(self.A.shape[0])}
        own = {f"t{i}": [self.b[i]] for i in range(self.A.shape[0])}
        return losses, Step(losses, [f], [self.theta], own, step=k)
