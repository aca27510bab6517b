"""Where one row of a bench spends its training step: the torch profiler over a few steps.

Builds the first cell of the row (its method as the bench tables name it), runs warm-up steps,
then profiles ``--steps`` training steps on real batches and prints, per step: the slowest
operators (grouped by input shapes), the convolutions by weight shape (forward and backward
together), and the share of the 1x1 convolutions over all tasks' concatenated maps (input
channels = tasks x output channels: NDDR-CNN's fusion layers), e.g.

    python benchmarks/profile_step.py benchmarks/specs/shapes_architectures.yaml 'seeds=[0]' \
        --row 'nddr + sum' --steps 2 --expect-fusion 0.27

Times are the profiler's self CPU time on one torch thread (``--threads``), so they add up to
the step; measure on an idle machine.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from collections import defaultdict


def is_fusion_conv(shape: list[int], tasks: int) -> bool:
    """Whether a weight shape is a 1x1 conv reading ``tasks`` maps of its output width:
    ``[C, tasks * C, 1, 1]``."""
    return len(shape) == 4 and shape[2:] == [1, 1] and tasks > 1 and shape[1] == tasks * shape[0]


def conv_weight(shapes: list) -> list[int] | None:
    """The weight shape among a convolution op's input shapes: the second 4-d shape of a forward
    op, the third of a backward one; ``None`` when there is none."""
    four = [s for s in shapes if isinstance(s, list) and len(s) == 4]
    if len(four) < 2:
        return None
    # forward: (input, weight); backward: (grad_output, input, weight)
    return four[2] if len(four) >= 3 else four[1]


def main(argv: list[str] | None = None) -> int:
    """Profile one row of a bench spec and print where its step goes; 2 when the row is unknown."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("spec", help="a bench spec")
    p.add_argument("overrides", nargs="*", help="dot-list overrides of the bench spec")
    p.add_argument("--row", required=True, help="the row's method as the tables name it, e.g. 'nddr + sum'")
    p.add_argument("--steps", type=int, default=2, help="profiled steps (default 2)")
    p.add_argument("--warmup", type=int, default=2, help="steps before profiling (default 2)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--top", type=int, default=12, help="operators listed (default 12)")
    p.add_argument(
        "--expect-fusion",
        type=float,
        metavar="SHARE",
        help="exit 1 when the fusion convs' share of the step is off SHARE (e.g. 0.27) by more than 0.1",
    )
    args = p.parse_args(argv)
    import torch

    import mtlzoo
    from mtlzoo.apps.bench.run import load

    torch.set_num_threads(args.threads)
    bench = load(args.spec, args.overrides)
    methods = list(dict.fromkeys(c.method for c in bench.cells))
    cell = next((c for c in bench.cells if c.method == args.row), None)
    if cell is None:
        print(f"no row {args.row!r} in {args.spec}; its rows: {', '.join(methods)}", file=sys.stderr)
        return 2
    cfg = bench.cell_cfg(cell)
    trainer = mtlzoo.Trainer(bench.zoo.build(cfg))
    tasks = len(cfg.tasks)
    batches = itertools.cycle(trainer.train_loader)
    for _ in range(args.warmup):
        trainer.train_step(next(batches))
    timed = [next(batches) for _ in range(args.steps)]
    with torch.profiler.profile(record_shapes=True) as prof:
        for batch in timed:
            trainer.train_step(batch)
    events = prof.key_averages(group_by_input_shape=True)
    per_step = 1e-6 / args.steps  # profiler microseconds -> seconds per step
    total = sum(e.self_cpu_time_total for e in events) * per_step
    print(f"{args.row}: {total:.3f} CPU s per step ({args.steps} profiled, {args.threads} thread(s))\n")
    print("| operator | input shapes | calls / step | CPU s / step | share |\n|---|---|---|---|---|")
    for e in sorted(events, key=lambda e: -e.self_cpu_time_total)[: args.top]:
        s = e.self_cpu_time_total * per_step
        shapes = ", ".join(str(x) for x in e.input_shapes if x)
        print(f"| {e.key} | {shapes} | {e.count / args.steps:g} | {s:.3f} | {s / total:.0%} |")
    by_weight: dict[tuple, list[float]] = defaultdict(lambda: [0.0, 0.0])
    for e in events:
        if "conv" not in e.key:
            continue
        w = conv_weight(e.input_shapes)
        if w is not None:
            by_weight[tuple(w)][1 if "backward" in e.key else 0] += e.self_cpu_time_total * per_step
    print("\n| conv weight | forward s / step | backward s / step |\n|---|---|---|")
    for w, (fwd, bwd) in sorted(by_weight.items(), key=lambda kv: -sum(kv[1]))[: args.top]:
        print(f"| {list(w)} | {fwd:.3f} | {bwd:.3f} |")
    fusion = sum(sum(t) for w, t in by_weight.items() if is_fusion_conv(list(w), tasks))
    print(
        f"\n1x1 convs over the {tasks} tasks' concatenated maps (weight [C, {tasks}C, 1, 1]): "
        f"{fusion:.3f} of {total:.3f} CPU s per step ({fusion / total:.0%})"
    )
    if args.expect_fusion is not None and abs(fusion / total - args.expect_fusion) > 0.1:
        print(
            f"the fusion convs' share moved: {fusion / total:.2f}, expected {args.expect_fusion:.2f} +- 0.1"
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
