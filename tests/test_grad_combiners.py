"""Gradient-level aggregation: the defining property of each method on hand-made matrices,
agreement with torchjd where both implement the method, and the registered combiners
wired through a Step on a model whose task-gradient matrix is known exactly."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchjd.aggregation as tjd
from conftest import GRADIENT_LEVEL_COMBINERS
from scipy.optimize import minimize
from torch import nn

import mtlzoo.builtin.combiners as C
from mtlzoo import Zoo
from mtlzoo.builtin.combiners import gradient_level as gc
from mtlzoo.builtin.combiners import gradients as gr
from mtlzoo.contract.combine import Step
from mtlzoo.contract.errors import ConfigError

# rows are task gradients; chosen to conflict (negative inner products)
J3 = torch.tensor([[1.0, 0.2, -0.5, 0.3], [-0.8, 1.0, 0.4, 0.0], [0.3, -0.6, 1.0, 0.7]], dtype=torch.float64)
J_RAND = torch.randn(4, 7, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
MATRICES = [J3, J_RAND, torch.tensor([[2.0, 0.0], [-1.0, 1.0]], dtype=torch.float64)]


def gram(J):
    return J @ J.T


def exact_min_norm(J):
    T = J.shape[0]
    G = gram(J).numpy()
    res = minimize(
        lambda a: a @ G @ a,
        np.full(T, 1 / T),
        jac=lambda a: 2 * G @ a,
        method="SLSQP",
        bounds=[(0, 1)] * T,
        constraints=({"type": "eq", "fun": lambda a: a.sum() - 1},),
        options={"ftol": 1e-15, "maxiter": 1000},
    )
    return torch.from_numpy(res.x)


# -- MGDA ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("J", MATRICES)
def test_mgda_returns_min_norm_point_of_the_convex_hull(J):
    a = gr.min_norm_weights(gram(J))
    assert a.min() >= 0 and abs(float(a.sum()) - 1) < 1e-12
    d = J.T @ a
    ref = J.T @ exact_min_norm(J)
    assert float(d.norm()) <= float(ref.norm()) * (1 + 1e-6) + 1e-9
    assert torch.allclose(d, ref, atol=1e-4)
    # optimality: no task gradient points below the min-norm point's level (<g_i, d> >= |d|^2)
    assert (J @ d >= d @ d - 1e-6).all()


def test_mgda_origin_in_hull_gives_zero_update():
    J = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]], dtype=torch.float64)
    d = J.T @ gr.min_norm_weights(gram(J))
    assert d.norm() < 1e-6


def test_mgda_matches_torchjd():
    for J in MATRICES:
        ours = J.T @ gr.min_norm_weights(gram(J))
        theirs = tjd.MGDA(epsilon=1e-9, max_iters=100_000)(J)
        assert torch.allclose(ours, theirs, atol=1e-4)


def test_mgda_normalizers():
    G = gram(J3)
    losses = torch.tensor([2.0, 0.5, 1.0])
    n = torch.diagonal(G).sqrt()
    assert torch.allclose(gr.mgda_normalizers(G, losses, "l2"), n)
    assert torch.allclose(gr.mgda_normalizers(G, losses, "loss"), losses.double())
    assert torch.allclose(gr.mgda_normalizers(G, losses, "loss+"), losses.double() * n)
    assert torch.equal(gr.mgda_normalizers(G, losses, "none"), torch.ones(3, dtype=torch.float64))


# -- PCGrad -------------------------------------------------------------------------------------
def test_pcgrad_removes_conflicting_components():
    g1, g2 = torch.tensor([1.0, 1.0], dtype=torch.float64), torch.tensor([-1.0, 0.5], dtype=torch.float64)
    J = torch.stack([g1, g2])
    d = J.T @ gr.pcgrad_weights(gram(J))
    p1 = g1 - (g1 @ g2) / (g2 @ g2) * g2
    p2 = g2 - (g2 @ g1) / (g1 @ g1) * g1
    assert torch.allclose(d, p1 + p2)
    assert abs(float(p1 @ g2)) < 1e-12 and abs(float(p2 @ g1)) < 1e-12
    # no conflict: nothing is projected
    J = torch.tensor([[1.0, 0.0], [1.0, 1.0]], dtype=torch.float64)
    assert torch.allclose(gr.pcgrad_weights(gram(J)), torch.ones(2, dtype=torch.float64))


def test_pcgrad_matches_torchjd_with_the_same_random_orders():
    torch.manual_seed(7)
    ours = J_RAND.T @ gr.pcgrad_weights(gram(J_RAND))
    torch.manual_seed(7)
    theirs = tjd.PCGrad()(J_RAND)
    assert torch.allclose(ours, theirs, atol=1e-10)


# -- UPGrad / dual cone -------------------------------------------------------------------------
@pytest.mark.parametrize("J", MATRICES)
def test_upgrad_does_not_conflict_with_any_task(J):
    d = J.T @ gr.upgrad_weights(gram(J))
    assert (J @ d >= -1e-9).all()
    assert d.norm() > 0


def test_dual_cone_projection_is_the_qp_solution():
    G = gram(J3)
    u = torch.tensor([0.2, 0.5, 0.1], dtype=torch.float64)
    v = gr.dual_cone_weights(G, u)
    assert (v >= u - 1e-12).all()
    # KKT: G v >= 0 with complementary slackness on v - u
    Gv = G @ v
    assert (Gv >= -1e-9).all()
    assert torch.allclose((v - u) * Gv, torch.zeros(3, dtype=torch.float64), atol=1e-9)


def test_upgrad_of_agreeing_gradients_is_their_mean():
    J = torch.tensor([[1.0, 0.5], [0.8, 1.0], [1.0, 0.0]], dtype=torch.float64)
    assert torch.allclose(gr.upgrad_weights(gram(J)), torch.full((3,), 1 / 3, dtype=torch.float64))


class _SlsqpProjector:
    """Independent reference for torchjd's DualConeProjector (quadprog is not installed)."""

    def __call__(self, U, G):
        Gn = G.double().numpy()
        out = []
        for u in U.double().reshape(-1, U.shape[-1]).numpy():  # U is [..., m]
            res = minimize(
                lambda v: v @ Gn @ v,
                u + 0.1,
                jac=lambda v: 2 * Gn @ v,
                method="SLSQP",
                bounds=[(ui, None) for ui in u],
                options={"ftol": 1e-16, "maxiter": 1000},
            )
            out.append(res.x)
        return torch.tensor(np.array(out), dtype=G.dtype).reshape(U.shape)


def torchjd_projector():
    """torchjd's dual-cone projector interface over the SLSQP reference."""
    from torchjd._linalg import DualConeProjector

    class Proj(_SlsqpProjector, DualConeProjector):
        pass

    return Proj()


def test_upgrad_matches_torchjd():
    for J in MATRICES:
        ours = J.T @ gr.upgrad_weights(gram(J))
        theirs = tjd.UPGrad(projector=torchjd_projector())(J)
        assert torch.allclose(ours, theirs, atol=1e-5)


def test_dualproj_matches_torchjd():
    for J in MATRICES:
        mean = torch.full((J.shape[0],), 1.0 / J.shape[0], dtype=torch.float64)
        ours = J.T @ gr.dual_cone_weights(gram(J), mean)
        assert torch.allclose(ours, tjd.DualProj(projector=torchjd_projector())(J), atol=1e-5)
        assert (J @ ours >= -1e-9).all()


# -- IMTL-G -------------------------------------------------------------------------------------
@pytest.mark.parametrize("J", MATRICES)
def test_imtl_g_update_has_equal_projections_on_unit_gradients(J):
    a = gr.imtl_g_weights(gram(J))
    d = J.T @ a
    proj = (J / J.norm(dim=1, keepdim=True)) @ d
    assert torch.allclose(proj, proj[0].expand_as(proj), atol=1e-9)
    assert abs(float(a.sum()) - 1) < 1e-12
    assert torch.allclose(d, tjd.IMTLG()(J), atol=1e-8)


def test_imtl_g_is_not_zeroed_on_large_gradients():
    big = J3 * 1e7  # Gramian entries ~1e14, as with a large model's gradients
    assert torch.allclose(gr.imtl_g_weights(gram(big)), gr.imtl_g_weights(gram(J3)), atol=1e-9)


# -- Aligned-MTL --------------------------------------------------------------------------------
@pytest.mark.parametrize("J", MATRICES)
def test_aligned_mtl_aligns_to_orthogonal_equal_norm_gradients(J):
    G = gram(J)
    T = G.shape[0]
    eye = torch.eye(T, dtype=torch.float64)
    B = torch.stack([gr.aligned_mtl_weights(G, "min", eye[i]) for i in range(T)], 1)
    aligned = B.T @ J  # rows: aligned task gradients
    A = aligned @ aligned.T
    rank = int(torch.linalg.matrix_rank(J))
    if rank == T:
        lam_min = torch.linalg.eigvalsh(G).min() / G.trace()
        assert torch.allclose(A / G.trace(), lam_min * torch.eye(T, dtype=torch.float64), atol=1e-9)
    ours = J.T @ gr.aligned_mtl_weights(G, "min", torch.full((T,), 1 / T, dtype=torch.float64))
    assert torch.allclose(ours, tjd.AlignedMTL()(J), atol=1e-8)  # torchjd averages


# -- CAGrad -------------------------------------------------------------------------------------
def test_cagrad_maximises_the_worst_improvement_in_the_ball():
    J, c = J3, 0.5
    d = J.T @ gr.cagrad_weights(gram(J), c=c, rescale=0)
    g0 = J.mean(0)
    radius = c * float(g0.norm())
    assert abs(float((d - g0).norm()) - radius) < 1e-5
    # brute force: maximise min_i <g_i, x> over the ball around g0, written smooth (maximise t
    # subject to <g_i, x> >= t) so that SLSQP converges instead of stalling on the min's kinks
    Jn, g0n = J.numpy(), g0.numpy()
    cons = (
        {"type": "ineq", "fun": lambda z: radius**2 - ((z[:-1] - g0n) ** 2).sum()},
        {"type": "ineq", "fun": lambda z: Jn @ z[:-1] - z[-1]},
    )
    start = np.append(g0n, (Jn @ g0n).min())
    res = minimize(
        lambda z: -z[-1], start, method="SLSQP", constraints=cons, options={"ftol": 1e-14, "maxiter": 500}
    )
    assert res.success, res.message
    assert abs(float((J @ d).min()) - float(-res.fun)) < 1e-6
    r1 = gr.cagrad_weights(gram(J), c=c, rescale=1)
    assert torch.allclose(r1, gr.cagrad_weights(gram(J), c=c, rescale=0) / (1 + c**2), atol=1e-6)


def test_cagrad_with_zero_radius_is_the_mean():
    w = gr.cagrad_weights(gram(J3), c=0.0, rescale=0)
    assert torch.allclose(w, torch.full((3,), 1 / 3, dtype=torch.float64))


# -- Nash-MTL -----------------------------------------------------------------------------------
@pytest.mark.parametrize("J", MATRICES)
def test_nash_mtl_weights_solve_g_a_equals_one_over_a(J):
    G = gram(J)
    Gn = G / torch.linalg.matrix_norm(G)
    a = gr.nash_mtl_weights(Gn)
    assert (a > 0).all()
    assert torch.allclose(Gn @ a, 1 / a, rtol=1e-6)
    # warm start reaches the same point
    assert torch.allclose(gr.nash_mtl_weights(Gn, init=a * 3), a, rtol=1e-6)


# -- GradVac ------------------------------------------------------------------------------------
def test_gradvac_matches_torchjd_over_steps():
    theirs = tjd.GradVac(beta=0.3)
    phi = torch.zeros(4, 4, dtype=torch.float64)
    for k in range(3):
        J = J_RAND + 0.3 * k
        torch.manual_seed(k)
        w, phi = gr.gradvac_weights(gram(J), phi, 0.3)
        torch.manual_seed(k)
        assert torch.allclose(J.T @ w, theirs(J), atol=1e-9)


def test_gradvac_raises_cosine_to_target():
    J = torch.tensor([[1.0, 0.0], [-0.6, 0.8]], dtype=torch.float64)  # cosine -0.6
    phi = torch.tensor([[0.0, 0.2], [-1.0, 0.0]], dtype=torch.float64)  # only (0, 1) is below target
    w, phi_new = gr.gradvac_weights(gram(J), phi, 0.5)
    assert float(w[0]) == 1.0
    g0 = J[0] + (w[1] - 1) * J[1]  # g_0 plus the added multiple of g_1
    assert abs(float(g0 @ J[1] / g0.norm()) - 0.2) < 1e-6
    assert abs(float(phi_new[0, 1]) - (0.5 * 0.2 + 0.5 * -0.6)) < 1e-7


# -- ConFIG -------------------------------------------------------------------------------------
@pytest.mark.parametrize("J", MATRICES)
def test_config_has_equal_cosine_with_every_task_and_matches_torchjd(J):
    d = J.T @ gr.config_weights(gram(J))
    cos = (J @ d) / (J.norm(dim=1) * d.norm())
    assert torch.allclose(cos, cos[0].expand_as(cos), atol=1e-8)
    assert torch.allclose(d, tjd.ConFIG()(J), atol=1e-8)


# -- GradDrop -----------------------------------------------------------------------------------
def test_graddrop_matches_torchjd_and_keeps_agreeing_signs():
    J = J_RAND.float()
    torch.manual_seed(11)
    u = torch.rand(J.shape[1])
    torch.manual_seed(11)
    assert torch.allclose(gr.graddrop(J, u), tjd.GradDrop()(J))
    agree = torch.tensor([[1.0, -2.0], [3.0, -1.0]])
    assert torch.allclose(gr.graddrop(agree, torch.rand(2)), agree.sum(0))
    assert torch.allclose(gr.graddrop(J, u, torch.ones(4)), J.sum(0))  # full leak


# -- combiners through a Step with a known task-gradient matrix ---------------------------------
class Linear(nn.Module):
    """Shared theta; features f = 1 * theta; loss_t = a_t . f + b_t, so grad_theta L_t = a_t."""

    def __init__(self, A):
        super().__init__()
        self.A = A.float()
        self.theta = nn.Parameter(torch.zeros(A.shape[1]))
        self.b = nn.ParameterList([nn.Parameter(torch.zeros(())) for _ in range(A.shape[0])])

    def step(self, k=0):
        f = self.theta * 1.0
        losses = {f"t{i}": self.A[i] @ f + self.b[i] + 2.0 for i in range(self.A.shape[0])}
        own = {f"t{i}": [self.b[i]] for i in range(self.A.shape[0])}
        return losses, Step(losses, [f], [self.theta], own, step=k)


REFERENCE = {
    "mgda": (gc.MGDACombiner, C.MGDAOptions, {}, lambda J: tjd.MGDA(epsilon=1e-9, max_iters=100_000)(J)),
    "imtl_g": (gc.IMTLGCombiner, C.WrtOptions, {}, lambda J: tjd.IMTLG()(J)),
    "aligned_mtl": (
        gc.AlignedMTLCombiner,
        C.AlignedMTLOptions,
        {"reduction": "mean"},
        lambda J: tjd.AlignedMTL()(J),
    ),
    "config": (gc.ConFIGCombiner, C.WrtOptions, {}, lambda J: tjd.ConFIG()(J)),
    "upgrad": (gc.UPGradCombiner, C.WrtOptions, {}, lambda J: J.T @ gr.upgrad_weights(J @ J.T)),
    "dualproj": (
        gc.DualProjCombiner,
        C.WrtOptions,
        {},
        lambda J: tjd.DualProj(projector=torchjd_projector())(J),
    ),
    "cagrad": (
        gc.CAGradCombiner,
        C.CAGradOptions,
        {"rescale": 0},
        lambda J: J.T @ gr.cagrad_weights(J @ J.T, 0.5, 0),
    ),
    "nash_mtl": (
        gc.NashMTLCombiner,
        C.NashMTLOptions,
        {"max_norm": 0.0},
        lambda J: J.T @ gr.nash_mtl_weights(J @ J.T / torch.linalg.matrix_norm(J @ J.T)),
    ),
}


@pytest.fixture(scope="module")
def zoo() -> Zoo:
    """A zoo of this plugin only (other built-in packages may be mid-migration)."""
    return Zoo.load(entry_points=False, plugins=[("builtin_combiners", C)], strict=True)


@pytest.mark.parametrize("wrt", ["params", "features"])
@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_combiner_writes_the_reference_update(name, wrt):
    cls, options, opts, ref = REFERENCE[name]
    model = Linear(J3)
    comb = cls([f"t{i}" for i in range(3)], options(wrt=wrt, **opts))
    losses, step = model.step()
    comb.backward(losses, step)
    assert torch.allclose(model.theta.grad.double(), ref(J3), atol=1e-4)
    for b in model.b:  # heads: their own loss, unweighted
        assert float(b.grad) == 1.0


@pytest.mark.parametrize("wrt", ["params", "features"])
def test_pcgrad_and_gradvac_combiners_on_two_tasks_match_torchjd(wrt):
    J = J3[:2]
    for cls, options, ref in [
        (gc.PCGradCombiner, C.PCGradOptions, tjd.PCGrad()),
        (gc.GradVacCombiner, C.GradVacOptions, tjd.GradVac()),
    ]:
        model = Linear(J)
        comb = cls(["t0", "t1"], options(wrt=wrt))
        for k in range(2):  # gradvac is stateful: two steps
            model.theta.grad = None
            losses, step = model.step(k)
            comb.backward(losses, step)
            assert torch.allclose(model.theta.grad.double(), ref(J), atol=1e-6)


def test_graddrop_combiner_masks_by_sign():
    J = torch.tensor([[1.0, -1.0, 2.0], [1.0, 3.0, -2.0]])
    model = Linear(J)
    comb = gc.GradDropCombiner(["t0", "t1"], C.GradDropOptions())
    losses, step = model.step(5)
    comb.backward(losses, step)
    g = model.theta.grad
    assert g[0] == 2.0  # agreeing signs are never dropped
    assert g[1] in (-1.0, 3.0) and g[2] in (2.0, -2.0)


def test_db_mtl_balances_log_loss_gradient_magnitudes():
    model = Linear(torch.tensor([[3.0, 0.0], [0.0, 1.0]]))
    comb = gc.DBMTLCombiner(["t0", "t1"], C.DBMTLOptions(beta=0.9, beta_sigma=0.5))
    losses, step = model.step()
    comb.backward(losses, step)
    # losses are 2 (theta = 0): log-loss gradients a_t / 2, buffer (1 - 0.9) of them,
    # both scaled to the larger norm
    buf = torch.tensor([[1.5, 0.0], [0.0, 0.5]]) * 0.1
    assert torch.allclose(model.theta.grad, buf[0] + 3 * buf[1])
    assert torch.allclose(torch.stack([b.grad for b in model.b]), torch.tensor([0.5, 0.5]))


def config_error(zoo: Zoo, node: dict) -> str:
    with pytest.raises(ConfigError) as err:
        zoo.make("combiner", node, ["a", "b"], path="combiner")
    return str(err.value)


@pytest.mark.parametrize("name", GRADIENT_LEVEL_COMBINERS)
def test_wrt_is_validated(zoo, name):
    assert config_error(zoo, {"name": name, "wrt": "parameters"}) == (
        "combiner.wrt: 'parameters' is not one of 'params', 'features' (did you mean 'params'?)"
    )


@pytest.mark.parametrize(
    "node, message",
    [
        (
            {"name": "mgda", "normalization": "l1"},
            "combiner.normalization: 'l1' is not one of 'none', 'l2', 'loss', 'loss+' (did you mean 'l2'?)",
        ),
        ({"name": "mgda", "max_iter": 0}, "combiner.max_iter: must be >= 1 and <= 1000000, got 0"),
        ({"name": "mgda", "tol": 0.0}, "combiner.tol: must be > 0, got 0"),
        (
            {"name": "pcgrad", "reduction": "max"},
            "combiner.reduction: 'max' is not one of 'sum', 'mean' (did you mean 'mean'?)",
        ),
        ({"name": "cagrad", "c": -0.1}, "combiner.c: must be >= 0, got -0.1"),
        ({"name": "cagrad", "rescale": 3}, "combiner.rescale: 3 is not one of 0, 1, 2"),
        ({"name": "nash_mtl", "max_norm": -1.0}, "combiner.max_norm: must be >= 0, got -1"),
        (
            {"name": "nash_mtl", "update_weights_every": 0},
            "combiner.update_weights_every: must be >= 1 and <= 1000000, got 0",
        ),
        ({"name": "nash_mtl", "max_iter": 0}, "combiner.max_iter: must be >= 1 and <= 1000000, got 0"),
        (
            {"name": "aligned_mtl", "scale_mode": "max"},
            "combiner.scale_mode: 'max' is not one of 'min', 'median', 'rmse'",
        ),
        (
            {"name": "aligned_mtl", "reduction": "avg"},
            "combiner.reduction: 'avg' is not one of 'sum', 'mean'",
        ),
        ({"name": "gradvac", "beta": 2.0}, "combiner.beta: must be >= 0 and <= 1, got 2"),
        ({"name": "graddrop", "leak": 1.5}, "combiner.leak: must be >= 0 and <= 1, got 1.5"),
        ({"name": "db_mtl", "beta": -0.1}, "combiner.beta: must be >= 0 and <= 1, got -0.1"),
        ({"name": "db_mtl", "beta_sigma": -1.0}, "combiner.beta_sigma: must be >= 0, got -1"),
    ],
)
def test_bad_options_are_config_errors(zoo, node, message):
    assert config_error(zoo, node) == message


def test_registry_holds_every_gradient_combiner(zoo):
    for name in GRADIENT_LEVEL_COMBINERS:
        entry = zoo.entry("combiner", name)
        assert entry.plugin == "builtin_combiners"
        comb = zoo.make("combiner", {"name": name, "wrt": "features"}, ["a", "b", "c"], path="combiner")
        assert comb.level == "gradient" and comb.wrt == "features"


def test_nash_mtl_clips_the_update_norm_and_keeps_state():
    names = ["t0", "t1", "t2"]
    model = Linear(J3 * 10)
    comb = gc.NashMTLCombiner(names, C.NashMTLOptions(max_norm=1.0, update_weights_every=2))
    losses, step = model.step()
    comb.backward(losses, step)
    assert abs(float(model.theta.grad.norm()) - 1.0) < 1e-5
    alpha = comb.alpha.clone()
    fresh = gc.NashMTLCombiner(names, C.NashMTLOptions(max_norm=1.0, update_weights_every=2))
    fresh.load_state_dict(comb.state_dict())
    J2 = J3 * 0.01  # different gradients, update norm below max_norm: no clipping
    for c in (comb, fresh):  # second call reuses the stored weights
        model2 = Linear(J2)
        losses, step = model2.step(1)
        c.backward(losses, step)
        assert torch.allclose(c.alpha, alpha)
        assert torch.allclose(model2.theta.grad.double(), J2.T @ alpha, atol=1e-6)


def test_gradvac_and_db_mtl_state_round_trip():
    J = J_RAND.float()
    for make in (
        lambda: gc.GradVacCombiner([f"t{i}" for i in range(4)], C.GradVacOptions()),
        lambda: gc.DBMTLCombiner([f"t{i}" for i in range(4)], C.DBMTLOptions()),
    ):
        a = make()
        model = Linear(J)
        losses, step = model.step(0)
        a.backward(losses, step)
        b = make()
        b.load_state_dict(a.state_dict())  # db_mtl: the T x P buffer is resized on load
        grads = []
        for c in (a, b):
            model.theta.grad = None
            losses, step = model.step(1)
            c.backward(losses, step)
            grads.append(model.theta.grad.clone())
        assert torch.allclose(grads[0], grads[1])
        fresh = make()
        model.theta.grad = None
        losses, step = model.step(1)
        fresh.backward(losses, step)
        assert not torch.allclose(model.theta.grad, grads[0])  # the state mattered


class Scaled(nn.Module):
    """features f = M theta with a large M, so feature-space and parameter-space norms differ;
    loss_t = a_t . f + b_t."""

    def __init__(self, A, M):
        super().__init__()
        self.A, self.M = A.float(), M.float()
        self.theta = nn.Parameter(torch.ones(M.shape[1]))
        self.b = nn.ParameterList([nn.Parameter(torch.zeros(())) for _ in range(A.shape[0])])

    def step(self):
        f = self.M @ self.theta
        losses = {f"t{i}": self.A[i] @ f + self.b[i] + 2.0 for i in range(self.A.shape[0])}
        own = {f"t{i}": [self.b[i]] for i in range(self.A.shape[0])}
        return losses, Step(losses, [f], [self.theta], own)


@pytest.mark.parametrize("wrt", ["params", "features"])
def test_nash_mtl_max_norm_bounds_the_parameter_update_in_both_modes(wrt):
    g = torch.Generator().manual_seed(3)
    A, M = torch.randn(3, 6, generator=g), 20 * torch.randn(6, 4, generator=g)
    names = ["t0", "t1", "t2"]
    unclipped = Scaled(A, M)
    losses, step = unclipped.step()
    gc.NashMTLCombiner(names, C.NashMTLOptions(wrt=wrt, max_norm=0.0)).backward(losses, step)
    assert float(unclipped.theta.grad.norm()) > 10  # the clip below has work to do
    model = Scaled(A, M)
    losses, step = model.step()
    gc.NashMTLCombiner(names, C.NashMTLOptions(wrt=wrt, max_norm=1.0)).backward(losses, step)
    assert float(model.theta.grad.norm()) == pytest.approx(1.0, rel=1e-5)
    # the direction is the unclipped update's
    cos = F.cosine_similarity(model.theta.grad, unclipped.theta.grad, dim=0)
    assert float(cos) == pytest.approx(1.0, abs=1e-6)


def test_nash_mtl_on_rank_deficient_gradients_says_it_has_no_solution():
    # 5 tasks whose gradients span 2 dimensions (the case that crashed with a complex number)
    g = torch.Generator().manual_seed(0)
    J = torch.randn(5, 2, generator=g, dtype=torch.float64) @ torch.randn(
        2, 8, generator=g, dtype=torch.float64
    )
    assert int(torch.linalg.matrix_rank(J)) == 2
    G = J @ J.T / torch.linalg.matrix_norm(J @ J.T)
    # the ridged problem's unique solution, a_i ((G + r diag G) a)_i = 1 for every task: the
    # null space of G makes a large, the ridge alone bounds it, so there is no solution to use
    ridged = gr.alpha_fair_solve(G, 1.0)
    Gr = G + gr.ALPHA_FAIR_RIDGE * torch.diag(torch.diagonal(G))
    a = ridged.weights
    assert float((a * (Gr @ a) - 1).abs().max()) < 1e-3 and float(a.max()) > 1e3
    assert not ridged.solved and ridged.ridge_share > 0.1
    # nash_mtl says so and keeps the previous weights (ones at the first step; issue 21)
    assert not gr.nash_mtl_solve(G).solved
    assert torch.equal(gr.nash_mtl_weights(G), torch.ones(5, dtype=torch.float64))
    # through the combiner: a finite update of norm max_norm
    model = Linear(J * 1000)  # large gradients: the clip acts
    losses, step = model.step()
    with pytest.warns(RuntimeWarning, match="combiner 'nash_mtl': its equation has no positive solution"):
        gc.NashMTLCombiner([f"t{i}" for i in range(5)], C.NashMTLOptions(max_norm=1.0)).backward(losses, step)
    assert torch.isfinite(model.theta.grad).all()
    assert float(model.theta.grad.norm()) == pytest.approx(1.0, rel=1e-5)
