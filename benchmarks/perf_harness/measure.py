"""The three measurements: framework overhead (section 1), hardware efficiency (section 2) and the
Trainer options (section 3), the compiled option in a time-capped child process."""

from __future__ import annotations

import contextlib
import gc
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, Optional

import torch

from perf_harness.plan import ROOT, Plan, Results, log, sync_fn
from perf_harness.stats import (
    alternate,
    contended_share,
    count_flops,
    fast_rate,
    fast_ratio,
    fast_time,
    flops_by_category,
    round_ratios,
    summarize,
)
from perf_harness.workloads import (
    HandLoop,
    backbone_fn,
    batch_for,
    build_trainer,
    cprofile_framework,
    fixed_batch,
    hand_loop_for,
    matmul_fn,
    max_param_diff,
    profile_step,
    resnet18_fn,
    step_memory,
    time_framework_pieces,
    trainer_step,
)


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
        "deterministic": bool(trainer.process.deterministic),
        "channels_last": bool(trainer.channels_last),
        "amp": str(trainer.amp_dtype).replace("torch.", "") if trainer.amp_dtype is not None else "off",
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
    memory = {"mtlzoo": step_memory(mtl, device), "hand": step_memory(hand_step, device)}
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
    if memory["mtlzoo"] is not None:  # CUDA: the allocator's peak of one step over what was allocated
        res.overhead["step_memory_bytes"] = memory
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


# (name, Trainer overrides, what it is, fill_uninitialized_memory: None = as the Trainer sets it);
# against the defaults on CPU: fp32, NCHW, deterministic
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


# against the defaults on CUDA: fp32, channels-last, not deterministic (cudnn.benchmark on)
OPTIONS_CUDA: tuple[tuple[str, tuple[str, ...], str, Optional[bool]], ...] = (
    ("bf16 autocast", ("train.amp=bf16",), "torch.autocast(dtype=bfloat16) around the forward", None),
    ("channels_last off", ("train.channels_last=false",), "model and input in NCHW memory format", None),
    (
        "deterministic on",
        ("train.deterministic=true",),
        "torch.use_deterministic_algorithms, cudnn.deterministic, no cudnn.benchmark autotuning",
        None,
    ),
)


def options_for(device: torch.device) -> tuple[tuple[str, tuple[str, ...], str, Optional[bool]], ...]:
    """The options section 3 compares with the default Trainer on ``device``: each one changes a
    default of that device (the NaN fill only matters in deterministic mode, the CPU default)."""
    return OPTIONS_CUDA if device.type == "cuda" else OPTIONS


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
        # the batch in this trainer's memory layout (an NCHW model fed a channels-last image would run
        # channels-last convolutions)
        opt = trainer_step(trainer, batch_for(trainer, batch), fill_uninitialized)
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
    for name, extra, what, fill in options_for(default.device):
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
    cmd = [sys.executable, str(ROOT / "benchmarks" / "performance.py"), "--compile-child", payload]
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
