"""``mtlzoo bench``: the command (its parser imports nothing heavy)."""

from __future__ import annotations

import argparse
import re
from typing import Any

_UNITS = {"s": 1, "m": 60, "h": 3600}


def parse_budget(text: str) -> float:
    """A time budget in seconds from ``90m``, ``2h``, ``45s`` or a plain number of minutes."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*", text)
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration; give e.g. 90m, 2h or 45s")
    return float(match.group(1)) * _UNITS[match.group(2) or "m"]


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give a whole number >= 1")
    return value


def cmd_bench(args: Any) -> int:
    """``mtlzoo bench BENCH_SPEC``: run or resume a bench, then write its tables."""
    from .run import run_bench

    if args.replot:
        from pathlib import Path

        from .plots import summary_from_tables, write_plots
        from .spec import load_bench

        spec, _ = load_bench(args.spec, args.overrides)
        results = Path(spec.results_dir)
        for path in write_plots(spec, summary_from_tables(results, spec.name), results):
            print(f"wrote {path}")
        return 0
    summary = run_bench(
        args.spec,
        args.overrides,
        only_plan=args.plan,
        seeds=args.seeds,
        patterns=args.cells,
        budget_seconds=args.budget,
        jobs=args.jobs,
        threads=args.threads,
        report_only=args.report_only,
    )
    if args.plan:
        return 0
    for p in summary["files"]:
        print(f"wrote {p}")
    left = summary.get("not_run") or []
    if left:
        print(f"{len(left)} cell(s) not committed yet (outside the slice or the time budget)")
    if summary["failures"]:
        print(f"{len(summary['failures'])} cell(s) failed: " + ", ".join(summary["failures"]))
        return 1
    return 0


def add_bench_command(sub: Any, common: Any) -> None:
    """Add ``mtlzoo bench`` to the CLI."""
    p = sub.add_parser(
        "bench",
        parents=[common],
        help="run a benchmark grid and write tables",
        description="Run the cells of a bench spec (grid x seeds + single-task baselines) that are not "
        "committed yet, commit each finished cell to <results_dir>/<name>/cells/<cell>.json, then "
        "write markdown/csv tables with delta-m from the committed cells.",
    )
    p.add_argument("spec", help="bench spec (YAML)")
    p.add_argument("overrides", nargs="*", help="dot-list overrides of the bench spec (e.g. last_k=5)")
    p.add_argument(
        "--plan", action="store_true", help="list the cells, their state and overrides; run nothing"
    )
    p.add_argument(
        "--report-only",
        action="store_true",
        help="run nothing: write the tables and plots from the committed cells alone",
    )
    p.add_argument("--seeds", type=int, nargs="+", metavar="SEED", help="run only the cells of these seeds")
    p.add_argument(
        "--cells",
        action="append",
        metavar="PATTERN",
        help="run only the cells whose id matches this shell pattern (repeatable), e.g. 'combiner=sum__*' "
        "or 'single_*'; --plan lists the ids",
    )
    p.add_argument(
        "--budget",
        type=parse_budget,
        metavar="TIME",
        help="start no cell after this much time (90m, 2h, 45s; a number is minutes); running cells finish",
    )
    p.add_argument(
        "--jobs",
        type=_positive,
        default=1,
        metavar="N",
        help="run N cells at once on the same device, each in its own process (default 1)",
    )
    p.add_argument(
        "--threads",
        type=_positive,
        metavar="T",
        help="torch threads per cell (default: cores // N with --jobs N, else torch's default)",
    )
    p.add_argument(
        "--replot",
        action="store_true",
        help="redraw the plots from the committed <name>.csv/.md, run nothing",
    )
    p.set_defaults(func=cmd_bench)


__all__ = ["cmd_bench", "add_bench_command", "parse_budget"]
