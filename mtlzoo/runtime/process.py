"""Process set-up before training or evaluation: the device, distributed training, seeds,
determinism and the backends' speed settings, in one explicit call.

:func:`prepare` is what ``mtlzoo train``, ``mtlzoo eval``, ``mtlzoo bench`` and the Python API
(:class:`~mtlzoo.Trainer` calls it when not given a :class:`Process`) run once the experiment is
built. Everything here is a choice per device, made by the small pure functions below so that
CPU tests can check the CUDA choices without a GPU:

* ``train.deterministic: null`` (auto) is **on for CPU, off for CUDA**. On CPU PyTorch's
  deterministic mode changes almost nothing (the few affected kernels are not on a training
  step's path; ``benchmarks/performance.py`` measured 1.00x), and it makes a seed reproduce a
  run exactly. On CUDA it forbids cuDNN's autotuner (``cudnn.benchmark``, which picks the
  fastest convolution algorithm per shape, non-deterministically) and routes scatter/index
  kernels to slower deterministic versions; ``benchmarks/gpu_check.py`` measures what it costs.
  ``true`` on CUDA also sets ``CUBLAS_WORKSPACE_CONFIG=:4096:8`` (cuBLAS needs it to be
  deterministic) when the environment does not set it.
* ``cudnn.benchmark`` is on exactly when training on CUDA without determinism.
* The new-tensor NaN fill of deterministic mode is turned off: pure memory traffic here.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass

import numpy as np
import torch
from omegaconf import DictConfig

from . import distributed as D


@dataclass(frozen=True)
class Process:
    """What :func:`prepare` set up for this process.

    Attributes:
        device: the device tensors go to (``cuda:N`` always carries its index).
        distributed: True inside a torchrun process group of more than one rank.
        rank, world_size: this process's rank and the number of ranks.
        deterministic: whether PyTorch's deterministic algorithms are on.
    """

    device: torch.device
    distributed: bool = False
    rank: int = 0
    world_size: int = 1
    deterministic: bool = True

    @property
    def main(self) -> bool:
        """True on the rank that writes files and prints."""
        return self.rank == 0


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (every device)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def wants_determinism(requested: bool | None, device: torch.device) -> bool:
    """``train.deterministic`` resolved for ``device``: ``None`` (auto) is on for CPU and off
    for CUDA (see the module docstring)."""
    if requested is not None:
        return bool(requested)
    return device.type != "cuda"


def set_determinism(deterministic: bool, device: torch.device) -> None:
    """Switch PyTorch's deterministic algorithms and cuDNN's autotuner for ``device``."""
    if deterministic and device.type == "cuda":
        # cuBLAS is deterministic only with a fixed workspace; it reads this when it starts
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(deterministic, warn_only=True)
    # deterministic mode also NaN-fills every new tensor: pure memory traffic, no benefit here
    torch.utils.deterministic.fill_uninitialized_memory = False  # type: ignore[attr-defined]
    torch.backends.cudnn.deterministic = deterministic and device.type == "cuda"
    torch.backends.cudnn.benchmark = device.type == "cuda" and not deterministic


def prepare(cfg: DictConfig) -> Process:
    """Set this process up for ``cfg``: resolve ``train.device`` (each torchrun rank its own
    GPU), join the process group when launched by torchrun, seed every generator with
    ``cfg.seed`` and set determinism and the backends as the device calls for.

    Call it after :meth:`mtlzoo.Zoo.build` (the build seeds model initialisation itself) and
    before training or evaluating; calling it again re-seeds."""
    t = cfg.train
    device = D.local_device(t.device)
    distributed = D.setup(device)
    deterministic = wants_determinism(t.deterministic, device)
    seed_everything(int(cfg.seed))
    set_determinism(deterministic, device)
    return Process(device, distributed, D.rank(), D.world_size(), deterministic)


__all__ = ["Process", "prepare", "seed_everything", "wants_determinism", "set_determinism"]
