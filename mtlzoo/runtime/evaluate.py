"""Evaluation of a built experiment on a whole split, without an optimizer.

:class:`Evaluator` is what ``mtlzoo eval`` runs and what the :class:`~mtlzoo.Trainer` evaluates
with. Metrics are exact over the split (each metric sums its state, reduced over ranks), the
mean loss of each task is accumulated on the device and copied to the host once per split,
and each split's loader is built once and kept (its workers live across evaluations).

With partial labels (:mod:`.partial`) each task's loss and metrics are over the samples that
carry its target; a task without any labelled sample in the split reports NaN.

A metric whose ``compute()`` returns a 1-D tensor (one value per class) is reported as one
entry per element, ``"<metric key>/<class name>"`` (the metric's ``class_names`` attribute,
else the index). Such *detail* keys (every key with a ``/``) stay out of the epoch line, the
final console table and best-checkpoint selection; ``eval --json`` and ``metrics.jsonl`` hold them.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor

from ..contract.errors import DataError, MtlzooError
from . import distributed as D
from .experiment import Experiment
from .loading import loader_settings, local_processes, make_loader, to_device, unwrap_worker_error
from .partial import Labelled, flags
from .pipeline import fill_cache
from .process import Process, prepare

#: ``train.cache: auto`` keeps a split in memory when it takes at most this share of the memory ...
CACHE_SHARE = 0.25
#: ... and at most this many bytes
CACHE_MAX_BYTES = 8 * 2**30


def amp_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of ``train.amp`` on ``device`` (``None``: full precision)."""
    if amp == "off" or (amp == "auto" and device.type != "cuda"):
        return None
    if amp == "auto":  # never fp16: combiners own the backward pass, so nothing scales the loss
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    return torch.bfloat16


def wants_channels_last(requested: bool | None, device: torch.device) -> bool:
    """``train.channels_last`` resolved: ``None`` (auto) is on for CUDA, off for CPU (where it
    changes the order of float sums and so the last digits of a seeded run)."""
    return device.type == "cuda" if requested is None else bool(requested)


def memory_bytes() -> int:
    """Physical memory of this machine (0 when unknown)."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, OSError, ValueError):
        return 0


def wants_cache(mode: str, dataset: Any, processes: int = 1) -> bool:
    """Whether ``train.cache`` keeps ``dataset`` (a pipeline dataset) in memory: ``on``/``off``,
    or ``auto``: a cacheable dataset whose samples fit in the budget (:data:`CACHE_SHARE` of
    the memory shared by the node's processes, at most :data:`CACHE_MAX_BYTES`)."""
    if mode == "off" or not hasattr(dataset, "enable_cache"):
        return False
    if mode == "on":
        return True
    if not dataset.base.info.cacheable or len(dataset) == 0:
        return False
    budget = min(CACHE_MAX_BYTES, memory_bytes() * CACHE_SHARE / max(1, processes))
    return dataset.entry_bytes() * len(dataset) <= budget


def expand(key: str, value: Any, names: Any) -> dict[str, float]:
    """A metric's computed value as result entries: a scalar as ``{key: value}``, a 1-D tensor as
    ``{key/<name>: value}`` per element (``names``: class names, else indices)."""
    if torch.is_tensor(value) and value.numel() > 1:
        flat = value.detach().float().cpu().reshape(-1).tolist()
        labels = list(names) if names is not None and len(names) == len(flat) else range(len(flat))
        return {f"{key}/{label}": float(v) for label, v in zip(labels, flat)}
    return {key: float(value)}


class Evaluator:
    """Evaluates a built :class:`~mtlzoo.runtime.experiment.Experiment` on any split.

    Args:
        exp: what :meth:`mtlzoo.Zoo.build` returned.
        process: what :func:`mtlzoo.runtime.process.prepare` returned; ``None`` calls it.
    """

    def __init__(self, exp: Experiment, process: Process | None = None):
        self.exp = exp
        self.cfg = exp.cfg
        self.process = process if process is not None else prepare(exp.cfg)
        self.device = self.process.device
        t = self.cfg.train
        self.channels_last = wants_channels_last(t.channels_last, self.device)
        self.amp_dtype = amp_dtype(t.amp, self.device)
        self.model = exp.model.to(self.device)
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.tasks = exp.tasks
        for task in self.tasks.values():
            task.loss.to(self.device)
            for m in task.metrics.values():
                m.to(self.device)
        self.loader_settings = loader_settings(self.device, t.num_workers, t.pin_memory, local_processes())
        self._loaders: dict[str, Any] = {}

    # -- data --------------------------------------------------------------------------------
    def dataset(self, split: str) -> Any:
        """The pipeline dataset of ``split``, its sample cache on when ``train.cache`` says so."""
        dataset = self.exp.dataset(split)
        if not getattr(dataset, "cached", True) and wants_cache(
            self.cfg.train.cache, dataset, local_processes()
        ):
            dataset.enable_cache()
        return dataset

    def loader(self, split: str) -> Any:
        """The evaluation loader of ``split`` (built once; no shuffling, no sample repeated)."""
        if split not in self._loaders:
            dataset = self.dataset(split)
            if getattr(dataset, "cached", False):
                fill_cache(dataset, self.loader_settings["num_workers"])
            sampler = D.ShardedSampler(len(dataset), seed=int(self.cfg.seed), shuffle=False, drop_last=False)
            t = self.cfg.train
            self._loaders[split] = make_loader(
                dataset, sampler, t.eval_batch_size or t.batch_size, self.loader_settings, int(self.cfg.seed)
            )
        return self._loaders[split]

    def autocast(self) -> contextlib.AbstractContextManager:
        """Autocast to ``train.amp``'s dtype (a no-op in full precision)."""
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    # -- evaluation --------------------------------------------------------------------------
    def evaluate(
        self, split: str | None = None, loader: Iterable | None = None
    ) -> dict[str, dict[str, float]]:
        """Metrics of every task over a whole split (exact, reduced over ranks), plus its mean
        loss; ``loader``: batches to use instead of the split's own loader."""
        try:
            return self._evaluate(split or self.cfg.train.eval_split, loader)
        except MtlzooError as exc:  # raised in a loader worker: its one line again
            raise unwrap_worker_error(exc) from None

    @torch.no_grad()
    def _evaluate(self, split: str, loader: Iterable | None) -> dict[str, dict[str, float]]:
        if loader is None:
            loader = self.loader(split)
        self.model.eval()
        for task in self.tasks.values():
            for m in task.metrics.values():
                m.reset()
        # on the device: one copy to the host per split, not one per batch and task; per task
        # its loss sum, then per task its labelled samples, then the samples
        T = len(self.tasks)
        sums = torch.zeros(2 * T + 1, dtype=torch.float64, device=self.device)
        for batch in loader:
            marks = Labelled(flags(batch), self.device)  # partial labels, read on the host
            batch = to_device(batch, self.device, self.channels_last)
            images: Tensor = batch["image"]
            with self.autocast():
                preds = self.model(images)
            n = images.shape[0]
            for i, (name, task) in enumerate(self.tasks.items()):
                count = marks.count(task.target, n)
                if count == 0:
                    continue
                pred, target = marks.take(task.target, [preds[name].float(), batch[task.target]])
                sums[i] += task.loss(pred, target).detach().double() * count
                sums[T + i] += count
                for m in task.metrics.values():
                    m.update(pred, target)
            sums[-1] += n
        sums = D.all_reduce_sum(sums).cpu()
        if sums[-1] == 0:
            raise DataError(f"data: the {split!r} split is empty; nothing to evaluate")
        results: dict[str, dict[str, float]] = {}
        for i, (name, task) in enumerate(self.tasks.items()):
            values: dict[str, float] = {}
            for key, m in task.metrics.items():
                if sums[T + i] == 0:  # no sample of the split carries this task's target
                    values[key] = math.nan
                    continue
                values.update(expand(key, m.compute(), getattr(m, "class_names", None)))
            values["loss"] = float(sums[i] / sums[T + i]) if sums[T + i] > 0 else math.nan
            results[name] = values
        return results


def nonfinite_metrics(results: dict[str, dict[str, float]]) -> list[str]:
    """``task.metric`` of every NaN or infinite value in ``results``."""
    return [f"{t}.{k}" for t, values in results.items() for k, v in values.items() if not math.isfinite(v)]


def headline(results: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    """``results`` without detail keys (per-class values: keys with a ``/``)."""
    return {t: {k: v for k, v in values.items() if "/" not in k} for t, values in results.items()}


__all__ = [
    "Evaluator",
    "amp_dtype",
    "wants_channels_last",
    "wants_cache",
    "expand",
    "nonfinite_metrics",
    "headline",
    "memory_bytes",
]
