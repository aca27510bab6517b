"""Bench plots (optional: they need matplotlib; tables never depend on them)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from .spec import BenchSpec

COLUMNS = 4
MARKERS = "osD^vP*Xh<>p"


def write_plots(spec: BenchSpec, summary: dict[str, Any], results_dir: Path) -> list[Path]:
    """Per-metric points (mean over seeds, a ±1 std error bar, the single-task baseline as a
    dashed line), panels wrapped four to a row, and a two-task delta view whose methods are told
    apart by marker and legend (no labels to overlap); returns the files written (none without
    matplotlib)."""
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
    nrows = -(-len(columns) // COLUMNS)
    fig, axes = plt.subplots(nrows, COLUMNS, figsize=(3.3 * COLUMNS, 3.2 * nrows), squeeze=False)
    for ax, (t, k) in zip(axes.flat, columns):
        labels, means = [], []
        for row in rows:
            ms = row["metrics"].get(t, {}).get(k)
            if ms and not math.isnan(ms[0]):
                labels.append(row["method"] + (f"\n{row['setting']}" if row["setting"] else ""))
                means.append(ms[0])
                baseline = row["method"].startswith("single-task")
                # points, not bars from zero: the differences between methods are what the reader looks for
                ax.errorbar(
                    len(means) - 1,
                    ms[0],
                    yerr=ms[1],
                    fmt="o",
                    capsize=3,
                    color="tab:orange" if baseline else "tab:blue",
                )
                if baseline:
                    ax.axhline(ms[0], color="tab:orange", lw=0.6, ls="--")
        ax.margins(x=0.15)
        ax.set_xticks(range(len(means)), labels, rotation=60, ha="right", fontsize=6)
        ax.set_title(
            f"{t}.{k} {'(higher is better)' if directions[t][k] else '(lower is better)'}", fontsize=8
        )
        ax.tick_params(axis="y", labelsize=7)
        ax.grid(axis="y", alpha=0.3)
    for ax in list(axes.flat)[len(columns) :]:
        ax.axis("off")
    seeds = len(spec.seeds)
    fig.suptitle(
        f"{spec.name}: mean over {seeds} seed{'s' if seeds > 1 else ''} on {spec.split}; error bars "
        f"±1 standard deviation across seeds; dashed: the single-task baseline",
        fontsize=9,
    )
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    bars = results_dir / f"{spec.name}_metrics.png"
    fig.savefig(bars, dpi=110)
    plt.close(fig)
    out = [bars]
    tasks = [t for t in directions if any(r.get("delta_m_tasks", {}).get(t) for r in rows)]
    if len(tasks) >= 2:
        a, b = tasks[:2]
        fig, ax = plt.subplots(figsize=(6.5, 4.2))
        cmap = plt.get_cmap("tab10")
        for i, row in enumerate(
            r for r in rows if a in (r.get("delta_m_tasks") or {}) and b in r["delta_m_tasks"]
        ):
            dt = row["delta_m_tasks"]
            label = row["method"] + (f" ({row['setting']})" if row["setting"] else "")
            ax.errorbar(
                dt[a][0],
                dt[b][0],
                xerr=dt[a][1],
                yerr=dt[b][1],
                fmt=MARKERS[i % len(MARKERS)],
                color=cmap(i % 10),
                capsize=2,
                ms=6,
                label=label,
            )
        ax.axhline(0, color="grey", lw=0.5)
        ax.axvline(0, color="grey", lw=0.5)
        ax.set_xlabel(f"Δ {a} vs single-task (%)")
        ax.set_ylabel(f"Δ {b} vs single-task (%)")
        ax.set_title("two-task view (up and right is better; bars ±1 std across seeds)", fontsize=9)
        ax.legend(loc="center left", bbox_to_anchor=(1.02, 0.5), fontsize=7, frameon=False)
        fig.tight_layout()
        pareto = results_dir / f"{spec.name}_pareto.png"
        fig.savefig(pareto, dpi=110)
        plt.close(fig)
        out.append(pareto)
    return out


def summary_from_tables(results_dir: Path, name: str) -> dict[str, Any]:
    """The rows :func:`write_plots` draws, read back from a bench's committed ``<name>.csv``
    (means and spreads) and ``<name>.md`` (which direction is better), to redraw plots without
    the run folders."""
    import csv
    import re

    md = (results_dir / f"{name}.md").read_text()
    directions: dict[str, dict[str, bool]] = {}
    for key, arrow in re.findall(r"\| ([\w-]+\.[\w.-]+) ([↑↓])", md):
        task, metric = key.split(".", 1)
        directions.setdefault(task, {})[metric] = arrow == "↑"
    rows = []
    with open(results_dir / f"{name}.csv", newline="") as f:
        for raw in csv.DictReader(f):

            def pair(prefix: str, raw: dict[str, str] = raw) -> tuple[float, float] | None:
                mean, std = raw.get(f"{prefix}_mean", ""), raw.get(f"{prefix}_std", "")
                return (float(mean), float(std or 0)) if mean not in ("", None) else None

            metrics = {t: {k: v for k in ks if (v := pair(f"{t}.{k}"))} for t, ks in directions.items()}
            deltas = {t: v for t in directions if (v := pair(f"delta_m.{t}"))}
            rows.append(
                {
                    "method": raw["method"],
                    "setting": raw["setting"],
                    "seeds": int(raw["seeds"]),
                    "metrics": metrics,
                    "delta_m_tasks": deltas,
                }
            )
    return {"rows": rows, "directions": directions}


__all__ = ["write_plots", "summary_from_tables"]
