"""Benchmarks: run a grid of experiments plus single-task baselines, then write tables.

Modules: :mod:`.spec` (the bench spec), :mod:`.plan` (the cells), :mod:`.cells` (committed
cell files), :mod:`.run` (running, resuming and committing cells), :mod:`.jobs` (``--jobs N``:
cells in parallel processes), :mod:`.report` (statistics and tables), :mod:`.paired`,
:mod:`.plots`, :mod:`.cli`.

A bench spec (YAML)::

    name: shapes_combiners
    base: ../../configs/quickstart.yaml   # experiment spec, relative to this file
    overrides: [train.epochs=3]           # applied to every cell, baselines included
    grid:                                 # config key -> values; the cells are the product
      combiner: [sum, uncertainty, {name: pcgrad, wrt: features}]
    seeds: [0, 1, 2]
    baselines: true                       # one single-task run per task, same budget
    split: test                           # split reported (the epoch is chosen on val)
    report: best_on_val                   # or last_k_mean: also the mean of the last last_k evaluations
    out_dir: runs/bench                   # where cell run folders go
    results_dir: benchmarks/results       # where <name>.md/.csv/.png and <name>/cells/ go

Every cell runs as a normal run folder; a finished cell's result (not its weights) is
committed as ``<results_dir>/<name>/cells/<cell id>.json`` and the tables are built from those
files alone, so a bench can be run in pieces on several machines. Committed cells are
skipped; an interrupted cell resumes from its last checkpoint. A failed cell is reported and
the others go on. A committed cell made from a different config (the spec was edited) or from
another version of its parts' code is reported as refused, never reused: delete its cell file
to run it again.

delta-m (Maninis et al. 2019; Vandenhende et al. 2021), as reported in every table::

    delta_m = 1/T * sum_t [ 1/N_t * sum_j (-1)^{l_j} (M_mt,j - M_st,j) / M_st,j ] * 100%

with M_st,j the single-task baseline's metric j of task t (mean over seeds), l_j = 1 when
lower is better, N_t the number of metrics of task t (losses excluded): the relative change
is averaged within each task, then across tasks. Positive means better than the baselines.
"""

from __future__ import annotations

from .plan import Cell, plan
from .report import DELTA_M_FORMULA, delta_m
from .run import run_bench
from .spec import BenchSpec, load_bench

__all__ = ["run_bench", "delta_m", "plan", "load_bench", "BenchSpec", "Cell", "DELTA_M_FORMULA"]
