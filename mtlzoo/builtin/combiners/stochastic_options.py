"""Options and registration rows of the stochastic gradient-level combiners of
:mod:`.stochastic`.

Kept apart from the classes so that registering, listing and ``mtlzoo config show`` never
import torch: the classes' module is imported when a combiner is first built.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ...contract.options import option
from .gradient_level_options import WrtOptions

_STOCH = "mtlzoo.builtin.combiners.stochastic"


@dataclass
class ExcessMTLOptions(WrtOptions):
    """Options of ``excess_mtl``.

    Attributes:
        step_size: step size (> 0) of the exponentiated weight update (LibMTL's
            ``robust_step_size``, default 1e-2).
    """

    step_size: float = option(1e-2, gt=0)


@dataclass
class MoCoOptions(WrtOptions):
    """Options of ``moco`` (defaults: LibMTL's).

    Attributes:
        beta: tracking rate in (0, 1] of the gradient estimates, decayed as ``beta / k**beta_sigma``.
        beta_sigma: decay exponent (>= 0) of ``beta`` over steps ``k = 1, 2, ...``.
        gamma: step size (> 0) of the weight update, decayed as ``gamma / k**gamma_sigma``.
        gamma_sigma: decay exponent (>= 0) of ``gamma``.
        rho: l2 regularisation (>= 0) of the weight update.
        normalize: track ``L_t g_t / ||g_t||`` (the authors' and LibMTL's code) instead of ``g_t``.
        simplex: map the weight step back to the simplex by Euclidean ``projection`` (the
            paper) or by a ``softmax`` (LibMTL's code).
    """

    beta: float = option(0.5, gt=0, le=1)
    beta_sigma: float = option(0.5, ge=0)
    gamma: float = option(0.1, gt=0)
    gamma_sigma: float = option(0.5, ge=0)
    rho: float = option(0.0, ge=0)
    normalize: bool = True
    simplex: Literal["projection", "softmax"] = "projection"


@dataclass
class MoDoOptions(WrtOptions):
    """Options of ``modo`` (defaults: LibMTL's).

    Attributes:
        gamma: step size (> 0) of the weight update.
        rho: l2 regularisation (>= 0) of the weight update.
    """

    gamma: float = option(1e-3, gt=0)
    rho: float = option(0.1, ge=0)


@dataclass
class SDMGradOptions(WrtOptions):
    """Options of ``sdmgrad`` (defaults: LibMTL's).

    Attributes:
        lam: pull (>= 0) of the update towards the mean gradient (the paper's lambda).
        lr: step size (> 0) of the inner projected SGD on the weights.
        momentum: heavy-ball momentum in [0, 1) of that SGD.
        n_iter: inner SGD steps per training step.
    """

    lam: float = option(0.3, ge=0)
    lr: float = option(5.0, gt=0)
    momentum: float = option(0.5, ge=0, lt=1)
    n_iter: int = option(20, ge=1, le=100_000)


#: (name, factory, options, help) of each combiner, registered in this order
COMBINERS: tuple[tuple[str, str, type | None, str], ...] = (
    (
        "excess_mtl",
        f"{_STOCH}:ExcessMTLCombiner",
        ExcessMTLOptions,
        "ExcessMTL weights from excess-risk estimates (He et al. 2024)",
    ),
    (
        "moco",
        f"{_STOCH}:MoCoCombiner",
        MoCoOptions,
        "MoCo MGDA on tracked task gradients (Fernando et al. 2023)",
    ),
    (
        "modo",
        f"{_STOCH}:MoDoCombiner",
        MoDoOptions,
        "MoDo MGDA weights from two samples of the batch (Chen et al. 2023)",
    ),
    (
        "sdmgrad",
        f"{_STOCH}:SDMGradCombiner",
        SDMGradOptions,
        "SDMGrad direction-oriented MGDA, two samples (Xiao et al. 2023)",
    ),
)
