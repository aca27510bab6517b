"""Running a bench: every cell a normal run folder, finished cells skipped, failures reported."""

from __future__ import annotations

import json
import time
import traceback
from pathlib import Path
from typing import Any

from ...contract.errors import MtlzooError, one_line
from ...runtime.files import spec_yaml
from ...zoo.zoo import Zoo
from .plan import Cell, cell_overrides, plan
from .report import budget_text, summarise, write_tables
from .spec import BenchSpec, load_bench


def _flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for key, value in node.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): node}


def _check_same_config(cfg: Any, run_dir: Path) -> None:
    """Refuse to reuse (or resume) a cell whose run folder was made from a different config:
    an edited bench spec must never mix old results into new tables."""
    import yaml

    saved_file = run_dir / "config.yaml"
    if not saved_file.is_file():
        return
    try:
        saved = _flatten(yaml.safe_load(saved_file.read_text()) or {})
    except yaml.YAMLError as exc:
        raise MtlzooError(
            f"{saved_file}: unreadable ({str(exc).splitlines()[0]}); delete {run_dir} to run this cell again"
        ) from None
    now = _flatten(yaml.safe_load(spec_yaml(cfg)))
    changed = sorted(k for k in saved.keys() | now.keys() if saved.get(k, "<unset>") != now.get(k, "<unset>"))
    if changed:
        shown = "; ".join(
            f"{k}: {saved.get(k, '<unset>')!r} in the run, {now.get(k, '<unset>')!r} now" for k in changed[:3]
        )
        more = f" (+{len(changed) - 3} more)" if len(changed) > 3 else ""
        raise MtlzooError(
            f"cell {run_dir.name}: its run folder was made with a different config ({shown}{more}); "
            f"delete {run_dir} to run it again with the current spec, or restore the spec"
        )


def run_cell(zoo: Zoo, spec: BenchSpec, base: Path, cell: Cell, out_dir: Path) -> dict[str, Any]:
    """Run one cell (or resume it from its last checkpoint); return its summary."""
    from ...runtime.train import Trainer

    run_dir = out_dir / cell.id
    cfg = zoo.spec(base, cell_overrides(spec, cell, run_dir))
    _check_same_config(cfg, run_dir)
    summary_file = run_dir / "summary.json"
    if summary_file.is_file():
        return json.loads(summary_file.read_text())
    resume = None
    if (run_dir / "checkpoints" / "last" / "weights.safetensors").is_file():
        resume = run_dir / "checkpoints" / "last"
    else:
        run_dir.mkdir(parents=True, exist_ok=True)
        stale = run_dir / "metrics.jsonl"
        if stale.exists():  # an interrupted first epoch: keep its log aside, start again
            stale.rename(run_dir / f"metrics.interrupted-{int(time.time())}.jsonl")
    trainer = Trainer(zoo.build(cfg), run_dir, resume=resume)
    return trainer.fit()


def run_bench(
    path: str | Path,
    extra: list[str] | tuple[str, ...] = (),
    log: Any = print,
    only_plan: bool = False,
    zoo: Zoo | None = None,
) -> dict[str, Any]:
    """Run (or resume) every cell of a bench spec and write its tables; return the summary.

    ``zoo``: the plugins to build with (default: the zoo the base spec's ``plugins`` section
    asks for)."""
    spec, base = load_bench(path, extra)
    if zoo is None:
        zoo, _ = Zoo.for_spec(base, spec.overrides)
    base_cfg = zoo.spec(base, spec.overrides)  # validates the base spec once, before any cell runs
    cells = plan(spec, base_cfg)
    out_dir = Path(spec.out_dir) / spec.name
    if only_plan:
        for c in cells:
            log(f"{c.id}: {' '.join(c.overrides)}")
        return {"cells": [c.id for c in cells]}
    results: dict[str, dict[str, Any]] = {}
    failures: dict[str, str] = {}
    for i, cell in enumerate(cells, 1):
        t0 = time.time()
        try:
            results[cell.id] = run_cell(zoo, spec, base, cell, out_dir)
            log(f"[{i}/{len(cells)}] {cell.id}: done in {time.time() - t0:.0f}s")
        except Exception as exc:  # noqa: BLE001 - a failed cell must not stop the others
            failures[cell.id] = one_line(exc)
            (out_dir / cell.id).mkdir(parents=True, exist_ok=True)
            (out_dir / cell.id / "error.txt").write_text(traceback.format_exc())
            log(f"[{i}/{len(cells)}] {cell.id}: FAILED ({failures[cell.id]}); continuing")
    summary = summarise(spec, cells, results, failures)
    command = "mtlzoo bench " + str(path) + ("" if not extra else " " + " ".join(extra))
    total = sum(float(r.get("seconds", 0)) for r in results.values())
    paths: list[Path] = []
    if results:
        paths = write_tables(
            spec, summary, Path(spec.results_dir), command, total, budget_text(base_cfg, results)
        )
    else:  # never replace an existing table by an empty one
        log(f"no cell finished: {spec.results_dir}/{spec.name}.* left as they were")
    summary["failures"] = failures
    summary["files"] = [str(p) for p in paths]
    (out_dir / "bench_summary.json").write_text(json.dumps(summary, indent=1, default=str))
    return summary


__all__ = ["run_cell", "run_bench"]
