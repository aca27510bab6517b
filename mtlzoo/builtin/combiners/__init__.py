"""Built-in loss combiners: how the per-task losses become one update of the shared part.

===========  ========  ===============================================================
name         level     update
===========  ========  ===============================================================
sum          loss      ``sum_t L_t``
weighted     loss      ``sum_t w_t L_t``, weights fixed in the spec
uncertainty  loss      learnable log-variances (Kendall et al. 2018)
dwa          loss      softmax of epoch loss ratios (Liu et al. 2019)
rlw          loss      random softmax weights every step (Lin et al. 2021)
gls          loss      geometric mean of the losses (Chennupati et al. 2019)
imtl_l       loss      learnable loss scales ``exp(s) L - s`` (Liu et al. 2021)
famo         loss      FAMO, one backward per step (Liu et al. 2023)
gradnorm     loss      learnable weights balancing gradient norms (Chen et al. 2018)
mgda         gradient  min-norm point of the task gradients (Sener & Koltun 2018)
pcgrad       gradient  projection of conflicting gradients (Yu et al. 2020)
cagrad       gradient  conflict-averse gradient descent (Liu et al. 2021)
nash_mtl     gradient  bargaining weights ``G a = 1/a`` (Navon et al. 2022)
imtl_g       gradient  equal projections on unit gradients (Liu et al. 2021)
aligned_mtl  gradient  eigen-aligned task gradients (Senushkin et al. 2023)
gradvac      gradient  cosine-similarity targets (Wang et al. 2021)
graddrop     gradient  gradient sign dropout (Chen et al. 2020)
upgrad       gradient  dual-cone projections (Quinton & Rey 2024)
config       gradient  conflict-free update (Liu et al. 2024)
db_mtl       gradient  log-loss and gradient-magnitude balancing (Lin et al. 2023)
fairgrad     gradient  alpha-fair weights ``G w = w^(-1/alpha)`` (Ban & Ji 2024)
excess_mtl   gradient  weights from excess-risk estimates (He et al. 2024)
moco         gradient  MGDA on tracked task gradients (Fernando et al. 2023)
modo         gradient  MGDA weights from two samples of the batch (Chen et al. 2023)
sdmgrad      gradient  direction-oriented MGDA, two samples (Xiao et al. 2023)
stch         loss      smooth Tchebycheff scalarisation of log losses (Lin et al. 2024)
dualproj     gradient  mean gradient projected onto the dual cone (torchjd)
===========  ========  ===============================================================

Each factory is ``factory(task_names, options)`` (``factory(task_names)`` for ``sum``,
``gls`` and ``imtl_l``) and returns a :class:`mtlzoo.Combiner`. Gradient-level combiners
(and ``gradnorm``) take ``wrt``: gradients of the shared ``params`` or of the shared
``features`` (see :mod:`mtlzoo.contract.combine`).

This module only declares options and registers the combiners; the combiners live in
:mod:`.basic`, :mod:`.loss_level`, :mod:`.gradient_level` and :mod:`.stochastic` (the
aggregation math in :mod:`.gradients`), imported with torch (and scipy) when a combiner is
first built.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ...contract.hooks import hookimpl
from ...contract.options import option

_PKG = "mtlzoo.builtin.combiners"

#: what per-task gradients are taken with respect to
Wrt = Literal["params", "features"]


# -- loss level --------------------------------------------------------------------------------------
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

    seed: int = 0


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


# -- gradient level ----------------------------------------------------------------------------------
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
    max_iter: int = option(1000, ge=1)
    tol: float = option(1e-7, gt=0)


@dataclass
class PCGradOptions(WrtOptions):
    """Options of ``pcgrad``.

    Attributes:
        reduction: ``sum`` (the paper, LibMTL, torchjd) or ``mean`` of the projected gradients.
        seed: seed of the random projection orders (combined with the step number).
    """

    reduction: Literal["sum", "mean"] = "sum"
    seed: int = 0


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
    update_weights_every: int = option(1, ge=1)
    max_iter: int = option(100, ge=1)


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
    seed: int = 0


@dataclass
class GradDropOptions(WrtOptions):
    """Options of ``graddrop`` (the paper applies it to activations: ``wrt: features``).

    Attributes:
        leak: fraction in [0, 1] of every task gradient let through unmasked (0: none).
        seed: seed of the per-coordinate draws (combined with the step number).
    """

    leak: float = option(0.0, ge=0, le=1)
    seed: int = 0


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
    max_iter: int = option(100, ge=1)


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
    n_iter: int = option(20, ge=1)


@dataclass
class STCHOptions:
    """Options of ``stch`` (defaults: LibMTL's).

    Attributes:
        mu: smoothing (> 0) of the Tchebycheff max: smaller is closer to the max.
        nadir_epoch: the 0-based epoch whose mean losses become the nadir point; up to and
            including it the loss is ``sum_t log L_t`` (LibMTL's ``STCH_warmup_epoch``).
    """

    mu: float = option(1.0, gt=0)
    nadir_epoch: int = option(4, ge=0)


@hookimpl
def register_combiners(register):
    """Register the built-in combiners: ``sum`` and ``weighted``, the loss-level ones, the
    gradient-level ones, then the methods added from LibMTL and torchjd."""
    basic, loss, grad = f"{_PKG}.basic", f"{_PKG}.loss_level", f"{_PKG}.gradient_level"
    register("sum", f"{basic}:SumCombiner", None, "Equal weighting: L = sum_t L_t")
    register(
        "weighted", f"{basic}:WeightedCombiner", WeightedOptions, "Static per-task weights: L = sum_t w_t L_t"
    )

    register(
        "uncertainty",
        f"{loss}:UncertaintyCombiner",
        UncertaintyOptions,
        "Uncertainty weighting, learnable log-variances (Kendall et al. 2018)",
    )
    register(
        "dwa",
        f"{loss}:DWACombiner",
        DWAOptions,
        "Dynamic Weight Average from epoch loss ratios (Liu et al. 2019)",
    )
    register(
        "rlw",
        f"{loss}:RLWCombiner",
        RLWOptions,
        "Random loss weighting, softmax of normal draws (Lin et al. 2021)",
    )
    register("gls", f"{loss}:GLSCombiner", None, "Geometric mean of the losses (Chennupati et al. 2019)")
    register(
        "imtl_l", f"{loss}:IMTLLCombiner", None, "IMTL-L learnable loss scales exp(s) L - s (Liu et al. 2021)"
    )
    register(
        "famo",
        f"{loss}:FAMOCombiner",
        FAMOOptions,
        "Fast Adaptive Multitask Optimization, one backward (Liu et al. 2023)",
    )
    register(
        "gradnorm",
        f"{loss}:GradNormCombiner",
        GradNormOptions,
        "GradNorm learnable weights balancing gradient norms (Chen et al. 2018)",
    )

    register(
        "mgda",
        f"{grad}:MGDACombiner",
        MGDAOptions,
        "MGDA min-norm point of the task gradients (Sener & Koltun 2018)",
    )
    register(
        "pcgrad",
        f"{grad}:PCGradCombiner",
        PCGradOptions,
        "PCGrad projection of conflicting gradients (Yu et al. 2020)",
    )
    register(
        "cagrad",
        f"{grad}:CAGradCombiner",
        CAGradOptions,
        "CAGrad conflict-averse gradient descent (Liu et al. 2021)",
    )
    register(
        "nash_mtl",
        f"{grad}:NashMTLCombiner",
        NashMTLOptions,
        "Nash-MTL bargaining weights G a = 1/a (Navon et al. 2022)",
    )
    register(
        "imtl_g",
        f"{grad}:IMTLGCombiner",
        WrtOptions,
        "IMTL-G equal projections on unit gradients (Liu et al. 2021)",
    )
    register(
        "aligned_mtl",
        f"{grad}:AlignedMTLCombiner",
        AlignedMTLOptions,
        "Aligned-MTL eigen-aligned task gradients (Senushkin et al. 2023)",
    )
    register(
        "gradvac",
        f"{grad}:GradVacCombiner",
        GradVacOptions,
        "GradVac cosine-similarity targets (Wang et al. 2021)",
    )
    register(
        "graddrop",
        f"{grad}:GradDropCombiner",
        GradDropOptions,
        "GradDrop gradient sign dropout (Chen et al. 2020)",
    )
    register(
        "upgrad", f"{grad}:UPGradCombiner", WrtOptions, "UPGrad dual-cone projections (Quinton & Rey 2024)"
    )
    register("config", f"{grad}:ConFIGCombiner", WrtOptions, "ConFIG conflict-free update (Liu et al. 2024)")
    register(
        "db_mtl",
        f"{grad}:DBMTLCombiner",
        DBMTLOptions,
        "DB-MTL log-loss and gradient-magnitude balancing (Lin et al. 2023)",
    )
    stoch = f"{_PKG}.stochastic"
    register(
        "fairgrad",
        f"{grad}:FairGradCombiner",
        FairGradOptions,
        "FairGrad alpha-fair weights G w = w^(-1/alpha) (Ban & Ji 2024)",
    )
    register(
        "excess_mtl",
        f"{stoch}:ExcessMTLCombiner",
        ExcessMTLOptions,
        "ExcessMTL weights from excess-risk estimates (He et al. 2024)",
    )
    register(
        "moco",
        f"{stoch}:MoCoCombiner",
        MoCoOptions,
        "MoCo MGDA on tracked task gradients (Fernando et al. 2023)",
    )
    register(
        "modo",
        f"{stoch}:MoDoCombiner",
        MoDoOptions,
        "MoDo MGDA weights from two samples of the batch (Chen et al. 2023)",
    )
    register(
        "sdmgrad",
        f"{stoch}:SDMGradCombiner",
        SDMGradOptions,
        "SDMGrad direction-oriented MGDA, two samples (Xiao et al. 2023)",
    )
    register(
        "stch",
        f"{loss}:STCHCombiner",
        STCHOptions,
        "Smooth Tchebycheff scalarisation of log losses (Lin et al. 2024)",
    )
    register(
        "dualproj",
        f"{grad}:DualProjCombiner",
        WrtOptions,
        "DualProj mean gradient projected onto the dual cone (torchjd)",
    )


__all__ = [
    "Wrt",
    "WeightedOptions",
    "UncertaintyOptions",
    "DWAOptions",
    "RLWOptions",
    "FAMOOptions",
    "GradNormOptions",
    "WrtOptions",
    "MGDAOptions",
    "PCGradOptions",
    "CAGradOptions",
    "NashMTLOptions",
    "AlignedMTLOptions",
    "GradVacOptions",
    "GradDropOptions",
    "DBMTLOptions",
    "FairGradOptions",
    "ExcessMTLOptions",
    "MoCoOptions",
    "MoDoOptions",
    "SDMGradOptions",
    "STCHOptions",
    "register_combiners",
]
