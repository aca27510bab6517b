"""The bench spec: which base experiment, which grid, which seeds, where results go."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional

from ...contract.errors import ConfigError
from ...contract.options import build_options, option
from ...zoo.spec import read_spec, resolve


@dataclass
class BenchSpec:
    """Schema of a bench spec (``docs/benchmarks.md`` describes every key).

    Attributes:
        grid: config key -> list of values (the cells are the product), or a list of such
            mappings (the union of their products). The key ``drop_tasks`` takes lists of task
            names to leave out (``[[], [labels]]``: every method with and without ``labels``).
        report: ``best_on_val`` (default): the reported split's metrics of the checkpoint
            chosen on val; ``last_k_mean``: also the mean of each cell's last ``last_k``
            evaluations (the protocol of the Nash-MTL, CAGrad and FAMO code), in a second table.
        last_k: K of ``last_k_mean``.
        delta_m_metrics: task -> the metric keys that enter delta-m (default: every metric of
            every task), to compute it over the metrics a paper used while the tables show more.
    """

    name: str
    base: str
    overrides: list[str] = field(default_factory=list)
    grid: Any = field(default_factory=dict)
    seeds: list[int] = option([0], ge=0, min_len=1)
    baselines: bool = True
    split: str = "test"
    out_dir: str = "runs/bench"
    results_dir: str = "benchmarks/results"
    select: Optional[str] = None
    report: Literal["best_on_val", "last_k_mean"] = "best_on_val"
    last_k: int = option(10, ge=1)
    delta_m_metrics: Optional[dict[str, list[str]]] = None


def load_bench(path: str | Path, extra: list[str] | tuple[str, ...] = ()) -> tuple[BenchSpec, Path]:
    """Read and validate a bench spec; ``extra`` are dot-list overrides of the bench spec."""
    path = Path(path)
    spec = build_options(BenchSpec, resolve(read_spec(path, list(extra))), "", "the bench spec")
    if not re.fullmatch(r"[\w.-]+", spec.name):
        raise ConfigError(f"name: {spec.name!r} must be usable as a file name (letters, digits, _ . -)")
    base = (path.parent / spec.base).resolve()
    if not base.is_file():
        raise ConfigError(f"base: {spec.base!r} not found (relative to {path.parent})")
    grids = spec.grid if isinstance(spec.grid, list) else [spec.grid]
    for i, grid in enumerate(grids):
        where = f"grid[{i}]" if isinstance(spec.grid, list) else "grid"
        if not isinstance(grid, dict):
            raise ConfigError(f"{where}: give a mapping of config key -> list of values (or a list of them)")
        for key, values in grid.items():
            if not isinstance(values, list) or not values:
                raise ConfigError(f"{where}.{key}: give a non-empty list of values")
            if key == "drop_tasks" and not all(
                isinstance(v, list) and all(isinstance(t, str) for t in v) for v in values
            ):
                raise ConfigError(f"{where}.drop_tasks: give lists of task names, e.g. [[], [labels]]")
    return spec, base


__all__ = ["BenchSpec", "load_bench"]
