"""Collective helpers for combiners and the trainer; each is a no-op on one process.

Combiners call :func:`all_reduce_mean` / :func:`all_reduce_sum` on anything they compute
per rank (loss values, Gramians) so that every rank takes the same step.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.distributed as dist
from torch import Tensor, nn


def is_distributed() -> bool:
    """True inside an initialised process group of more than one rank."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    """Number of ranks (1 outside distributed training)."""
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    """This process's rank (0 outside distributed training)."""
    return dist.get_rank() if is_distributed() else 0


def all_reduce_sum(t: Tensor) -> Tensor:
    """Sum a tensor over all ranks in place."""
    if is_distributed():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def all_reduce_mean(t: Tensor) -> Tensor:
    """Average a tensor over all ranks in place."""
    if is_distributed():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        t /= dist.get_world_size()
    return t


def average_grads(params: Sequence[Tensor]) -> None:
    """Average the ``.grad`` of ``params`` over ranks, in one collective."""
    if not is_distributed():
        return
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    all_reduce_mean(flat)
    for g, new in zip(grads, torch.split(flat, [g.numel() for g in grads])):
        g.copy_(new.view_as(g))


def broadcast_module(module: nn.Module) -> None:
    """Copy rank 0's parameters and buffers to every rank."""
    if not is_distributed():
        return
    for tensor in module.state_dict().values():
        dist.broadcast(tensor, src=0)


def barrier() -> None:
    """Wait for every rank."""
    if is_distributed():
        dist.barrier()


__all__ = [
    "is_distributed",
    "world_size",
    "rank",
    "all_reduce_sum",
    "all_reduce_mean",
    "average_grads",
    "broadcast_module",
    "barrier",
]
