"""``mtlzoo plot RUN [RUN ...]``: training curves of one or more runs, overlaid.

One panel per value of ``metrics.jsonl`` (each task's training loss, each evaluated metric,
the learning rate), panels wrapped four to a row, one line per run (labelled by its folder
name), the epoch on the x axis. Written as one PNG (``--out``, default ``<first run>/curves.png``).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from ..contract.errors import MtlzooError
from ..runtime.monitor import flatten

COLUMNS = 4


def read_history(run: Path) -> list[dict[str, Any]]:
    """The records of a run's ``metrics.jsonl`` (one per epoch)."""
    path = run / "metrics.jsonl"
    if not path.is_file():
        raise MtlzooError(f"plot: {run} has no metrics.jsonl (give run folders that `mtlzoo train` wrote)")
    try:
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except json.JSONDecodeError as exc:
        raise MtlzooError(f"plot: {path}: not valid JSON lines ({exc.msg} at line {exc.lineno})") from None


def curves(runs: list[Path]) -> dict[str, dict[str, tuple[list[int], list[float]]]]:
    """value name -> run name -> (epochs, values)."""
    out: dict[str, dict[str, tuple[list[int], list[float]]]] = {}
    for run in runs:
        for record in read_history(run):
            flat = flatten(
                {
                    k: v
                    for k, v in record.items()
                    if k not in ("epoch", "step", "time", "timing", "skipped_steps")
                }
            )
            for key, value in flat.items():
                if isinstance(value, (int, float)) and value is not None and math.isfinite(value):
                    xs, ys = out.setdefault(key, {}).setdefault(run.name, ([], []))
                    xs.append(int(record["epoch"]))
                    ys.append(float(value))
    return out


def plot(runs: list[Path], out: Path) -> Path:
    """Draw every curve of ``runs`` into ``out`` (a PNG); return it."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise MtlzooError("plot: needs matplotlib; pip install 'mtlzoo[bench]'") from None
    data = curves(runs)
    if not data:
        raise MtlzooError(f"plot: no finished epoch in {', '.join(str(r) for r in runs)}")
    names = sorted(data, key=lambda k: (not k.startswith("train."), k))
    rows = -(-len(names) // COLUMNS)
    fig, axes = plt.subplots(rows, COLUMNS, figsize=(3.4 * COLUMNS, 2.6 * rows), squeeze=False)
    for ax, name in zip(axes.flat, names):
        for run, (xs, ys) in data[name].items():
            ax.plot(xs, ys, marker="o", ms=3, lw=1.2, label=run)
        ax.set_title(name, fontsize=8)
        ax.set_xlabel("epoch", fontsize=7)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(names) :]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 4), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.06 if len(runs) > 1 else 0.03, 1, 1))
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def cmd_plot(args: Any) -> int:
    """Draw the training curves of the given runs."""
    runs = [Path(r) for r in args.runs]
    out = Path(args.out) if args.out else runs[0] / "curves.png"
    print(f"wrote {plot(runs, out)}")
    return 0


def add_plot_command(sub: Any, common: Any) -> None:
    """Add ``mtlzoo plot`` to the CLI."""
    p = sub.add_parser(
        "plot",
        parents=[common],
        help="draw training curves of runs",
        description="Training curves (losses, metrics, learning rate) of one or more run folders, "
        "overlaid, one panel per value.",
    )
    p.add_argument("runs", nargs="+", metavar="RUN", help="run folders")
    p.add_argument("--out", help="PNG to write (default: <first run>/curves.png)")
    p.set_defaults(func=cmd_plot)


__all__ = ["plot", "curves", "read_history", "add_plot_command"]
