"""Statistics and tables of a bench: per-method means and spreads over seeds, and delta-m."""

from __future__ import annotations

import csv
import math
import statistics
from pathlib import Path
from typing import Any

from ...contract.errors import MtlzooError
from .paired import paired_markdown, paired_rows
from .plan import Cell
from .spec import BenchSpec

DELTA_M_FORMULA = (
    "delta_m = 1/T * sum_t [1/N_t * sum_j (-1)^l_j * (M_mt,j - M_st,j) / M_st,j] * 100%, "
    "l_j = 1 if lower is better; M_st = single-task baseline (mean over seeds); positive = better"
)


def cell_metrics(summary: dict[str, Any], split: str) -> dict[str, dict[str, float]]:
    """The metrics a bench reports for a run: ``split`` with the checkpoint chosen on val."""
    if split == "val":
        best = summary.get("best") or {}
        return best.get("results") or summary["final"]
    if "test" not in summary:
        raise MtlzooError(f"run {summary.get('name')} has no {split!r} results")
    return summary["test"]


def delta_m(
    mt: dict[str, dict[str, float]], st: dict[str, dict[str, float]], directions: dict[str, dict[str, bool]]
) -> tuple[float, dict[str, float]]:
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


def _count(n: float) -> str:
    """A parameter count in words: ``12.71M``, ``84.3k``, ``950``."""
    if math.isnan(n):
        return "-"
    return f"{n / 1e6:.2f}M" if n >= 1e6 else f"{n / 1e3:.1f}k" if n >= 1e3 else f"{int(n)}"


def cell_cost(summary: dict[str, Any]) -> dict[str, float]:
    """What a run cost, from its ``summary.json``: its ``shared`` and ``total`` parameter
    counts and its wall time per optimizer step (``seconds / steps``: training with the
    evaluation passes of the run, on the run's device); NaN where the summary lacks them."""
    params = summary.get("parameters") or {}
    steps, seconds = summary.get("steps"), summary.get("seconds")
    return {
        "shared": float(params.get("shared", math.nan)),
        "total": float(params.get("total", math.nan)),
        "step_seconds": float(seconds) / float(steps) if steps and seconds is not None else math.nan,
    }


def summarise(
    spec: BenchSpec, cells: list[Cell], results: dict[str, dict[str, Any]], failures: dict[str, str]
) -> dict[str, Any]:
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
    paired = paired_rows(cells, metrics, directions)
    rows = []
    groups: dict[tuple[str, str], list[Cell]] = {}
    for c in cells:
        groups.setdefault((c.method, c.setting), []).append(c)
    for (method, setting), members in groups.items():
        done = [c for c in members if c.id in metrics]
        row: dict[str, Any] = {
            "method": method,
            "setting": setting,
            "seeds": len(done),
            "failed": [c.id for c in members if c.id in failures],
            "metrics": {},
        }
        per_seed: dict[str, dict[str, list[float]]] = {}
        for c in done:
            for task, vals in metrics[c.id].items():
                for key, v in vals.items():
                    if key != "loss":
                        per_seed.setdefault(task, {}).setdefault(key, []).append(v)
        row["metrics"] = {t: {k: _mean_std(v) for k, v in d.items()} for t, d in per_seed.items()}
        costs = [cell_cost(results[c.id]) for c in done]
        # the counts are the same for every seed of a row; the step time is averaged over seeds
        row["parameters"] = {k: _mean_std([c[k] for c in costs])[0] for k in ("shared", "total")}
        row["step_seconds"] = _mean_std([c["step_seconds"] for c in costs])
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
        if not is_baseline and (method, setting) in paired:
            row["paired"] = paired[(method, setting)]
        rows.append(row)
    return {"rows": rows, "directions": directions, "baselines": baselines}


def write_tables(
    spec: BenchSpec, summary: dict[str, Any], results_dir: Path, command: str, seconds: float, budget: str
) -> list[Path]:
    """Write ``<name>.md`` and ``<name>.csv`` (and plots when matplotlib is installed)."""
    results_dir.mkdir(parents=True, exist_ok=True)
    rows = summary["rows"]
    directions = summary["directions"]
    columns = [(t, k) for t in directions for k in directions[t]]
    md = [
        f"# Benchmark `{spec.name}`",
        "",
        f"Command: `{command}`  ",
        f"Reported split: **{spec.split}** (epoch/checkpoint chosen on val).  ",
        f"Budget: {budget}  ",
        f"Seeds: {spec.seeds}; training time of all cells together {seconds / 60:.1f} min.",
        "",
        f"Δm: `{DELTA_M_FORMULA}`",
        "",
        "Values: mean ± std over seeds. ↑ higher is better, ↓ lower is better. Parameters: the "
        "model's trainable parameters shared by the tasks / in all (`num_parameters()`); s / step: "
        "wall seconds per optimizer step of a run (its training and evaluation time over its steps, "
        "mean over seeds; on a shared machine it also measures the load).",
        "",
    ]
    header = ["method", "setting", "seeds", "Δm %", "parameters (shared / total)", "s / step"] + [
        f"{t}.{k} {'↑' if directions[t][k] else '↓'}" for t, k in columns
    ]
    md.append("| " + " | ".join(header) + " |")
    md.append("|" + "---|" * len(header))
    csv_rows = []
    for row in rows:
        dm = row.get("delta_m")
        cells = [
            row["method"],
            row["setting"] or "-",
            str(row["seeds"]),
            _fmt(*dm, row["seeds"]) if dm else "(baseline)" if row["method"].startswith("single") else "-",
        ]
        params, step = row.get("parameters", {}), row.get("step_seconds", (math.nan, math.nan))
        shared, total = params.get("shared", math.nan), params.get("total", math.nan)
        cells.append("-" if math.isnan(total) else f"{_count(shared)} / {_count(total)}")
        cells.append("-" if math.isnan(step[0]) else f"{step[0]:.2f}")
        flat = {
            "method": row["method"],
            "setting": row["setting"],
            "seeds": row["seeds"],
            "delta_m_mean": dm[0] if dm else "",
            "delta_m_std": dm[1] if dm else "",
            "parameters_shared": "" if math.isnan(shared) else int(shared),
            "parameters_total": "" if math.isnan(total) else int(total),
            "step_seconds_mean": "" if math.isnan(step[0]) else round(step[0], 4),
            "step_seconds_std": "" if math.isnan(step[1]) else round(step[1], 4),
        }
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
            md.append(
                f"| {row['method']} | {row['setting'] or '-'} | "
                + " | ".join(_fmt(*row["delta_m_tasks"].get(t, (math.nan, 0)), row["seeds"]) for t in tasks)
                + " |"
            )
    md += paired_markdown(rows, tasks)
    failed = [f for r in rows for f in r["failed"]]
    if failed:
        md += ["", f"Failed cells ({len(failed)}): " + ", ".join(failed)]
    md_path = results_dir / f"{spec.name}.md"
    md_path.write_text("\n".join(md) + "\n")
    csv_path = results_dir / f"{spec.name}.csv"
    keys = sorted(
        {k for r in csv_rows for k in r}, key=lambda k: (k not in ("method", "setting", "seeds"), k)
    )
    with open(csv_path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        writer.writerows(csv_rows)
    paths = [md_path, csv_path]
    from .plots import write_plots

    paths += write_plots(spec, summary, results_dir)
    return paths


def budget_text(cfg: Any, results: dict[str, dict[str, Any]]) -> str:
    """The training budget every cell shared, in words, for the table header."""
    t = cfg.train
    steps = sorted({int(r["steps"]) for r in results.values() if "steps" in r})
    devices = sorted({f"{r.get('device', '?')} x{r.get('world_size', 1)}" for r in results.values()})
    backbone = {
        k: v
        for k, v in dict(cfg.model.backbone).items()
        if v is not None and not (type(v) is float and v == 0.0)
    }  # keeps pretrained=False
    crop = cfg.augment.crop
    return (
        f"{t.epochs} epoch{'' if t.epochs == 1 else 's'} x batch {t.batch_size}"
        + (f" ({'-'.join(map(str, steps))} optimizer steps per run)" if steps else "")
        + f", {t.optimizer.name} lr {t.optimizer.lr}, {t.scheduler.name} schedule, amp {t.amp}; "
        f"backbone {backbone}; data {dict(cfg.data)}"
        + (f", crop {list(crop)}" if crop else "")
        + (f"; ran on {', '.join(devices)}" if devices else "")
    )


__all__ = [
    "cell_metrics",
    "cell_cost",
    "delta_m",
    "summarise",
    "write_tables",
    "budget_text",
    "DELTA_M_FORMULA",
]
