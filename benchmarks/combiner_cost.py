"""Cost of every combiner relative to ``sum``: median step time and peak memory.

Model: timm resnet18 (``features_only``, random init) shared by T light dense heads (per task:
1x1 convs on the stride-4 and stride-32 maps, added, ReLU, 3x3 conv, bilinear upsampling to
the input size; MSE to random targets). One training step = forward, losses, ``Step``,
``combiner.backward``, SGD step, ``zero_grad``.

Every configuration runs in a fresh process (so memory peaks do not mix), forked from a parent
that has imported torch, timm and mtlzoo but run no torch operation and never touched CUDA
(OpenMP threads and the CUDA context are only started in the child; if an import ever started
CUDA in the parent, the children are spawned instead):

* time: median over ``--repeats`` steps after ``--warmup`` steps (``time.perf_counter``; on
  CUDA between two ``torch.cuda.synchronize`` calls, so a step's time is its kernels' time);
* memory on CPU: after the timed steps, glibc is told to serve every block of 64 KiB or more
  with its own mmap (``mallopt(M_MMAP_THRESHOLD)``, so freed tensors go back to the OS instead
  of staying cached and fragmented in the heap), the cache is trimmed, the kernel's peak-RSS
  mark is reset (``/proc/self/clear_refs``), and two more steps run: the peak RSS (VmHWM)
  minus the RSS before them is the memory a step needs on top of the model, data and
  libraries (activations, gradients, per-task buffers, combiner state). Without the mmap
  setting, ``ru_maxrss`` mostly measures the allocator's caching history.
* memory on CUDA: the allocator's own count, ``torch.cuda.max_memory_allocated`` over two more
  steps (after ``reset_peak_memory_stats``) minus ``memory_allocated`` before them: the same
  quantity, exactly (the caching allocator's reserved-but-free blocks are not counted).

The machine may be shared, so each configuration's steps alternate with steps of ``sum`` on
the same model in the same process, and the time ratio is median over median of those
interleaved runs. ``sum``'s own row (``sum`` against ``sum``) shows the noise.

**Reference rows** (``--references``; on by default with ``--device cuda``): a hand-written
step (forward, ``sum(losses).backward()``, optimizer step, ``zero_grad``: no mtlzoo ``Step``)
and torchjd's autojac (``torchjd.autojac.mtl_backward(losses, features=..., shared_params=...,
tasks_params=...)`` then ``jac_to_grad(shared_params, aggregator)``) with its ``Mean``,
``UPGrad`` and ``MGDA`` aggregators. With references, every configuration's steps also
alternate with the hand-written step, and the column "x hand-written" is median over median of
those, so the GPU targets of issue 20 read off the table: ``params``-mode gradient methods at
or below torchjd autojac's ratio (the torchjd row of the same method, else UPGrad's) at T=3
and T=8, ``sum`` within 3% of the hand-written step's time and 5% of its memory.

Writes a markdown table (``--out``; the CPU default ``benchmarks/results/combiner_cost.md``,
with ``--device cuda`` ``benchmarks/results/combiner_cost_cuda.md``), with the load average
(``/proc/loadavg``) at the start and the end of the run, and with ``--json PATH`` every
measurement.

OpenMP: the script sets ``OMP_NUM_THREADS`` to ``--threads`` and, unless set,
``OMP_WAIT_POLICY=passive`` before the children start OpenMP (on a shared 2-core VM the default
policy's spinning threads add ~20 ms to every batch-norm forward). Run it when the machine is
otherwise idle; the interleaving with ``sum`` absorbs slow drifts, not a busy neighbour.

    python benchmarks/combiner_cost.py --repeats 8     # the full CPU table (about 30 min on 2 cores)
    python benchmarks/combiner_cost.py --tasks 3 --only sum,mgda --repeats 3
    python benchmarks/combiner_cost.py --device cuda --tasks 3,8 --modes params --only sum,mgda,upgrad

On CUDA the defaults are sized for a GPU (``--batch 32 --size 256x320``, the harness of issue
20, unless given), the model and images are in channels-last layout and ``cudnn.benchmark`` is
on, as the Trainer does on CUDA by default.

``famo`` runs in both update modes, labelled: ``next_batch`` (mtlzoo's default, one backward)
and ``same_batch`` (the paper's and LibMTL's definition: the batch's losses are recomputed
after the optimizer step, one more forward pass).

The code lives in ``benchmarks/cost_harness/`` (``rows``: what to measure and the targets;
``references``: the hand-written and torchjd steps; ``model``: the light heads and the forward;
``worker``: one configuration in its own process; ``report``: the markdown); this file is the
command line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

# the harness's modules sit beside this script (also when a test loads it by file path)
if str(Path(__file__).resolve().parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parent))

from cost_harness.model import combiner_zoo, light_heads, make_forward  # noqa: E402
from cost_harness.references import hand_step, quadprog_installed, torchjd_aggregator, torchjd_step  # noqa: E402
from cost_harness.report import NOTES, machine, write  # noqa: E402
from cost_harness.rows import (  # noqa: E402
    CPU_BATCH,
    CPU_SIZE,
    CUDA_BATCH,
    CUDA_SIZE,
    GRADIENT_LEVEL,
    LOSS_LEVEL,
    SUM_VS_HAND_MEMORY,
    SUM_VS_HAND_TIME,
    TORCHJD,
    TORCHJD_SAME,
    configurations,
    hand_target,
    label,
    parse_size,
    target,
)
from cost_harness.worker import run_one, start_method, worker  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "combiner_cost.md"
RESULTS_CUDA = Path(__file__).parent / "results" / "combiner_cost_cuda.md"

# the harness's names, importable from this script as before the split
__all__ = [
    "CPU_BATCH",
    "CPU_SIZE",
    "CUDA_BATCH",
    "CUDA_SIZE",
    "GRADIENT_LEVEL",
    "LOSS_LEVEL",
    "NOTES",
    "RESULTS",
    "RESULTS_CUDA",
    "SUM_VS_HAND_MEMORY",
    "SUM_VS_HAND_TIME",
    "TORCHJD",
    "TORCHJD_SAME",
    "combiner_zoo",
    "configurations",
    "hand_step",
    "hand_target",
    "label",
    "light_heads",
    "machine",
    "main",
    "make_forward",
    "parse_size",
    "quadprog_installed",
    "run_one",
    "start_method",
    "target",
    "torchjd_aggregator",
    "torchjd_step",
    "worker",
    "write",
]


def main(argv: list[str] | None = None) -> int:
    """Measure, print one line per row, write the table; 1 when a configuration failed."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tasks", default="2,3,4,8", help="comma-separated task counts")
    p.add_argument("--only", default=None, help="comma-separated combiner names (sum is always run)")
    p.add_argument(
        "--modes", default="features,params", help="wrt modes of the gradient-level rows (default: both)"
    )
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument(
        "--size",
        default=None,
        help=f"image side N or HxW (default {CPU_SIZE}; {CUDA_SIZE} with --device cuda)",
    )
    p.add_argument(
        "--batch", type=int, default=None, help=f"default {CPU_BATCH}; {CUDA_BATCH} with --device cuda"
    )
    p.add_argument("--threads", type=int, default=2)
    p.add_argument(
        "--warmup", type=int, default=None, help="default 1; 3 with --device cuda (cuDNN autotuning)"
    )
    p.add_argument("--repeats", type=int, default=4)
    refs = p.add_mutually_exclusive_group()
    refs.add_argument(
        "--references",
        dest="references",
        action="store_true",
        default=None,
        help="add the hand-written and torchjd rows (default with --device cuda)",
    )
    refs.add_argument("--no-references", dest="references", action="store_false")
    p.add_argument(
        "--out", default=None, help="markdown table to write (default: by device, see the docstring)"
    )
    p.add_argument("--json", default=None, help="also write every measurement as JSON here")
    p.add_argument(
        "--torchjd",
        default=",".join(TORCHJD),
        help="torchjd aggregators of the reference rows (default: %(default)s; empty: none)",
    )
    args = p.parse_args(argv)
    cuda = args.device == "cuda"
    args.size = args.size or (CUDA_SIZE if cuda else CPU_SIZE)
    args.batch = args.batch or (CUDA_BATCH if cuda else CPU_BATCH)
    args.warmup = args.warmup if args.warmup is not None else (3 if cuda else 1)
    args.references = cuda if args.references is None else args.references
    args.channels_last = None  # the Trainer's default for the device
    args.out = args.out or str(RESULTS_CUDA if cuda else RESULTS)
    parse_size(args.size)
    only = set(args.only.split(",")) if args.only else None
    modes = {m.strip() for m in args.modes.split(",") if m.strip()}
    aggregators = tuple(a.strip() for a in args.torchjd.split(",") if a.strip())
    if not modes <= {"features", "params"}:
        raise SystemExit(f"--modes: {args.modes!r}; give features, params or both")
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    os.environ.setdefault("OMP_WAIT_POLICY", "passive")  # read when OpenMP starts: in the children
    import timm  # noqa: F401  (imported once here, inherited by every forked configuration)
    import torch  # noqa: F401

    from mtlzoo.builtin.combiners import gradient_level, loss_level, stochastic  # noqa: F401  (for the forks)

    if args.references:
        import torchjd.autojac  # noqa: F401  (fails here, in one line, when torchjd is missing)

    started, load_start = time.time(), os.getloadavg()
    blocks = []
    for tasks in [int(t) for t in args.tasks.split(",")]:
        base = run_one(args, "sum", tasks, {})
        rows = []
        if "error" in base:  # nothing to compare with at this task count
            blocks.append((tasks, base, rows))
            continue
        for name, options in configurations(only, modes, args.references, aggregators):
            r = run_one(args, name, tasks, options)
            rows.append((name, options, r))
            if "error" in r:
                continue
            vs_hand = f" {r['time_s'] / r['hand_s']:5.2f}x hand" if "hand_s" in r else ""
            print(
                f"T={tasks} {label(name, options):24s} {1000 * r['time_s']:8.1f} ms "
                f"(sum {1000 * r['sum_s']:6.1f} ms) {r['time_s'] / r['sum_s']:5.2f}x{vs_hand} "
                f"{r['peak_mb']:7.1f} MB",
                flush=True,
            )
        blocks.append((tasks, base, rows))
        print(
            f"T={tasks} sum {1000 * base['time_s']:.1f} ms vs {1000 * base['sum_s']:.1f} ms, "
            f"{base['peak_mb']:.1f} MB",
            flush=True,
        )
    elapsed, loads = time.time() - started, (load_start, os.getloadavg())
    write(args, blocks, elapsed, loads, argv)
    if args.json:
        record = {
            "args": {k: v for k, v in vars(args).items() if k not in ("out", "json")},
            "blocks": [
                {
                    "tasks": t,
                    "sum": base,
                    "rows": [{"label": label(n, o), "name": n, "options": o, **r} for n, o, r in rows],
                }
                for t, base, rows in blocks
            ],
            "seconds": elapsed,
        }
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(record, indent=1))
    failed = sum("error" in base for _, base, _ in blocks) + sum(
        "error" in r for _, _, rows in blocks for _, _, r in rows
    )
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
