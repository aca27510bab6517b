"""Distributed training on torch.distributed, started by ``torchrun``.

``torchrun --nproc_per_node=N -m mtlzoo train SPEC`` sets ``RANK``/``WORLD_SIZE``;
:func:`setup` then joins the process group (gloo on CPU, nccl on CUDA). Each rank reads a
disjoint share of every batch; rank 0 alone writes logs and checkpoints. The collectives
combiners use live in :mod:`mtlzoo.contract.dist` (re-exported here for the trainer).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import torch
import torch.distributed as dist
from torch.utils.data import Sampler

from ..contract.dist import all_reduce_sum, barrier, broadcast_module, is_distributed, rank, world_size
from ..contract.errors import ConfigError


def env_world_size() -> int:
    """World size announced by torchrun (1 when not launched by it)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def setup(device: torch.device) -> bool:
    """Join the process group when launched by torchrun; return whether running distributed."""
    if env_world_size() <= 1:
        return False
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend)
    return dist.get_world_size() > 1


def is_main() -> bool:
    """True on the rank that writes files and prints."""
    return rank() == 0


def local_device(requested: str) -> torch.device:
    """Resolve ``auto``/``cpu``/``cuda``/``cuda:N`` to a device with an index, and make it the
    current CUDA device.

    ``cuda`` means this process's GPU: under torchrun the one of its ``LOCAL_RANK``, else the
    current one (the first visible unless the caller chose another). ``torch.cuda.set_device``
    refuses a CUDA device without an index, so the index is always filled in here.
    """
    if requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(requested)
    if device.type != "cuda":
        return device
    if not torch.cuda.is_available():
        raise ConfigError(
            "train.device: CUDA was asked for but is not available here; use device: auto or cpu"
        )
    count = torch.cuda.device_count()
    local = os.environ.get("LOCAL_RANK")
    if env_world_size() > 1 and local is not None:
        if device.index is not None:
            raise ConfigError(
                f"train.device: {requested} under torchrun would put every rank on one GPU; use device: cuda "
                f"(each rank takes the GPU of its LOCAL_RANK) and choose GPUs with CUDA_VISIBLE_DEVICES"
            )
        index = int(local)
        if index >= count:
            raise ConfigError(
                f"train.device: torchrun started local rank {index} but only {count} GPU(s) are visible; "
                f"start at most {count} processes per node (--nproc_per_node)"
            )
    elif device.index is None:
        index = torch.cuda.current_device()
    else:
        index = device.index
        if index >= count:
            raise ConfigError(
                f"train.device: {requested} does not exist, {count} GPU(s) are visible (cuda:0 to "
                f"cuda:{count - 1}); CUDA_VISIBLE_DEVICES chooses which"
            )
    torch.cuda.set_device(index)
    return torch.device("cuda", index)


def cleanup() -> None:
    """Leave the process group."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


class ShardedSampler(Sampler[int | tuple[int, int]]):
    """The one sampler for every setting: a permutation seeded by (seed, epoch), of which
    rank r takes positions r, r+W, r+2W, ...

    With ``drop_last`` every rank gets the same number of samples, and a W-rank run with
    per-rank batch B sees, at each step, exactly the samples a 1-rank run with batch W*B
    sees, which makes single- and multi-process runs comparable step for step.
    Without it (evaluation) no sample is repeated, so split-wide metrics stay exact.
    With ``keyed`` it yields ``(epoch, index)`` keys: the pipeline seeds each sample's
    augmentation from them, so augmentation does not depend on workers or resumes.
    """

    def __init__(
        self,
        length: int,
        seed: int = 0,
        shuffle: bool = True,
        drop_last: bool = True,
        rank_: int | None = None,
        world: int | None = None,
        keyed: bool = False,
    ):
        self.keyed = keyed
        self.length = length
        self.seed = seed
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.rank = rank() if rank_ is None else rank_
        self.world = world_size() if world is None else world
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Choose the permutation of this epoch."""
        self.epoch = epoch

    def _indices(self) -> list[int]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
            order = torch.randperm(self.length, generator=g).tolist()
        else:
            order = list(range(self.length))
        if self.drop_last:
            order = order[: self.length - self.length % self.world]
        return order[self.rank :: self.world]

    def __iter__(self) -> Iterator[int | tuple[int, int]]:
        if self.keyed:
            return iter([(self.epoch, i) for i in self._indices()])
        return iter(self._indices())

    def __len__(self) -> int:
        if self.drop_last:
            return self.length // self.world
        return len(range(self.rank, self.length, self.world))


__all__ = [
    "setup",
    "local_device",
    "cleanup",
    "env_world_size",
    "ShardedSampler",
    "is_distributed",
    "rank",
    "world_size",
    "is_main",
    "all_reduce_sum",
    "barrier",
    "broadcast_module",
]
