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
one (timings then use ``torch.cuda.synchronize``; the matmul peak is measured in fp32 and
bf16; larger images and batches are used so that the GPU has work to do).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import gc
import json
import math
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch
from torch import Tensor, nn

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SPEC = "configs/quickstart.yaml"
TARGET_OVERHEAD = 1.03
TARGET_EFFICIENCY = 0.55
CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_fp16", "avx512_vnni", "amx_bf16", "amx_fp16")


# -- pure helpers (tested in tests/test_performance_script.py) --------------------------------


def matmul_flops(m: int, k: int, n: int) -> int:
    """FLOPs of one ``[m, k] @ [k, n]`` product (a multiply and an add per term)."""
    return 2 * m * k * n


def count_flops(fn: Callable[[], Any]) -> tuple[int, dict[str, int]]:
    """Run ``fn`` once under ``FlopCounterMode``; return the total FLOPs and FLOPs per aten op."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    by_op = {str(op): int(v) for op, v in counter.get_flop_counts().get("Global", {}).items()}
    return int(counter.get_total_flops()), by_op


def summarize(values: Sequence[float]) -> dict[str, float]:
    """Median, quartiles, min and max of a sample (quartiles fall back to min/max below 4 values)."""
    v = sorted(float(x) for x in values)
    if not v:
        raise ValueError("summarize: no values")
    if len(v) >= 4:
        q1, _, q3 = statistics.quantiles(v, n=4, method="inclusive")
    else:
        q1, q3 = v[0], v[-1]
    return {"median": statistics.median(v), "p25": q1, "p75": q3, "min": v[0], "max": v[-1], "n": len(v)}


def round_ratios(a: Sequence[float], b: Sequence[float]) -> list[float]:
    """Per-round ratios ``a[i] / b[i]`` of two equally long timing series."""
    if len(a) != len(b):
        raise ValueError(f"round_ratios: {len(a)} vs {len(b)} rounds")
    return [x / y for x, y in zip(a, b)]


FAST_QUANTILE = 0.1


def fast_time(values: Sequence[float], q: float = FAST_QUANTILE) -> float:
    """The ``q``-quantile (nearest rank, rounding down) of step times: a "fast" time that
    contention from other processes hardly disturbs (it only ever adds time) and that, unlike
    the minimum, one lucky sample does not decide. Below 10 samples it is the minimum."""
    v = sorted(values)
    return v[int(q * (len(v) - 1))]


def fast_rate(values: Sequence[float], q: float = FAST_QUANTILE) -> float:
    """The ``1 - q`` quantile of rates (FLOP/s): the counterpart of :func:`fast_time`."""
    v = sorted(values, reverse=True)
    return v[int(q * (len(v) - 1))]


def fast_ratio(a: Sequence[float], b: Sequence[float]) -> float:
    """``fast_time(a) / fast_time(b)``: ratio of the fast step times of two loops."""
    return fast_time(a) / fast_time(b)


def contended_share(values: Sequence[float], factor: float = 2.0) -> float:
    """Share of samples slower than ``factor`` times the fastest one (a sign of contention)."""
    fastest = min(values)
    return sum(v > factor * fastest for v in values) / len(values)


def parse_cpuinfo(text: str) -> dict[str, Any]:
    """CPU model name, family/model numbers and the flags that matter here, from /proc/cpuinfo text."""
    info: dict[str, Any] = {"model_name": "unknown", "family": None, "model": None, "flags": []}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key, value = key.strip(), value.strip()
        if key == "model name" and info["model_name"] == "unknown":
            info["model_name"] = value
        elif key == "cpu family" and info["family"] is None:
            info["family"] = int(value)
        elif key == "model" and info["model"] is None and value.isdigit():
            info["model"] = int(value)
        elif key == "flags" and not info["flags"]:
            have = set(value.split())
            info["flags"] = [f for f in CPU_FLAGS if f in have]
    return info


# operator-name fragments -> category, first match wins (names are lower-cased aten/profiler names)
OP_CATEGORIES: tuple[tuple[str, tuple[str, ...]], ...] = (
    # GPU kernel names: cuDNN convolution kernels (fprop/dgrad/wgrad, implicit GEMM) before plain GEMMs
    ("convolution", ("conv", "fprop", "dgrad", "wgrad", "implicit_gemm", "winograd")),
    ("matmul", ("aten::mm", "aten::addmm", "aten::bmm", "aten::matmul", "aten::linear", "gemm")),
    ("batch norm", ("batch_norm", "batchnorm")),
    ("resize (upsample)", ("upsample", "interpolate")),
    ("pooling", ("pool",)),
    ("optimizer", ("_foreach", "optimizer", "adam", "lerp", "addcdiv", "addcmul", "multi_tensor_apply")),
    (
        "loss",
        (
            "cross_entropy",
            "nll_loss",
            "log_softmax",
            "_softmax",
            "l1_loss",
            "binary_cross_entropy",
            "cosine",
            "logsigmoid",
            "loss",
        ),
    ),
    ("fill (zeroing; NaN fill of new tensors in deterministic mode)", ("fill_", "zero_")),
    (
        "memory (copy/cat/layout)",
        (
            "copy",
            "clone",
            "contiguous",
            "empty",
            "cat",
            "stack",
            "to_copy",
            "aten::to",
            "as_strided",
            "view",
            "reshape",
            "expand",
            "permute",
        ),
    ),
    (
        "elementwise (activations, add, mul...)",
        (
            "relu",
            "threshold",
            "softplus",
            "sigmoid",
            "add",
            "mul",
            "div",
            "sub",
            "neg",
            "pow",
            "sqrt",
            "exp",
            "log",
            "abs",
            "sign",
            "where",
            "clamp",
            "norm",
            "sum",
            "mean",
            "max",
            "min",
            "isfinite",
            "eq",
            "ne",
            "gt",
            "lt",
        ),
    ),
)


def categorize_op(name: str) -> str:
    """The category of a profiler event name (``aten::mkldnn_convolution`` -> ``convolution``)."""
    low = name.lower()
    for category, fragments in OP_CATEGORIES:
        if any(f in low for f in fragments):
            return category
    return "other"


def flops_by_category(by_op: dict[str, int]) -> dict[str, int]:
    """FLOPs per operator category from ``count_flops``'s per-op counts (``aten.convolution`` ...)."""
    out: dict[str, int] = {}
    for op, flops in by_op.items():
        cat = categorize_op("aten::" + op.split(".", 1)[-1])
        out[cat] = out.get(cat, 0) + flops
    return out


def format_table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A markdown table."""
    lines = ["| " + " | ".join(str(h) for h in header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(str(c) for c in row) + " |")
    return "\n".join(lines)


def alternate(
    fns: dict[str, tuple[Callable[[], Any], int]],
    rounds: int,
    sync: Callable[[], None] = lambda: None,
    max_seconds: float | None = None,
    first: str | None = None,
) -> dict[str, list[float]]:
    """Time several step functions in alternation: each round runs every function for its
    number of steps, in the given order on even rounds and reversed on odd rounds (ABBA), so
    that drift in the machine's load falls on all of them alike. ``first`` (e.g. a matmul that
    flushes the caches) runs at the start of every round and the others alternate after it, so
    that each of them follows it equally often. Stops early once ``max_seconds`` have passed,
    but only after a complete pair of rounds (at least 2 rounds). Returns seconds per step, one
    value per round, for each name."""
    names = [n for n in fns if n != first]
    out: dict[str, list[float]] = {n: [] for n in fns}
    began = time.perf_counter()
    for r in range(rounds):
        order = names if r % 2 == 0 else names[::-1]
        for name in ([first] if first is not None else []) + order:
            fn, steps = fns[name]
            sync()
            start = time.perf_counter()
            for _ in range(steps):
                fn()
            sync()
            out[name].append((time.perf_counter() - start) / steps)
        if max_seconds is not None and r % 2 == 1 and time.perf_counter() - began > max_seconds:
            break
    return out


def effect(median: float, fast: float, tolerance: float = 0.05) -> str:
    """Words for a speed-up (default time / option time) from its two estimates: the median of
    per-round ratios and the ratio of fast step times. A verdict needs both to agree."""
    if median > 1 + tolerance and fast > 1 + tolerance:
        return "faster"
    if median < 1 - tolerance and fast < 1 - tolerance:
        return "slower"
    if abs(median - 1) <= tolerance and abs(fast - 1) <= tolerance:
        return f"no change beyond {tolerance:.0%}"
    return "unclear (the two estimates disagree)"


def fmt_ms(seconds: float) -> str:
    """Seconds as milliseconds with sensible precision."""
    ms = seconds * 1e3
    return f"{ms:.1f}" if ms < 100 else f"{ms:.0f}"


def fmt_g(flops: float) -> str:
    """FLOPs or FLOP/s in units of 10^9."""
    return f"{flops / 1e9:.1f}"


# -- plan -------------------------------------------------------------------------------------


@dataclass
class Plan:
    """How much to measure (``--quick`` shrinks every count)."""

    batch_size: int
    image_size: int
    rounds: int = 60  # overhead: alternation rounds (at most)
    steps: int = 1  # overhead: steps per loop per round (1: finest interleaving)
    overhead_budget_s: float = 130.0  # overhead: stop after this many seconds (complete ABBA pairs)
    warmup: int = 2  # untimed steps before timing (allocator, oneDNN/cuDNN primitives)
    ref_rounds: int = 6  # reference workloads (resnet18, matmul)
    ref_budget_s: float = 60.0
    option_rounds: int = 10  # options: alternation rounds (at most)
    option_steps: int = 1
    option_budget_s: float = 18.0  # options: stop after this many seconds (complete ABBA pairs)
    matmul_n: int = 2048
    compile_timeout_s: int = 180
    cold_compile: bool = False  # compile with an empty inductor cache
    threads: Optional[int] = None  # torch intra-op threads (None: PyTorch's default, one per core)
    profile_steps: int = 1
    quick: bool = False

    @classmethod
    def for_device(cls, device: torch.device, quick: bool) -> Plan:
        """Defaults: small images on CPU (2 cores), larger ones on a GPU."""
        if device.type == "cuda":
            plan = cls(
                batch_size=32,
                image_size=256,
                rounds=40,
                steps=5,
                overhead_budget_s=120.0,
                warmup=5,
                ref_rounds=10,
                option_rounds=10,
                option_steps=5,
                option_budget_s=30.0,
                matmul_n=8192,
                compile_timeout_s=300,
            )
        else:
            plan = cls(batch_size=16, image_size=64)
        if quick:
            plan.rounds, plan.steps, plan.warmup, plan.overhead_budget_s = 6, 1, 1, 40.0
            plan.ref_rounds, plan.ref_budget_s = 2, 20.0
            plan.option_rounds, plan.option_budget_s = 2, 8.0
            plan.compile_timeout_s = 0
            plan.quick = True
            if device.type != "cuda":
                plan.batch_size = 8
        return plan


# -- machine ------------------------------------------------------------------------------------


def sync_fn(device: torch.device) -> Callable[[], None]:
    """A function that waits for the device's queued work (a no-op on CPU)."""
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return lambda: None


def load_average() -> str:
    """The 1/5/15-minute load averages."""
    try:
        return " / ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "unavailable"


def machine_info(device: torch.device) -> dict[str, Any]:
    """What the report says about the machine."""
    try:
        cpu = parse_cpuinfo(Path("/proc/cpuinfo").read_text())
    except OSError:
        cpu = {"model_name": platform.processor() or "unknown", "family": None, "model": None, "flags": []}
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    info = {
        "cpu": cpu["model_name"]
        + (f" (family {cpu['family']}, model {cpu['model']})" if cpu["family"] else ""),
        "cpu_flags": ", ".join(cpu["flags"]) or "none of " + ", ".join(CPU_FLAGS),
        "cores": f"{os.cpu_count()} logical, {usable} usable by this process",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "device": str(device),
        "mkldnn": torch.backends.mkldnn.is_available(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info["gpu"] = f"{props.name}, {props.total_memory / 2**30:.0f} GiB, CUDA {torch.version.cuda}"
        info["tf32"] = (
            f"matmul {torch.backends.cuda.matmul.allow_tf32}, cuDNN conv {torch.backends.cudnn.allow_tf32}"
        )
    return info


# -- workloads ----------------------------------------------------------------------------------


def build_trainer(spec: str, overrides: list[str]) -> Any:
    """A Trainer (writing nothing) for ``spec`` with ``overrides``."""
    from mtlzoo import Zoo
    from mtlzoo.runtime.train import Trainer

    zoo, raw = Zoo.for_spec(spec, overrides)
    trainer = Trainer(zoo.build(raw))
    # process-global settings as this Trainer left them, restored before each of its steps
    trainer.bench_fill_uninitialized = bool(torch.utils.deterministic.fill_uninitialized_memory)
    return trainer


def base_overrides(spec: str, plan: Plan, extra: list[str]) -> list[str]:
    """Overrides that size the workload: batch, and for the ``shapes`` dataset image size and a
    small train split (one batch is all that is used)."""
    from mtlzoo.zoo.spec import read_spec

    out = ["train.progress=false", f"train.batch_size={plan.batch_size}"]
    raw = read_spec(spec, extra)
    if str(raw.get("data", {}).get("name", "")) == "shapes":
        s = plan.image_size
        out += [
            f"data.size=[{s},{s}]",
            f"data.train_size={2 * plan.batch_size}",
            "data.val_size=8",
            "data.test_size=8",
        ]
    return out + list(extra)


def fixed_batch(trainer: Any) -> dict[str, Any]:
    """One training batch, moved to the trainer's device once (the loops then measure the step,
    not the host-to-device copy)."""
    batch = next(iter(trainer.train_loader))
    return {k: v.to(trainer.device) if torch.is_tensor(v) else v for k, v in batch.items()}


def trainer_step(
    trainer: Any, batch: dict[str, Any], fill_uninitialized: Optional[bool] = None
) -> Callable[[], Any]:
    """``Trainer.train_step`` on ``batch`` under the process-global settings this trainer asked
    for: the deterministic flag of its config (the Trainer sets it in ``__init__`` and never
    resets it, so several Trainers in one process would otherwise share the last one's) and
    ``torch.utils.deterministic.fill_uninitialized_memory`` as the Trainer left it (or as given:
    PyTorch's default is on, which in deterministic mode NaN-fills every new tensor)."""
    deterministic = bool(trainer.cfg.train.deterministic)
    if fill_uninitialized is None:
        fill_uninitialized = getattr(trainer, "bench_fill_uninitialized", True)

    def step() -> Any:
        torch.use_deterministic_algorithms(deterministic, warn_only=True)
        torch.utils.deterministic.fill_uninitialized_memory = fill_uninitialized
        return trainer.train_step(batch)

    return step


class HandLoop:
    """The baseline: the same network trained by a minimal hand-written PyTorch loop.

    ``forward -> sum of the task losses -> backward -> AdamW step -> zero_grad``, nothing
    else (no learning-rate schedule, no finiteness checks, no logging, no host syncs).

    Args:
        model: a :class:`~mtlzoo.runtime.model.MultiTaskModel` (an identical copy of the trainer's).
        losses: task name -> (loss module, target key in the batch).
        lr, weight_decay, betas: AdamW hyper-parameters (those of the trainer).
    """

    def __init__(
        self,
        model: nn.Module,
        losses: dict[str, tuple[nn.Module, str]],
        lr: float,
        weight_decay: float,
        betas: tuple[float, float],
    ):
        self.model = model
        self.losses = losses
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay, betas=betas)
        self.model.train()

    def step(self, batch: dict[str, Tensor]) -> None:
        """One optimisation step on ``batch``."""
        images = batch["image"]
        size = tuple(images.shape[-2:])
        features = self.model.backbone(self.model.normalize(images))
        loss = sum(
            fn(self.model.heads[name](features, size).float(), batch[key])
            for name, (fn, key) in self.losses.items()
        )
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)


def hand_loop_for(trainer: Any) -> HandLoop:
    """A HandLoop over a deep copy of the trainer's model (identical weights), with the trainer's
    loss modules and optimizer settings at its current learning rate."""
    o = trainer.cfg.train.optimizer
    if o.name != "adamw":
        raise SystemExit("the hand-written baseline uses AdamW; run with train.optimizer.name=adamw")
    model = copy.deepcopy(trainer.model)
    losses = {name: (task.loss, task.target) for name, task in trainer.tasks.items()}
    lr = trainer.optimizer.param_groups[0]["lr"]
    return HandLoop(model, losses, lr, o.weight_decay, tuple(o.betas))


def max_param_diff(a: nn.Module, b: nn.Module) -> float:
    """Largest absolute difference between the parameters of two identically shaped modules."""
    with torch.no_grad():
        return max(float((p - q).abs().max()) for p, q in zip(a.parameters(), b.parameters()))


def matmul_fn(n: int, dtype: torch.dtype, device: torch.device) -> tuple[Callable[[], Any], int]:
    """A dense ``n x n`` matmul step and its FLOPs."""
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    out = torch.empty(n, n, device=device, dtype=dtype)
    return (lambda: torch.mm(a, b, out=out)), matmul_flops(n, n, n)


def resnet18_fn(batch: int, size: int, device: torch.device) -> Callable[[], Any]:
    """Forward+backward of a plain timm ResNet-18 classifier (random init, cross-entropy)."""
    import timm

    model = timm.create_model("resnet18", pretrained=False).to(device).train()
    x = torch.randn(batch, 3, size, size, device=device)
    y = torch.randint(0, 1000, (batch,), device=device)

    def step() -> None:
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        model.zero_grad(set_to_none=True)

    return step


def backbone_fn(trainer: Any, batch: dict[str, Tensor]) -> Callable[[], Any]:
    """Forward+backward of the trainer's backbone alone (a copy) with a dummy loss on its maps."""
    backbone = copy.deepcopy(trainer.model.backbone).train()
    images = batch["image"]

    def step() -> None:
        loss = sum(f.float().mean() for f in backbone(images))
        loss.backward()
        backbone.zero_grad(set_to_none=True)

    return step


def profile_step(fn: Callable[[], Any], device: torch.device, steps: int) -> dict[str, float]:
    """Self time (seconds per step) of each operator category while running ``fn``."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    sync = sync_fn(device)
    sync()
    with profile(activities=activities) as prof:
        for _ in range(steps):
            fn()
        sync()
    out: dict[str, float] = {}
    for ev in prof.key_averages():
        if device.type == "cuda":
            us = getattr(ev, "self_device_time_total", None)
            if us is None:
                us = getattr(ev, "self_cuda_time_total", 0.0)
        else:
            us = ev.self_cpu_time_total
        if us:
            cat = categorize_op(ev.key)
            out[cat] = out.get(cat, 0.0) + us / 1e6 / steps
    return out


# the Trainer's per-step work that the hand-written loop does not do: (file suffix, function)
FRAMEWORK_ONLY: tuple[tuple[str, str], ...] = (
    ("mtlzoo/runtime/train.py", "_to"),
    ("mtlzoo/contract/combine.py", "__init__"),  # Step(...)
    ("mtlzoo/contract/combine.py", "stack"),
    ("mtlzoo/contract/combine.py", "sync_gradients"),
    ("mtlzoo/contract/combine.py", "_reset"),
    ("mtlzoo/runtime/model.py", "shared_parameters"),
    ("mtlzoo/runtime/model.py", "task_parameters"),
    ("torch/optim/lr_scheduler.py", "step"),  # LambdaLR.step
    ("torch/nn/modules/module.py", "train"),  # model.train() every step
)
# functions that also run the shared work (forward, backward, AdamW): only their own time counts
FRAMEWORK_OWN: tuple[tuple[str, str], ...] = (
    ("mtlzoo/runtime/train.py", "train_step"),
    ("mtlzoo/runtime/train.py", "compute_losses"),
    ("mtlzoo/builtin/combiners/basic.py", "backward"),
    ("mtlzoo/contract/combine.py", "backward"),
)
# C methods behind the finiteness check and loss logging (one host copy of the stacked losses per step)
FRAMEWORK_BUILTINS = ("isfinite", "'tolist'", "'cpu'", "__float__")


def cprofile_framework(fn: Callable[[], Any], steps: int) -> list[tuple[str, float, float, float]]:
    """cProfile ``steps`` calls of ``fn``; return ``(function, calls/step, own s/step, counted
    s/step)`` for the work the Trainer does beyond the hand-written loop: cumulative time of
    :data:`FRAMEWORK_ONLY` and :data:`FRAMEWORK_BUILTINS`, own time of :data:`FRAMEWORK_OWN`."""
    import cProfile
    import pstats

    prof = cProfile.Profile()
    prof.enable()
    for _ in range(steps):
        fn()
    prof.disable()
    stats = pstats.Stats(prof).stats  # type: ignore[attr-defined]
    rows = []
    for (path, line, func), (_, calls, tottime, cumtime, _) in stats.items():
        path = path.replace(os.sep, "/")
        label = f"{'/'.join(path.split('/')[-2:])}:{line} {func}"
        if any(path.endswith(f) and func == n for f, n in FRAMEWORK_ONLY):
            rows.append((label, calls / steps, tottime / steps, cumtime / steps))
        elif any(path.endswith(f) and func == n for f, n in FRAMEWORK_OWN):
            rows.append((label + " (own code only)", calls / steps, tottime / steps, tottime / steps))
        elif path == "~" and any(b in func for b in FRAMEWORK_BUILTINS):
            rows.append((func, calls / steps, tottime / steps, cumtime / steps))
    rows.sort(key=lambda r: -r[3])
    return rows


def time_framework_pieces(trainer: Any, batch: dict[str, Tensor], reps: int = 50) -> dict[str, float]:
    """Seconds per step of each piece of work the Trainer adds to the baseline, timed directly
    (no profiler inflation), on the trainer's own model and a forward of ``batch``."""
    from mtlzoo.contract.combine import Step

    model = trainer.model
    with torch.no_grad():
        features = [f.detach().requires_grad_() for f in model.encode(batch["image"][:2])]
    losses = {t: features[-1].float().mean() for t in trainer.tasks}
    dummy = torch.optim.AdamW([torch.zeros(1, requires_grad=True)])
    sched = torch.optim.lr_scheduler.LambdaLR(dummy, trainer.scheduler.lr_lambdas[0])

    def step_object() -> None:
        Step(
            losses,
            features,
            model.shared_parameters(),
            {t: model.task_parameters(t) for t in trainer.tasks},
            step=0,
            epoch=0,
        )

    def checks_and_floats() -> None:  # what train_step does: one host copy, then plain floats
        host = torch.stack([v.detach().float() for v in losses.values()]).cpu().tolist()
        if not all(math.isfinite(v) for v in host):
            raise AssertionError("unreachable")
        dict(zip(losses, host))

    pieces = {
        "model.train()": model.train,
        "Step(...) incl. parameter lists": step_object,
        "losses to the host once + finiteness check": checks_and_floats,
        "losses stacked and summed (combiner sum)": lambda: torch.stack(list(losses.values())).sum(),
        "LambdaLR.step()": sched.step,
    }
    out = {}
    for name, fn in pieces.items():
        fn()
        t0 = time.perf_counter()
        for _ in range(reps):
            fn()
        out[name] = (time.perf_counter() - t0) / reps
    return out


# -- sections -----------------------------------------------------------------------------------


@dataclass
class Results:
    """Everything measured; the markdown is written from this."""

    command: str
    plan: dict[str, Any]
    machine: dict[str, Any]
    load_before: str
    workload: dict[str, Any] = field(default_factory=dict)
    overhead: dict[str, Any] = field(default_factory=dict)
    efficiency: dict[str, Any] = field(default_factory=dict)
    options: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    load_after: str = ""
    seconds: float = 0.0


def log(msg: str) -> None:
    """Progress on stderr."""
    print(f"[performance {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def measure_overhead(spec: str, overrides: list[str], plan: Plan, res: Results) -> tuple[Any, dict, HandLoop]:
    """Section 1 (and the matmul/step samples section 2 reuses)."""
    trainer = build_trainer(spec, overrides)
    device = trainer.device
    sync = sync_fn(device)
    batch = fixed_batch(trainer)
    hand = hand_loop_for(trainer)
    counts = trainer.model.num_parameters()
    res.workload = {
        "spec": spec,
        "overrides": overrides,
        "tasks": {n: f"{t.type} ({type(t.loss).__name__})" for n, t in trainer.tasks.items()},
        "combiner": trainer.cfg.combiner.name,
        "backbone": dict(trainer.cfg.model.backbone),
        "heads": {n: trainer.cfg.tasks[n].head.name for n in trainer.tasks},
        "image": list(batch["image"].shape),
        "parameters": counts["total"],
        "shared": counts["shared"],
        "deterministic": bool(trainer.cfg.train.deterministic),
        "max_stride": max(fi.stride for fi in trainer.model.feature_info),
    }
    mtl = trainer_step(trainer, batch)
    hand_step = lambda: hand.step(batch)  # noqa: E731

    # first steps from identical weights: the two loops must compute the same update
    log("warm-up; checking that both loops compute the same update")
    t0 = time.perf_counter()
    mtl()
    sync()
    first_mtl = time.perf_counter() - t0
    t0 = time.perf_counter()
    hand_step()
    sync()
    first_hand = time.perf_counter() - t0
    diff = max_param_diff(trainer.model, hand.model)
    for _ in range(plan.warmup - 1):
        mtl()
        hand_step()
    sync()

    mm, mm_flops = matmul_fn(plan.matmul_n, torch.float32, device)
    mm()
    log(f"overhead: {plan.rounds} rounds x {plan.steps} steps per loop")
    times = alternate(
        {"mtlzoo": (mtl, plan.steps), "hand": (hand_step, plan.steps), "matmul": (mm, 3)},
        plan.rounds,
        sync,
        max_seconds=plan.overhead_budget_s,
        first="matmul",
    )
    ratios = round_ratios(times["mtlzoo"], times["hand"])
    log("cProfile of the framework's own functions")
    prof = cprofile_framework(mtl, max(2, plan.steps))
    pieces = time_framework_pieces(trainer, batch)
    bsz = batch["image"].shape[0]
    res.overhead = {
        "mtlzoo_s": summarize(times["mtlzoo"]),
        "hand_s": summarize(times["hand"]),
        "ratio": summarize(ratios),
        "fast_ratio": fast_ratio(times["mtlzoo"], times["hand"]),
        "contended": contended_share(times["mtlzoo"] + times["hand"]),
        "ratios": ratios,
        "images_per_s": {
            "mtlzoo": bsz / statistics.median(times["mtlzoo"]),
            "hand": bsz / statistics.median(times["hand"]),
        },
        "first_step_s": {"mtlzoo": first_mtl, "hand": first_hand},
        "param_diff_after_first_step": diff,
        "cprofile": prof[:12],
        "pieces": pieces,
    }
    res.efficiency["matmul_fp32_in_overhead_rounds"] = [mm_flops / t for t in times["matmul"]]
    res.efficiency["_step_times"] = times
    return trainer, batch, hand


def measure_efficiency(trainer: Any, batch: dict, hand: HandLoop, plan: Plan, res: Results) -> None:
    """Section 2: FLOPs, achieved FLOP/s, matmul peak, references, profile."""
    device = trainer.device
    sync = sync_fn(device)
    bsz, size = batch["image"].shape[0], batch["image"].shape[-1]
    log("counting FLOPs")
    mtl = trainer_step(trainer, batch)
    flops, by_op = count_flops(mtl)
    hand_flops, _ = count_flops(lambda: hand.step(batch))
    bb = backbone_fn(trainer, batch)
    bb_flops, _ = count_flops(bb)
    ref224 = resnet18_fn(8, 224, device)
    ref224_flops, _ = count_flops(ref224)
    refsmall = resnet18_fn(bsz, size, device)
    refsmall_flops, _ = count_flops(refsmall)
    mm32, mm_flops = matmul_fn(plan.matmul_n, torch.float32, device)
    mm16, _ = matmul_fn(plan.matmul_n, torch.bfloat16, device)
    for fn in (ref224, refsmall, bb, mm32, mm16):
        fn()
    sync()
    log(f"reference workloads: {plan.ref_rounds} rounds")
    times = alternate(
        {
            "mm32": (mm32, 3),
            "resnet18_224": (ref224, 1),
            f"resnet18_{size}": (refsmall, 1),
            "backbone": (bb, 1),
            "mm16": (mm16, 3),
            "mtlzoo": (mtl, 1),
        },
        plan.ref_rounds,
        sync,
        max_seconds=plan.ref_budget_s,
        first="mm32",
    )
    step_times = res.efficiency.pop("_step_times")
    peak_samples = res.efficiency["matmul_fp32_in_overhead_rounds"] + [mm_flops / t for t in times["mm32"]]
    peak = statistics.median(peak_samples)
    fast_peak = fast_rate(peak_samples)
    rows = [
        ("mtlzoo training step (section 1 workload)", flops, step_times["mtlzoo"] + times["mtlzoo"]),
        ("hand-written step, same network", hand_flops, step_times["hand"]),
        (f"its backbone alone, fwd+bwd ({bsz}x{size}x{size})", bb_flops, times["backbone"]),
        (f"plain resnet18 fwd+bwd, batch {bsz} at {size}x{size}", refsmall_flops, times[f"resnet18_{size}"]),
        ("plain resnet18 fwd+bwd, batch 8 at 224x224", ref224_flops, times["resnet18_224"]),
    ]
    log("profiling one step")
    cats = profile_step(mtl, device, plan.profile_steps)
    res.efficiency.update(
        {
            "matmul_n": plan.matmul_n,
            "peak_fp32": peak,
            "peak_fp32_fast": fast_peak,
            "peak_fp32_max": max(peak_samples),
            "peak_fp32_min": min(peak_samples),
            "peak_samples": len(peak_samples),
            "peak_bf16": statistics.median([mm_flops / t for t in times["mm16"]]),
            "peak_bf16_fast": fast_rate([mm_flops / t for t in times["mm16"]]),
            "rows": [
                {
                    "name": n,
                    "flops": f,
                    "seconds": statistics.median(ts),
                    "fast_seconds": fast_time(ts),
                    "flops_per_s": f / statistics.median(ts),
                    "fraction": f / statistics.median(ts) / peak,
                    "fast_flops_per_s": f / fast_time(ts),
                    "fast_fraction": f / fast_time(ts) / fast_peak,
                    "samples": len(ts),
                }
                for n, f, ts in rows
            ],
            "flops_by_category": flops_by_category(by_op),
            "profile": cats,
            "head_flops": flops - bb_flops,
        }
    )


# (name, Trainer overrides, what it is, fill_uninitialized_memory: None = as the Trainer sets it)
OPTIONS: tuple[tuple[str, tuple[str, ...], str, Optional[bool]], ...] = (
    ("channels_last", ("train.channels_last=true",), "model and input in NHWC memory format", None),
    ("bf16 autocast", ("train.amp=bf16",), "torch.autocast(dtype=bfloat16) around the forward", None),
    ("channels_last + bf16", ("train.channels_last=true", "train.amp=bf16"), "both", None),
    ("deterministic off", ("train.deterministic=false",), "torch.use_deterministic_algorithms off", None),
    (
        "NaN fill on",
        (),
        "torch.utils.deterministic.fill_uninitialized_memory = True: PyTorch's default in "
        "deterministic mode, which the Trainer turns off",
        True,
    ),
)


def measure_option(
    name: str,
    extra: Sequence[str],
    default: Any,
    batch: dict,
    spec: str,
    overrides: list[str],
    plan: Plan,
    fill_uninitialized: Optional[bool] = None,
) -> dict[str, Any]:
    """One option: a fresh Trainer with the option's overrides, alternated with the default."""
    row: dict[str, Any] = {"name": name, "overrides": list(extra)}
    sync = sync_fn(default.device)
    try:
        t0 = time.perf_counter()
        trainer = build_trainer(spec, overrides + list(extra))
        row["build_s"] = time.perf_counter() - t0
        opt = trainer_step(trainer, batch, fill_uninitialized)
        base = trainer_step(default, batch)
        sync()
        t0 = time.perf_counter()
        opt()
        sync()
        row["first_step_s"] = time.perf_counter() - t0
        for _ in range(plan.warmup - 1):
            opt()
        base()
        sync()
        times = alternate(
            {"option": (opt, plan.option_steps), "default": (base, plan.option_steps)},
            plan.option_rounds,
            sync,
            max_seconds=plan.option_budget_s,
        )
        row.update(option_summary(times, plan.option_steps))
        if trainer.amp_dtype is not None:
            row["amp_dtype"] = str(trainer.amp_dtype).replace("torch.", "")
            scaler = getattr(trainer, "scaler", None)
            row["grad_scaler"] = (
                "none" if scaler is None else ("enabled" if scaler.is_enabled() else "disabled")
            )
        del trainer
    except Exception as exc:  # noqa: BLE001 - report what happens, whatever it is
        msg = str(exc).strip().splitlines()
        row["error"] = f"{type(exc).__name__}: {msg[0] if msg else ''}"[:300]
    gc.collect()
    return row


def option_summary(times: dict[str, list[float]], steps: int) -> dict[str, Any]:
    """Speed-up of ``times["option"]`` over ``times["default"]``: median of per-round ratios and
    the ratio of the fastest steps."""
    ratios = round_ratios(times["default"], times["option"])
    return {
        "option_s": statistics.median(times["option"]),
        "default_s": statistics.median(times["default"]),
        "speedup": summarize(ratios),
        "fast_speedup": fast_ratio(times["default"], times["option"]),
        "rounds": len(ratios),
        "steps": steps,
    }


def measure_options(
    default: Any, batch: dict, spec: str, overrides: list[str], plan: Plan, res: Results, timeout_s: int
) -> None:
    """Section 3."""
    for name, extra, what, fill in OPTIONS:
        log(f"option: {name}")
        row = measure_option(name, extra, default, batch, spec, overrides, plan, fill)
        row["what"] = what
        res.options.append(row)
    res.options.append(measure_compiled_child(spec, overrides, plan, timeout_s))


def measure_compiled_child(spec: str, overrides: list[str], plan: Plan, timeout_s: int) -> dict[str, Any]:
    """``train.compile=true`` measured through ``Trainer.train_step`` in a child process that is
    killed after ``timeout_s`` (a cold TorchInductor compile on a small CPU takes minutes)."""
    row: dict[str, Any] = {
        "name": "train.compile",
        "overrides": ["train.compile=true"],
        "what": "torch.compile of the modules the step calls (child process, time-capped)",
    }
    if timeout_s <= 0:
        row["error"] = "skipped (--quick; give --compile-timeout SECONDS to run it)"
        return row
    log(f"option: train.compile (child process, at most {timeout_s} s)")
    payload = json.dumps({"spec": spec, "overrides": overrides, "plan": asdict(plan)})
    cmd = [sys.executable, str(Path(__file__).resolve()), "--compile-child", payload]
    env = dict(os.environ)
    with contextlib.ExitStack() as stack:
        if plan.cold_compile:
            import tempfile

            env["TORCHINDUCTOR_CACHE_DIR"] = stack.enter_context(
                tempfile.TemporaryDirectory(prefix="inductor-")
            )
            row["inductor_cache"] = "empty (--cold-compile)"
        else:
            row["inductor_cache"] = inductor_cache_state(env)
        row.update(_run_child(cmd, env, timeout_s))
    return row


def inductor_cache_state(env: dict[str, str]) -> str:
    """Whether TorchInductor's on-disk cache already holds compiled code (then a compile is mostly
    cache hits and much faster than the first one on this machine)."""
    try:
        from torch._inductor.runtime.cache_dir_utils import default_cache_dir

        path = Path(env.get("TORCHINDUCTOR_CACHE_DIR") or default_cache_dir())
    except Exception:  # noqa: BLE001 - private API: describe rather than fail
        return "unknown"
    filled = path.is_dir() and any(path.iterdir())
    return f"{'warm' if filled else 'empty'} ({path})"


def _run_child(cmd: list[str], env: dict[str, str], timeout_s: int) -> dict[str, Any]:
    """Run the compile child in its own process group; on timeout end that group (the child
    and any compile workers it started)."""
    import signal

    row: dict[str, Any] = {}
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env=env,
        start_new_session=True,
    )
    try:
        stdout, stderr = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        row["error"] = f"did not finish within {timeout_s} s (compiling + timing); nothing measured"
        row["wall_s"] = time.perf_counter() - t0
        return row
    row["wall_s"] = time.perf_counter() - t0
    lines = [line for line in stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        tail = [line for line in stderr.strip().splitlines() if line.strip()][-3:]
        row["error"] = f"child exited with {proc.returncode}: " + " / ".join(tail)[:400]
        return row
    row.update(json.loads(lines[-1][len("RESULT ") :]))
    return row


def compile_child(payload: str) -> None:
    """Entry of the child process of :func:`measure_compiled_child`: prints ``RESULT {json}``."""
    args = json.loads(payload)
    plan = Plan(**args["plan"])
    if plan.threads:
        torch.set_num_threads(plan.threads)
    spec, overrides = args["spec"], args["overrides"]
    out: dict[str, Any] = {}
    default = build_trainer(spec, overrides)
    compiled = build_trainer(spec, overrides + ["train.compile=true"])
    sync = sync_fn(default.device)
    batch = fixed_batch(default)
    opt, base = trainer_step(compiled, batch), trainer_step(default, batch)
    sync()
    t0 = time.perf_counter()
    opt()
    sync()
    out["compile_s"] = time.perf_counter() - t0  # the first step compiles forward and backward
    t0 = time.perf_counter()
    opt()
    sync()
    out["second_step_s"] = time.perf_counter() - t0
    for _ in range(plan.warmup):
        base()
    opt()
    sync()
    times = alternate(
        {"option": (opt, plan.option_steps), "default": (base, plan.option_steps)},
        plan.option_rounds,
        sync,
        max_seconds=plan.option_budget_s,
    )
    out.update(option_summary(times, plan.option_steps))
    out["first_step_s"] = out["compile_s"]
    print("RESULT " + json.dumps(out), flush=True)


# -- report -------------------------------------------------------------------------------------


def _pct(x: float) -> str:
    return f"{100 * x:.0f}%"


def _machine_section(res: Results) -> list[str]:
    m = res.machine
    rows = [
        ("CPU", m["cpu"]),
        ("CPU flags that matter", m["cpu_flags"]),
        ("cores", m["cores"]),
        ("torch", m["torch"]),
        ("torch threads", m["threads"]),
        ("PyTorch CPU kernels", m["cpu_capability"]),
        ("device", m["device"]),
    ]
    if "gpu" in m:
        rows += [("GPU", m["gpu"]), ("TF32 allowed", m["tf32"])]
    rows += [("load average (1/5/15 min) before", res.load_before), ("load average after", res.load_after)]
    threads_note = []
    if res.plan.get("threads"):
        threads_note = [
            f"Run with `--threads {res.plan['threads']}`: on a machine shared with other busy processes, "
            "a multi-threaded step can stall at every parallel operator while one of its threads waits "
            "for a core (steps then vary by an order of magnitude); one thread per process slows down "
            "smoothly instead. The matmul peak is measured with the same threads, so the fractions "
            "below compare like with like.",
            "",
        ]
    return (
        ["## Machine", "", format_table(("", ""), rows), ""]
        + threads_note
        + [
            "The machine may be shared: other jobs can run beside this one (see the load average against the "
            "core count). Every comparison below alternates its contenders round by round (ABBA order) and "
            "reports the median of per-round ratios, so slow drifts in load fall on both sides alike; absolute "
            "times carry that noise and are only indicative.",
            "",
        ]
    )


def _workload_section(res: Results) -> list[str]:
    w = res.workload
    tasks = "; ".join(f"{n}: {t}, head `{w['heads'][n]}`" for n, t in w["tasks"].items())
    return [
        "## Workload",
        "",
        f"- spec `{w['spec']}` with overrides `{' '.join(w['overrides'])}`",
        f"- backbone `{w['backbone']}` (coarsest map at stride {w['max_stride']}), combiner `{w['combiner']}`",
        f"- tasks: {tasks}",
        f"- one fixed batch of shape {w['image']} already on the device (the data loader is measured "
        f"separately by `benchmarks/loader_speed.py`); {w['parameters'] / 1e6:.2f} M parameters "
        f"({w['shared'] / 1e6:.2f} M shared)",
        f"- `train.deterministic` = {w['deterministic']} (the default; the baseline runs under the same "
        f"process-wide setting)",
        "",
    ]


def _overhead_section(res: Results) -> list[str]:
    o, plan = res.overhead, res.plan
    r = o["ratio"]
    out = [
        "## 1. Framework overhead",
        "",
        f"`Trainer.train_step` vs a hand-written loop over an identical copy of the same network (same "
        f"backbone and heads, same loss modules, plain sum of the losses, AdamW with the same "
        f"hyper-parameters, same batch), alternating: {r['n']} rounds x {plan['steps']} steps per loop, after "
        f"{plan['warmup']} warm-up step(s) each. The baseline does only forward, sum, backward, "
        f"`optimizer.step()`, `zero_grad()`; the Trainer also calls `model.train()`, checks every loss for "
        f"finiteness, builds a `Step`, calls `combiner.backward`, steps the LR scheduler and returns the "
        f"losses as floats.",
        "",
    ]
    out += [
        format_table(
            ("loop", "median step (ms)", "p25-p75 (ms)", "images/s"),
            [
                (
                    "mtlzoo `Trainer.train_step`",
                    fmt_ms(o["mtlzoo_s"]["median"]),
                    f"{fmt_ms(o['mtlzoo_s']['p25'])}-{fmt_ms(o['mtlzoo_s']['p75'])}",
                    f"{o['images_per_s']['mtlzoo']:.1f}",
                ),
                (
                    "hand-written loop",
                    fmt_ms(o["hand_s"]["median"]),
                    f"{fmt_ms(o['hand_s']['p25'])}-{fmt_ms(o['hand_s']['p75'])}",
                    f"{o['images_per_s']['hand']:.1f}",
                ),
            ],
        ),
        "",
    ]
    verdict = "meets" if r["median"] <= TARGET_OVERHEAD else "misses"
    fast_verdict = "meets" if o["fast_ratio"] <= TARGET_OVERHEAD else "misses"
    out += [
        f"**Median per-round ratio mtlzoo / hand-written: {r['median']:.3f}** (quartiles {r['p25']:.3f}-"
        f"{r['p75']:.3f}, range {r['min']:.3f}-{r['max']:.3f} over {r['n']} rounds); target <= "
        f"{TARGET_OVERHEAD}: {verdict} it. Ratio of the fast steps (10th-percentile step times, the "
        f"estimate that contention disturbs least): **{o['fast_ratio']:.3f}**, {fast_verdict} it. "
        f"{_pct(o['contended'])} of all steps took more than twice the fastest step of their loop "
        f"(contention from other processes).",
        "",
    ]
    diff = o["param_diff_after_first_step"]
    same = "bit-identical" if diff == 0 else f"equal up to float rounding (max abs difference {diff:.1e})"
    out += [
        f"Both loops compute the same update: after one step of each from identical weights the parameters "
        f"are {same}. Cold first steps: mtlzoo {o['first_step_s']['mtlzoo']:.2f} s, hand-written "
        f"{o['first_step_s']['hand']:.2f} s.",
        "",
    ]
    fw = sum(row[3] for row in o["cprofile"])
    direct = sum(o.get("pieces", {}).values())
    if o.get("pieces"):
        out += ["The pieces of work the Trainer adds, timed directly (50 repetitions each, no profiler):", ""]
        out += [
            format_table(
                ("piece", "ms/step"),
                [(k, f"{v * 1e3:.3f}") for k, v in o["pieces"].items()]
                + [("**total**", f"**{direct * 1e3:.2f}**")],
            ),
            "",
        ]
    if o["cprofile"]:
        out += [
            "What the Trainer does beyond the baseline, per step (cProfile; functions that also run the "
            "shared forward/backward/AdamW work count only their own code):",
            "",
        ]
        out += [
            format_table(
                ("function", "calls/step", "ms/step"),
                [(f"`{n}`", f"{c:g}", f"{t * 1e3:.3f}") for n, c, _, t in o["cprofile"]],
            ),
            "",
        ]
    step = o["mtlzoo_s"]["median"]
    own = direct or fw
    text = (
        f"**What this means.** The Trainer's own per-step work costs about {own * 1e3:.2f} ms"
        + (f" timed directly ({fw * 1e3:.2f} ms under cProfile, which inflates Python)" if direct else "")
        + f", {100 * own / step:.2f}% of a {fmt_ms(step)} ms step: the step is the network's kernels, which "
        f"both loops share. "
    )
    if r["median"] <= TARGET_OVERHEAD and o["fast_ratio"] <= TARGET_OVERHEAD:
        text += (
            f"Both estimates ({r['median']:.3f} median, {o['fast_ratio']:.3f} fast-step) are within the "
            f"{TARGET_OVERHEAD} target; the spread of the per-round ratios ({r['min']:.3f}-{r['max']:.3f}) "
            f"is the machine's noise, far larger than anything the framework adds."
        )
    else:
        text += (
            f"An estimate is above the target (median {r['median']:.3f}, fast-step {o['fast_ratio']:.3f}), "
            f"but the work the Trainer adds accounts for only {100 * own / step:.2f}% of the step and the "
            f"per-round ratios spread over {r['min']:.3f}-{r['max']:.3f}: the excess is most likely the noise "
            f"of a shared machine. Rerun on a quiet machine (load average well below the core count) to "
            f"tighten it."
        )
    text += (
        " On a GPU the step synchronises with the device once: the task losses are copied to the host "
        "together (for the finiteness check and the log), not one sync per task."
    )
    return out + [text, ""]


def _efficiency_section(res: Results) -> list[str]:
    e, plan = res.efficiency, res.plan
    n = e["matmul_n"]
    out = [
        "## 2. Hardware efficiency",
        "",
        f"Dense matmul peak: `torch.mm` of two {n}x{n} matrices, median of {e['peak_samples']} samples taken in "
        f"the same alternation rounds as the steps: **{fmt_g(e['peak_fp32'])} GFLOP/s fp32** (range "
        f"{fmt_g(e['peak_fp32_min'])}-{fmt_g(e['peak_fp32_max'])}); bf16: {fmt_g(e['peak_bf16'])} GFLOP/s "
        f"(fast {fmt_g(e['peak_bf16_fast'])}, i.e. {e['peak_bf16_fast'] / e['peak_fp32_fast']:.1f}x the fast fp32 "
        f"rate of {fmt_g(e['peak_fp32_fast'])}).",
        "",
        "FLOPs are counted by `torch.utils.flop_counter.FlopCounterMode` (convolutions and matmuls, forward and "
        "backward; element-wise ops, norms, resizing and the optimizer count zero).",
        "",
    ]
    out += [
        "Two estimates per workload: *median* (median step time against the median matmul sample) and "
        "*fast* (10th-percentile step time against the 90th-percentile matmul sample: what the machine does "
        "when others leave it alone; with fewer than 10 samples, the fastest one).",
        "",
    ]
    out += [
        format_table(
            (
                "workload",
                "GFLOP/step",
                "step ms: median / fast",
                "GFLOP/s: median / fast",
                "of fp32 matmul peak: median / fast",
            ),
            [
                (
                    x["name"],
                    fmt_g(x["flops"]),
                    f"{fmt_ms(x['seconds'])} / {fmt_ms(x['fast_seconds'])}",
                    f"{fmt_g(x['flops_per_s'])} / {fmt_g(x['fast_flops_per_s'])}",
                    f"{_pct(x['fraction'])} / **{_pct(x['fast_fraction'])}**",
                )
                for x in e["rows"]
            ],
        ),
        "",
    ]
    main, hand, bbone, small, big = e["rows"]
    verdict = "meets" if main["fast_fraction"] >= TARGET_EFFICIENCY else "misses"
    out += [
        f"**mtlzoo step: {_pct(main['fast_fraction'])} of the fp32 matmul peak (fast estimate; median "
        f"{_pct(main['fraction'])})**; target >= {_pct(TARGET_EFFICIENCY)}: {verdict} it.",
        "",
    ]
    prof, fcat = e["profile"], e["flops_by_category"]
    total = sum(prof.values())
    rows = []
    for cat, sec in sorted(prof.items(), key=lambda kv: -kv[1]):
        f = fcat.get(cat, 0)
        rows.append(
            (
                cat,
                fmt_ms(sec),
                _pct(sec / total),
                fmt_g(f) if f else "0",
                fmt_g(f / sec) if f and sec else "-",
            )
        )
    out += [
        f"Profile of {plan['profile_steps']} mtlzoo step(s) (torch.profiler, self time by kind of operator"
        + ("; GPU kernel names are grouped approximately" if res.machine["device"].startswith("cuda") else "")
        + "):",
        "",
        format_table(("operator kind", "ms/step", "share", "GFLOP", "GFLOP/s"), rows),
        "",
    ]
    out += [_efficiency_meaning(res), ""]
    return out


def _efficiency_meaning(res: Results) -> str:
    """The data-driven "what this means" paragraph of section 2."""
    e, w = res.efficiency, res.workload
    main, hand, bbone, small, big = e["rows"]
    prof, fcat = e["profile"], e["flops_by_category"]
    total = sum(prof.values()) or 1.0
    conv_s = prof.get("convolution", 0.0)
    conv_rate = fcat.get("convolution", 0) / conv_s if conv_s else 0.0
    size, bsz = w["image"][-1], w["image"][0]
    side = size // max(1, w["max_stride"])
    text = "**What this means.** "
    if main["fast_fraction"] >= TARGET_EFFICIENCY:
        text += f"The step reaches the {_pct(TARGET_EFFICIENCY)} target ({_pct(main['fast_fraction'])}). "
    else:
        text += (
            f"The step reaches {_pct(main['fast_fraction'])} against a {_pct(TARGET_EFFICIENCY)} target; the "
            f"hand-written loop over the same network reaches {_pct(hand['fast_fraction'])}, so what bounds it "
            f"is the network on this machine, not mtlzoo. "
        )
    others = sorted(
        ((k, v) for k, v in prof.items() if k not in ("convolution", "matmul")), key=lambda kv: -kv[1]
    )
    top = ", ".join(f"{k} {fmt_ms(v)} ms" for k, v in others[:4])
    text += (
        f"In the profiled step the convolutions, which carry the counted FLOPs, took {_pct(conv_s / total)} of "
        f"the time at {fmt_g(conv_rate)} GFLOP/s ({_pct(conv_rate / e['peak_fp32_fast'])} of the fast matmul "
        f"rate); the other {_pct(1 - conv_s / total)} went to operators with no counted FLOPs, bound by memory "
        f"traffic ({top}). "
    )
    text += (
        f"For reference, a plain resnet18 forward+backward reaches {_pct(big['fast_fraction'])} at 224x224 "
        f"(batch 8) and {_pct(small['fast_fraction'])} at {size}x{size} (batch {bsz}); mtlzoo's backbone alone "
        f"reaches {_pct(bbone['fast_fraction'])}. "
    )
    if big["fast_fraction"] - max(small["fast_fraction"], bbone["fast_fraction"]) > 0.05:
        text += (
            f"Small images cost efficiency: at {size}x{size} the deepest maps are {side}x{side}, so the deep "
            f"layers' convolutions are GEMMs with few rows, and per-operator costs weigh more. "
        )
    text += (
        f"The heads carry {fmt_g(e['head_flops'])} GFLOP ({_pct(e['head_flops'] / main['flops'])} of the step's "
        f"FLOPs) on stride-4 and full-resolution maps with few channels, where element-wise work, resizing and "
        f"losses cost more per FLOP than in the backbone"
    )
    if main["fast_fraction"] < bbone["fast_fraction"] - 0.02:
        text += (
            f"; this is why the whole step ({_pct(main['fast_fraction'])}) sits below its backbone alone "
            f"({_pct(bbone['fast_fraction'])})"
        )
    text += ". Larger images, wider heads or a GPU raise the fraction."
    fill_s = sum(v for k, v in prof.items() if k.startswith("fill"))
    if fill_s / total > 0.05:
        text += (
            f" {_pct(fill_s / total)} of the step is `aten::fill_` (zeroing, and NaN-filling of new tensors "
            f"when `torch.utils.deterministic.fill_uninitialized_memory` is on; see the option 'NaN fill on')."
        )
    return text


def _options_section(res: Results) -> list[str]:
    m, e = res.machine, res.efficiency
    out = [
        "## 3. Options",
        "",
        "Each option is a fresh Trainer built from the same spec and seed with extra overrides (or a different "
        "process-wide setting), alternated step by step with the default Trainer on the same batch. Speed-up = "
        "default step time / option step time, two estimates: the median of per-round ratios (range in "
        "brackets) and the ratio of fast (10th-percentile) step times; > 1 is faster, and a verdict needs both "
        "to agree within 5%. The first step includes one-off work (oneDNN primitive creation, compilation). "
        "Each option's timed rounds stop after a time budget, so slow options get fewer rounds.",
        "",
    ]
    rows, said = [], []
    for x in res.options:
        over = " ".join(f"`{v}`" for v in x["overrides"]) or x.get("what", "-")
        if "error" in x:
            rows.append((x["name"], over, "-", "-", "-", "-", "-", x["error"]))
            said.append(f"{x['name']}: not measured ({x['error']}).")
            continue
        sp = x["speedup"]
        extra = [f"{x['rounds']} rounds x {x['steps']} step(s)"]
        if "amp_dtype" in x:
            extra.append(f"autocast {x['amp_dtype']}, GradScaler: {x['grad_scaler']}")
        if "compile_s" in x:
            extra.append(
                f"first (compiling) step {x['compile_s']:.1f} s, second {x['second_step_s']:.1f} s; "
                f"inductor cache {x.get('inductor_cache', '?')}; child wall {x.get('wall_s', 0):.0f} s"
            )
        rows.append(
            (
                x["name"],
                over,
                fmt_ms(x["option_s"]),
                fmt_ms(x["default_s"]),
                f"**{sp['median']:.2f}x** ({sp['min']:.2f}-{sp['max']:.2f})",
                f"**{x['fast_speedup']:.2f}x**",
                f"{x['first_step_s']:.1f}",
                "; ".join(extra),
            )
        )
        said.append(
            f"{x['name']}: {effect(sp['median'], x['fast_speedup'])} ({sp['median']:.2f}x median, "
            f"{x['fast_speedup']:.2f}x fast-step)."
        )
    out += [
        format_table(
            (
                "option",
                "overrides",
                "median step (ms)",
                "default (ms)",
                "speed-up: median (range)",
                "speed-up: fast steps",
                "first step (s)",
                "notes",
            ),
            rows,
        ),
        "",
    ]
    text = "**What this means.** " + " ".join(said)
    faster = [
        x
        for x in res.options
        if "error" not in x and effect(x["speedup"]["median"], x["fast_speedup"]) == "faster"
    ]
    if faster:
        best = max(faster, key=lambda x: x["fast_speedup"])
        text += f" The fastest setting here is {best['name']} ({best['fast_speedup']:.2f}x fast-step)."
    else:
        text += " No option is clearly faster than the default here."
    if m["device"].startswith("cpu"):
        flags = m["cpu_flags"]
        native = "avx512_bf16" in flags or "amx_bf16" in flags
        text += (
            " On bf16: this CPU "
            + (
                "reports avx512_bf16"
                + (" and AMX" if "amx_bf16" in flags else "")
                + ", native bf16 dot products, and a bf16 matmul runs at "
                f"{e['peak_bf16_fast'] / e['peak_fp32_fast']:.1f}x the fp32 rate"
                if native
                else "has no native bf16 instructions (no avx512_bf16/AMX)"
            )
            + "; what autocast does to a whole training step also depends on the memory format (oneDNN's "
            "bf16 convolutions prefer channels_last) and on the casts autocast inserts. It has "
            + (
                "native fp16 (avx512_fp16)."
                if "avx512_fp16" in flags
                else "no native fp16 arithmetic (no avx512_fp16), so fp16 kernels are emulated."
            )
        )
    out += [text, ""]
    if res.notes:
        out += ["Notes:", ""] + [f"- {n}" for n in res.notes] + [""]
    return out


def trainer_notes() -> list[str]:
    """Facts about the Trainer's code that bear on the options (checked, not assumed)."""
    import inspect

    from mtlzoo.runtime.train import Trainer

    notes = []
    src = inspect.getsource(Trainer.train_step)
    if "scaler" not in src:
        notes.append(
            "`Trainer.train_step` uses no GradScaler: `train.amp=fp16` is refused (no loss scaling while "
            "combiners own the backward pass) and `amp: auto` picks bf16 or nothing."
        )
    return notes


def render(res: Results) -> str:
    """The markdown report."""
    out = [
        "# Performance of the mtlzoo training step",
        "",
        f"Produced by `{res.command}` (from the repository root) on {time.strftime('%Y-%m-%d')}, in "
        f"{res.seconds / 60:.1f} minutes. Sections: 1. framework overhead, 2. hardware efficiency, 3. options.",
        "",
    ]
    out += _machine_section(res) + _workload_section(res) + _overhead_section(res)
    out += _efficiency_section(res) + _options_section(res)
    return "\n".join(out)


# -- main -----------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point."""
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    p.add_argument("--quick", action="store_true", help="a short smoke run (fewer rounds, no compile)")
    p.add_argument("--out", default="benchmarks/results/performance.md", help="markdown report to write")
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
    log(f"wrote {out} in {res.seconds / 60:.1f} min")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
