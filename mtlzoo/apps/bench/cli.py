"""``mtlzoo bench``: the command (its parser imports nothing heavy)."""

from __future__ import annotations

from typing import Any


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
    p = sub.add_parser(
        "bench",
        parents=[common],
        help="run a benchmark grid and write tables",
        description="Run every cell of a bench spec (grid x seeds + single-task baselines), "
        "skipping finished cells, then write markdown/csv tables with delta-m.",
    )
    p.add_argument("spec", help="bench spec (YAML)")
    p.add_argument("overrides", nargs="*", help="dot-list overrides of the bench spec (e.g. seeds=[0])")
    p.add_argument("--plan", action="store_true", help="list the cells and their overrides, run nothing")
    p.add_argument(
        "--replot",
        action="store_true",
        help="redraw the plots from the committed <name>.csv/.md, run nothing",
    )
    p.set_defaults(func=cmd_bench)


__all__ = ["cmd_bench", "add_bench_command"]
