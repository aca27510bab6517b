"""Options and registration rows of the loss-level combiners: ``sum`` and ``weighted``
(:mod:`.basic`) and those of :mod:`.loss_level`.

Kept apart from the classes so that registering, listing and ``mtlzoo config show`` never
import torch: the classes' modules are imported when a combiner is first built.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ...contract.options import option
from .gradient_level_options import Wrt

_PKG = "mtlzoo.builtin.combiners"
_BASIC, _LOSS = f"{_PKG}.basic", f"{_PKG}.loss_level"


@dataclass
class WeightedOptions:
    """Options of ``weighted``.

    Attributes:
        weights: a static weight (>= 0) per task name; tasks not named get ``default``.
        default: the weight (>= 0) of every task not named in ``weights``.
    """

    weights: dict[str, float] = option({}, ge=0)
    default: float = option(1.0, ge=0)


@dataclass
class UncertaintyOptions:
    """Options of ``uncertainty``.

    Attributes:
        init: initial log-variance ``s_t`` of every task (0: all weights start at 1/2).
    """

    init: float = 0.0


@dataclass
class DWAOptions:
    """Options of ``dwa``.

    Attributes:
        temperature: softmax temperature T (the paper uses 2); larger is more uniform.
    """

    temperature: float = option(2.0, gt=0)


@dataclass
class RLWOptions:
    """Options of ``rlw``.

    Attributes:
        seed: seed of the per-step random weights (combined with the step number).
    """

    seed: int = option(0, ge=0, lt=2**63)


@dataclass
class FAMOOptions:
    """Options of ``famo``.

    Attributes:
        lr: learning rate of FAMO's own Adam on the task logits (paper: 0.025).
        weight_decay: Adam weight decay on the logits (paper/LibMTL: 1e-3).
        min_loss: lower bound ``b`` of every loss (``log(L - b)`` is used).
        update: ``next_batch`` (default): the logits are updated at the start of the next
            step from how each loss changed between this batch and the next (one forward
            and one backward per step, no trainer support needed); ``same_batch``: the
            paper's definition, the trainer calls ``after_step`` with this batch's losses
            recomputed after the optimizer step (an extra forward pass).
    """

    lr: float = option(0.025, ge=0)
    weight_decay: float = option(1e-3, ge=0)
    min_loss: float = 0.0
    update: Literal["next_batch", "same_batch"] = "next_batch"


@dataclass
class GradNormOptions:
    """Options of ``gradnorm``.

    Attributes:
        alpha: restoring-force strength (the paper uses 0.12 to 3; 1.5 is common).
        wrt: gradient norms w.r.t. ``features`` (cheap: one head pass per task and one
            backbone pass) or all shared ``params`` (exact, layer-wise Gramian).
    """

    alpha: float = 1.5
    wrt: Wrt = "features"


@dataclass
class STCHOptions:
    """Options of ``stch`` (defaults: LibMTL's).

    Attributes:
        mu: smoothing (> 0) of the Tchebycheff max: smaller is closer to the max.
        nadir_epoch: the 0-based epoch whose mean losses become the nadir point; up to and
            including it the loss is ``sum_t log L_t`` (LibMTL's ``STCH_warmup_epoch``).
    """

    mu: float = option(1.0, gt=0)
    nadir_epoch: int = option(4, ge=0, le=100_000)


#: (name, factory, options, help) of each combiner, registered in this order
COMBINERS: tuple[tuple[str, str, type | None, str], ...] = (
    ("sum", f"{_BASIC}:SumCombiner", None, "Equal weighting: L = sum_t L_t"),
    ("weighted", f"{_BASIC}:WeightedCombiner", WeightedOptions, "Static per-task weights: L = sum_t w_t L_t"),
    (
        "uncertainty",
        f"{_LOSS}:UncertaintyCombiner",
        UncertaintyOptions,
        "Uncertainty weighting, learnable log-variances (Kendall et al. 2018)",
    ),
    (
        "dwa",
        f"{_LOSS}:DWACombiner",
        DWAOptions,
        "Dynamic Weight Average from epoch loss ratios (Liu et al. 2019)",
    ),
    (
        "rlw",
        f"{_LOSS}:RLWCombiner",
        RLWOptions,
        "Random loss weighting, softmax of normal draws (Lin et al. 2021)",
    ),
    ("gls", f"{_LOSS}:GLSCombiner", None, "Geometric mean of the losses (Chennupati et al. 2019)"),
    ("imtl_l", f"{_LOSS}:IMTLLCombiner", None, "IMTL-L learnable loss scales exp(s) L - s (Liu et al. 2021)"),
    (
        "famo",
        f"{_LOSS}:FAMOCombiner",
        FAMOOptions,
        "Fast Adaptive Multitask Optimization, one backward (Liu et al. 2023)",
    ),
    (
        "gradnorm",
        f"{_LOSS}:GradNormCombiner",
        GradNormOptions,
        "GradNorm learnable weights balancing gradient norms (Chen et al. 2018)",
    ),
    (
        "stch",
        f"{_LOSS}:STCHCombiner",
        STCHOptions,
        "Smooth Tchebycheff scalarisation of log losses (Lin et al. 2024)",
    ),
)
