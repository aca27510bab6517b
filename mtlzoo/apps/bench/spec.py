"""The bench spec: which base experiment, which grid, which seeds, where results go."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from ...contract.errors import ConfigError
from ...contract.options import build_options, option
from ...zoo.spec import read_spec, resolve


@dataclass
class BenchSpec:
    """Schema of a bench spec."""

    name: str
    base: str
    overrides: list[str] = field(default_factory=list)
    grid: dict[str, list[Any]] = field(default_factory=dict)
    seeds: list[int] = option([0], ge=0, min_len=1)
    baselines: bool = True
    split: str = "test"
    out_dir: str = "runs/bench"
    results_dir: str = "benchmarks/results"
    select: Optional[str] = None


def load_bench(path: str | Path, extra: list[str] | tuple[str, ...] = ()) -> tuple[BenchSpec, Path]:
    """Read and validate a bench spec; ``extra`` are dot-list overrides of the bench spec."""
    path = Path(path)
    spec = build_options(BenchSpec, resolve(read_spec(path, list(extra))), "", "the bench spec")
    if not re.fullmatch(r"[\w.-]+", spec.name):
        raise ConfigError(f"name: {spec.name!r} must be usable as a file name (letters, digits, _ . -)")
    base = (path.parent / spec.base).resolve()
    if not base.is_file():
        raise ConfigError(f"base: {spec.base!r} not found (relative to {path.parent})")
    for key, values in spec.grid.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"grid.{key}: give a non-empty list of values")
    return spec, base


__all__ = ["BenchSpec", "load_bench"]
