"""Partial labels at run time: which samples of a batch carry each target.

A dataset may declare targets that some samples lack (``TargetInfo(partial=True)``, see
:mod:`mtlzoo.contract.data`); the pipeline then gives every sample a ``"<key>/present"`` flag
and a filled-in target where it has none. Training and evaluation read the flags **on the
host**, from the batch as the loader made it (before it is copied to the device), so that
knowing which samples are labelled costs no device-to-host copy:

* a task whose samples are all labelled is computed as without partial labels (the flags are
  not even looked at twice), so a step with full labels keeps its one host copy;
* a task with some labelled samples has its prediction, deep-supervision predictions and
  target narrowed to those samples (``index_select`` with an index made on the host and
  copied to the device, no synchronisation), so its loss is the loss of the labelled samples
  alone and its metrics are updated with them alone;
* a task without any labelled sample in the batch is left out of the step: it has no loss
  (nor regulariser), the combiner's :class:`~mtlzoo.contract.combine.Step` holds the other
  tasks only, and its head gets no gradient. Only combiners that declare
  :attr:`~mtlzoo.contract.combine.Combiner.partial_steps` accept such steps.

Under ``torchrun`` the ranks agree on which tasks are left out (one all-reduce of the
per-task counts per step, a host synchronisation, paid only when the data has partial
targets); a rank without labelled samples of a task the others have gives it a zero loss
attached to its prediction, and each rank's loss is the mean over its own labelled samples
(ranks count equally, as they do for every loss).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from ..contract.data import PRESENT_SUFFIX
from ..contract.dist import all_reduce_sum
from ..contract.errors import ConfigError


def flags(batch: Mapping[str, object]) -> dict[str, Tensor]:
    """The availability flags of a batch: target key -> bool ``[B]`` (empty without partial
    targets). Call it on the batch as the loader made it (host tensors)."""
    return {
        k[: -len(PRESENT_SUFFIX)]: v.reshape(-1).bool()
        for k, v in batch.items()
        if k.endswith(PRESENT_SUFFIX) and torch.is_tensor(v)
    }


class Labelled:
    """Which samples of one batch carry each partial target.

    Args:
        present: :func:`flags` of the batch.
        device: where the batch's tensors are.
        distributed: agree with the other ranks on the targets no rank has a label of.

    Attributes:
        counts: target key -> labelled samples of this batch on this rank.
        absent: keys without a labelled sample (on any rank): their tasks sit the step out.
        empty_here: keys without a labelled sample on this rank that other ranks have.
    """

    def __init__(self, present: Mapping[str, Tensor], device: torch.device, distributed: bool = False):
        self.counts = {k: int(v.sum()) for k, v in present.items()}
        totals = dict(self.counts)
        if distributed and present:
            summed = all_reduce_sum(torch.tensor(list(self.counts.values()), device=device))
            totals = dict(zip(self.counts, summed.tolist()))
        self.absent = {k for k, n in totals.items() if n == 0}
        self.empty_here = {k for k, n in self.counts.items() if n == 0 and k not in self.absent}
        self._index = {
            k: v.nonzero().flatten().to(device, non_blocking=True)
            for k, v in present.items()
            if 0 < self.counts[k] < v.numel()
        }

    def count(self, key: str, batch_size: int) -> int:
        """Labelled samples of ``key`` in this batch (``batch_size`` for a full target)."""
        return self.counts.get(key, batch_size)

    def take(self, key: str, tensors: Sequence[Tensor]) -> list[Tensor]:
        """``tensors`` (batch first) narrowed to the samples that carry ``key``."""
        index = self._index.get(key)
        if index is None:
            return list(tensors)
        return [t.index_select(0, index) for t in tensors]


def check_partial(exp: Any, dataset: Any) -> None:
    """Refuse a training split with partial targets that tasks read when the combiner does not
    declare :attr:`~mtlzoo.contract.combine.Combiner.partial_steps` (one line, before anything
    is written)."""
    partial = sorted(set(getattr(dataset, "partial", [])) & {t.target for t in exp.tasks.values()})
    if partial and not exp.combiner.partial_steps:
        label = exp.labels.get("combiner", "the combiner")
        raise ConfigError(
            f"combiner: {label} cannot train on partial labels (targets {partial} are missing from some "
            f"samples, so a batch may hold no label of a task, and it keeps per-task state or needs every "
            f"task at every step); choose a combiner with partial_steps (docs/combiners.md lists them)"
        )


__all__ = ["flags", "Labelled", "check_partial"]
