"""What a combiner that learns its weights on held-out data receives (bilevel weighting).

Auto-Lambda, MOML and FORUM choose the task weights by how one step on the training batch
changes the losses of *another* batch. A combiner that needs that sets
:attr:`~mtlzoo.contract.combine.Combiner.heldout_split` to a split name; the trainer then
draws one batch of that split per step and hands the combiner, as ``step.heldout``, a
:class:`HeldOut`: the per-task losses of this step's training batch or of the held-out
batch, at the model's parameters or at any others given out of place.

How the trainer draws the held-out batches (``mtlzoo.runtime.heldout``): a loader over the
split with its own sample order (seeded by the run's seed, reshuffled every epoch and
restarted at each epoch's start, so a resumed run draws the same batches), the training
batch size, the split's own pipeline (a ``train`` held-out split is augmented like the
training batches). Each extra pass runs the model in training mode and leaves its BatchNorm
running statistics as they were.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import Tensor, nn

#: the batches :meth:`HeldOut.losses` computes losses on
BATCHES = ("train", "heldout")


class HeldOut:
    """The losses of this step's training batch and of a held-out batch, at any parameters.

    Args:
        forward: ``forward(which, parameters) -> {task: loss}``: the per-task losses (task
            order, with autograd) of batch ``which`` (``"train"`` or ``"heldout"``) with the
            model's parameters named in ``parameters`` replaced by the given tensors (out of
            place: the model is not changed, so the step's own graph stays valid).
        parameters: name -> every trainable parameter of the model (shared and per task), in
            a fixed order; a bilevel combiner takes its gradients and may write their
            ``.grad``.
        lr: the optimizer's learning rate at this step (its first parameter group).
        primary: the tasks whose held-out losses the weights are chosen for: the spec's
            primary tasks (``tasks.<name>.primary``), or every task when none is marked.
    """

    def __init__(
        self,
        forward: Callable[[str, Mapping[str, Tensor]], dict[str, Tensor]],
        parameters: Mapping[str, nn.Parameter],
        lr: float,
        primary: Sequence[str],
    ):
        self._forward = forward
        self.parameters = dict(parameters)
        self.lr = float(lr)
        self.primary = list(primary)

    def losses(
        self, which: str = "heldout", parameters: Mapping[str, Tensor] | None = None
    ) -> dict[str, Tensor]:
        """Per-task losses of batch ``which`` at the model's parameters, or with those named
        in ``parameters`` replaced (one forward pass; backpropagate through it as needed)."""
        if which not in BATCHES:
            raise ValueError(f"which must be one of {BATCHES}, got {which!r}")
        return self._forward(which, parameters or {})


__all__ = ["HeldOut", "BATCHES"]
