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
krum         gradient  task gradient(s) nearest their neighbours (Blanchard et al. 2017)
trimmed_mean gradient  coordinate-wise trimmed mean of the task gradients (Yin et al. 2018)
auto_lambda  bilevel   weights from a virtual step and a held-out batch (Liu et al. 2022)
moml         bilevel   multi-objective meta learning of the weights (Ye et al. 2021)
forum        bilevel   first-order multi-gradient bilevel weighting (Ye et al. 2024)
===========  ========  ===============================================================

``bilevel`` combiners learn their weights on a held-out batch of the ``heldout`` split,
which the trainer draws every step (:mod:`mtlzoo.contract.heldout`). Combiners that declare
``partial_steps`` train on partial labels (a batch may hold no label of a task):
``sum``, ``weighted``, ``uncertainty``, ``rlw``, ``gls``, ``imtl_l``, ``mgda``, ``pcgrad``,
``cagrad``, ``nash_mtl``, ``imtl_g``, ``aligned_mtl``, ``gradvac``, ``graddrop``, ``upgrad``,
``config``, ``fairgrad``, ``dualproj``.

Each factory is ``factory(task_names, options)`` (``factory(task_names)`` for ``sum``,
``gls`` and ``imtl_l``) and returns a :class:`mtlzoo.Combiner`. Gradient-level combiners
(and ``gradnorm``) take ``wrt``: gradients of the shared ``params`` or of the shared
``features`` (see :mod:`mtlzoo.contract.combine`).

This module only registers the combiners. Each family's options classes and registration
rows (name, class, options, help) sit in a torch-free module beside the family's classes:
:mod:`.loss_level_options` (for :mod:`.basic` and :mod:`.loss_level`),
:mod:`.gradient_level_options` (:mod:`.gradient_level`), :mod:`.stochastic_options`
(:mod:`.stochastic`), :mod:`.robust_options` (:mod:`.robust`) and :mod:`.bilevel_options`
(:mod:`.bilevel`); the classes (and the aggregation math in :mod:`.gradients`) are
imported with torch (and scipy) when a combiner is first built.
"""

from __future__ import annotations

from ...contract.hooks import hookimpl
from . import bilevel_options, gradient_level_options, loss_level_options, robust_options, stochastic_options
from .bilevel_options import AutoLambdaOptions, FORUMOptions, MOMLOptions
from .gradient_level_options import (
    AlignedMTLOptions,
    CAGradOptions,
    DBMTLOptions,
    FairGradOptions,
    GradDropOptions,
    GradVacOptions,
    MGDAOptions,
    NashMTLOptions,
    PCGradOptions,
    Wrt,
    WrtOptions,
)
from .loss_level_options import (
    DWAOptions,
    FAMOOptions,
    GradNormOptions,
    RLWOptions,
    STCHOptions,
    UncertaintyOptions,
    WeightedOptions,
)
from .robust_options import KrumOptions, TrimmedMeanOptions
from .stochastic_options import ExcessMTLOptions, MoCoOptions, MoDoOptions, SDMGradOptions

#: registration order: the table above (the order the combiners were added to mtlzoo)
ORDER = (
    *("sum", "weighted", "uncertainty", "dwa", "rlw", "gls", "imtl_l", "famo", "gradnorm"),
    *("mgda", "pcgrad", "cagrad", "nash_mtl", "imtl_g", "aligned_mtl", "gradvac", "graddrop"),
    *("upgrad", "config", "db_mtl", "fairgrad", "excess_mtl", "moco", "modo", "sdmgrad", "stch"),
    *("dualproj", "krum", "trimmed_mean", "auto_lambda", "moml", "forum"),
)


@hookimpl
def register_combiners(register):
    """Register the built-in combiners in :data:`ORDER`, each from its family's row."""
    rows = {
        row[0]: row
        for family in (
            loss_level_options,
            gradient_level_options,
            stochastic_options,
            robust_options,
            bilevel_options,
        )
        for row in family.COMBINERS
    }
    for name in ORDER:
        register(*rows.pop(name))
    for row in rows.values():  # a row missing from ORDER still registers, last
        register(*row)


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
    "KrumOptions",
    "TrimmedMeanOptions",
    "AutoLambdaOptions",
    "MOMLOptions",
    "FORUMOptions",
    "register_combiners",
]
