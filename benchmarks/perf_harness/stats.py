"""Pure helpers of the performance harness: FLOP counting, statistics of step times, the
alternation (ABBA) timer, operator categories, /proc/cpuinfo parsing and number formatting.
Tested in tests/test_performance_script.py; nothing here builds a model."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_fp16", "avx512_vnni", "amx_bf16", "amx_fp16")


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
