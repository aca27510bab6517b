"""Statistics and tables of a bench: per-method means and spreads over seeds, and delta-m.

Tables are built from cell records (:mod:`.cells`) alone. Metric keys containing ``/`` are
details (``iou/Sky``: one value of a per-class metric): they never enter the main table,
delta-m or the paired comparison, and have a per-class table of their own. When the runs
mark primary tasks (``tasks.<name>.primary``, listed under ``primary`` in ``summary.json``),
rows also get delta-m over the primary tasks alone (``Δm primary %``).
"""

from __future__ import annotations

import csv
import math
import os
import statistics
from collections.abc import Callable, Sequence
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

#: marks a table built from committed cells (a table without it predates cell files)
CELLS_MARK = "cells committed in"


def is_detail(key: str) -> bool:
    """A detail key (``iou/Sky``): one entry of a per-class metric."""
    return "/" in key


def _number(value: Any) -> float:
    return math.nan if value is None else float(value)


def _clean(metrics: dict[str, dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Metrics with JSON nulls (NaN written as strict JSON) back to NaN."""
    return {t: {k: _number(v) for k, v in vals.items()} for t, vals in metrics.items()}


def cell_metrics(summary: dict[str, Any], split: str) -> dict[str, dict[str, float]]:
    """The metrics a bench reports for a run: ``split`` with the checkpoint chosen on val."""
    if split == "val":
        best = summary.get("best") or {}
        return _clean(best.get("results") or summary["final"])
    if "test" not in summary:
        raise MtlzooError(f"run {summary.get('name')} has no {split!r} results")
    return _clean(summary["test"])


def last_k_metrics(record: dict[str, Any], k: int) -> dict[str, dict[str, float]]:
    """The mean of a cell's last ``k`` evaluations (of its eval split), per task and metric
    (NaN values, e.g. a class absent from the split, are left out of the mean)."""
    split = record["summary"].get("eval_split", "val")
    evals = [h[split] for h in record.get("history", []) if split in h][-k:]
    if not evals:
        raise MtlzooError(f"cell {record['cell']['id']} has no evaluation history for last_k_mean")
    sums: dict[str, dict[str, list[float]]] = {}
    for ev in evals:
        for task, vals in _clean(ev).items():
            for key, v in vals.items():
                sums.setdefault(task, {}).setdefault(key, []).append(v)
    return {
        t: {
            key: statistics.fmean(f) if (f := [v for v in vs if not math.isnan(v)]) else math.nan
            for key, vs in d.items()
        }
        for t, d in sums.items()
    }


def delta_m(
    mt: dict[str, dict[str, float]], st: dict[str, dict[str, float]], directions: dict[str, dict[str, bool]]
) -> tuple[float, dict[str, float]]:
    """delta-m in percent (see the module docstring of :mod:`mtlzoo.apps.bench`) and the
    per-task averages behind it; losses and detail keys are left out."""
    per_task: dict[str, float] = {}
    for task, metrics in mt.items():
        if task not in st:
            continue
        terms = []
        for key, value in metrics.items():
            if key == "loss" or is_detail(key) or key not in st[task] or key not in directions.get(task, {}):
                continue
            base = st[task][key]
            if base == 0 or math.isnan(base) or math.isnan(value):
                continue
            sign = 1.0 if directions[task][key] else -1.0
            terms.append(sign * (value - base) / abs(base) * 100.0)
        if terms:
            per_task[task] = sum(terms) / len(terms)
    if not per_task:
        return float("nan"), {}
    return sum(per_task.values()) / len(per_task), per_task


def primary_tasks(records: dict[str, dict[str, Any]]) -> list[str]:
    """The primary tasks the cells' runs marked (``summary["primary"]``), in order of appearance."""
    out: list[str] = []
    for r in records.values():
        for t in r["summary"].get("primary") or []:
            if t not in out:
                out.append(t)
    return out


def _mean_std(values: list[float]) -> tuple[float, float]:
    values = [v for v in values if not math.isnan(v)]
    if not values:
        return float("nan"), float("nan")
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def _fmt(mean_std: Sequence[float], n: int) -> str:
    """``mean ± std`` of ``n`` seeds (the mean alone for one seed; ``-`` for NaN)."""
    mean, std = mean_std
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
    counts, its wall time per optimizer step (``seconds / steps``: training with the
    evaluation passes of the run, on the run's device) and in all (``seconds``, or the sum of
    its epochs' times where that is larger: a resumed run's summary written before mtlzoo
    counted the epochs before the resume); NaN where the summary lacks them."""
    params = summary.get("parameters") or {}
    steps, seconds = summary.get("steps"), summary.get("seconds")
    total = (summary.get("timing") or {}).get("total")
    if seconds is not None and total is not None:
        # summaries of resumed runs written before mtlzoo counted the epochs before the resume
        # give only the last session's wall time; the epochs' own times add up to more then
        seconds = max(float(seconds), float(total))
    return {
        "shared": float(params.get("shared", math.nan)),
        "total": float(params.get("total", math.nan)),
        "step_seconds": float(seconds) / float(steps) if steps and seconds is not None else math.nan,
        "seconds": float(seconds) if seconds is not None else math.nan,
    }


def _directions(
    records: dict[str, dict[str, Any]],
) -> tuple[dict[str, dict[str, bool]], dict[str, dict[str, bool]]]:
    """``(main, details)``: the direction of every main metric that has values, and of every
    detail key (a detail ``iou/Sky`` takes the direction of its metric ``iou``)."""
    declared: dict[str, dict[str, bool]] = {}
    for r in records.values():
        for task, d in r["summary"].get("directions", {}).items():
            declared.setdefault(task, {}).update(d)
    seen: dict[str, list[str]] = {}
    for r in records.values():
        s = r["summary"]
        for block in (s.get("final") or {}, (s.get("best") or {}).get("results") or {}, s.get("test") or {}):
            for task, vals in block.items():
                for key in vals:
                    if key not in seen.setdefault(task, []):
                        seen[task].append(key)
    main: dict[str, dict[str, bool]] = {}
    details: dict[str, dict[str, bool]] = {}
    for task, d in declared.items():
        keys = seen.get(task, [])
        for key, higher in d.items():
            if is_detail(key):
                continue
            if key in keys or not keys:
                main.setdefault(task, {})[key] = higher
            for k in keys:
                if k.startswith(key + "/"):
                    details.setdefault(task, {})[k] = higher
    return main, details


def summarise(
    spec: BenchSpec,
    cells: list[Cell],
    records: dict[str, dict[str, Any]],
    failures: dict[str, str],
    metrics_of: Callable[[dict[str, Any]], dict[str, dict[str, float]]] | None = None,
) -> dict[str, Any]:
    """Aggregate cell records into rows: per method/setting, mean and std over seeds.

    ``metrics_of(record)``: the metrics a cell reports (default: the reported split with the
    checkpoint chosen on val, :func:`cell_metrics`)."""
    if metrics_of is None:

        def metrics_of(record: dict[str, Any]) -> dict[str, dict[str, float]]:
            return cell_metrics(record["summary"], spec.split)

    directions, detail_directions = _directions(records)
    dm_directions = directions
    chosen = getattr(spec, "delta_m_metrics", None)
    if chosen:
        dm_directions = {
            t: {k: v for k, v in d.items() if k in chosen.get(t, ())} for t, d in directions.items()
        }
    metrics = {c.id: metrics_of(records[c.id]) for c in cells if c.id in records}
    baselines: dict[str, dict[str, dict[str, float]]] = {}
    for setting in {c.setting for c in cells}:
        agg: dict[str, dict[str, list[float]]] = {}
        for c in cells:
            if c.baseline_task and c.setting == setting and c.id in metrics:
                for key, v in metrics[c.id].get(c.baseline_task, {}).items():
                    agg.setdefault(c.baseline_task, {}).setdefault(key, []).append(v)
        baselines[setting] = {t: {k: _mean_std(v)[0] for k, v in d.items()} for t, d in agg.items()}
    paired = paired_rows(cells, metrics, directions)
    primary = primary_tasks(records)
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
            "planned": len(members),
            "baseline_task": members[0].baseline_task,
            "failed": [c.id for c in members if c.id in failures],
            "metrics": {},
            "details": {},
        }
        per_seed: dict[str, dict[str, list[float]]] = {}
        for c in done:
            for task, vals in metrics[c.id].items():
                for key, v in vals.items():
                    if key != "loss":
                        per_seed.setdefault(task, {}).setdefault(key, []).append(v)
        for t, d in per_seed.items():
            for k, seed_values in d.items():
                (row["details"] if is_detail(k) else row["metrics"]).setdefault(t, {})[k] = _mean_std(
                    seed_values
                )
        costs = [cell_cost(records[c.id]["summary"]) for c in done]
        # the counts are the same for every seed of a row; the times are averaged over seeds
        row["parameters"] = {k: _mean_std([c[k] for c in costs])[0] for k in ("shared", "total")}
        row["step_seconds"] = _mean_std([c["step_seconds"] for c in costs])
        row["cell_seconds"] = _mean_std([c["seconds"] for c in costs])
        base = baselines.get(setting, {})
        is_baseline = bool(members[0].baseline_task)
        if base and not is_baseline and done:
            dms: list[float] = []
            per_task_runs: dict[str, list[float]] = {}
            for c in done:
                dm, per_task = delta_m(metrics[c.id], base, dm_directions)
                dms.append(dm)
                for t, v in per_task.items():
                    per_task_runs.setdefault(t, []).append(v)
            row["delta_m"] = _mean_std(dms)
            row["delta_m_tasks"] = {t: _mean_std(v) for t, v in per_task_runs.items()}
            if primary:  # delta-m of the tasks the runs are for, beside that of all tasks
                only = [{t: v for t, v in metrics[c.id].items() if t in primary} for c in done]
                row["delta_m_primary"] = _mean_std([delta_m(m, base, dm_directions)[0] for m in only])
        if not is_baseline and (method, setting) in paired:
            row["paired"] = paired[(method, setting)]
        rows.append(row)
    return {
        "rows": rows,
        "directions": directions,
        "detail_directions": detail_directions,
        "baselines": baselines,
        "primary": primary,
    }


def _main_table(
    rows: list[dict[str, Any]], directions: dict[str, dict[str, bool]]
) -> tuple[list[str], list[dict]]:
    """The markdown lines and csv rows of the main table."""
    columns = [(t, k) for t in directions for k in directions[t]]
    with_primary = any("delta_m_primary" in row for row in rows)
    header = [
        "method",
        "setting",
        "seeds",
        "Δm %",
        *(["Δm primary %"] if with_primary else []),
        "parameters (shared / total)",
        "s / step",
        "min / cell",
    ] + [f"{t}.{k} {'↑' if directions[t][k] else '↓'}" for t, k in columns]
    md = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    csv_rows = []
    for row in rows:
        dm = row.get("delta_m")
        seeds = (
            f"{row['seeds']}"
            if row["seeds"] == row.get("planned", row["seeds"])
            else f"{row['seeds']}/{row['planned']}"
        )
        cells = [
            row["method"],
            row["setting"] or "-",
            seeds,
            _fmt(dm, row["seeds"]) if dm else "(baseline)" if row["method"].startswith("single") else "-",
        ]
        if with_primary:
            dmp = row.get("delta_m_primary")
            cells.append(_fmt(dmp, row["seeds"]) if dmp else "-")
        params, step = row.get("parameters", {}), row.get("step_seconds", (math.nan, math.nan))
        cell_s = row.get("cell_seconds", (math.nan, math.nan))
        shared, total = params.get("shared", math.nan), params.get("total", math.nan)
        cells.append("-" if math.isnan(total) else f"{_count(shared)} / {_count(total)}")
        cells.append("-" if math.isnan(step[0]) else f"{step[0]:.2f}")
        cells.append("-" if math.isnan(cell_s[0]) else f"{cell_s[0] / 60:.1f}")
        flat = {
            "method": row["method"],
            "setting": row["setting"],
            "seeds": row["seeds"],
            "delta_m_mean": dm[0] if dm else "",
            "delta_m_std": dm[1] if dm else "",
            **(
                {
                    "delta_m_primary_mean": row["delta_m_primary"][0],
                    "delta_m_primary_std": row["delta_m_primary"][1],
                }
                if "delta_m_primary" in row
                else {}
            ),
            "parameters_shared": "" if math.isnan(shared) else int(shared),
            "parameters_total": "" if math.isnan(total) else int(total),
            "step_seconds_mean": "" if math.isnan(step[0]) else round(step[0], 4),
            "step_seconds_std": "" if math.isnan(step[1]) else round(step[1], 4),
            "cell_seconds_mean": "" if math.isnan(cell_s[0]) else round(cell_s[0], 1),
        }
        for t, k in columns:
            ms = row["metrics"].get(t, {}).get(k)
            cells.append(_fmt(ms, row["seeds"]) if ms else "")
            flat[f"{t}.{k}_mean"] = ms[0] if ms else ""
            flat[f"{t}.{k}_std"] = ms[1] if ms else ""
        for t, ms in (row.get("delta_m_tasks") or {}).items():
            flat[f"delta_m.{t}_mean"], flat[f"delta_m.{t}_std"] = ms
        if row["failed"]:
            cells[0] += f" ({len(row['failed'])} failed)"
        md.append("| " + " | ".join(cells) + " |")
        csv_rows.append(flat)
    tasks = list(directions)
    md += ["", "Per-task Δm (%), the averages behind Δm:", ""]
    md.append("| method | setting | " + " | ".join(tasks) + " |")
    md.append("|" + "---|" * (len(tasks) + 2))
    for row in rows:
        if row.get("delta_m_tasks"):
            md.append(
                f"| {row['method']} | {row['setting'] or '-'} | "
                + " | ".join(_fmt(row["delta_m_tasks"].get(t, (math.nan, 0)), row["seeds"]) for t in tasks)
                + " |"
            )
    return md, csv_rows


def per_class_rows(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """One entry per (row, task, detail key): mean and std over seeds and, for multi-task rows,
    the difference of the means from the single-task row of the same task and setting."""
    rows = summary["rows"]
    single = {(r["baseline_task"], r["setting"]): r for r in rows if r.get("baseline_task")}
    out = []
    for row in rows:
        for task, keys in summary.get("detail_directions", {}).items():
            base = single.get((task, row["setting"]))
            for key, higher in keys.items():
                ms = row["details"].get(task, {}).get(key)
                if ms is None:
                    continue
                diff = math.nan
                if base is not None and not row.get("baseline_task"):
                    b = base["details"].get(task, {}).get(key)
                    if b is not None:
                        diff = ms[0] - b[0]
                out.append(
                    {
                        "method": row["method"],
                        "setting": row["setting"],
                        "seeds": row["seeds"],
                        "task": task,
                        "metric": key.split("/", 1)[0],
                        "class": key.split("/", 1)[1],
                        "higher_is_better": higher,
                        "mean": ms[0],
                        "std": ms[1],
                        "diff_vs_single_task": diff,
                    }
                )
    return out


def per_class_markdown(entries: list[dict[str, Any]]) -> list[str]:
    """Per task and per-class metric: one line per class, the single-task value then every
    multi-task row's value with its difference from the single-task model (which classes
    gain and which lose)."""
    md: list[str] = []
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for e in entries:
        groups.setdefault((e["task"], e["metric"]), []).append(e)
    for (task, metric), group in groups.items():
        columns: list[tuple[str, str]] = []
        for e in group:
            if (e["method"], e["setting"]) not in columns:
                columns.append((e["method"], e["setting"]))
        classes: list[str] = []
        for e in group:
            if e["class"] not in classes:
                classes.append(e["class"])
        value = {(e["method"], e["setting"], e["class"]): e for e in group}
        arrow = "↑" if group[0]["higher_is_better"] else "↓"
        md += [
            "",
            f"Per-class `{task}.{metric}` {arrow} (mean over seeds; in brackets the difference from the "
            "single-task model of the same setting, + = higher):",
            "",
            "| class | " + " | ".join(m + (f" ({s})" if s else "") for m, s in columns) + " |",
            "|" + "---|" * (len(columns) + 1),
        ]
        for cls in classes:
            cells = []
            for m, s in columns:
                entry = value.get((m, s, cls))
                if entry is None or math.isnan(entry["mean"]):
                    cells.append("-")
                    continue
                d = entry["diff_vs_single_task"]
                cells.append(f"{entry['mean']:.4f}" + ("" if math.isnan(d) else f" ({d:+.4f})"))
            md.append(f"| {cls} | " + " | ".join(cells) + " |")
        gains = {}
        for m, s in columns:
            ds = [value[(m, s, c)]["diff_vs_single_task"] for c in classes if (m, s, c) in value]
            ds = [d for d in ds if not math.isnan(d)]
            if ds:
                up = sum((d > 0) == group[0]["higher_is_better"] and d != 0 for d in ds)
                gains[m + (f" ({s})" if s else "")] = f"{up}/{len(ds)}"
        if gains:
            md += [
                "",
                "Classes better than single-task: " + ", ".join(f"{k} {v}" for k, v in gains.items()) + ".",
            ]
    return md


def _write_csv(
    path: Path, rows: list[dict[str, Any]], first: tuple[str, ...] = ("method", "setting", "seeds")
) -> None:
    keys = sorted(
        {k for r in rows for k in r}, key=lambda k: (k not in first, first.index(k) if k in first else 0, k)
    )
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)


def write_tables(
    spec: BenchSpec,
    summary: dict[str, Any],
    results_dir: Path,
    header: list[str],
    last_k: dict[str, Any] | None = None,
) -> list[Path]:
    """Write ``<name>.md`` and ``<name>.csv``, ``<name>_per_class.csv`` when a task has a
    per-class metric, ``<name>_last<K>.csv`` with ``report: last_k_mean``, and plots when
    matplotlib is installed. ``header``: the lines under the title (command, budget,
    machines, cells); ``last_k``: the :func:`summarise` of the last-K means."""
    results_dir.mkdir(parents=True, exist_ok=True)
    rows = summary["rows"]
    directions = summary["directions"]
    md = [
        f"# Benchmark `{spec.name}`",
        "",
        *header,
        "",
        f"Δm: `{DELTA_M_FORMULA}`"
        + (
            " over " + "; ".join(f"{t}: {', '.join(ks)}" for t, ks in spec.delta_m_metrics.items())
            if spec.delta_m_metrics
            else ""
        ),
        *(
            ["", f"Δm primary: the same over the primary tasks only ({', '.join(summary['primary'])})."]
            if summary.get("primary")
            else []
        ),
        "",
        "Values: mean ± std over seeds (a row with n/m seeds has n of its m cells committed). ↑ higher "
        "is better, ↓ lower is better. Parameters: the model's trainable parameters shared by the tasks "
        "/ in all (`num_parameters()`); s / step: wall seconds per optimizer step of a run (its training "
        "and evaluation time over its steps, mean over seeds; on a shared machine it also measures the "
        "load); min / cell: wall minutes of a cell (mean over seeds).",
        "",
        f"**Best on val** (the default): {spec.split} metrics of the checkpoint with the best validation "
        "value of the selection metric.",
        "",
    ]
    table, csv_rows = _main_table(rows, directions)
    md += table
    md += paired_markdown(rows, list(directions))
    paths: list[Path] = []
    if last_k is not None:
        k = spec.last_k
        eval_split = last_k.get("eval_split", "val")
        md += [
            "",
            f"**Last-{k} mean on {eval_split}**"
            + (
                ""
                if eval_split == spec.split
                else f" (not {spec.split}: the runs evaluate {eval_split} at every epoch, so these figures "
                f"are not comparable with the {spec.split} table above)"
            )
            + f": each cell's mean over its last {k} evaluations (the protocol of the Nash-MTL, CAGrad and "
            "FAMO code, which evaluate their test split every epoch and report the mean of the last 10), "
            f"then mean ± std over seeds; Δm against the single-task models' last-{k} means.",
            "",
        ]
        k_table, k_csv = _main_table(last_k["rows"], last_k["directions"])
        md += k_table
        k_path = results_dir / f"{spec.name}_last{k}.csv"
        _write_csv(k_path, k_csv)
        paths.append(k_path)
    per_class = per_class_rows(summary)
    if per_class:
        md += per_class_markdown(per_class)
        pc_path = results_dir / f"{spec.name}_per_class.csv"
        _write_csv(pc_path, per_class, ("method", "setting", "seeds", "task", "metric", "class"))
        paths.append(pc_path)
    failed = [f for r in rows for f in r["failed"]]
    if failed:
        md += ["", f"Failed cells ({len(failed)}): " + ", ".join(failed)]
    md_path = results_dir / f"{spec.name}.md"
    md_path.write_text("\n".join(md) + "\n")
    csv_path = results_dir / f"{spec.name}.csv"
    _write_csv(csv_path, csv_rows)
    from .plots import write_plots

    return [md_path, csv_path, *paths, *write_plots(spec, summary, results_dir)]


def budget_text(cfg: Any, summaries: list[dict[str, Any]]) -> str:
    """The training budget every cell shared, in words, for the table header."""
    t = cfg.train
    steps = sorted({int(r["steps"]) for r in summaries if "steps" in r})
    backbone = {
        k: v
        for k, v in dict(cfg.model.backbone).items()
        if v is not None and not (type(v) is float and v == 0.0)
    }  # keeps pretrained=False
    crop = cfg.augment.crop
    data = dict(cfg.data)
    if isinstance(data.get("root"), str) and os.path.isabs(data["root"]):
        # the table is read on other machines: this machine's absolute path means nothing there
        data["root"] = os.path.relpath(data["root"])
    return (
        f"{t.epochs} epoch{'' if t.epochs == 1 else 's'} x batch {t.batch_size}"
        + (f" ({'-'.join(map(str, steps))} optimizer steps per run)" if steps else "")
        + f", {t.optimizer.name} lr {t.optimizer.lr}, {t.scheduler.name} schedule, amp {t.amp}; "
        f"backbone {backbone}; data {data}" + (f", crop {list(crop)}" if crop else "")
    )


__all__ = [
    "CELLS_MARK",
    "is_detail",
    "cell_metrics",
    "last_k_metrics",
    "cell_cost",
    "delta_m",
    "primary_tasks",
    "summarise",
    "per_class_rows",
    "write_tables",
    "budget_text",
    "DELTA_M_FORMULA",
]
