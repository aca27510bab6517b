"""The markdown table of a run: the setup, one block per task count, the missed targets and the
notes on reading them."""

from __future__ import annotations

import argparse
import os
import platform
import sys
from pathlib import Path

from cost_harness.rows import SUM_VS_HAND_MEMORY, SUM_VS_HAND_TIME, hand_target, label, parse_size, target

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


def machine() -> str:
    """The host in one line: CPU model, logical CPUs, Python, torch and OS versions."""
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


__all__ = [
    "NOTES",
    "machine",
    "write",
]
