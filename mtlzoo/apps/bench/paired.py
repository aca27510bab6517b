"""Paired comparisons of a bench row against the single-task baselines, seed by seed.

A multi-task cell and the single-task cell of the same task, setting and seed share the
seed (and so the data order and the initialisation of what they share in shape). For each
task's primary metric (its first) the table reports, over the seeds both have:

* the mean of the per-seed differences ``M_mt(seed) - M_st(seed)`` (positive = the multi-task
  model has the higher value; read with the metric's arrow);
* its 95% Student-t interval ``mean ± t_{0.975, n-1} * sd / sqrt(n)`` (none for one pair);
* in how many pairs the multi-task model is better (by the metric's direction).
"""

from __future__ import annotations

import math
import statistics
from typing import Any

#: the confidence level of the intervals
LEVEL = 0.95


def t_interval(diffs: list[float], level: float = LEVEL) -> tuple[float, float, float]:
    """``(mean, low, high)`` of the Student-t interval of the mean of ``diffs`` (low and high
    are NaN for fewer than two values)."""
    from scipy import stats  # here: `mtlzoo list` never imports scipy

    mean = statistics.fmean(diffs)
    if len(diffs) < 2:
        return mean, math.nan, math.nan
    half = stats.t.ppf(0.5 + level / 2, len(diffs) - 1) * statistics.stdev(diffs) / math.sqrt(len(diffs))
    return mean, mean - half, mean + half


def paired_rows(
    cells: list[Any], metrics: dict[str, dict[str, dict[str, float]]], directions: dict[str, dict[str, bool]]
) -> dict[tuple[str, str], dict[str, dict[str, Any]]]:
    """``{(method, setting): {task: comparison}}`` for every multi-task row and every task
    with a single-task baseline; ``comparison`` holds ``metric``, ``higher_is_better``, ``n``,
    ``mean``, ``low``, ``high``, ``wins``."""
    base = {
        (c.setting, c.baseline_task, c.seed): metrics[c.id][c.baseline_task]
        for c in cells
        if c.baseline_task and c.id in metrics and c.baseline_task in metrics[c.id]
    }
    out: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}
    for c in cells:
        if c.baseline_task or c.id not in metrics:
            continue
        for task, values in metrics[c.id].items():
            keys = [k for k in directions.get(task, {}) if k in values]
            st = base.get((c.setting, task, c.seed))
            if not keys or st is None or keys[0] not in st:
                continue
            entry = out.setdefault((c.method, c.setting), {}).setdefault(
                task, {"metric": keys[0], "higher_is_better": directions[task][keys[0]], "diffs": []}
            )
            entry["diffs"].append(values[keys[0]] - st[keys[0]])
    for row in out.values():
        for entry in row.values():
            diffs = entry.pop("diffs")
            entry["mean"], entry["low"], entry["high"] = t_interval(diffs)
            entry["n"] = len(diffs)
            entry["wins"] = sum((d > 0) if entry["higher_is_better"] else (d < 0) for d in diffs)
    return out


def paired_markdown(rows: list[dict[str, Any]], tasks: list[str]) -> list[str]:
    """The markdown section of the rows' ``paired`` entries (empty when no row has one)."""
    if not any(r.get("paired") for r in rows):
        return []
    md = [
        "",
        f"Paired against the single-task model of the same seed: mean difference of each task's first "
        f"metric (multi-task minus single-task) [{LEVEL:.0%} t-interval], pairs where multi-task is better / "
        "pairs (`mtlzoo/apps/bench/paired.py`):",
        "",
        "| method | setting | " + " | ".join(tasks) + " |",
        "|" + "---|" * (len(tasks) + 2),
    ]
    for row in rows:
        paired = row.get("paired")
        if not paired:
            continue
        cells = []
        for t in tasks:
            e = paired.get(t)
            if e is None:
                cells.append("")
                continue
            interval = "" if math.isnan(e["low"]) else f" [{e['low']:+.4f}, {e['high']:+.4f}]"
            arrow = "↑" if e["higher_is_better"] else "↓"
            cells.append(f"{e['metric']} {arrow} {e['mean']:+.4f}{interval}, {e['wins']}/{e['n']}")
        md.append(f"| {row['method']} | {row['setting'] or '-'} | " + " | ".join(cells) + " |")
    return md
