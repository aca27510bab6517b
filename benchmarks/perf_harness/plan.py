"""What the harness measures and on what: the :class:`Plan` (how much to measure), the
:class:`Results` the report is written from, and the machine description."""

from __future__ import annotations

import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch

from perf_harness.stats import CPU_FLAGS, parse_cpuinfo

ROOT = Path(__file__).resolve().parents[2]  # the repository
DEFAULT_SPEC = "configs/quickstart.yaml"
TARGET_OVERHEAD = 1.03
TARGET_EFFICIENCY = 0.55


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
