"""Performance harness: how fast is a training step through mtlzoo, and how close to the machine?

Three measurements, all in one process (the optional compiled variant runs in a child process
so that a compile that runs too long can be cut off):

1. **Framework overhead.** A :class:`mtlzoo.runtime.train.Trainer` built from a spec (default:
   ``configs/quickstart.yaml``, five tasks on a shared ResNet-18, ``sum`` combiner) runs
   ``Trainer.train_step`` on one fixed batch; a minimal hand-written PyTorch loop trains an
   identical copy of the same network (same backbone and heads, same loss modules, the plain
   sum of the losses, AdamW with the same hyper-parameters) on the same batch. The two
   alternate (ABBA order) for many rounds; the reported figure is the median over rounds of
   the per-round ratio of step times, mtlzoo / hand-written (target <= 1.03).
2. **Hardware efficiency.** FLOPs of one training step counted by
   ``torch.utils.flop_counter.FlopCounterMode`` divided by the measured step time, as a
   fraction of the dense matmul FLOP/s (``torch.mm``, fp32) measured in the same rounds (so
   that both see the same load on a shared machine). For reference: a plain timm ResNet-18
   forward+backward at 224x224 batch 8, and the same ResNet-18 at the benchmark's image size
   and batch (what the backbone alone achieves on such small images). A profile of one step
   groups the time by kind of operator.
3. **Options** through the Trainer, each alternated with the default Trainer:
   ``train.channels_last``, ``train.amp`` (bf16, fp16), both together,
   ``train.deterministic=false``, the NaN fill of new tensors that PyTorch's deterministic mode
   does by default (the Trainer turns it off), and ``train.compile`` (in a child process, with a
   time cap: a cold TorchInductor compile on a small CPU takes minutes).

Usage::

    python benchmarks/performance.py                      # full run (about 10 minutes on 2 CPU cores)
    python benchmarks/performance.py --quick              # a smoke run (about 3 minutes)
    python benchmarks/performance.py --out benchmarks/results/performance.md

The device is chosen as the Trainer chooses it (``train.device: auto``): a GPU when there is
one. On a GPU every timed stretch starts and ends with ``torch.cuda.synchronize`` (so a step's
time is its kernels' time, not their launch), the batch is GPU-sized (32 images of 256x256),
the Trainer runs with its CUDA defaults (channels-last, ``cudnn.benchmark``, not deterministic)
and the hand-written loop with the same layout, dtype and device batch; section 1 adds the
device memory of one step of each loop (the CUDA allocator's peak over what was allocated
before it), and section 3 compares the CUDA defaults with bf16 autocast, NCHW and
``train.deterministic=true``. The matmul peak is measured in fp32 and bf16.

The code lives in ``benchmarks/perf_harness/`` (``stats``: pure helpers; ``plan``: what to measure
and the machine; ``workloads``: the timed steps; ``measure``: the three sections; ``report``: the
markdown); this file is the command line.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shlex
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import torch

# the harness's modules sit beside this script (also when a test loads it by file path)
if str(Path(__file__).resolve().parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parent))

from perf_harness.measure import (  # noqa: E402
    OPTIONS,
    OPTIONS_CUDA,
    compile_child,
    measure_compiled_child,
    measure_efficiency,
    measure_option,
    measure_options,
    measure_overhead,
    option_summary,
    options_for,
)
from perf_harness.plan import (  # noqa: E402
    DEFAULT_SPEC,
    ROOT,
    TARGET_EFFICIENCY,
    TARGET_OVERHEAD,
    Plan,
    Results,
    load_average,
    log,
    machine_info,
    sync_fn,
)
from perf_harness.report import render, trainer_notes  # noqa: E402
from perf_harness.stats import (  # noqa: E402
    CPU_FLAGS,
    OP_CATEGORIES,
    alternate,
    categorize_op,
    contended_share,
    count_flops,
    effect,
    fast_rate,
    fast_ratio,
    fast_time,
    flops_by_category,
    fmt_g,
    fmt_ms,
    format_table,
    matmul_flops,
    parse_cpuinfo,
    round_ratios,
    summarize,
)
from perf_harness.workloads import (  # noqa: E402
    HandLoop,
    base_overrides,
    build_trainer,
    fixed_batch,
    hand_loop_for,
    step_memory,
    trainer_step,
)

# the harness's names, importable from this script as before the split
__all__ = [
    "CPU_FLAGS",
    "DEFAULT_SPEC",
    "OPTIONS",
    "OPTIONS_CUDA",
    "OP_CATEGORIES",
    "ROOT",
    "TARGET_EFFICIENCY",
    "TARGET_OVERHEAD",
    "HandLoop",
    "Plan",
    "Results",
    "alternate",
    "asdict",
    "base_overrides",
    "build_trainer",
    "categorize_op",
    "compile_child",
    "contended_share",
    "count_flops",
    "effect",
    "fast_rate",
    "fast_ratio",
    "fast_time",
    "fixed_batch",
    "flops_by_category",
    "fmt_g",
    "fmt_ms",
    "format_table",
    "hand_loop_for",
    "load_average",
    "log",
    "machine_info",
    "main",
    "matmul_flops",
    "measure_compiled_child",
    "measure_efficiency",
    "measure_option",
    "measure_options",
    "measure_overhead",
    "option_summary",
    "options_for",
    "parse_cpuinfo",
    "render",
    "round_ratios",
    "summarize",
    "step_memory",
    "sync_fn",
    "trainer_notes",
    "trainer_step",
]


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point."""
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    p.add_argument("--quick", action="store_true", help="a short smoke run (fewer rounds, no compile)")
    p.add_argument("--out", default="benchmarks/results/performance.md", help="markdown report to write")
    p.add_argument("--json", default=None, help="also write every measurement as JSON here")
    p.add_argument("--spec", default=DEFAULT_SPEC, help="experiment spec (default: %(default)s)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra spec override (repeatable)",
    )
    p.add_argument("--compile-timeout", type=int, default=None, help="cap (s) of the compiled child process")
    p.add_argument("--cold-compile", action="store_true", help="compile with an empty TorchInductor cache")
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch intra-op threads (default: PyTorch's, one per core). On a machine shared with\n"
        "other busy processes, 1 avoids threads waiting for each other at every parallel op",
    )
    p.add_argument("--compile-child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    os.chdir(ROOT)
    if args.compile_child is not None:
        compile_child(args.compile_child)
        return 0
    started = time.perf_counter()
    from mtlzoo.runtime.distributed import local_device

    device = local_device("auto")
    plan = Plan.for_device(device, args.quick)
    plan.cold_compile = args.cold_compile
    if args.threads is not None:
        if args.threads < 1:
            raise SystemExit("--threads must be >= 1")
        torch.set_num_threads(args.threads)
        plan.threads = args.threads
    command = "python benchmarks/performance.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    res = Results(
        command=command.strip(), plan=asdict(plan), machine=machine_info(device), load_before=load_average()
    )
    overrides = base_overrides(args.spec, plan, args.overrides)
    log(f"device {device}, plan {asdict(plan)}")
    trainer, batch, hand = measure_overhead(args.spec, overrides, plan, res)
    measure_efficiency(trainer, batch, hand, plan, res)
    del hand
    gc.collect()
    timeout = args.compile_timeout if args.compile_timeout is not None else plan.compile_timeout_s
    measure_options(trainer, batch, args.spec, overrides, plan, res, timeout)
    res.notes = trainer_notes()
    res.load_after = load_average()
    res.seconds = time.perf_counter() - started
    text = render(res)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text + "\n")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(asdict(res), indent=1, default=str))
    log(f"wrote {out} in {res.seconds / 60:.1f} min")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
