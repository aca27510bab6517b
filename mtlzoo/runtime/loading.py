"""Data loaders chosen for the device, and batches moved to it.

On a GPU a training step takes milliseconds and everything around it becomes the cost, so
the loader's defaults depend on the device (each choice is a pure function below, so CPU
tests check the CUDA choices):

* ``train.num_workers: null`` (auto): on CUDA, the process's share of the cores (cores this
  process may use, divided by the local torchrun processes, at most 8, at least 1); on CPU 0:
  the training step itself uses every core, and worker processes only contend with it
  (``benchmarks/loader_speed.py`` measured it on 2 cores).
* ``pin_memory`` (``null``: on for CUDA) and ``non_blocking`` host-to-device copies, so the
  copy of batch n+1 overlaps the step of batch n.
* workers stay alive between epochs (``persistent_workers``) and each keeps
  :data:`CUDA_PREFETCH` batches ready on CUDA (PyTorch's default 2 elsewhere).

``MTLZOO_CORES`` (set by ``mtlzoo bench --jobs``) caps the cores a process counts as its own.
"""

from __future__ import annotations

import os
import random
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader

from .files import close_inherited_locks

#: batches each loader worker keeps ready when training on CUDA
CUDA_PREFETCH = 4
#: most workers auto chooses per process (more only add start-up time and memory)
MAX_AUTO_WORKERS = 8


def available_cores() -> int:
    """Cores this process may use: its CPU affinity, capped by ``MTLZOO_CORES`` when set."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    cap = os.environ.get("MTLZOO_CORES", "").strip()
    if cap.isdigit() and int(cap) > 0:
        cores = min(cores, int(cap))
    return max(1, cores)


def auto_workers(device: torch.device, cores: int, local_processes: int = 1) -> int:
    """Loader workers for ``train.num_workers: null`` (see the module docstring)."""
    if device.type != "cuda":
        return 0
    share = cores // max(1, local_processes)
    return max(1, min(MAX_AUTO_WORKERS, share - 1 if share > 2 else share))


def loader_settings(
    device: torch.device, num_workers: int | None, pin_memory: bool | None, local_processes: int = 1
) -> dict[str, Any]:
    """The DataLoader keyword arguments the device calls for: ``num_workers``, ``pin_memory``,
    ``persistent_workers`` and ``prefetch_factor``."""
    workers = auto_workers(device, available_cores(), local_processes) if num_workers is None else num_workers
    settings: dict[str, Any] = {
        "num_workers": workers,
        "pin_memory": device.type == "cuda" if pin_memory is None else bool(pin_memory),
        "persistent_workers": workers > 0,
    }
    if workers > 0:
        settings["prefetch_factor"] = CUDA_PREFETCH if device.type == "cuda" else 2
    return settings


def local_processes() -> int:
    """Processes torchrun started on this node (1 without torchrun)."""
    return int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1)


def worker_init(worker_id: int) -> None:
    """Set up a loader worker: release locks it inherited, seed the global generators."""
    close_inherited_locks()  # a killed trainer's orphaned workers must not hold its run's lock
    # augmentation draws from per-sample generators; this seeds what a dataset plugin might
    # draw from Python's or NumPy's global generators, distinctly per worker
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)


def make_loader(
    dataset: Any,
    sampler: Any,
    batch_size: int,
    settings: dict[str, Any],
    seed: int,
) -> DataLoader:
    """A DataLoader over ``dataset`` drawing from ``sampler`` with :func:`loader_settings`."""
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        worker_init_fn=worker_init,
        drop_last=False,
        generator=torch.Generator().manual_seed(int(seed)),
        **settings,
    )


def unwrap_worker_error(exc: BaseException) -> BaseException:
    """An mtlzoo error raised in a loader worker, as its one line again.

    The DataLoader re-raises a worker's exception as the same type with a message of
    ``Caught <type> in DataLoader worker process N.`` plus the worker's traceback; the
    original message is the traceback's last line."""
    text = str(exc)
    if not text.startswith("Caught "):
        return exc
    last = [line for line in text.strip().splitlines() if line.strip()][-1]
    _, sep, message = last.partition(": ")
    try:
        return type(exc)(message if sep else last)
    except Exception:  # an exception type that needs other arguments: keep it as it came
        return exc


def to_device(batch: dict[str, Any], device: torch.device, channels_last: bool) -> dict[str, Any]:
    """Move a batch's tensors to ``device`` (``non_blocking``: a copy from pinned memory
    overlaps the GPU's work); the image in channels-last layout when asked."""
    out = {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}
    if channels_last:
        image: Tensor = out["image"]
        out["image"] = image.contiguous(memory_format=torch.channels_last)
    return out


__all__ = [
    "available_cores",
    "auto_workers",
    "loader_settings",
    "local_processes",
    "make_loader",
    "to_device",
    "unwrap_worker_error",
    "worker_init",
    "CUDA_PREFETCH",
]
