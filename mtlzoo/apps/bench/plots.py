"""Bench plots (optional: they need matplotlib; tables never depend on them)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from .spec import BenchSpec


def write_plots(spec: BenchSpec, summary: dict[str, Any], results_dir: Path) -> list[Path]:
    """Per-metric points (mean and seed spread, the single-task baseline as a line) and a
    two-task delta view; returns the files written (none without matplotlib)."""
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


__all__ = ["write_plots"]
