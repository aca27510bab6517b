"""What each row of a bench costs per training step, to estimate a whole bench from one cell.

For every method (and setting) of a bench spec, builds its first cell, runs a few training
steps on real batches (after one warm-up step) and prints the CPU seconds per step of this
process, then the bench's total in units of the first row's cells: multiply by the measured
wall time of one cell of that row to estimate the bench (evaluation and data loading are
assumed to scale alike; they were under 15% of a CamVid cell).

    python benchmarks/bench_step_cost.py benchmarks/specs/camvid_pretrained.yaml --threads 1
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
    args = p.parse_args()
    import torch

    import mtlzoo
    from mtlzoo.apps.bench.run import load

    torch.set_num_threads(args.threads)
    bench = load(args.spec, args.overrides)
    rows: dict[str, list] = {}
    for cell in bench.cells:
        key = cell.method + (f" ({cell.setting})" if cell.setting else "")
        if key in rows:
            rows[key][1] += 1
            continue
        trainer = mtlzoo.Trainer(bench.zoo.build(bench.cell_cfg(cell)))
        batches = iter(trainer.train_loader)
        trainer.train_step(next(batches))  # warm-up: first-step checks, allocations
        timed = [next(batches) for _ in range(args.steps)]
        t = time.process_time()
        for batch in timed:
            trainer.train_step(batch)
        rows[key] = [(time.process_time() - t) / args.steps, 1]
    first = next(iter(rows.values()))[0]
    print(f"| row | CPU s / step ({args.threads} thread) | x first row | cells |")
    print("|---|---|---|---|")
    for key, (cost, n) in rows.items():
        print(f"| {key} | {cost:.2f} | {cost / first:.2f} | {n} |")
    total = sum(cost * n for cost, n in rows.values()) / first
    print(f"\nthe whole bench: {total:.1f} cells of the first row ({sum(n for _, n in rows.values())} cells)")


if __name__ == "__main__":
    main()
