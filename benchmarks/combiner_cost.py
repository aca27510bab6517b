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
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

#: loss-level rows: (name, options); ``famo`` in both update modes
LOSS_LEVEL = [
    ("weighted", {}),
    ("uncertainty", {}),
    ("dwa", {}),
    ("rlw", {}),
    ("gls", {}),
    ("imtl_l", {}),
    ("famo", {"update": "next_batch"}),
    ("famo", {"update": "same_batch"}),
    ("gradnorm", {}),
    ("stch", {}),
]
GRADIENT_LEVEL = [
    "mgda",
    "pcgrad",
    "cagrad",
    "nash_mtl",
    "imtl_g",
    "aligned_mtl",
    "gradvac",
    "upgrad",
    "config",
    "dualproj",
    "fairgrad",
    "graddrop",
    "db_mtl",
    "excess_mtl",
    "moco",
    "modo",
    "sdmgrad",
]
RESULTS = Path(__file__).parent / "results" / "combiner_cost.md"
RESULTS_CUDA = Path(__file__).parent / "results" / "combiner_cost_cuda.md"
NOTES = """## Reading the misses

- Noise: even on an idle machine a step's time on these 2 cores varies by 10-20% from one
  process to the next: `sum` against itself spans the band shown at the top of each block, and
  the `sum` column (the same model and step in every row) spans more. `weighted`,
  `uncertainty`, `imtl_l`, `gls`, `rlw` and `dwa` do exactly the work of `sum` (one backward of
  a weighted loss); their deviations are that noise. A miss by less than that band is not a
  measured difference.
- `gradnorm` needs per-task gradient norms: one head pass per task plus one backbone pass
  (the `features` path), a few percent over `sum` with light heads.
- `famo`: `next_batch` (mtlzoo's default) is one backward per step; `same_batch` is FAMO as the
  paper and LibMTL define it (the batch's losses re-evaluated after the optimizer step: one more
  forward pass, no target is set for it). Compare against published FAMO timings with
  `same_batch`.
- `stch` weights the losses (one backward, like `sum`).
- `graddrop` (coordinate-wise sign masks), `db_mtl` and `moco` (running averages of the
  gradients themselves) and `excess_mtl` (a running sum of squared gradients) are defined on
  the T x P matrix: with `wrt: params` they need one full backward per task and T x P memory
  (plus a T x P state for `db_mtl`, `moco` and `excess_mtl`). No Gramian shortcut exists for
  them; with `wrt: features` they cost about as much as the others.
- `modo` and `sdmgrad` need the cross Gramian of the two halves of the batch: with `wrt:
  params` that is the layer-wise Gramian of 2T half-batch gradients (2T instead of T
  input-gradient passes through the backbone, plus one more head pass per task), so they cost
  about what a Gramian method costs at 2T tasks; no T x P matrix is stored. With `wrt:
  features` they cost about as much as the others.
- Gramian-based methods with `wrt: params`: T input-gradient passes through the backbone are
  the floor of an exact per-task Gramian; the layer-wise Gramian removes most weight-gradient
  work and the final backward. They all share that work (they differ only in a T x T solve),
  so their rows at one T measure the same cost: about 2x `sum` at T=3, where the target sits,
  and 3.1-3.7x at T=8. Their memory at T=8 is about 1.5x `sum`, at the target's edge: the T
  input-gradient passes run over a forward graph kept alive until the last of them.
"""


#: torchjd autojac aggregators of the reference rows
TORCHJD = ("Mean", "UPGrad", "MGDA")
#: mtlzoo combiner -> the torchjd aggregator of the same method (others compare with UPGrad's row)
TORCHJD_SAME = {"mgda": "MGDA", "upgrad": "UPGrad"}
#: issue 20's GPU targets against the hand-written step: ``sum``'s time and memory
SUM_VS_HAND_TIME, SUM_VS_HAND_MEMORY = 1.03, 1.05
#: GPU-sized defaults of ``--device cuda`` (the harness of issue 20)
CUDA_BATCH, CUDA_SIZE = 32, "256x320"
CPU_BATCH, CPU_SIZE = 8, "64"


# -- one configuration (runs in its own process) --------------------------------------------------
def worker(args: argparse.Namespace) -> dict:
    """Measure one configuration (``args.name`` with ``args.options``) in this process."""
    import timm
    import torch
    import torch.nn.functional as F

    from mtlzoo.contract.combine import Step

    device = torch.device(args.device)
    cuda = device.type == "cuda"
    if cuda:
        if not torch.cuda.is_available():
            raise RuntimeError("--device cuda: no CUDA device is available here; use --device cpu")
        device = torch.device("cuda", torch.cuda.current_device())
        torch.backends.cudnn.benchmark = True  # as the Trainer on CUDA (train.deterministic auto: off)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    height, width = parse_size(args.size)
    channels_last = cuda if args.channels_last is None else args.channels_last

    backbone = timm.create_model("resnet18", features_only=True, pretrained=False, zero_init_last=False)
    names = [f"t{i}" for i in range(args.tasks)]
    heads = light_heads(backbone.feature_info.channels(), names)
    backbone, heads = backbone.to(device), heads.to(device)
    if channels_last:
        backbone, heads = (
            backbone.to(memory_format=torch.channels_last),
            heads.to(memory_format=torch.channels_last),
        )
    zoo = combiner_zoo()
    baseline = zoo.make("combiner", {"name": "sum"}, names, path="combiner").to(device)
    combiner = None
    if args.name not in ("hand", "torchjd"):
        combiner = zoo.make(
            "combiner", {"name": args.name, **json.loads(args.options)}, names, path="combiner"
        )
        combiner = combiner.to(device)
    params = list(backbone.parameters()) + list(heads.parameters())
    if combiner is not None:
        params += [p for p in combiner.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=1e-4)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(args.batch, 3, height, width, generator=g).to(device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    targets = {n: torch.randn(args.batch, 1, height, width, generator=g).to(device) for n in names}
    shared = list(backbone.parameters())
    own = {n: list(heads[n].parameters()) for n in names}

    forward = make_forward(backbone, heads, x, targets)

    def combiner_step(comb, k: int) -> None:
        feats, losses = forward()
        step = Step(losses, feats, shared, own, step=k, epoch=k // 4)
        comb.backward(losses, step)
        optimizer.step()
        if comb.needs_losses_after_step:
            with torch.no_grad():
                feats = backbone(x)
                comb.after_step({n: F.mse_loss(heads[n](feats, x.shape[-2:]), targets[n]) for n in names})
        optimizer.zero_grad(set_to_none=True)

    def hand_step(k: int) -> None:  # what a user writes without mtlzoo: no Step, no combiner
        _, losses = forward()
        sum(losses.values()).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    steps = {"sum": lambda k: combiner_step(baseline, k)}
    if args.name == "hand":
        steps["row"] = hand_step
    elif args.name == "torchjd":
        steps["row"] = torchjd_step(
            json.loads(args.options)["aggregator"], forward, optimizer, shared, own, names
        )
    else:
        steps["row"] = lambda k: combiner_step(combiner, k)
    if args.references and args.name != "hand":
        steps["hand"] = hand_step

    def timed(fn, k: int) -> float:
        if cuda:
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        fn(k)
        if cuda:
            torch.cuda.synchronize(device)
        return time.perf_counter() - t0

    order = ["row", "sum"] + (["hand"] if "hand" in steps else [])
    for k in range(args.warmup):
        for key in order[::-1]:
            steps[key](k)
    times: dict[str, list[float]] = {key: [] for key in order}
    for k in range(args.repeats):  # interleaved, every contender first as often as the others
        turn = (order[::-1] if k % 2 == 0 else order) if len(order) == 2 else order[k % 3 :] + order[: k % 3]
        for key in turn:
            times[key].append(timed(steps[key], args.warmup + k))
    after = args.warmup + args.repeats
    if cuda:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        for k in range(2):
            steps["row"](after + k)
        torch.cuda.synchronize(device)
        peak_mb = (torch.cuda.max_memory_allocated(device) - before) / 2**20
    else:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 64 * 1024)  # M_MMAP_THRESHOLD: fixed, large blocks are mmapped and unmapped on free
        libc.malloc_trim(0)
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
        rss0 = _status_kb("VmRSS")
        for k in range(2):
            steps["row"](after + k)
        peak_mb = (_status_kb("VmHWM") - rss0) / 1024
    out = {
        "time_s": statistics.median(times["row"]),
        "sum_s": statistics.median(times["sum"]),
        "times": times["row"],
        "peak_mb": peak_mb,
        "level": "reference" if combiner is None else combiner.level,
        "shared_params": sum(p.numel() for p in shared),
        "channels_last": channels_last,
    }
    if "hand" in times:
        out["hand_s"] = statistics.median(times["hand"])
    if args.name == "hand":
        out["hand_s"] = out["time_s"]
    if cuda:
        out["gpu"] = f"{torch.cuda.get_device_name(device)}, CUDA {torch.version.cuda}"
    return out


def light_heads(chans: list[int], names: list[str], width: int = 32):
    """One light dense head per task (``nn.ModuleDict``): 1x1 convs on the stride-4 and stride-32
    maps (``feats[1]``, ``feats[-1]``), added, ReLU, a 3x3 conv to one channel, bilinear
    upsampling to the input size."""
    import torch.nn.functional as F
    from torch import nn

    class LightHead(nn.Module):
        def __init__(self):
            super().__init__()
            self.fine = nn.Conv2d(chans[1], width, 1)
            self.coarse = nn.Conv2d(chans[-1], width, 1)
            self.out = nn.Conv2d(width, 1, 3, padding=1)

        def forward(self, feats, size):
            a = self.fine(feats[1])
            b = F.interpolate(self.coarse(feats[-1]), size=a.shape[-2:], mode="bilinear", align_corners=False)
            return F.interpolate(self.out(F.relu(a + b)), size=size, mode="bilinear", align_corners=False)

    return nn.ModuleDict({n: LightHead() for n in names})


def make_forward(backbone, heads, x, targets):
    """``forward(cut=False) -> (feature maps, {task: MSE loss})`` on the fixed batch ``x``. With
    ``cut`` the heads read the stride-4 map through a view of it, a node only they consume (see
    :func:`torchjd_step`); the values and gradients are the same."""
    import torch.nn.functional as F

    def forward(cut: bool = False):
        feats = backbone(x)
        if cut:
            feats = [*feats[:1], feats[1].view_as(feats[1]), *feats[2:]]
        return feats, {n: F.mse_loss(heads[n](feats, x.shape[-2:]), t) for n, t in targets.items()}

    return forward


def torchjd_step(aggregator_name: str, forward, optimizer, shared, own, names):
    """A step through torchjd's autojac: ``mtl_backward`` (per-task gradients of the features,
    the Jacobian of the shared parameters) then ``jac_to_grad`` with ``aggregator_name``.

    The features given are the two maps the heads read. ``mtl_backward`` takes the gradient of
    each loss with respect to each feature, which is a total derivative, and the stride-32 map is
    computed from the stride-4 one: given as they are, the stride-4 map's gradient would include
    the path through the deeper layers, which the Jacobian step then adds a second time (and the
    task pass would free the backbone's graph). The heads therefore read the stride-4 map through
    a view of it (``forward(cut=True)``), a node of its own that only they consume: the features'
    gradients are then the heads' partial derivatives and the update is exact, at no extra
    memory."""
    from torchjd.autojac import jac_to_grad, mtl_backward

    aggregator = torchjd_aggregator(aggregator_name)

    def step(k: int) -> None:
        feats, losses = forward(cut=True)
        mtl_backward(
            [losses[n] for n in names],
            features=[feats[1], feats[-1]],
            shared_params=shared,
            tasks_params=[own[n] for n in names],
        )
        jac_to_grad(shared, aggregator)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def torchjd_aggregator(name: str):
    """torchjd's aggregator ``name``. UPGrad's default dual-cone projector needs the optional
    ``quadprog`` and ``qpsolvers`` packages; without them it gets a projector solving the same
    quadratic program exactly by non-negative least squares (mtlzoo's solver, on the T x T
    Gramian: a negligible share of a step), and the row says so."""
    import torchjd.aggregation as aggregation

    cls = getattr(aggregation, name)
    if name != "UPGrad" or quadprog_installed():
        return cls()
    import torch
    from torchjd._linalg import DualConeProjector

    from mtlzoo.builtin.combiners.gradients import dual_cone_weights

    class NnlsProjector(DualConeProjector):
        def __call__(self, U, G):
            rows = U.reshape(-1, U.shape[-1])
            W = torch.stack([dual_cone_weights(G, u) for u in rows])
            return W.reshape(U.shape).to(device=U.device, dtype=U.dtype)

    return cls(projector=NnlsProjector())


def quadprog_installed() -> bool:
    """Whether torchjd's default dual-cone projector can run (``quadprog`` and ``qpsolvers``)."""
    import importlib.util

    return all(importlib.util.find_spec(m) is not None for m in ("quadprog", "qpsolvers"))


def combiner_zoo():
    """A zoo of mtlzoo's built-in combiners only (no other plugin is needed here)."""
    import mtlzoo.builtin.combiners
    from mtlzoo import Zoo

    plugin = mtlzoo.builtin.combiners
    return Zoo.load(entry_points=False, plugins=[("builtin_combiners", plugin)], strict=True)


def _status_kb(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {key}")


def parse_size(text: str) -> tuple[int, int]:
    """``"64"`` -> (64, 64); ``"256x320"`` -> (256, 320) (height x width)."""
    parts = str(text).lower().split("x")
    try:
        sizes = [int(p) for p in parts]
    except ValueError:
        raise SystemExit(f"--size: {text!r} is not N or HxW (e.g. 64 or 256x320)") from None
    if len(sizes) not in (1, 2) or min(sizes) < 32:
        raise SystemExit(f"--size: {text!r} is not N or HxW with sides >= 32 (e.g. 64 or 256x320)")
    return (sizes[0], sizes[-1])


# -- orchestration ---------------------------------------------------------------------------------
def _child(conn, args: argparse.Namespace) -> None:
    try:
        conn.send(worker(args))
    except BaseException as exc:  # report, do not hang the parent
        conn.send({"error": f"{type(exc).__name__}: {exc}"})
    finally:
        conn.close()


def start_method() -> str:
    """``fork`` (the libraries are imported once) unless CUDA was started in this process: a
    forked child cannot use a CUDA context its parent made, so it is spawned then."""
    import torch

    return "spawn" if torch.cuda.is_initialized() else "fork"


def run_one(args: argparse.Namespace, name: str, tasks: int, options: dict) -> dict:
    """Measure one configuration in a fresh child process."""
    import multiprocessing as mp

    child_args = argparse.Namespace(
        **{**vars(args), "name": name, "tasks": tasks, "options": json.dumps(options)}
    )
    ctx = mp.get_context(start_method())
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(child, child_args))
    proc.start()
    child.close()
    try:
        result = parent.recv()
    except EOFError:  # the child died without a word (killed, out of memory)
        proc.join()
        result = {"error": f"the measuring process died (exit code {proc.exitcode})"}
    proc.join()
    if "error" in result:  # reported in the table; the other rows are still measured
        print(
            f"T={tasks} {label(name, options)}: not measured: {result['error']}", file=sys.stderr, flush=True
        )
    return result


def configurations(
    only: set[str] | None, modes: set[str], references: bool, torchjd: tuple[str, ...] = TORCHJD
) -> list[tuple[str, dict]]:
    """The rows to measure: references (hand-written, torchjd's ``torchjd`` aggregators) first, then
    loss-level combiners and gradient-level ones in each ``wrt`` mode of ``modes``; ``only``
    filters combiner names."""
    confs: list[tuple[str, dict]] = []
    if references:
        confs += [("hand", {})] + [("torchjd", {"aggregator": a}) for a in torchjd]
    combiners = list(LOSS_LEVEL) + [
        (n, {"wrt": w}) for w in ("features", "params") if w in modes for n in GRADIENT_LEVEL
    ]
    return confs + [c for c in combiners if only is None or c[0] in only]


def label(name: str, options: dict) -> str:
    """The row's name: with its ``wrt`` or, for ``famo``, its ``update`` mode; references by what they are."""
    if name == "hand":
        return "hand-written sum step"
    if name == "torchjd":
        note = " (NNLS projector)" if options["aggregator"] == "UPGrad" and not quadprog_installed() else ""
        return f"torchjd autojac {options['aggregator']}{note}"
    mode = options.get("wrt", options.get("update"))
    return f"{name} ({mode})" if mode else name


def target(name: str, options: dict, level: str, tasks: int) -> float | None:
    """The time target (x ``sum``) of this row from the CPU issue (None where it sets none)."""
    if level == "reference" or name == "sum":
        return None
    if level == "loss" and "wrt" not in options:
        if name == "famo":
            return 1.2 if options.get("update") == "next_batch" else None
        return 1.05
    if options.get("wrt") == "features":
        return {3: 1.15, 8: 1.3}.get(tasks)
    if options.get("wrt") == "params":
        return {3: 2.0, 8: 3.7}.get(tasks)
    return None


def hand_target(
    name: str, options: dict, level: str, tasks: int, torchjd: dict[str, float]
) -> tuple[float, str] | None:
    """Issue 20's target of this row against the hand-written step, as ``(ratio, what)``:
    ``sum`` within 3% of it; a ``params``-mode gradient method at or below torchjd autojac's ratio
    (the torchjd row of the same method, else UPGrad's) at T=3 and T=8."""
    if name == "sum" and not options:
        return SUM_VS_HAND_TIME, ""
    if level == "gradient" and options.get("wrt") == "params" and tasks in (3, 8):
        ref = TORCHJD_SAME.get(name, "UPGrad")
        if ref in torchjd:
            return torchjd[ref], f" (torchjd {ref})"
    return None


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import torch

    return (
        f"{cpu}, {os.cpu_count()} logical CPUs, Python {platform.python_version()}, "
        f"torch {torch.__version__}, "
        f"{platform.system()} {platform.release()}"
    )


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


def write(
    args: argparse.Namespace, blocks: list, elapsed: float, loads: tuple, argv: list[str] | None = None
) -> None:
    """The markdown table of ``blocks`` (``(tasks, sum's own row, rows)`` per task count)."""
    cmd = "python benchmarks/combiner_cost.py " + " ".join(sys.argv[1:] if argv is None else argv)
    start, end = (" / ".join(f"{x:.2f}" for x in load) for load in loads)
    cuda = args.device == "cuda"
    gpu = next((r["gpu"] for _, _, rows in blocks for _, _, r in rows if "gpu" in r), None)
    height, width = parse_size(args.size)
    size = f"{height}x{width}"
    refs = args.references
    lines = [
        "# Combiner cost relative to `sum`" + (" (CUDA)" if cuda else ""),
        "",
        f"Command: `{cmd.strip()}` (total {elapsed / 60:.1f} min)",
        "",
        f"Load average (1 / 5 / 15 min, `/proc/loadavg`): {start} at the start, {end} at the end "
        + (
            "(2 cores: a load near 2 is this benchmark alone)."
            if not cuda
            else "(CPU side of the GPU machine)."
        ),
        "",
    ]
    if cuda:
        lines += [
            f"Machine: {gpu or 'a CUDA device'}; host {machine()}. Model and images in channels-last layout, "
            "`cudnn.benchmark` on (the Trainer's defaults on CUDA), fp32.",
            "",
        ]
    else:
        lines += [
            f"Machine: {machine()}; {args.threads} torch threads, `OMP_WAIT_POLICY=passive` (with the default "
            "policy, OpenMP's sleeping threads add ~20 ms to every batch-norm forward on this shared 2-core VM).",
            "",
        ]
    lines += [
        f"Model: timm resnet18 (`features_only`, {blocks[0][1]['shared_params'] / 1e6:.1f}M shared "
        "parameters) with T light dense heads (1x1 convs on the stride-4 and stride-32 maps, 3x3 conv, "
        f"upsampling; MSE), {size} images, batch {args.batch}, SGD. Step = forward + losses "
        "+ `combiner.backward` + optimizer step + zero_grad.",
        "",
    ]
    if cuda:
        memory = (
            "Memory: then two more steps of the combiner: `torch.cuda.max_memory_allocated` (peak reset before "
            "them) minus `memory_allocated` before them, i.e. what a step needs on top of model and data; "
            "divided by the same for `sum`."
        )
        timing = "each step between two `torch.cuda.synchronize` calls"
    else:
        memory = (
            "Memory: then, with glibc set to mmap every block >= 64 KiB (freed tensors return to the OS), the "
            "kernel's peak-RSS mark reset, two more steps of the combiner: peak RSS (VmHWM) minus the RSS before "
            "them, i.e. what a step needs on top of model, data and libraries; divided by the same for `sum`."
        )
        timing = "the 2 cores are shared with other work, so both see the same load"
    with_hand = " and with as many hand-written steps" if refs else ""
    lines += [
        f"Time: each configuration in a fresh process (forked from a parent that imported the libraries); "
        f"after {args.warmup} warm-up step(s) each, {args.repeats} steps of the combiner alternate with "
        f"{args.repeats} steps of `sum`{with_hand} on the same model ({timing}); ratio = median / median. "
        + memory,
        "",
        "Targets (issue): loss-level <= 1.05x (FAMO `next_batch` <= 1.2x; none for `same_batch`, the "
        "paper's definition with one more forward pass); gradient-level `features` <= 1.15x at T=3 and "
        "<= 1.3x at T=8; `params` <= 2.0x at T=3 and <= 3.7x at T=8; peak memory at T=8 <= 1.5x `sum`. "
        "ok / MISS marks rows with a time target; the memory mark is given at T=8.",
        "",
    ]
    if refs:
        lines += [
            "References: the hand-written step is forward, `sum(losses).backward()`, optimizer step, "
            "`zero_grad` (no `Step`, no combiner); torchjd autojac is `mtl_backward(losses, features=[the "
            "stride-4 and stride-32 maps], shared_params=..., tasks_params=...)` then `jac_to_grad(shared_params, "
            "aggregator)`. x hand-written = median step time / median hand-written step time in the same "
            "process; memory x hand-written = step memory / the hand-written row's. Targets (issue 20, on a GPU): "
            f"`sum` <= {SUM_VS_HAND_TIME}x the hand-written time and <= {SUM_VS_HAND_MEMORY}x its memory; "
            "`params`-mode gradient methods at or below torchjd autojac's x hand-written (the torchjd row of the "
            "same method, else UPGrad's) at T=3 and T=8.",
            "",
        ]
    misses = []
    failures = []
    for tasks, base, rows in blocks:
        if "error" in base:
            lines += [f"## T = {tasks}", "", f"Not measured: `sum` failed ({base['error']}).", ""]
            failures.append(f"T={tasks} sum: {base['error']}")
            continue
        m_sum = max(base["peak_mb"], 1e-9)
        hand = next((r for n, _, r in rows if n == "hand" and "error" not in r), None)
        m_hand = max(hand["peak_mb"], 1e-9) if hand else None
        torchjd = {
            o["aggregator"]: r["time_s"] / r["hand_s"]
            for n, o, r in rows
            if n == "torchjd" and "error" not in r
        }
        lines += [
            f"## T = {tasks}",
            "",
            f"`sum` against itself: {1000 * base['time_s']:.1f} ms vs {1000 * base['sum_s']:.1f} ms "
            f"({base['time_s'] / base['sum_s']:.2f}x); step memory {m_sum:.0f} MB",
            "",
        ]
        if refs:
            lines += [
                "| combiner | level | time (ms) | `sum` (ms) | x sum | target | x hand-written | target (hand) "
                "| memory (MB) | x sum | x hand-written |",
                "|---|---|---:|---:|---:|---|---:|---|---:|---:|---:|",
            ]
        else:
            lines += [
                "| combiner | level | time (ms) | `sum` (ms) | x sum | target | memory (MB) | x sum |",
                "|---|---|---:|---:|---:|---|---:|---:|",
            ]
        # with references, sum (against itself and the hand-written step) is a row of its own
        for name, options, r in ([("sum", {}, base)] if refs else []) + rows:
            if "error" in r:
                failures.append(f"T={tasks} {label(name, options)}: {r['error']}")
                width = 11 if refs else 8
                lines.append(
                    f"| {label(name, options)} | not measured: {r['error']} |" + " - |" * (width - 2)
                )
                continue
            ratio, mratio = r["time_s"] / r["sum_s"], r["peak_mb"] / m_sum
            goal = target(name, options, r["level"], tasks)
            mark = "" if goal is None else (f"<= {goal} ok" if ratio <= goal else f"<= {goal} MISS")
            if goal is not None and ratio > goal:
                misses.append(f"T={tasks} {label(name, options)}: {ratio:.2f}x (target {goal}x)")
            mem = f"{mratio:.2f}"
            if tasks == 8 and r["level"] != "reference" and name != "sum":
                mem += " ok" if mratio <= 1.5 else " MISS"
                if mratio > 1.5:
                    misses.append(f"T=8 {label(name, options)}: memory {mratio:.2f}x (target 1.5x)")
            cells = [
                label(name, options),
                r["level"],
                f"{1000 * r['time_s']:.1f}",
                f"{1000 * r['sum_s']:.1f}",
            ]
            cells += [f"{ratio:.2f}", mark]
            if refs and "hand_s" not in r:
                cells += ["-", "hand-written step not measured"]
            elif refs:
                hratio = r["time_s"] / r["hand_s"]
                hgoal = hand_target(name, options, r["level"], tasks, torchjd)
                hmark = ""
                if hgoal is not None:
                    ok = hratio <= hgoal[0]
                    hmark = f"<= {hgoal[0]:.2f}{hgoal[1]} {'ok' if ok else 'MISS'}"
                    if not ok:
                        misses.append(
                            f"T={tasks} {label(name, options)}: {hratio:.2f}x hand-written "
                            f"(target {hgoal[0]:.2f}x{hgoal[1]})"
                        )
                cells += [f"{hratio:.2f}", hmark]
            cells += [f"{r['peak_mb']:.0f}", mem]
            if refs:
                hm = r["peak_mb"] / m_hand if m_hand else float("nan")
                hm_text = f"{hm:.2f}"
                if name == "sum" and not options and m_hand:
                    hm_text += " ok" if hm <= SUM_VS_HAND_MEMORY else " MISS"
                    if hm > SUM_VS_HAND_MEMORY:
                        misses.append(
                            f"T={tasks} sum: memory {hm:.2f}x hand-written (target {SUM_VS_HAND_MEMORY}x)"
                        )
                cells.append(hm_text)
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    lines += ["## Missed targets", ""] + ([f"- {m}" for m in misses] or ["- none"]) + [""]
    if failures:
        lines += ["## Not measured", ""] + [f"- {f}" for f in failures] + [""]
    lines += [NOTES]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines))
    print(f"wrote {out}")


if __name__ == "__main__":
    raise SystemExit(main())
