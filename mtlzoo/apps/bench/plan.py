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


def _override(key: str, value: Any) -> str:
    if key in NODE_KEYS and isinstance(value, str):
        value = {"name": value}
    return f"{key}={json.dumps(value)}"


#: grid keys that make the method of a row (the rest are settings, each with its own baselines)
METHOD_KEYS = ("model.architecture", "combiner")


def _method(assignment: dict[str, Any], base_cfg: Any) -> str:
    """``sum``, or ``mtan + pcgrad`` when the grid varies the architecture too."""
    combiner = _value_label(
        assignment.get("combiner", OmegaConf.to_container(base_cfg.combiner, resolve=True))
    )
    if "model.architecture" not in assignment:
        return combiner
    return f"{_value_label(assignment['model.architecture'])} + {combiner}"


def plan(spec: BenchSpec, base_cfg: Any) -> list[Cell]:
    """Every cell of the bench: the grid x seeds, then the single-task baselines (one per task
    and setting; methods — combiners and architectures — share them)."""
    keys = list(spec.grid)
    settings_keys = [k for k in keys if k not in METHOD_KEYS]
    cells: list[Cell] = []
    for combo in itertools.product(*(spec.grid[k] for k in keys)) if keys else [()]:
        assignment = dict(zip(keys, combo))
        method = _method(assignment, base_cfg)
        setting = ", ".join(f"{k}={_value_label(assignment[k])}" for k in settings_keys)
        overrides = [_override(k, v) for k, v in assignment.items()]
        for seed in spec.seeds:
            label = "__".join(_slug(f"{k}={_value_label(v)}") for k, v in assignment.items()) or "base"
            cells.append(Cell(f"{label}__seed{seed}", method, overrides, seed, setting=setting))
    if spec.baselines and len(base_cfg.tasks) > 1:
        for combo in itertools.product(*(spec.grid[k] for k in settings_keys)) if settings_keys else [()]:
            assignment = dict(zip(settings_keys, combo))
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


__all__ = ["Cell", "plan", "cell_overrides"]
