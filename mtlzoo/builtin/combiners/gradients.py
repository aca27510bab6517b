"""Aggregation math of gradient-level combiners, on T x T Gramians and T x P matrices.

Pure functions, no model, no autograd. Most methods only need the Gramian ``G = J J^T``
of the T task gradients (rows of ``J``) and return weights ``w`` such that the update is
``J^T w``; the combiners then let :class:`mtlzoo.contract.combine.Step` assemble ``J^T w``
without ever storing ``J``. Gramians are taken as float64 CPU tensors; methods whose weights do
not change when ``G`` is scaled work on ``G / trace(G)`` so that tolerances are relative
(large models have large Gramian entries: an absolute pseudo-inverse tolerance would
zero their update).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch
from scipy.optimize import minimize, nnls
from torch import Tensor

#: float32 gradients carry this relative precision; ranks are decided with it
_F32_EPS = float(torch.finfo(torch.float32).eps)


def _f64(G: Tensor) -> Tensor:
    return G.detach().to("cpu", torch.float64)


def normalize_gramian(G: Tensor) -> Tensor:
    """``G / trace(G)`` (the Gramian of the Frobenius-normalised matrix); zeros if the trace is 0."""
    G = _f64(G)
    tr = float(torch.diagonal(G).sum())
    return G / tr if tr > 0 else torch.zeros_like(G)


def norms(G: Tensor) -> Tensor:
    """Norms of the task gradients: ``sqrt(diag(G))``."""
    return torch.diagonal(_f64(G)).clamp(min=0).sqrt()


def psd_root(G: Tensor) -> Tensor:
    """A T x T matrix ``M`` with ``M^T M = G`` (negative eigenvalues from rounding clipped)."""
    G = _f64(G)
    lam, V = torch.linalg.eigh((G + G.T) / 2)
    return lam.clamp(min=0).sqrt()[:, None] * V.T


# -- MGDA ---------------------------------------------------------------------------------------
def min_norm_weights(G: Tensor, max_iter: int = 1000, tol: float = 1e-7) -> Tensor:
    """Weights ``a`` on the simplex minimising ``||J^T a||^2 = a^T G a``: the min-norm point
    of the convex hull of the task gradients (MGDA, Sener & Koltun 2018).

    Frank-Wolfe with exact line search, as in the paper's Algorithm 2, plus away steps
    (Lacoste-Julien & Jaggi 2015) so that it converges linearly; starts from the task
    gradient of smallest norm and stops when the Frank-Wolfe duality gap is below ``tol``
    times the current squared norm.
    """
    G = normalize_gramian(G)
    T = G.shape[0]
    a = torch.zeros(T, dtype=torch.float64)
    if T == 0:
        return a
    a[int(torch.argmin(torch.diagonal(G)))] = 1.0
    floor = 1e-14
    for _ in range(max_iter):
        g = G @ a
        aga = float(a @ g)
        s = int(torch.argmin(g))
        gap = aga - float(g[s])
        if gap <= tol * max(aga, floor):
            break
        active = torch.nonzero(a > 0).flatten()
        v = int(active[torch.argmax(g[active])])
        if gap >= float(g[v]) - aga or a[v] >= 1.0:
            d = -a.clone()
            d[s] += 1.0
            gmax = 1.0
        else:
            d = a.clone()
            d[v] -= 1.0
            gmax = float(a[v] / (1.0 - a[v]))
        dGd = float(d @ G @ d)
        gamma = gmax if dGd <= 0 else min(max(-float(d @ g) / dGd, 0.0), gmax)
        if gamma <= 0:
            break
        a = (a + gamma * d).clamp(min=0)
        a = a / a.sum()
    return a


def mgda_normalizers(G: Tensor, losses: Tensor, kind: str) -> Tensor:
    """Per-task gradient scale factors of the MGDA reference code (Sener & Koltun 2018):
    ``none`` (1), ``l2`` (gradient norm), ``loss`` (loss value), ``loss+`` (both)."""
    n = norms(G)
    L = losses.detach().to("cpu", torch.float64)
    if kind == "none":
        return torch.ones_like(n)
    if kind == "l2":
        out = n
    elif kind == "loss":
        out = L
    elif kind == "loss+":
        out = L * n
    else:
        raise ValueError(f"normalization must be none, l2, loss or loss+, got {kind!r}")
    return torch.where(out > 0, out, torch.ones_like(out))


# -- projections --------------------------------------------------------------------------------
def dual_cone_weights(G: Tensor, u: Tensor) -> Tensor:
    """Weights ``v`` of the projection of ``J^T u`` onto the dual cone of the rows of ``J``:
    ``v = argmin v^T G v  s.t.  v >= u`` (Proposition 1 of Quinton & Rey 2024).

    Solved exactly as a non-negative least-squares problem in ``z = v - u``:
    ``min_{z >= 0} ||M z + M u||^2`` with ``M^T M = G`` (Lawson-Hanson, scipy).
    """
    Gn = normalize_gramian(G)
    u = u.detach().to("cpu", torch.float64)
    M = psd_root(Gn)
    z, _ = nnls(M.numpy(), -(M @ u).numpy(), maxiter=50 * max(1, len(u)))
    return u + torch.from_numpy(z)


def upgrad_weights(G: Tensor, pref: Tensor | None = None) -> Tensor:
    """UPGrad (Quinton & Rey 2024): project each task gradient, scaled by its preference
    (default ``1/T``), onto the dual cone of all task gradients and add the projections.
    The result has a non-negative inner product with every task gradient."""
    T = G.shape[0]
    pref = torch.full((T,), 1.0 / T, dtype=torch.float64) if pref is None else pref.double().cpu()
    total = torch.zeros(T, dtype=torch.float64)
    for i in range(T):
        u = torch.zeros(T, dtype=torch.float64)
        u[i] = pref[i]
        total += dual_cone_weights(G, u)
    return total


def pcgrad_weights(G: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """PCGrad (Yu et al. 2020) as weights: each task gradient, in turn, is projected onto
    the normal plane of every other task gradient (random order) it conflicts with, and the
    projected gradients are summed. ``generator=None`` uses torch's global RNG."""
    G = _f64(G)
    T = G.shape[0]
    total = torch.zeros(T, dtype=torch.float64)
    for i in range(T):
        perm = torch.randperm(T, generator=generator) if generator is not None else torch.randperm(T)
        c = torch.zeros(T, dtype=torch.float64)
        c[i] = 1.0
        for j in perm.tolist():
            if j == i or G[j, j] <= 0:
                continue
            inner = float(G[j] @ c)
            if inner < 0:
                c[j] -= inner / G[j, j]
        total += c
    return total


def imtl_g_weights(G: Tensor) -> Tensor:
    """IMTL-G (Liu et al. 2021): weights ``a`` summing to 1 such that the update ``J^T a``
    has equal projections on all unit task gradients: ``G a ∝ ||g_i||``, i.e.
    ``a = G^+ n / (1^T G^+ n)`` (pseudo-inverse on the trace-normalised Gramian, so linearly
    dependent gradients are handled and large models are not zeroed)."""
    Gn = normalize_gramian(G)
    n = norms(Gn)
    v = torch.linalg.pinv(Gn, hermitian=True) @ n
    s = float(v.sum())
    return v / s if abs(s) > 1e-12 else torch.zeros_like(v)


def aligned_mtl_weights(G: Tensor, scale_mode: str = "min", pref: Tensor | None = None) -> Tensor:
    """Aligned-MTL (Senushkin et al. 2023): align the task gradients into an orthogonal
    system with equal norms (the stability criterion), ``B = sqrt(s) V Λ^{-1/2} V^T`` on the
    non-zero eigenpairs of ``G``, and combine them: weights ``B @ pref``. ``scale_mode``
    picks ``s``: the smallest (``min``), ``median`` or mean (``rmse``) eigenvalue.
    ``pref`` defaults to ones (the reference code sums the aligned gradients)."""
    Gn = normalize_gramian(G)
    T = Gn.shape[0]
    pref = torch.ones(T, dtype=torch.float64) if pref is None else pref.double().cpu()
    lam, V = torch.linalg.eigh(Gn)
    tol = float(lam.max()) * T * _F32_EPS if T else 0.0
    keep = lam > tol
    if not bool(keep.any()):
        return torch.zeros(T, dtype=torch.float64)
    lam, V = lam[keep], V[:, keep]
    if scale_mode == "min":
        scale = lam.min()
    elif scale_mode == "median":
        scale = lam.median()
    elif scale_mode == "rmse":
        scale = lam.mean()
    else:
        raise ValueError(f"scale_mode must be min, median or rmse, got {scale_mode!r}")
    B = scale.sqrt() * (V / lam.sqrt()) @ V.T
    return B @ pref


def cagrad_weights(G: Tensor, c: float = 0.5, rescale: int = 1) -> Tensor:
    """CAGrad (Liu et al. 2021): the update maximising the worst task improvement within a
    ball of radius ``c ||g_0||`` around the average gradient ``g_0``:
    ``d = g_0 + c ||g_0|| g_w / ||g_w||`` with ``w = argmin_{w in simplex} g_w^T g_0 +
    c ||g_0|| ||g_w||`` (solved with scipy's SLSQP, as the reference code does). ``rescale``:
    0 none, 1 divide by ``1 + c^2`` (reference default), 2 divide by ``1 + c``."""
    Gn = normalize_gramian(G).numpy()
    T = Gn.shape[0]
    b = np.full(T, 1.0 / T)
    g0_norm = math.sqrt(max(float(b @ Gn @ b), 0.0) + 1e-16)
    radius = c * g0_norm
    Ab = Gn @ b

    def objective(x):
        return float(x @ Ab + radius * math.sqrt(max(float(x @ Gn @ x), 0.0) + 1e-16))

    res = minimize(
        objective,
        b,
        method="SLSQP",
        bounds=[(0.0, 1.0)] * T,
        constraints=({"type": "eq", "fun": lambda x: 1.0 - x.sum()},),
        options={"ftol": 1e-12, "maxiter": 500},
    )
    w = np.clip(res.x, 0.0, None)
    gw_norm = math.sqrt(max(float(w @ Gn @ w), 0.0))
    lam = radius / gw_norm if gw_norm > 1e-12 else 0.0
    weights = torch.from_numpy(b + lam * w)
    if rescale == 1:
        weights = weights / (1 + c**2)
    elif rescale == 2:
        weights = weights / (1 + c)
    elif rescale != 0:
        raise ValueError(f"rescale must be 0, 1 or 2, got {rescale}")
    return weights


#: ridge of the alpha-fair solves, relative to each task's own squared gradient norm: it keeps a
#: singular Gramian solvable and moves a solvable problem's weights by about this fraction,
#: whatever the tasks' scales (an absolute ridge would swamp a task whose gradient is small)
ALPHA_FAIR_RIDGE = 1e-10
#: a solution whose ridge term exceeds this fraction of a task's side of the equation is set by
#: the ridge, not by the equation: no positive solution exists (or only one so close to none
#: that the ridge moves it by more than 1%); below it the ridge moves the weights by at most
#: this fraction
RIDGE_BOUND = 1e-2


class AlphaFairSolution(NamedTuple):
    """What an alpha-fair solve found.

    Attributes:
        weights: the weights to use (float64, ``[T]``): the solution, or the method's fallback
            when ``solved`` is False.
        solved: False when no ``w > 0`` solves the equation: some non-negative combination of
            the task gradients is zero (the gradients are Pareto-stationary: a zero task
            gradient, two opposite ones, more tasks than the gradients' rank ...), so the
            ridge alone would bound the weights (at 1e4-1e5 times their usual size).
        ridge_share: the largest share of the ridge term in a task's side of the equation
            (about ``1e-10`` for a solvable problem, near 1 for an unsolvable one).
    """

    weights: Tensor
    solved: bool
    ridge_share: float


def alpha_fair_solve(
    G: Tensor, alpha: float = 1.0, init: Tensor | None = None, max_iter: int = 100, tol: float = 1e-10
) -> AlphaFairSolution:
    """The ``w > 0`` solving ``(G + r diag(G)) w = w^(-1/alpha)`` (element-wise power, ``r`` =
    :data:`ALPHA_FAIR_RIDGE`): alpha-fair weights, accurate to about ``r`` relative to each
    weight whatever the tasks' gradient norms.

    The equation is the stationarity condition of the strictly convex potential
    ``phi(w) = w^T G w / 2 - sum_i u(w_i)`` with ``u' = w^(-1/alpha)`` (``u = log`` at
    ``alpha = 1``, ``w^(1 - 1/alpha) / (1 - 1/alpha)`` otherwise; ``u`` is concave for every
    ``alpha > 0``), minimised by damped Newton steps that stay inside ``w > 0`` (Newton's steps
    do not depend on the tasks' scales), on ``G / s`` (``s`` the mean squared norm; the weights
    are rescaled exactly, by ``s^(-alpha / (1 + alpha))``) from ``init`` or else from the
    solution for orthogonal gradients (``w_i = G_ii^(-alpha / (1 + alpha))``). It stops when
    every task's side of the equation agrees to ``tol`` relative. ``solved`` is False (and
    ``weights`` the ridge-bounded ones) when no positive solution exists, see
    :class:`AlphaFairSolution`.
    """
    G = _f64(G)
    T = G.shape[0]
    d = torch.diagonal(G).clamp(min=0)
    if T == 0 or not bool((d > 0).all()):  # a zero task gradient: no finite weight exists
        return AlphaFairSolution(torch.ones(T, dtype=torch.float64), False, math.inf)
    p = -1.0 / alpha
    s = float(d.mean())
    Gn = G / s
    Gr = Gn + ALPHA_FAIR_RIDGE * torch.diag(torch.diagonal(Gn))
    scale = s ** (-alpha / (1 + alpha))
    if init is None:
        v = torch.diagonal(Gr) ** (-alpha / (1 + alpha))
    else:
        v = (init.double().cpu() / scale).clamp(min=1e-300)

    def phi(x: Tensor) -> float:
        u = torch.log(x) if alpha == 1 else x ** (1 + p) / (1 + p)
        return float(0.5 * x @ Gr @ x - u.sum())

    for _ in range(max_iter):
        power = v**p
        grad = Gr @ v - power
        if float((grad / power).abs().max()) <= tol:
            break
        H = Gr + torch.diag(-p * v ** (p - 1))
        step = -torch.linalg.solve(H, grad)
        neg = step < 0
        t = 1.0
        if bool(neg.any()):  # stay strictly inside w > 0
            t = min(1.0, 0.99 * float((-v[neg] / step[neg]).min()))
        f0, slope = phi(v), float(grad @ step)
        # Armijo, with the rounding of phi allowed for (near the solution phi stops changing)
        while t > 1e-12 and phi(v + t * step) > f0 + 1e-4 * t * slope + 1e-14 * abs(f0):
            t *= 0.5
        v = v + t * step
    share = float((ALPHA_FAIR_RIDGE * torch.diagonal(Gn) * v / v**p).max())
    residual = float(((Gr @ v - v**p) / v**p).abs().max())
    solved = share <= RIDGE_BOUND and residual <= 1e-6 and bool(torch.isfinite(v).all())
    return AlphaFairSolution(v * scale, solved, share)


def alpha_fair_weights(
    G: Tensor, alpha: float = 1.0, init: Tensor | None = None, max_iter: int = 100, tol: float = 1e-10
) -> Tensor:
    """The weights of :func:`alpha_fair_solve` (ridge-bounded when no solution exists)."""
    return alpha_fair_solve(G, alpha, init, max_iter, tol).weights


def nash_mtl_solve(
    G: Tensor, init: Tensor | None = None, max_iter: int = 100, tol: float = 1e-10
) -> AlphaFairSolution:
    """Nash-MTL (Navon et al. 2022) bargaining weights: the ``a > 0`` solving ``G a = 1/a``
    (:func:`alpha_fair_solve` with ``alpha = 1``: exact, no cvxpy), warm-started from ``init``.
    Pass the normalised Gramian (``G / ||G||_F`` in the reference code).

    Fallback when no solution exists (``solved`` False): ``init``, the previous step's weights,
    as the reference code keeps its previous weights when its solver fails (ones without it).
    """
    found = alpha_fair_solve(G, 1.0, init, max_iter, tol)
    if found.solved:
        return found
    T = _f64(G).shape[0]
    fallback = init.double().cpu().clone() if init is not None else torch.ones(T, dtype=torch.float64)
    return AlphaFairSolution(fallback, False, found.ridge_share)


def nash_mtl_weights(
    G: Tensor, init: Tensor | None = None, max_iter: int = 100, tol: float = 1e-10
) -> Tensor:
    """The weights of :func:`nash_mtl_solve` (its fallback when no solution exists)."""
    return nash_mtl_solve(G, init, max_iter, tol).weights


def fairgrad_solve(G: Tensor, alpha: float = 1.0, max_iter: int = 100) -> AlphaFairSolution:
    """FairGrad (Ban & Ji 2024): the alpha-fair weights ``G w = w^(-1/alpha)`` on the raw
    Gramian (the weights' scale is part of the method), by :func:`alpha_fair_solve`.

    A zero Gramian gives ones. Fallback when no solution exists (``solved`` False): equal
    weights at the method's scale, ``s^(-alpha / (1 + alpha))`` each (``s`` the mean squared
    gradient norm: the weights FairGrad gives to orthogonal gradients of equal norms), so the
    update is the task gradients' sum at that scale rather than the ridge-bounded weights.
    """
    G = _f64(G)
    T = G.shape[0]
    s = float(torch.diagonal(G).sum()) / max(T, 1)
    if s <= 0:
        return AlphaFairSolution(torch.ones(T, dtype=torch.float64), True, 0.0)
    found = alpha_fair_solve(G, alpha, max_iter=max_iter)
    if found.solved:
        return found
    return AlphaFairSolution(
        torch.full((T,), s ** (-alpha / (1 + alpha)), dtype=torch.float64), False, found.ridge_share
    )


def fairgrad_weights(G: Tensor, alpha: float = 1.0, max_iter: int = 100) -> Tensor:
    """The weights of :func:`fairgrad_solve` (its fallback when no solution exists)."""
    return fairgrad_solve(G, alpha, max_iter).weights


# -- stochastic multi-objective methods ---------------------------------------------------------
def project_simplex(y: Tensor) -> Tensor:
    """Euclidean projection of ``y`` onto the probability simplex (sort-based, as in the MoDo,
    MoCo and SDMGrad reference code)."""
    y = y.detach().to("cpu", torch.float64)
    u = torch.sort(y, descending=True).values
    css = torch.cumsum(u, 0) - 1.0
    k = torch.arange(1, len(y) + 1, dtype=torch.float64)
    rho = int(torch.nonzero(u - css / k > 0).flatten().max())
    return (y - css[rho] / (rho + 1)).clamp(min=0)


def modo_weights(G12: Tensor, lam: Tensor, gamma: float, rho: float) -> Tensor:
    """MoDo (Chen et al. 2023) weight step: ``Pi_simplex(lam - gamma (G12 lam + rho lam))``
    with ``G12 = J_1 J_2^T`` the cross Gramian of two independent samples' task gradients."""
    lam = lam.detach().to("cpu", torch.float64)
    return project_simplex(lam - gamma * (_f64(G12) @ lam + rho * lam))


def sdmgrad_weights(
    G12: Tensor, w: Tensor, lam: float, lr: float = 5.0, momentum: float = 0.5, n_iter: int = 20
) -> tuple[Tensor, Tensor]:
    """SDMGrad (Xiao et al. 2023): ``n_iter`` projected SGD steps (heavy-ball ``momentum``,
    restarted every call, as the reference code's fresh ``torch.optim.SGD``) on
    ``min_{w in simplex} (w + lam/T)^T A w`` from the previous ``w``, where ``A`` is the cross
    Gramian ``G12`` divided by the squared mean of ``sqrt(max(diag, 0))``. Returns the new
    ``w`` and the update weights ``(w + lam/T) / (1 + lam)`` (pulled towards the mean gradient)."""
    G12 = _f64(G12)
    T = G12.shape[0]
    scale = torch.diagonal(G12).clamp(min=0).sqrt().mean()
    A = G12 / (scale**2 + 1e-8)
    w = w.detach().to("cpu", torch.float64)
    pull = torch.full((T,), lam / T, dtype=torch.float64)
    velocity = None
    for _ in range(n_iter):
        grad = A @ (w + pull)
        velocity = grad if velocity is None else momentum * velocity + grad
        w = project_simplex(w - lr * velocity)
    return w, (w + pull) / (1 + lam)


def moco_weights(
    tracked: Tensor, lam: Tensor, gamma: float, rho: float, simplex: str = "projection"
) -> Tensor:
    """MoCo (Fernando et al. 2023) weight step on the tracked gradients ``Y`` (T x P):
    ``lam - gamma (Y Y^T + rho I) lam`` mapped back to the simplex by Euclidean projection
    (``projection``, the paper) or by a softmax (``softmax``, LibMTL's code)."""
    Y = tracked.detach()
    YY = (Y @ Y.T).to("cpu", torch.float64)
    lam = lam.detach().to("cpu", torch.float64)
    step = lam - gamma * (YY + rho * torch.eye(len(lam), dtype=torch.float64)) @ lam
    if simplex == "projection":
        return project_simplex(step)
    if simplex == "softmax":
        return torch.softmax(step, 0)
    raise ValueError(f"simplex must be projection or softmax, got {simplex!r}")


def track_gradients(
    tracked: Tensor, J: Tensor, scale: Tensor, beta: float, rows: list[int] | None = None
) -> None:
    """MoCo's tracking step, in place and row by row (no T x P temporary):
    ``Y_r <- (1 - beta) Y_r + beta scale_t J_t`` with ``r = rows[t]`` (default ``t``)."""
    with torch.no_grad():
        for t in range(J.shape[0]):
            r = t if rows is None else rows[t]
            tracked[r].mul_(1 - beta).add_(J[t].to(tracked.dtype), alpha=beta * float(scale[t]))


def excess_risks(J: Tensor, sq_sum: Tensor, rows: list[int] | None = None, eps: float = 1e-7) -> Tensor:
    """ExcessMTL (He et al. 2024) excess-risk estimates ``g_t^T H_t^{-1} g_t`` with the
    AdaGrad diagonal ``H_t = sqrt(sum of g_t^2 over steps + eps)``; row ``rows[t]`` (default
    ``t``) of ``sq_sum`` (T x P) gets this step's squares of ``J_t`` added in place. Row by
    row: no T x P temporaries."""
    out = torch.zeros(J.shape[0], dtype=torch.float64)
    with torch.no_grad():
        for t in range(J.shape[0]):
            acc = sq_sum[t if rows is None else rows[t]]
            sq = J[t].to(sq_sum.dtype).square()
            acc.add_(sq)
            out[t] = float(torch.dot(sq, acc.add(eps).rsqrt_()))  # sum of g^2 / sqrt(S + eps)
    return out


def excess_mtl_weights(weights: Tensor, risks: Tensor, baseline: Tensor, step_size: float) -> Tensor:
    """ExcessMTL's exponentiated-gradient step ``w_t exp(step_size r_t / r_t^0)``, renormalised
    to sum to T (LibMTL's scale; the paper's simplex weights are these / T). Done in log space,
    so that a large ratio saturates instead of overflowing; a zero baseline counts as no risk."""
    w, r, b = (x.detach().to("cpu", torch.float64) for x in (weights, risks, baseline))
    ratio = torch.where(b > 0, r / b.clamp(min=1e-300), torch.zeros_like(r))
    return len(w) * torch.softmax(torch.log(w) + step_size * ratio, 0)


def gradvac_weights(
    G: Tensor, phi_hat: Tensor, beta: float, generator: torch.Generator | None = None, eps: float = 1e-8
) -> tuple[Tensor, Tensor]:
    """GradVac (Wang et al. 2021) as weights, and the updated EMA targets ``phi_hat``.

    For each task ``i`` and each other task ``j`` (random order): when the cosine
    similarity ``phi_ij`` of the (already modified) ``g_i`` with ``g_j`` is below the target
    ``phi_hat_ij``, add the multiple of ``g_j`` that brings it to the target; then
    ``phi_hat_ij <- (1 - beta) phi_hat_ij + beta phi_ij``. Returns the weights of the sum of
    the modified gradients. Works on coefficients over the original gradients, so only
    ``G`` is needed (as in torchjd).
    """
    G = _f64(G)
    T = G.shape[0]
    phi_hat = phi_hat.detach().to("cpu", torch.float64).clone()
    C = torch.eye(T, dtype=torch.float64)
    for i in range(T):
        cG = C[i] @ G
        others = [j for j in range(T) if j != i]
        perm = torch.randperm(len(others), generator=generator) if generator else torch.randperm(len(others))
        for j in (others[k] for k in perm.tolist()):
            norm_i = float((cG * C[i]).sum().clamp(min=0).sqrt())
            norm_j = float(G[j, j].clamp(min=0).sqrt())
            phi = float(cG[j]) / (norm_i * norm_j + eps)
            target = float(phi_hat[i, j])
            if phi < target:
                sin_phi = math.sqrt(max(1 - phi * phi, 0.0))
                sin_target = math.sqrt(max(1 - target * target, 0.0))
                w = norm_i * (target * sin_phi - phi * sin_target) / (norm_j * sin_target + eps)
                C[i, j] += w
                cG = cG + w * G[j]
            phi_hat[i, j] = (1 - beta) * target + beta * phi
    return C.sum(0), phi_hat


def config_weights(G: Tensor, pref: Tensor | None = None) -> Tensor:
    """ConFIG (Liu et al. 2024) as weights: the direction ``x = U^+ pref`` (``U``: unit task
    gradients, ``pref`` defaults to ones) has equal inner products with every unit
    gradient; the update is ``x / ||x||`` scaled by ``sum_i g_i . x / ||x||``."""
    G = _f64(G)
    T = G.shape[0]
    pref = torch.ones(T, dtype=torch.float64) if pref is None else pref.double().cpu()
    n = norms(G)
    inv = torch.where(n > 0, 1.0 / n.clamp(min=1e-300), torch.zeros_like(n))
    Gu = G * inv[:, None] * inv[None, :]
    a = torch.linalg.pinv(Gu, hermitian=True) @ pref
    coef = a * inv  # x = sum_i coef_i g_i
    x_norm = math.sqrt(max(float(coef @ G @ coef), 0.0))
    if x_norm <= 1e-12 * max(1.0, math.sqrt(float(torch.diagonal(G).sum()))) or x_norm == 0:
        return torch.zeros(T, dtype=torch.float64)
    unit = coef / x_norm
    length = float((G @ unit).sum())
    return unit * length


def graddrop(J: Tensor, u: Tensor, leak: Tensor | None = None) -> Tensor:
    """GradDrop (Chen et al. 2020) on a T x P matrix: keep, per coordinate, the gradients
    whose sign wins a draw weighted by the sign purity ``P = (1 + sum g / sum |g|) / 2``
    (``u``: one uniform draw per coordinate); ``leak[i]`` lets that fraction of task ``i``
    through unmasked. Returns the length-P update. Works row by row: no T x P temporaries."""
    total = torch.zeros_like(J[0])
    absolute = torch.zeros_like(J[0])
    for row in J:
        total += row
        absolute += row.abs()
    purity = 0.5 * (1 + total / absolute)  # NaN where every task is 0: nothing kept, nothing lost
    del total, absolute
    keep_pos = purity > u
    keep_neg = purity < u
    del purity
    out = torch.zeros_like(J[0])
    for i, row in enumerate(J):
        # a positive entry survives where the draw kept positives, a negative one where it
        # kept negatives (zeros contribute nothing either way)
        keep = torch.where(row > 0, keep_pos, keep_neg).to(row.dtype)
        li = 0.0 if leak is None else float(leak[i])
        if li != 0.0:
            keep.mul_(1 - li).add_(li)
        out.addcmul_(keep, row)
    return out
