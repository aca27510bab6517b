"""Options and registration rows of the bilevel combiners (:mod:`.bilevel`): ``auto_lambda``,
``moml`` and ``forum``, which learn the task weights on a held-out batch. Torch-free, like
every ``*_options`` module."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional

from ...contract.options import option

_BILEVEL = "mtlzoo.builtin.combiners.bilevel"


@dataclass
class BilevelOptions:
    """Options every bilevel combiner has.

    Attributes:
        heldout: the split the held-out batch of each step comes from: ``train`` (another
            batch of the training split, in its own order: LibMTL's and the Auto-Lambda code's
            choice) or ``val`` (the validation split, the papers' held-out data; the validation
            metrics then stop being an unseen-data estimate).
        outer_lr: Adam learning rate of the task-weight logits (LibMTL's ``outer_lr``).
    """

    heldout: Literal["train", "val"] = "train"
    outer_lr: float = option(1e-3, gt=0)


@dataclass
class AutoLambdaOptions(BilevelOptions):
    """Options of ``auto_lambda``.

    Attributes:
        inner_lr: step size of the virtual SGD step; ``null``: the optimizer's learning rate at
            that step (LibMTL and the Auto-Lambda code).
    """

    inner_lr: Optional[float] = option(None, gt=0)


@dataclass
class MOMLOptions(BilevelOptions):
    """Options of ``moml``.

    Attributes:
        inner_lr: step size of the one-step SGD of the lower level (LibMTL default 0.1).
    """

    inner_lr: float = option(0.1, gt=0)


@dataclass
class FORUMOptions(BilevelOptions):
    """Options of ``forum``.

    Attributes:
        inner_lr: step size of the inner SGD steps (LibMTL default 0.1).
        inner_steps: SGD steps approximating the lower-level solution (LibMTL default 5).
        phi: FORUM's constraint constant (LibMTL ``FORUM_phi``, default 0.1).
    """

    inner_lr: float = option(0.1, gt=0)
    inner_steps: int = option(5, ge=1, le=1000)
    phi: float = option(0.1, ge=0)


#: (name, factory, options, help) of each combiner, registered in this order
COMBINERS: tuple[tuple[str, str, type | None, str], ...] = (
    (
        "auto_lambda",
        f"{_BILEVEL}:AutoLambdaCombiner",
        AutoLambdaOptions,
        "Auto-Lambda: weights from a virtual step and a held-out batch (Liu et al. 2022)",
    ),
    (
        "moml",
        f"{_BILEVEL}:MOMLCombiner",
        MOMLOptions,
        "MOML multi-objective meta learning of the weights on a held-out batch (Ye et al. 2021)",
    ),
    (
        "forum",
        f"{_BILEVEL}:FORUMCombiner",
        FORUMOptions,
        "FORUM first-order multi-gradient bilevel weighting on a held-out batch (Ye et al. 2024)",
    ),
)
