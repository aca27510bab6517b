"""What each row of a bench costs per training step, to estimate a whole bench from one cell.

For every method (and setting) of a bench spec, builds its first cell, runs a few training
steps on real batches (after one warm-up step) and prints the CPU seconds per step of this
process, then the bench's total in units of the first row's cells: multiply by the measured
wall time of one cell of that row to estimate the bench (evaluation and data loading are
assumed to scale alike; they were under 15% of a CamVid cell).

    python benchmarks/bench_step_cost.py benchmarks/specs/camvid_pretrained.yaml --threads 1

``--vs KEY=VALUE`` (repeatable) also times every row with those cell-config changes and prints
how many times slower each row is with them, e.g. what channels-last and bf16 buy on this CPU:

    python benchmarks/bench_step_cost.py benchmarks/specs/camvid_architectures.yaml \
        --vs train.channels_last=false --vs train.amp=off

``--out FILE.md`` also writes the table with the machine, the thread count and the 1-minute load
before and after (measure on an idle machine: the step times of a bench's table were taken with
other cells beside them); ``--check FILE.md`` measures again and exits 1 when a row's CPU time per
step is off the file's by more than ``--tolerance`` (default 30%), naming the rows:

    python benchmarks/bench_step_cost.py benchmarks/specs/shapes_architectures.yaml 'seeds=[0]' \
        --steps 5 --out benchmarks/results/shapes_architectures_step_cost.md
"""

from __future__ import annotations

import argparse
import itertools
import re
import shlex
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    """Print the per-step cost of every row of a bench spec as a markdown table; with
    ``--check``, return 1 when a row no longer matches the committed file."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("spec", help="a bench spec")
    p.add_argument("overrides", nargs="*", help="dot-list overrides of the bench spec")
    p.add_argument("--steps", type=int, default=3, help="timed steps per row (default 3)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument(
        "--vs",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="also time each row with this cell-config change (repeatable: all apply together)",
    )
    p.add_argument("--out", type=Path, help="also write the table, machine and load to this markdown file")
    p.add_argument("--check", type=Path, help="exit 1 when a row is off this file's by more than --tolerance")
    p.add_argument("--tolerance", type=float, default=0.3, help="relative tolerance of --check (default 0.3)")
    args = p.parse_args(argv)
    committed = None
    if args.check is not None:  # read first: --out may write over the same file
        if not args.check.is_file():
            p.error(f"--check {args.check}: no such file (write it first with --out)")
        committed, threads = committed_rows(args.check)
        if threads != args.threads:
            p.error(
                f"--check {args.check}: measured with {threads} thread(s); check it with --threads {threads}"
            )
    import torch

    import mtlzoo
    from mtlzoo.apps.bench.cells import describe_machine, load_average, machine
    from mtlzoo.apps.bench.plan import cell_overrides
    from mtlzoo.apps.bench.run import load

    torch.set_num_threads(args.threads)
    load_before = load_average()
    bench = load(args.spec, args.overrides)
    rows: dict[str, list] = {}
    for cell in bench.cells:
        key = cell.method + (f" ({cell.setting})" if cell.setting else "")
        if key in rows:
            rows[key][1] += 1
            continue
        cfg = bench.cell_cfg(cell)
        cost, wall = step_seconds(mtlzoo.Trainer(bench.zoo.build(cfg)), args.steps)
        other = None
        if args.vs:
            overrides = cell_overrides(bench.spec, cell, bench.out_dir / cell.id)
            changed = bench.zoo.spec(bench.base, [*overrides, *args.vs])  # validated, as a cell's
            other = step_seconds(mtlzoo.Trainer(bench.zoo.build(changed)), args.steps)[0]
        rows[key] = [cost, 1, other, wall]
    lines = table(rows, args.threads, args.vs)
    print("\n".join(lines))
    if args.out is not None:
        command = " ".join(
            [
                "python benchmarks/bench_step_cost.py",
                *map(shlex.quote, sys.argv[1:] if argv is None else argv),
            ]
        )
        header = [
            f"# Step cost of `{bench.spec.name}`",
            "",
            f"Command: `{command}`  ",
            f"Machine: {describe_machine({'machine': machine('cpu')})}, torch {torch.__version__}, "
            f"{args.threads} thread(s), {args.steps} timed steps per row after one warm-up step; "
            f"1-min load average {load_before} before, {load_average()} after; {time.strftime('%Y-%m-%d')}.  ",
            "CPU s / step: CPU seconds of this process per training step (forward, backward, combiner, "
            "optimizer; no evaluation, no data loading); wall s / step: the same steps' wall seconds.",
            "",
        ]
        args.out.write_text("\n".join(header + lines) + "\n")
        print(f"wrote {args.out}")
    if committed is not None:
        return check(rows, committed, args.check, args.tolerance)
    return 0


def table(rows: dict[str, list], threads: int, vs: list[str]) -> list[str]:
    """The markdown table of ``rows`` (``{row: [cpu s, cells, cpu s with vs, wall s]}``) and the
    lines under it: the bench in units of the first row, and what ``vs`` changes."""
    first = next(iter(rows.values()))[0]
    extra_head = f" | s / step with {', '.join(vs)} | x slower with it" if vs else ""
    lines = [
        f"| row | CPU s / step ({threads} thread) | x first row | cells | wall s / step{extra_head} |",
        "|---|---|---|---|---|" + ("---|---|" if vs else ""),
    ]
    for key, (cost, n, other, wall) in rows.items():
        extra = f" | {other:.3g} | {other / cost:.2f}" if other is not None else ""
        lines.append(f"| {key} | {cost:.3g} | {cost / first:.2f} | {n} | {wall:.3g}{extra} |")
    total = sum(cost * n for cost, n, *_ in rows.values()) / first
    cells = sum(n for _, n, *_ in rows.values())
    lines += ["", f"the whole bench: {total:.1f} cells of the first row ({cells} cells)"]
    if vs:
        ratios = [other / cost for cost, _, other, _ in rows.values()]
        whole = sum(other * n for _, n, other, _ in rows.values()) / sum(
            cost * n for cost, n, *_ in rows.values()
        )
        lines.append(
            f"with {', '.join(vs)}: {min(ratios):.2f}-{max(ratios):.2f}x the CPU time per step; "
            f"the whole bench {whole:.2f}x"
        )
    return lines


def committed_rows(path: Path) -> tuple[dict[str, float], int | None]:
    """``({row: CPU s / step}, torch threads)`` of a file written by ``--out``."""
    found = {}
    text = path.read_text()
    threads = re.search(r"\| CPU s / step \((\d+) thread\)", text)
    for line in text.splitlines():
        cols = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cols) >= 5 and re.fullmatch(r"\d[\d.e+-]*", cols[1]):
            found[cols[0]] = float(cols[1])
    return found, int(threads.group(1)) if threads else None


def check(rows: dict[str, list], committed: dict[str, float], path: Path, tolerance: float) -> int:
    """0 when every row ``committed`` in ``path`` was measured again within ``tolerance``
    (relative) of its CPU s / step, else 1 with one line per row that moved or is missing."""
    wrong = []
    for key, was in committed.items():
        if key not in rows:
            wrong.append(f"{key}: in {path} but not a row of the bench any more")
            continue
        now = rows[key][0]
        if abs(now - was) > tolerance * was:
            wrong.append(f"{key}: {now:.3g} s / step now, {was:.3g} in {path} ({now / was:.2f}x)")
    wrong += [f"{key}: a row of the bench missing from {path}" for key in rows if key not in committed]
    if wrong:
        print(f"{len(wrong)} row(s) no longer hold (tolerance {tolerance:.0%}); rewrite {path} with --out:")
        print("\n".join("  " + w for w in wrong))
        return 1
    print(f"every row of {path} holds within {tolerance:.0%}")
    return 0


def step_seconds(trainer, steps: int) -> tuple[float, float]:
    """CPU and wall seconds of this process per training step on real batches, after one
    warm-up step."""
    batches = itertools.cycle(trainer.train_loader)  # a loader shorter than the steps repeats
    trainer.train_step(next(batches))  # warm-up: first-step checks, allocations
    timed = [next(batches) for _ in range(steps)]
    t, w = time.process_time(), time.perf_counter()
    for batch in timed:
        trainer.train_step(batch)
    return (time.process_time() - t) / steps, (time.perf_counter() - w) / steps


if __name__ == "__main__":
    sys.exit(main())
