"""The markdown report written from :class:`~perf_harness.plan.Results`."""

from __future__ import annotations

import time

from perf_harness.plan import TARGET_EFFICIENCY, TARGET_OVERHEAD, Results
from perf_harness.stats import effect, fmt_g, fmt_ms, format_table


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
    out = [
        "## Workload",
        "",
        f"- spec `{w['spec']}` with overrides `{' '.join(w['overrides'])}`",
        f"- backbone `{w['backbone']}` (coarsest map at stride {w['max_stride']}), combiner `{w['combiner']}`",
        f"- tasks: {tasks}",
        f"- one fixed batch of shape {w['image']} already on the device (the data loader is measured "
        f"separately by `benchmarks/loader_speed.py`); {w['parameters'] / 1e6:.2f} M parameters "
        f"({w['shared'] / 1e6:.2f} M shared)",
        f"- `train.deterministic` = {w['deterministic']} (the device's default; the baseline runs under the "
        f"same process-wide setting)",
    ]
    if "channels_last" in w:
        out.append(
            f"- channels-last layout: {w['channels_last']}, autocast: {w.get('amp', 'off')} (the Trainer's "
            f"defaults on this device; the hand-written loop uses the same layout, dtype and batch)"
        )
    return out + [""]


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
    mem = o.get("step_memory_bytes")
    if mem:
        ratio = mem["mtlzoo"] / max(1, mem["hand"])
        out += [
            f"Device memory of one step (CUDA allocator: peak during the step minus what was allocated "
            f"before it): mtlzoo {mem['mtlzoo'] / 2**20:.0f} MiB, hand-written {mem['hand'] / 2**20:.0f} MiB, "
            f"**{ratio:.3f}x**.",
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
