"""Benchmarks: run a grid of experiments plus single-task baselines, then write tables.

A bench spec (YAML)::

    name: shapes_combiners
    base: ../../configs/quickstart.yaml   # experiment spec, relative to this file
    overrides: [train.epochs=3]           # applied to every cell, baselines included
    grid:                                 # config key -> values; the cells are the product
      combiner: [sum, uncertainty, {name: pcgrad, wrt: features}]
    seeds: [0, 1, 2]
    baselines: true                       # one single-task run per task, same budget
    split: test                           # split reported (the epoch is chosen on val)
    out_dir: runs/bench                   # where cell run folders go
    results_dir: benchmarks/results       # where <name>.md/.csv/.png go

Every cell is a normal run folder; finished cells are skipped, so re-running the same
command resumes a bench. A failed cell is reported and the others go on. A cell whose folder
holds a run made from a different config (the spec was edited) is reported as failed, never
reused: delete its folder to run it again.

delta-m (Maninis et al. 2019; Vandenhende et al. 2021), as reported in every table::

    delta_m = 1/T * sum_t [ 1/N_t * sum_j (-1)^{l_j} (M_mt,j - M_st,j) / M_st,j ] * 100%

with M_st,j the single-task baseline's metric j of task t (mean over seeds), l_j = 1 when
lower is better, N_t the number of metrics of task t (losses excluded): the relative change
is averaged within each task, then across tasks. Positive means better than the baselines.
"""

from __future__ import annotations

import csv
import itertools
import json
import math
import re
import statistics
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from omegaconf import OmegaConf

from .errors import ConfigError, MtlzooError

DELTA_M_FORMULA = (
    "delta_m = 1/T * sum_t [1/N_t * sum_j (-1)^l_j * (M_mt,j - M_st,j) / M_st,j] * 100%, "
    "l_j = 1 if lower is better; M_st = single-task baseline (mean over seeds); positive = better"
)


@dataclass
class BenchSpec:
    """Schema of a bench spec."""

    name: str = "???"
    base: str = "???"
    overrides: list[str] = field(default_factory=list)
    grid: dict[str, list[Any]] = field(default_factory=dict)
    seeds: list[int] = field(default_factory=lambda: [0])
    baselines: bool = True
    split: str = "test"
    out_dir: str = "runs/bench"
    results_dir: str = "benchmarks/results"
    select: Optional[str] = None


@dataclass
class Cell:
    """One run of the bench: an id, its overrides, and its label in the tables."""

    id: str
    method: str
    overrides: list[str]
    seed: int
    baseline_task: str | None = None
    setting: str = ""


def load_bench(path: str | Path, extra: list[str] | tuple[str, ...] = ()) -> tuple[BenchSpec, Path]:
    """Read and validate a bench spec; ``extra`` are dot-list overrides of the bench spec."""
    from .config import read_spec, validate_options

    path = Path(path)
    raw = read_spec(path, list(extra))
    data = validate_options(OmegaConf.to_container(raw, resolve=True), BenchSpec, "", "the bench spec")
    spec = BenchSpec(**data)
    if not re.fullmatch(r"[\w.-]+", spec.name):
        raise ConfigError(f"name: {spec.name!r} must be usable as a file name (letters, digits, _ . -)")
    base = (path.parent / spec.base).resolve()
    if not base.is_file():
        raise ConfigError(f"base: {spec.base!r} not found (relative to {path.parent})")
    if not spec.seeds:
        raise ConfigError("seeds: give at least one seed")
    for key, values in spec.grid.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"grid.{key}: give a non-empty list of values")
    return spec, base


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


def _override(key: str, value: Any) -> str:
    if key in ("combiner", "model.backbone") and isinstance(value, str):
        value = {"name": value}
    return f"{key}={json.dumps(value)}"


def plan(spec: BenchSpec, base_cfg: Any) -> list[Cell]:
    """Every cell of the bench: the grid x seeds, then the single-task baselines."""
    keys = list(spec.grid)
    settings_keys = [k for k in keys if k != "combiner"]
    cells: list[Cell] = []
    for combo in itertools.product(*(spec.grid[k] for k in keys)) if keys else [()]:
        assignment = dict(zip(keys, combo))
        method = _value_label(assignment.get("combiner", base_cfg.get("combiner", {"name": "sum"})))
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
                overrides = [*(_override(k, v) for k, v in assignment.items()), *others,
                             'combiner={"name": "sum"}']
                for seed in spec.seeds:
                    label = "__".join(_slug(f"{k}={_value_label(v)}") for k, v in assignment.items())
                    cid = f"single_{task}{'__' + label if label else ''}__seed{seed}"
                    cells.append(Cell(cid, f"single-task ({task})", overrides, seed, baseline_task=task,
                                      setting=setting))
    return cells


def _cell_overrides(spec: BenchSpec, cell: Cell, run_dir: Path) -> list[str]:
    out = [*spec.overrides, *cell.overrides, f"seed={cell.seed}", f"train.out_dir={run_dir.parent}",
           f"train.run_name={run_dir.name}", "train.progress=false"]
    if spec.split != "val":
        out.append(f"train.test_split={spec.split}")
    if spec.select and (cell.baseline_task is None or spec.select.startswith(cell.baseline_task + ".")):
        out.append(f"train.select={spec.select}")
    return out


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

    from .config import to_yaml

    saved_file = run_dir / "config.yaml"
    if not saved_file.is_file():
        return
    try:
        saved = _flatten(yaml.safe_load(saved_file.read_text()) or {})
    except yaml.YAMLError as exc:
        raise MtlzooError(f"{saved_file}: unreadable ({str(exc).splitlines()[0]}); "
                          f"delete {run_dir} to run this cell again") from None
    now = _flatten(yaml.safe_load(to_yaml(cfg)))
    changed = sorted(k for k in saved.keys() | now.keys() if saved.get(k, "<unset>") != now.get(k, "<unset>"))
    if changed:
        shown = "; ".join(f"{k}: {saved.get(k, '<unset>')!r} in the run, {now.get(k, '<unset>')!r} now"
                          for k in changed[:3])
        more = f" (+{len(changed) - 3} more)" if len(changed) > 3 else ""
        raise MtlzooError(f"cell {run_dir.name}: its run folder was made with a different config ({shown}{more}); "
                          f"delete {run_dir} to run it again with the current spec, or restore the spec")


def run_cell(spec: BenchSpec, base: Path, cell: Cell, out_dir: Path, log: Any = print) -> dict[str, Any]:
    """Run one cell (or resume it from its last checkpoint); return its summary."""
    from .builder import build
    from .config import load
    from .train import Trainer

    run_dir = out_dir / cell.id
    cfg = load(base, _cell_overrides(spec, cell, run_dir))
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
    trainer = Trainer(build(cfg), run_dir, resume=resume)
    return trainer.fit()


def cell_metrics(summary: dict[str, Any], split: str) -> dict[str, dict[str, float]]:
    """The metrics a bench reports for a run: ``split`` with the checkpoint chosen on val."""
    if split == "val":
        best = summary.get("best") or {}
        return best.get("results") or summary["final"]
    if "test" not in summary:
        raise MtlzooError(f"run {summary.get('name')} has no {split!r} results")
    return summary["test"]


def delta_m(mt: dict[str, dict[str, float]], st: dict[str, dict[str, float]],
            directions: dict[str, dict[str, bool]]) -> tuple[float, dict[str, float]]:
    """delta-m in percent (see the module docstring) and the per-task averages behind it."""
    per_task: dict[str, float] = {}
    for task, metrics in mt.items():
        if task not in st:
            continue
        terms = []
        for key, value in metrics.items():
            if key == "loss" or key not in st[task]:
                continue
            base = st[task][key]
            if base == 0:
                continue
            sign = 1.0 if directions[task][key] else -1.0
            terms.append(sign * (value - base) / abs(base) * 100.0)
        if terms:
            per_task[task] = sum(terms) / len(terms)
    if not per_task:
        return float("nan"), {}
    return sum(per_task.values()) / len(per_task), per_task


def _mean_std(values: list[float]) -> tuple[float, float]:
    values = [v for v in values if not math.isnan(v)]
    if not values:
        return float("nan"), float("nan")
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def _fmt(mean: float, std: float, n: int) -> str:
    if math.isnan(mean):
        return "-"
    return f"{mean:.4f} ± {std:.4f}" if n > 1 else f"{mean:.4f}"


def summarise(spec: BenchSpec, cells: list[Cell], results: dict[str, dict[str, Any]],
              failures: dict[str, str]) -> dict[str, Any]:
    """Aggregate cell summaries into rows: per method/setting, mean and std over seeds."""
    directions: dict[str, dict[str, bool]] = {}
    for s in results.values():
        for task, d in s.get("directions", {}).items():
            directions.setdefault(task, {}).update(d)
    metrics = {c.id: cell_metrics(results[c.id], spec.split) for c in cells if c.id in results}
    baselines: dict[str, dict[str, dict[str, float]]] = {}
    for setting in {c.setting for c in cells}:
        agg: dict[str, dict[str, list[float]]] = {}
        for c in cells:
            if c.baseline_task and c.setting == setting and c.id in metrics:
                for key, v in metrics[c.id][c.baseline_task].items():
                    agg.setdefault(c.baseline_task, {}).setdefault(key, []).append(v)
        baselines[setting] = {t: {k: statistics.fmean(v) for k, v in d.items()} for t, d in agg.items()}
    rows = []
    groups: dict[tuple[str, str], list[Cell]] = {}
    for c in cells:
        groups.setdefault((c.method, c.setting), []).append(c)
    for (method, setting), members in groups.items():
        done = [c for c in members if c.id in metrics]
        row: dict[str, Any] = {"method": method, "setting": setting, "seeds": len(done),
                               "failed": [c.id for c in members if c.id in failures], "metrics": {}}
        per_seed: dict[str, dict[str, list[float]]] = {}
        for c in done:
            for task, vals in metrics[c.id].items():
                for key, v in vals.items():
                    if key != "loss":
                        per_seed.setdefault(task, {}).setdefault(key, []).append(v)
        row["metrics"] = {t: {k: _mean_std(v) for k, v in d.items()} for t, d in per_seed.items()}
        base = baselines.get(setting, {})
        is_baseline = bool(members[0].baseline_task)
        if base and not is_baseline:
            dms, per_task_runs = [], {}
            for c in done:
                dm, per_task = delta_m(metrics[c.id], base, directions)
                dms.append(dm)
                for t, v in per_task.items():
                    per_task_runs.setdefault(t, []).append(v)
            row["delta_m"] = _mean_std(dms)
            row["delta_m_tasks"] = {t: _mean_std(v) for t, v in per_task_runs.items()}
        rows.append(row)
    return {"rows": rows, "directions": directions, "baselines": baselines}


def write_tables(spec: BenchSpec, summary: dict[str, Any], results_dir: Path, command: str,
                 seconds: float, budget: str) -> list[Path]:
    """Write ``<name>.md`` and ``<name>.csv`` (and plots when matplotlib is installed)."""
    results_dir.mkdir(parents=True, exist_ok=True)
    rows = summary["rows"]
    directions = summary["directions"]
    columns = [(t, k) for t in directions for k in directions[t]]
    md = [f"# Benchmark `{spec.name}`", "",
          f"Command: `{command}`  ", f"Reported split: **{spec.split}** (epoch/checkpoint chosen on val).  ",
          f"Budget: {budget}  ", f"Seeds: {spec.seeds}; training time of all cells together {seconds / 60:.1f} min.", "",
          f"Δm: `{DELTA_M_FORMULA}`", "", "Values: mean ± std over seeds. ↑ higher is better, ↓ lower is better.", ""]
    header = ["method", "setting", "seeds", "Δm %"] + [f"{t}.{k} {'↑' if directions[t][k] else '↓'}"
                                                      for t, k in columns]
    md.append("| " + " | ".join(header) + " |")
    md.append("|" + "---|" * len(header))
    csv_rows = []
    for row in rows:
        dm = row.get("delta_m")
        cells = [row["method"], row["setting"] or "-", str(row["seeds"]),
                 _fmt(*dm, row["seeds"]) if dm else "(baseline)" if row["method"].startswith("single") else "-"]
        flat = {"method": row["method"], "setting": row["setting"], "seeds": row["seeds"],
                "delta_m_mean": dm[0] if dm else "", "delta_m_std": dm[1] if dm else ""}
        for t, k in columns:
            ms = row["metrics"].get(t, {}).get(k)
            cells.append(_fmt(*ms, row["seeds"]) if ms else "")
            flat[f"{t}.{k}_mean"] = ms[0] if ms else ""
            flat[f"{t}.{k}_std"] = ms[1] if ms else ""
        for t, ms in (row.get("delta_m_tasks") or {}).items():
            flat[f"delta_m.{t}_mean"], flat[f"delta_m.{t}_std"] = ms
        if row["failed"]:
            cells[0] += f" ({len(row['failed'])} failed)"
        md.append("| " + " | ".join(cells) + " |")
        csv_rows.append(flat)
    md += ["", "Per-task Δm (%), the averages behind Δm:", ""]
    tasks = list(directions)
    md.append("| method | setting | " + " | ".join(tasks) + " |")
    md.append("|" + "---|" * (len(tasks) + 2))
    for row in rows:
        if row.get("delta_m_tasks"):
            md.append(f"| {row['method']} | {row['setting'] or '-'} | "
                      + " | ".join(_fmt(*row["delta_m_tasks"].get(t, (math.nan, 0)), row["seeds"]) for t in tasks)
                      + " |")
    failed = [f for r in rows for f in r["failed"]]
    if failed:
        md += ["", f"Failed cells ({len(failed)}): " + ", ".join(failed)]
    md_path = results_dir / f"{spec.name}.md"
    md_path.write_text("\n".join(md) + "\n")
    csv_path = results_dir / f"{spec.name}.csv"
    keys = sorted({k for r in csv_rows for k in r}, key=lambda k: (k not in ("method", "setting", "seeds"), k))
    with open(csv_path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        writer.writerows(csv_rows)
    paths = [md_path, csv_path]
    paths += _plots(spec, summary, results_dir)
    return paths


def _plots(spec: BenchSpec, summary: dict[str, Any], results_dir: Path) -> list[Path]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # plots are optional: tables never depend on them
        return []
    rows = summary["rows"]
    directions = summary["directions"]
    columns = [(t, k) for t in directions for k in directions[t]]
    if not columns:
        return []
    fig, axes = plt.subplots(1, len(columns), figsize=(2.6 * len(columns), 3.6), squeeze=False)
    for ax, (t, k) in zip(axes[0], columns):
        labels, means = [], []
        for row in rows:
            ms = row["metrics"].get(t, {}).get(k)
            if ms and not math.isnan(ms[0]):
                labels.append(row["method"] + (f"\n{row['setting']}" if row["setting"] else ""))
                means.append(ms[0])
                baseline = row["method"].startswith("single-task")
                # points, not bars from zero: the differences between methods are what the reader looks for
                ax.errorbar(len(means) - 1, ms[0], yerr=ms[1], fmt="o", capsize=3,
                            color="tab:orange" if baseline else "tab:blue")
                if baseline:
                    ax.axhline(ms[0], color="tab:orange", lw=0.6, ls="--")
        ax.margins(x=0.15)
        ax.set_xticks(range(len(means)), labels, rotation=70, fontsize=6)
        ax.set_title(f"{t}.{k} {'↑' if directions[t][k] else '↓'}", fontsize=8)
        ax.tick_params(axis="y", labelsize=7)
    fig.tight_layout()
    bars = results_dir / f"{spec.name}_metrics.png"
    fig.savefig(bars, dpi=110)
    plt.close(fig)
    out = [bars]
    tasks = [t for t in directions if any(r.get("delta_m_tasks", {}).get(t) for r in rows)]
    if len(tasks) >= 2:
        a, b = tasks[:2]
        fig, ax = plt.subplots(figsize=(4.5, 4))
        for row in rows:
            dt = row.get("delta_m_tasks") or {}
            if a in dt and b in dt:
                ax.errorbar(dt[a][0], dt[b][0], xerr=dt[a][1], yerr=dt[b][1], fmt="o", capsize=2)
                ax.annotate(row["method"], (dt[a][0], dt[b][0]), fontsize=7)
        ax.axhline(0, color="grey", lw=0.5)
        ax.axvline(0, color="grey", lw=0.5)
        ax.set_xlabel(f"Δ {a} vs single-task (%)")
        ax.set_ylabel(f"Δ {b} vs single-task (%)")
        ax.set_title("two-task view (up and right is better)", fontsize=9)
        fig.tight_layout()
        pareto = results_dir / f"{spec.name}_pareto.png"
        fig.savefig(pareto, dpi=110)
        plt.close(fig)
        out.append(pareto)
    return out


def budget_text(cfg: Any, results: dict[str, dict[str, Any]]) -> str:
    """The training budget every cell shared, in words, for the table header."""
    t = cfg.train
    steps = sorted({int(r["steps"]) for r in results.values() if "steps" in r})
    devices = sorted({f"{r.get('device', '?')} x{r.get('world_size', 1)}" for r in results.values()})
    backbone = {k: v for k, v in dict(cfg.model.backbone).items()
                if v is not None and not (type(v) is float and v == 0.0)}  # keeps pretrained=False
    crop = cfg.augment.crop
    return (f"{t.epochs} epochs x batch {t.batch_size}"
            + (f" ({'-'.join(map(str, steps))} optimizer steps per run)" if steps else "")
            + f", {t.optimizer.name} lr {t.optimizer.lr}, {t.scheduler.name} schedule, amp {t.amp}; "
            f"backbone {backbone}; data {dict(cfg.data)}"
            + (f", crop {list(crop)}" if crop else "")
            + (f"; ran on {', '.join(devices)}" if devices else ""))


def run_bench(path: str | Path, extra: list[str] | tuple[str, ...] = (), log: Any = print,
              only_plan: bool = False) -> dict[str, Any]:
    """Run (or resume) every cell of a bench spec and write its tables; return the summary."""
    from .config import load

    spec, base = load_bench(path, extra)
    base_cfg = load(base, spec.overrides)  # validates the base spec once, before any cell runs
    cells = plan(spec, base_cfg)
    out_dir = Path(spec.out_dir) / spec.name
    if only_plan:
        for c in cells:
            log(f"{c.id}: {' '.join(c.overrides)}")
        return {"cells": [c.id for c in cells]}
    started = time.time()
    results: dict[str, dict[str, Any]] = {}
    failures: dict[str, str] = {}
    for i, cell in enumerate(cells, 1):
        t0 = time.time()
        try:
            results[cell.id] = run_cell(spec, base, cell, out_dir, log)
            log(f"[{i}/{len(cells)}] {cell.id}: done in {time.time() - t0:.0f}s")
        except Exception as exc:  # noqa: BLE001 - a failed cell must not stop the others
            msg = str(exc).strip().splitlines()
            failures[cell.id] = f"{type(exc).__name__}: {msg[0] if msg else ''}"
            (out_dir / cell.id).mkdir(parents=True, exist_ok=True)
            (out_dir / cell.id / "error.txt").write_text(traceback.format_exc())
            log(f"[{i}/{len(cells)}] {cell.id}: FAILED ({failures[cell.id]}); continuing")
    summary = summarise(spec, cells, results, failures)
    command = "mtlzoo bench " + str(path) + ("" if not extra else " " + " ".join(extra))
    total = sum(float(r.get("seconds", 0)) for r in results.values())
    paths: list[Path] = []
    if results:
        paths = write_tables(spec, summary, Path(spec.results_dir), command, total, budget_text(base_cfg, results))
    else:  # never replace an existing table by an empty one
        log(f"no cell finished: {spec.results_dir}/{spec.name}.* left as they were")
    summary["failures"] = failures
    summary["files"] = [str(p) for p in paths]
    (out_dir / "bench_summary.json").write_text(json.dumps(summary, indent=1, default=str))
    return summary


def cmd_bench(args: Any) -> int:
    """``mtlzoo bench BENCH_SPEC``: run or resume a bench, then write its tables."""
    summary = run_bench(args.spec, args.overrides, only_plan=args.plan)
    if args.plan:
        return 0
    for p in summary["files"]:
        print(f"wrote {p}")
    if summary["failures"]:
        print(f"{len(summary['failures'])} cell(s) failed: " + ", ".join(summary["failures"]))
        return 1
    return 0


def add_bench_command(sub: Any, common: Any) -> None:
    """Add ``mtlzoo bench`` to the CLI."""
    p = sub.add_parser("bench", parents=[common], help="run a benchmark grid and write tables",
                       description="Run every cell of a bench spec (grid x seeds + single-task baselines), "
                                   "skipping finished cells, then write markdown/csv tables with delta-m.")
    p.add_argument("spec", help="bench spec (YAML)")
    p.add_argument("overrides", nargs="*", help="dot-list overrides of the bench spec (e.g. seeds=[0])")
    p.add_argument("--plan", action="store_true", help="list the cells and their overrides, run nothing")
    p.set_defaults(func=cmd_bench)


__all__ = ["run_bench", "delta_m", "plan", "load_bench", "DELTA_M_FORMULA"]
