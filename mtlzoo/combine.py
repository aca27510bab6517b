"""The combiner interface: how per-task losses become one update of the shared parameters.

A :class:`Combiner` owns the backward pass. The trainer computes the per-task losses and
hands them, with a :class:`Step`, to ``combiner.backward(losses, step)``. Loss-level
combiners weight the losses and call :meth:`Step.backward`; gradient-level combiners ask
the step for per-task gradients (:meth:`Step.task_gradients`) or their Gramian
(:meth:`Step.gramian`), w.r.t. the shared parameters (``wrt="params"``) or the shared
representation (``wrt="features"``), and write the shared update with
:meth:`Step.backward_weighted` or :meth:`Step.set_shared_gradient`.

Under DDP the trainer disables DDP's own gradient averaging for the step and the Step
averages what combiners ask for across ranks (per-task gradients, Gramians, and the final
gradients), so every rank takes the same step.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.distributed as dist
from torch import Tensor, nn

Wrt = Literal["params", "features"]
WRT_CHOICES = ("params", "features")


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def all_reduce_mean(t: Tensor) -> Tensor:
    """Average a tensor over all ranks (a no-op outside distributed training)."""
    if _distributed():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        t /= dist.get_world_size()
    return t


class Step:
    """One training step as a combiner sees it.

    Attributes:
        losses: per-task scalar losses, in task order.
        features: the shared representation (backbone feature maps) of this batch, still
            attached to the backbone's graph.
        shared_params: trainable backbone parameters.
        task_params: each task's trainable head parameters.
        step: global optimisation step (0-based); epoch: current epoch (0-based).
    """

    def __init__(
        self,
        losses: dict[str, Tensor],
        features: Sequence[Tensor],
        shared_params: Sequence[nn.Parameter],
        task_params: dict[str, Sequence[nn.Parameter]],
        step: int = 0,
        epoch: int = 0,
        chunk_size: int | None = None,
    ):
        self.losses = losses
        self.features = list(features)
        self.shared_params = list(shared_params)
        self.task_params = {k: list(v) for k, v in task_params.items()}
        self.step = step
        self.epoch = epoch
        self.chunk_size = chunk_size
        self._grad_cache: dict[str, Tensor] = {}

    @property
    def task_names(self) -> list[str]:
        """Task names, in the row order of every per-task matrix."""
        return list(self.losses)

    def _wrt_tensors(self, wrt: Wrt) -> list[Tensor]:
        if wrt == "params":
            return self.shared_params
        if wrt == "features":
            return self.features
        raise ValueError(f"wrt must be one of {WRT_CHOICES}, got {wrt!r}")

    def num_shared(self, wrt: Wrt = "params") -> int:
        """Length P of one task-gradient row for ``wrt`` (per rank for features)."""
        return sum(t.numel() for t in self._wrt_tensors(wrt))

    # -- loss-level ----------------------------------------------------------------------
    def backward(self, loss: Tensor) -> None:
        """Backpropagate one scalar through the whole model (heads and backbone) and average
        the resulting gradients over ranks."""
        loss.backward()
        self.sync_gradients()

    def backward_weighted(self, weights: Tensor | Sequence[float], wrt: Wrt = "params") -> None:
        """Backpropagate ``sum_t weights[t] * losses[t]``: the shared update is the weighted
        sum of task gradients; each head gets its own loss gradient scaled by its weight.

        ``wrt`` only matters to gradient-level combiners that computed task gradients
        before: the graph they kept is released here.
        """
        w = torch.as_tensor(weights, dtype=torch.float32)
        losses = list(self.losses.values())
        total = sum(w[i].to(l.device, l.dtype) * l for i, l in enumerate(losses))
        self.backward(total)

    # -- gradient-level ------------------------------------------------------------------
    def task_gradients(self, wrt: Wrt = "params") -> Tensor:
        """The T x P matrix of per-task gradients of the shared parameters (``params``) or of
        the shared representation (``features``), averaged over ranks.

        With ``wrt="features"`` only the heads are backpropagated (once per task). Head
        gradients of each task's own loss are accumulated into the heads' ``.grad`` along
        the way, so :meth:`set_shared_gradient` only has to write the shared part.
        """
        if wrt in self._grad_cache:
            return self._grad_cache[wrt]
        inputs = self._wrt_tensors(wrt)
        rows = []
        for name, loss in self.losses.items():
            own = self.task_params.get(name, [])
            grads = torch.autograd.grad(loss, [*inputs, *own], retain_graph=True, allow_unused=True)
            shared, head = grads[: len(inputs)], grads[len(inputs):]
            rows.append(torch.cat([
                (g if g is not None else torch.zeros_like(x)).reshape(-1) for g, x in zip(shared, inputs)
            ]))
            for p, g in zip(own, head):
                if g is not None:
                    p.grad = g if p.grad is None else p.grad + g
        matrix = torch.stack(rows)
        if wrt == "params":
            # parameter gradients are summed over the global batch: average them over ranks
            matrix = all_reduce_mean(matrix)
            self._sync_task_params()
        self._grad_cache[wrt] = matrix
        return matrix

    def gramian(self, wrt: Wrt = "params") -> Tensor:
        """The T x T Gramian ``G = J J^T`` of the per-task gradients (inner products)."""
        matrix = self.task_gradients(wrt)
        if wrt == "features":
            gram = matrix @ matrix.T
            return all_reduce_mean(gram)
        return matrix @ matrix.T

    def set_shared_gradient(self, direction: Tensor, wrt: Wrt = "params") -> None:
        """Make ``direction`` (length P, a combination of task-gradient rows) the update of
        the shared parameters.

        ``params``: written into the backbone parameters' ``.grad``. ``features``:
        backpropagated from the shared representation through the backbone once. Heads
        keep the gradients of their own losses gathered by :meth:`task_gradients`.
        """
        tensors = self._wrt_tensors(wrt)
        chunks = torch.split(direction.reshape(-1), [t.numel() for t in tensors])
        if wrt == "params":
            for p, g in zip(tensors, chunks):
                g = g.view_as(p).to(p.dtype)
                p.grad = g.clone() if p.grad is None else p.grad + g
        else:
            torch.autograd.backward(tensors, [g.view_as(t) for g, t in zip(chunks, tensors)])
            self._sync_shared_params()
        self._grad_cache.clear()

    # -- distributed ---------------------------------------------------------------------
    def sync_gradients(self) -> None:
        """Average every parameter gradient over ranks (no-op on one process)."""
        self._sync_shared_params()
        self._sync_task_params()

    def _sync_shared_params(self) -> None:
        _average_grads(self.shared_params)

    def _sync_task_params(self) -> None:
        _average_grads([p for ps in self.task_params.values() for p in ps])


def _average_grads(params: Sequence[nn.Parameter]) -> None:
    if not _distributed():
        return
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    all_reduce_mean(flat)
    for g, new in zip(grads, torch.split(flat, [g.numel() for g in grads])):
        g.copy_(new.view_as(g))


class Combiner(nn.Module):
    """Base class of loss combiners.

    Subclasses implement :meth:`backward`. Keep any state that must survive a resume in
    buffers (``self.register_buffer``) or parameters: checkpoints carry the combiner's
    ``state_dict``. Learnable weights (e.g. uncertainty weighting) are ``nn.Parameter``\\ s
    and are optimised with the model.

    Args:
        task_names: the tasks, in the order of every per-task vector and matrix.
    """

    #: ``"loss"`` for combiners that only weight losses, ``"gradient"`` for those that
    #: aggregate per-task gradients. Informational (listing, benchmarks).
    level: str = "loss"

    def __init__(self, task_names: Sequence[str]):
        super().__init__()
        if not task_names:
            raise ValueError("a combiner needs at least one task")
        self.task_names = list(task_names)

    def backward(self, losses: dict[str, Tensor], step: Step) -> dict[str, float]:
        """Turn the per-task ``losses`` into gradients (call ``step.backward`` or write the
        shared gradient) and return scalars to log (e.g. ``{"w/semseg": 0.7}``)."""
        raise NotImplementedError

    def stack(self, losses: dict[str, Tensor]) -> Tensor:
        """The losses as one vector in task order (a missing task is an error)."""
        missing = [t for t in self.task_names if t not in losses]
        if missing:
            raise KeyError(f"combiner expected losses for {missing}")
        return torch.stack([losses[t] for t in self.task_names])
