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
"""

from __future__ import annotations

import argparse
import time


def main() -> None:
    """Print the per-step cost of every row of a bench spec as a markdown table."""
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
    args = p.parse_args()
    import torch

    import mtlzoo
    from mtlzoo.apps.bench.plan import cell_overrides
    from mtlzoo.apps.bench.run import load

    torch.set_num_threads(args.threads)
    bench = load(args.spec, args.overrides)
    rows: dict[str, list] = {}
    for cell in bench.cells:
        key = cell.method + (f" ({cell.setting})" if cell.setting else "")
        if key in rows:
            rows[key][1] += 1
            continue
        cfg = bench.cell_cfg(cell)
        cost = step_seconds(mtlzoo.Trainer(bench.zoo.build(cfg)), args.steps)
        other = None
        if args.vs:
            overrides = cell_overrides(bench.spec, cell, bench.out_dir / cell.id)
            changed = bench.zoo.spec(bench.base, [*overrides, *args.vs])  # validated, as a cell's
            other = step_seconds(mtlzoo.Trainer(bench.zoo.build(changed)), args.steps)
        rows[key] = [cost, 1, other]
    first = next(iter(rows.values()))[0]
    vs = f" | s / step with {', '.join(args.vs)} | x slower with it" if args.vs else ""
    print(f"| row | CPU s / step ({args.threads} thread) | x first row | cells{vs} |")
    print("|---|---|---|---|" + ("---|---|" if args.vs else ""))
    for key, (cost, n, other) in rows.items():
        extra = f" | {other:.3g} | {other / cost:.2f}" if other is not None else ""
        print(f"| {key} | {cost:.3g} | {cost / first:.2f} | {n}{extra} |")
    total = sum(cost * n for cost, n, _ in rows.values()) / first
    print(
        f"\nthe whole bench: {total:.1f} cells of the first row ({sum(n for _, n, _ in rows.values())} cells)"
    )
    if args.vs:
        ratios = [other / cost for cost, _, other in rows.values()]
        whole = sum(other * n for _, n, other in rows.values()) / sum(
            cost * n for cost, n, _ in rows.values()
        )
        print(
            f"with {', '.join(args.vs)}: {min(ratios):.2f}-{max(ratios):.2f}x the CPU time per step; "
            f"the whole bench {whole:.2f}x"
        )


def step_seconds(trainer, steps: int) -> float:
    """CPU seconds of this process per training step on real batches, after one warm-up step."""
    batches = iter(trainer.train_loader)
    trainer.train_step(next(batches))  # warm-up: first-step checks, allocations
    timed = [next(batches) for _ in range(steps)]
    t = time.process_time()
    for batch in timed:
        trainer.train_step(batch)
    return (time.process_time() - t) / steps


if __name__ == "__main__":
    main()
