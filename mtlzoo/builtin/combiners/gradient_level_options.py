"""Options and registration rows of the gradient-level combiners of :mod:`.gradient_level`.

Kept apart from the classes so that registering, listing and ``mtlzoo config show`` never
import torch: the classes' module is imported when a combiner is first built.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ...contract.options import option

_GRAD = "mtlzoo.builtin.combiners.gradient_level"

#: what per-task gradients are taken with respect to
Wrt = Literal["params", "features"]


@dataclass
class WrtOptions:
    """Options of gradient-level combiners without further settings (``imtl_g``, ``upgrad``,
    ``config``, ``dualproj``), and the first option of every other one.

    Attributes:
        wrt: ``params`` (shared-parameter gradients) or ``features`` (shared-representation
            gradients).
    """

    wrt: Wrt = "params"


@dataclass
class MGDAOptions(WrtOptions):
    """Options of ``mgda`` (``wrt: features`` is MGDA-UB).

    Attributes:
        normalization: scale of each task gradient when solving for the weights, as in the
            reference code: ``none``, ``l2`` (its norm), ``loss`` (its loss), ``loss+`` (both).
            The weights then apply to the raw gradients.
        max_iter: Frank-Wolfe iterations at most.
        tol: relative duality-gap tolerance of the min-norm solve.
    """

    normalization: Literal["none", "l2", "loss", "loss+"] = "none"
    max_iter: int = option(1000, ge=1, le=1_000_000)
    tol: float = option(1e-7, gt=0)


@dataclass
class PCGradOptions(WrtOptions):
    """Options of ``pcgrad``.

    Attributes:
        reduction: ``sum`` (the paper, LibMTL, torchjd) or ``mean`` of the projected gradients.
        seed: seed of the random projection orders (combined with the step number).
    """

    reduction: Literal["sum", "mean"] = "sum"
    seed: int = option(0, ge=0, lt=2**63)


@dataclass
class CAGradOptions(WrtOptions):
    """Options of ``cagrad``.

    Attributes:
        c: radius of the ball around the mean gradient, relative to its norm (paper: 0.4-0.5).
        rescale: 0 none, 1 divide the update by ``1 + c^2`` (reference default), 2 by ``1 + c``.
    """

    c: float = option(0.5, ge=0)
    rescale: Literal[0, 1, 2] = 1


@dataclass
class NashMTLOptions(WrtOptions):
    """Options of ``nash_mtl``.

    Attributes:
        max_norm: the shared parameters' gradient norm is clipped to this after the update is
            assembled, with ``wrt: params`` and ``wrt: features`` alike (0: no clipping;
            reference: 1).
        update_weights_every: solve for new weights every this many steps, reuse between.
        max_iter: Newton iterations at most per solve.
    """

    max_norm: float = option(1.0, ge=0)
    update_weights_every: int = option(1, ge=1, le=1_000_000)
    max_iter: int = option(100, ge=1, le=1_000_000)


@dataclass
class AlignedMTLOptions(WrtOptions):
    """Options of ``aligned_mtl``.

    Attributes:
        scale_mode: eigenvalue setting the common norm: ``min`` (paper), ``median``, ``rmse``.
        reduction: ``sum`` (reference code) or ``mean`` (torchjd) of the aligned gradients.
    """

    scale_mode: Literal["min", "median", "rmse"] = "min"
    reduction: Literal["sum", "mean"] = "sum"


@dataclass
class GradVacOptions(WrtOptions):
    """Options of ``gradvac``.

    Attributes:
        beta: EMA rate in [0, 1] of the cosine-similarity targets (LibMTL/torchjd default 0.5).
        seed: seed of the random task orders (combined with the step number).
    """

    beta: float = option(0.5, ge=0, le=1)
    seed: int = option(0, ge=0, lt=2**63)


@dataclass
class GradDropOptions(WrtOptions):
    """Options of ``graddrop`` (the paper applies it to activations: ``wrt: features``).

    Attributes:
        leak: fraction in [0, 1] of every task gradient let through unmasked (0: none).
        seed: seed of the per-coordinate draws (combined with the step number).
    """

    leak: float = option(0.0, ge=0, le=1)
    seed: int = option(0, ge=0, lt=2**63)


@dataclass
class DBMTLOptions(WrtOptions):
    """Options of ``db_mtl``.

    Attributes:
        beta: EMA factor in [0, 1] of the gradient buffer (LibMTL default 0.9).
        beta_sigma: decay exponent (>= 0) of that factor over steps, ``beta / step**beta_sigma``.
    """

    beta: float = option(0.9, ge=0, le=1)
    beta_sigma: float = option(0.5, ge=0)


@dataclass
class FairGradOptions(WrtOptions):
    """Options of ``fairgrad``.

    Attributes:
        alpha: fairness exponent (> 0): towards 0 the plain sum, 1 proportional fairness
            (Nash-MTL's equation), large values max-min fairness (LibMTL default 1).
        max_iter: Newton iterations at most per solve.
    """

    alpha: float = option(1.0, gt=0)
    max_iter: int = option(100, ge=1, le=1_000_000)


#: (name, factory, options, help) of each combiner, registered in this order
COMBINERS: tuple[tuple[str, str, type | None, str], ...] = (
    (
        "mgda",
        f"{_GRAD}:MGDACombiner",
        MGDAOptions,
        "MGDA min-norm point of the task gradients (Sener & Koltun 2018)",
    ),
    (
        "pcgrad",
        f"{_GRAD}:PCGradCombiner",
        PCGradOptions,
        "PCGrad projection of conflicting gradients (Yu et al. 2020)",
    ),
    (
        "cagrad",
        f"{_GRAD}:CAGradCombiner",
        CAGradOptions,
        "CAGrad conflict-averse gradient descent (Liu et al. 2021)",
    ),
    (
        "nash_mtl",
        f"{_GRAD}:NashMTLCombiner",
        NashMTLOptions,
        "Nash-MTL bargaining weights G a = 1/a (Navon et al. 2022)",
    ),
    (
        "imtl_g",
        f"{_GRAD}:IMTLGCombiner",
        WrtOptions,
        "IMTL-G equal projections on unit gradients (Liu et al. 2021)",
    ),
    (
        "aligned_mtl",
        f"{_GRAD}:AlignedMTLCombiner",
        AlignedMTLOptions,
        "Aligned-MTL eigen-aligned task gradients (Senushkin et al. 2023)",
    ),
    (
        "gradvac",
        f"{_GRAD}:GradVacCombiner",
        GradVacOptions,
        "GradVac cosine-similarity targets (Wang et al. 2021)",
    ),
    (
        "graddrop",
        f"{_GRAD}:GradDropCombiner",
        GradDropOptions,
        "GradDrop gradient sign dropout (Chen et al. 2020)",
    ),
    ("upgrad", f"{_GRAD}:UPGradCombiner", WrtOptions, "UPGrad dual-cone projections (Quinton & Rey 2024)"),
    ("config", f"{_GRAD}:ConFIGCombiner", WrtOptions, "ConFIG conflict-free update (Liu et al. 2024)"),
    (
        "db_mtl",
        f"{_GRAD}:DBMTLCombiner",
        DBMTLOptions,
        "DB-MTL log-loss and gradient-magnitude balancing (Lin et al. 2023)",
    ),
    (
        "fairgrad",
        f"{_GRAD}:FairGradCombiner",
        FairGradOptions,
        "FairGrad alpha-fair weights G w = w^(-1/alpha) (Ban & Ji 2024)",
    ),
    (
        "dualproj",
        f"{_GRAD}:DualProjCombiner",
        WrtOptions,
        "DualProj mean gradient projected onto the dual cone (torchjd)",
    ),
)
