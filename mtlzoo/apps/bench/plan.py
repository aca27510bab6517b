"""Planning a bench: the grid x seeds, then one single-task baseline per task and setting."""

from __future__ import annotations

import itertools
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from .spec import BenchSpec


@dataclass
class Cell:
    """One run of the bench: an id, its overrides, and its label in the tables."""

    id: str
    method: str
    overrides: list[str]
    seed: int
    baseline_task: str | None = None
    setting: str = ""


def _value_label(value: Any) -> str:
    if isinstance(value, dict):
        name = value.get("name", "")
        rest = ",".join(f"{k}={_value_label(v)}" for k, v in value.items() if k != "name")
        return f"{name}({rest})" if rest else str(name)
    if isinstance(value, list):
        return "[" + ",".join(_value_label(v) for v in value) + "]"
    return str(value)


def _slug(text: str) -> str:
    return re.sub(r"[^\w.=-]+", "_", text).strip("_")[:120]


#: grid keys whose values are plugin nodes: a bare name means {name: <name>}
NODE_KEYS = ("combiner", "model.backbone", "model.architecture")

#: a grid key naming tasks of the base spec to leave out of a cell (``[]``: none), e.g. to
#: report every method with and without an auxiliary task against the same baselines
DROP_TASKS = "drop_tasks"


def _overrides(key: str, value: Any) -> list[str]:
    if key == DROP_TASKS:
        return [f"~tasks.{t}" for t in value]
    if key in NODE_KEYS and isinstance(value, str):
        value = {"name": value}
    return [f"{key}={json.dumps(value)}"]


def _override(key: str, value: Any) -> str:
    (out,) = _overrides(key, value)
    return out


#: grid keys that make the method of a row (the rest are settings, each with its own baselines)
METHOD_KEYS = ("model.architecture", "combiner", DROP_TASKS)


def _label(key: str, value: Any) -> str:
    """A grid value in a cell id: ``combiner=sum``, ``all_tasks`` / ``without_labels``."""
    if key == DROP_TASKS:
        return _slug("without_" + "_".join(value)) if value else "all_tasks"
    return _slug(f"{key}={_value_label(value)}")


def _method(assignment: dict[str, Any], base_cfg: Any) -> str:
    """``sum``, or ``mtan + pcgrad`` when the grid varies the architecture too, with ``
    (without labels)`` when the cell leaves tasks out."""
    combiner = _value_label(
        assignment.get("combiner", OmegaConf.to_container(base_cfg.combiner, resolve=True))
    )
    method = combiner
    if "model.architecture" in assignment:
        method = f"{_value_label(assignment['model.architecture'])} + {combiner}"
    if assignment.get(DROP_TASKS):
        method += f" (without {', '.join(assignment[DROP_TASKS])})"
    return method


def grids(spec: BenchSpec) -> list[dict[str, list[Any]]]:
    """The bench's grids: ``grid`` is one mapping (its cells are the product of its values)
    or a list of mappings (the union of their products)."""
    return spec.grid if isinstance(spec.grid, list) else [spec.grid]


def _assignments(spec: BenchSpec) -> list[dict[str, Any]]:
    """Every grid assignment (key -> value), in order, without repeats."""
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    for grid in grids(spec):
        keys = list(grid)
        for combo in itertools.product(*(grid[k] for k in keys)) if keys else [()]:
            assignment = dict(zip(keys, combo))
            sig = json.dumps(assignment, sort_keys=True, default=str)
            if sig not in seen:
                seen.add(sig)
                out.append(assignment)
    return out


def plan(spec: BenchSpec, base_cfg: Any) -> list[Cell]:
    """Every cell of the bench: the grid x seeds, then the single-task baselines (one per task
    and setting; methods — combiners, architectures, left-out tasks — share them)."""
    cells: list[Cell] = []
    settings: list[dict[str, Any]] = []
    for assignment in _assignments(spec):
        method = _method(assignment, base_cfg)
        setting_of = {k: v for k, v in assignment.items() if k not in METHOD_KEYS}
        if setting_of not in settings:
            settings.append(setting_of)
        setting = ", ".join(f"{k}={_value_label(v)}" for k, v in setting_of.items())
        overrides = [o for k, v in assignment.items() for o in _overrides(k, v)]
        for seed in spec.seeds:
            label = "__".join(_label(k, v) for k, v in assignment.items()) or "base"
            cells.append(Cell(f"{label}__seed{seed}", method, overrides, seed, setting=setting))
    if spec.baselines and len(base_cfg.tasks) > 1:
        for assignment in settings:
            setting = ", ".join(f"{k}={_value_label(v)}" for k, v in assignment.items())
            for task in base_cfg.tasks:
                others = [f"~tasks.{t}" for t in base_cfg.tasks if t != task]
                overrides = [
                    *(_override(k, v) for k, v in assignment.items()),
                    *others,
                    'combiner={"name": "sum"}',
                    "model.architecture=null",
                ]
                for seed in spec.seeds:
                    label = "__".join(_slug(f"{k}={_value_label(v)}") for k, v in assignment.items())
                    cid = f"single_{task}{'__' + label if label else ''}__seed{seed}"
                    cells.append(
                        Cell(
                            cid, f"single-task ({task})", overrides, seed, baseline_task=task, setting=setting
                        )
                    )
    return cells


def cell_overrides(spec: BenchSpec, cell: Cell, run_dir: Path) -> list[str]:
    out = [
        *spec.overrides,
        *cell.overrides,
        f"seed={cell.seed}",
        f"train.out_dir={run_dir.parent}",
        f"train.run_name={run_dir.name}",
        "train.progress=false",
    ]
    if spec.split != "val":
        out.append(f"train.test_split={spec.split}")
    if spec.select and (cell.baseline_task is None or spec.select.startswith(cell.baseline_task + ".")):
        out.append(f"train.select={spec.select}")
    return out


__all__ = ["Cell", "plan", "grids", "cell_overrides", "METHOD_KEYS", "DROP_TASKS"]
