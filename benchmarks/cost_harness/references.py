"""The reference rows' steps: the hand-written step (no mtlzoo ``Step``, no combiner) and a
step through torchjd's autojac with one of its aggregators."""

from __future__ import annotations


def hand_step(forward, optimizer):
    """The hand-written step, what a user writes without mtlzoo (no ``Step``, no combiner):
    ``forward()``, ``sum(losses).backward()``, optimizer step, ``zero_grad``."""

    def step(k: int) -> None:
        _, losses = forward()
        sum(losses.values()).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def torchjd_step(aggregator_name: str, forward, optimizer, shared, own, names):
    """A step through torchjd's autojac: ``mtl_backward`` (per-task gradients of the features,
    the Jacobian of the shared parameters) then ``jac_to_grad`` with ``aggregator_name``.

    The features given are the two maps the heads read. ``mtl_backward`` takes the gradient of
    each loss with respect to each feature, which is a total derivative, and the stride-32 map is
    computed from the stride-4 one: given as they are, the stride-4 map's gradient would include
    the path through the deeper layers, which the Jacobian step then adds a second time (and the
    task pass would free the backbone's graph). The heads therefore read the stride-4 map through
    a view of it (``forward(cut=True)``), a node of its own that only they consume: the features'
    gradients are then the heads' partial derivatives and the update is exact, at no extra
    memory."""
    from torchjd.autojac import jac_to_grad, mtl_backward

    aggregator = torchjd_aggregator(aggregator_name)

    def step(k: int) -> None:
        feats, losses = forward(cut=True)
        mtl_backward(
            [losses[n] for n in names],
            features=[feats[1], feats[-1]],
            shared_params=shared,
            tasks_params=[own[n] for n in names],
        )
        jac_to_grad(shared, aggregator)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def torchjd_aggregator(name: str):
    """torchjd's aggregator ``name``. UPGrad's default dual-cone projector needs the optional
    ``quadprog`` and ``qpsolvers`` packages; without them it gets a projector solving the same
    quadratic program exactly by non-negative least squares (mtlzoo's solver, on the T x T
    Gramian: a negligible share of a step), and the row says so."""
    import torchjd.aggregation as aggregation

    cls = getattr(aggregation, name)
    if name != "UPGrad" or quadprog_installed():
        return cls()
    import torch
    from torchjd._linalg import DualConeProjector

    from mtlzoo.builtin.combiners.gradients import dual_cone_weights

    class NnlsProjector(DualConeProjector):
        def __call__(self, U, G):
            rows = U.reshape(-1, U.shape[-1])
            W = torch.stack([dual_cone_weights(G, u) for u in rows])
            return W.reshape(U.shape).to(device=U.device, dtype=U.dtype)

    return cls(projector=NnlsProjector())


def quadprog_installed() -> bool:
    """Whether torchjd's default dual-cone projector can run (``quadprog`` and ``qpsolvers``)."""
    import importlib.util

    return all(importlib.util.find_spec(m) is not None for m in ("quadprog", "qpsolvers"))


__all__ = [
    "hand_step",
    "quadprog_installed",
    "torchjd_aggregator",
    "torchjd_step",
]
