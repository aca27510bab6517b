"""The held-out batches of bilevel combiners (see :mod:`mtlzoo.contract.heldout`).

A combiner whose :attr:`~mtlzoo.contract.combine.Combiner.heldout_split` names a split gets,
at every step, one batch of that split: :class:`HeldOutBatches` draws them from a loader with
its own order (a :class:`~mtlzoo.runtime.distributed.ShardedSampler` seeded by the run's
seed + 1, so not the training order), reshuffled every epoch and restarted at each epoch's
start; a split shorter than an epoch's steps is gone through again in a new order. What a
step draws depends only on the seed, the epoch and the step within it, so a resumed run
(which starts at an epoch boundary) draws the same batches as an uninterrupted one.

:func:`heldout_context` builds the step's :class:`~mtlzoo.contract.heldout.HeldOut`: its
forward passes run the model with parameters replaced out of place
(``torch.func.functional_call``) and with copies of its buffers, so the BatchNorm running
statistics stay as the step's own pass left them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from ..contract.dist import is_distributed
from ..contract.errors import ConfigError, DataError
from ..contract.heldout import HeldOut
from .distributed import ShardedSampler
from .loading import make_loader, to_device
from .partial import Labelled, flags
from .pipeline import fill_cache

#: sampler epochs of the later passes through a short held-out split start here
_CYCLE = 1_000_003


class HeldOutBatches:
    """One held-out batch per step from ``split`` (see the module docstring).

    Args:
        dataset: the split's pipeline dataset. batch_size: per process.
        settings: loader settings (:func:`~mtlzoo.runtime.loading.loader_settings`). seed: the run's.
    """

    def __init__(self, dataset: Any, split: str, batch_size: int, settings: dict[str, Any], seed: int):
        self.split = split
        self.sampler = ShardedSampler(len(dataset), seed=int(seed) + 1, keyed=True)
        self.loader = make_loader(dataset, self.sampler, batch_size, settings, int(seed) + 1)
        if len(self.loader) == 0:
            raise DataError(
                f"combiner: the held-out split {split!r} has {len(dataset)} samples, fewer than one batch "
                f"({batch_size} per process); lower train.batch_size or choose another held-out split"
            )
        self.epoch, self.cycle = 0, 0
        self._started: int | None = None
        self._batches: Any = None

    @classmethod
    def for_trainer(cls, trainer: Any) -> HeldOutBatches | None:
        """The held-out batches of the trainer's combiner (``None`` when it needs none)."""
        split = trainer.combiner.heldout_split
        if split is None:
            return None
        check_heldout(trainer.exp.labels.get("combiner", "the combiner"))
        evaluator = trainer.evaluator
        dataset = evaluator.dataset(split)
        if getattr(dataset, "cached", False):
            fill_cache(dataset, evaluator.loader_settings["num_workers"])
        t = trainer.cfg.train
        return cls(dataset, split, t.batch_size, evaluator.loader_settings, int(trainer.cfg.seed))

    def start_epoch(self, epoch: int) -> None:
        """Restart at ``epoch``'s first held-out batch."""
        self.epoch, self.cycle, self._started = int(epoch), 0, int(epoch)
        self._batches = None

    def context(self, trainer: Any, batch: dict[str, Tensor], labelled: Labelled) -> HeldOut:
        """The :class:`HeldOut` of the trainer's current step (``batch`` on the device)."""
        if self._started != int(trainer.epoch):  # each epoch draws from its own start
            self.start_epoch(int(trainer.epoch))
        return heldout_context(
            trainer.model,
            lambda b, m, p: trainer.compute_losses(b, m, p)[2],
            batch,
            labelled,
            self,
            trainer.device,
            trainer.channels_last,
            trainer.optimizer.param_groups[0]["lr"],
            trainer.primary,
        )

    def next(self) -> dict[str, Tensor]:
        """The next held-out batch (host tensors, as the loader makes them)."""
        for _ in range(2):
            if self._batches is None:
                key = self.epoch if self.cycle == 0 else (self.epoch + 1) * _CYCLE + self.cycle
                self.sampler.set_epoch(key)
                self._batches = iter(self.loader)
            try:
                return next(self._batches)
            except StopIteration:
                self._batches = None
                self.cycle += 1
        raise DataError(f"combiner: the held-out split {self.split!r} gave no batch")


class _Train(nn.Module):
    """The model's training forward as a module's ``forward`` (for ``functional_call``)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, images: Tensor) -> Any:
        return self.model.forward_train(images)  # type: ignore[operator]


def functional_forward(model: nn.Module, images: Tensor, parameters: Mapping[str, Tensor]) -> Any:
    """``model.forward_train(images)`` with the parameters (and buffers) named in
    ``parameters`` replaced by the given tensors, out of place (the model is not changed)."""
    if not parameters:
        return model.forward_train(images)  # type: ignore[operator]
    named = {f"model.{k}": v for k, v in parameters.items()}
    return torch.func.functional_call(_Train(model), named, (images,), strict=False)


def check_heldout(combiner: str) -> None:
    """Refuse held-out batches under distributed training (not implemented)."""
    if is_distributed():
        raise ConfigError(
            f"combiner: {combiner} learns its task weights on held-out batches, which is implemented for one "
            f"process only; train without torchrun"
        )


def heldout_context(
    model: nn.Module,
    compute: Callable[[dict[str, Tensor], Labelled, Mapping[str, Tensor]], dict[str, Tensor]],
    batch: dict[str, Tensor],
    labelled: Labelled,
    heldout: HeldOutBatches,
    device: torch.device,
    channels_last: bool,
    lr: float,
    primary: list[str],
) -> HeldOut:
    """The step's :class:`HeldOut`. ``compute(batch, labelled, parameters)`` is the trainer's
    forward to per-task losses; ``batch`` (on the device) and ``labelled`` are the step's
    training batch; the held-out batch is drawn and moved to the device on first use."""
    drawn: dict[str, tuple[dict[str, Tensor], Labelled]] = {"train": (batch, labelled)}

    def forward(which: str, parameters: Mapping[str, Tensor]) -> dict[str, Tensor]:
        if which not in drawn:
            host = heldout.next()
            drawn[which] = (to_device(host, device, channels_last), Labelled(flags(host), device))
        data, marks = drawn[which]
        # the pass updates copies of the buffers (BatchNorm running statistics): the model's stay
        # as the step's own pass left them, and the step's graph, which saved them, stays valid
        buffers = {n: b.clone() for n, b in model.named_buffers()}
        return compute(data, marks, {**buffers, **parameters})

    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    return HeldOut(forward, params, lr, primary)


__all__ = ["HeldOutBatches", "heldout_context", "check_heldout", "functional_forward"]
