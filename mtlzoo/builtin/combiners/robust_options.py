"""Options and registration rows of torchjd's robust aggregators (:mod:`.robust`): ``krum``
and ``trimmed_mean``. Torch-free, like every ``*_options`` module."""

from __future__ import annotations

from dataclasses import dataclass

from ...contract.options import option
from .gradient_level_options import WrtOptions

_ROBUST = "mtlzoo.builtin.combiners.robust"


@dataclass
class KrumOptions(WrtOptions):
    """Options of ``krum`` (torchjd's ``Krum``).

    Attributes:
        n_byzantine: task gradients that may be adversarial, f; needs at least f + 3 tasks.
        n_selected: task gradients averaged (Multi-Krum; 1: plain Krum); at most the number of tasks.
    """

    n_byzantine: int = option(0, ge=0, le=10_000)
    n_selected: int = option(1, ge=1, le=10_000)


@dataclass
class TrimmedMeanOptions(WrtOptions):
    """Options of ``trimmed_mean`` (torchjd's ``TrimmedMean``).

    Attributes:
        trim_number: per coordinate, this many largest and this many smallest task-gradient
            values are dropped before averaging; needs at least ``2 * trim_number + 1`` tasks.
    """

    trim_number: int = option(1, ge=0, le=10_000)


#: (name, factory, options, help) of each combiner, registered in this order
COMBINERS: tuple[tuple[str, str, type | None, str], ...] = (
    (
        "krum",
        f"{_ROBUST}:KrumCombiner",
        KrumOptions,
        "Krum: the task gradient(s) closest to their neighbours (Blanchard et al. 2017, torchjd)",
    ),
    (
        "trimmed_mean",
        f"{_ROBUST}:TrimmedMeanCombiner",
        TrimmedMeanOptions,
        "Trimmed mean of the task gradients per coordinate (Yin et al. 2018, torchjd)",
    ),
)
