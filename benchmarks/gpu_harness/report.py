"""gpu.md: an overview row per part, then a section per part from what it measured."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from gpu_harness.common import (
    DRY_QUICKSTART,
    LITE0,
    MULTITASK,
    QUICKSTART,
    ROOT,
    Record,
    fmt,
    later_compute,
    later_total,
    readme_table,
    table,
)
from gpu_harness.measures import EXPORT_CHILD_TASKS, combiner_rows


def render(check: Any, chosen: list[str]) -> str:
    """gpu.md: an overview of every part, then a section per part that ran."""
    r = check.records
    took = (time.perf_counter() - check.started) / 60
    cmd = "python benchmarks/gpu_check.py" + (" --dry-run" if check.dry else "")
    lines = ["# mtlzoo on a GPU: the acceptance check", ""]
    if check.dry:
        lines += [
            "**Dry run on the CPU with tiny settings: the figures below measure nothing; they show that every "
            "part runs and reports.**",
            "",
        ]
    lines += [
        f"Produced by `{cmd}` (from the repository root{', after `source .gpu/setup.sh`' if not check.dry else ''}) "
        f"on {check.date} in {took:.1f} min (budget {check.budget / 60:.1f} min). Every figure below comes from "
        "that command; each part's command and output are in its log. [docs/gpu.md](../../docs/gpu.md) says what "
        "each number means.",
        "",
    ]
    if r["env"].lines:
        lines += r["env"].lines + [""]
    lines += table(
        ["part", "status", "s", "result"],
        [
            [r[n].title, r[n].status, fmt(r[n].seconds, 0) if r[n].seconds else "-", r[n].summary]
            for n in ordered(check, chosen)
        ],
    )
    lines.append("")
    for name in ordered(check, chosen):
        if name == "env":
            continue
        section = SECTIONS.get(name, lambda c, rec: rec.lines)(check, r[name])
        if section:
            lines += [f"## {r[name].title}", "", *section, ""]
    return "\n".join(lines)


def ordered(check: Any, chosen: list[str]) -> list[str]:
    """``chosen`` in the report's order."""
    position = {name: pos for name, _, pos, *_ in check.parts}
    return sorted(chosen, key=lambda n: position[n])


def section_quickstart(check: Any, record: Record) -> list[str]:
    """Wall times, where the time went and the metrics of every quickstart variant next to
    README.md's CPU table (written once, under the fp32 part)."""
    variants = [
        n
        for n in ("quickstart-fp32", "quickstart-bf16", "quickstart-compiled")
        if check.records[n].data.get("summary")
    ]
    if not variants or record.name != variants[0]:  # one section for the three, under the first that ran
        return []
    r = check.records
    rows = []
    for n in variants:
        d = r[n].data
        t = d["summary"].get("timing", {})
        first = d["epochs"][0].get("total", 0.0) if d["epochs"] else 0.0
        rows.append(
            [
                n.split("-")[1],
                fmt(d["wall_s"], 1),
                fmt(d["summary"]["seconds"], 1),
                fmt(first, 1),
                fmt(later_total(d["epochs"]), 1),
                *(fmt(t.get(k), 1) for k in ("data", "compute", "eval", "write")),
            ]
        )
    overrides = " ".join(DRY_QUICKSTART) if check.dry else "none"
    out = [
        f"`mtlzoo train {QUICKSTART} train.progress=false` (overrides: {overrides}; bf16 adds `train.amp=bf16`, "
        "compiled `train.compile=true`). Wall: from the command's start to its exit, after the table. Training: "
        "`summary.json` seconds (build and imports excluded). The time split sums metrics.jsonl's `timing` over "
        "the epochs.",
        "",
        *table(
            [
                "variant",
                "wall (s)",
                "training (s)",
                "epoch 1 (s)",
                "later epochs (s, mean)",
                "data",
                "compute",
                "eval",
                "write",
            ],
            rows,
        ),
        "",
    ]
    cpu = readme_table((ROOT / "README.md").read_text()) if (ROOT / "README.md").is_file() else {}
    finals = {n: r[n].data["summary"].get("final", {}) for n in variants}
    keys = list(cpu) or [(t, k) for t, vals in finals[variants[0]].items() for k in vals]
    out += [
        "Validation metrics against README.md's CPU table (seed 0; another device sums in another order, so "
        "the digits differ; the level should not):",
        "",
        *table(
            ["task", "metric", "CPU (README)"] + [n.split("-")[1] for n in variants],
            [
                [t, k, fmt(cpu.get((t, k)))] + [fmt(finals[n].get(t, {}).get(k)) for n in variants]
                for t, k in keys
            ],
        ),
    ]
    return out


def section_determinism(check: Any, record: Record) -> list[str]:
    d = record.data
    if "compute_ratio" not in d:
        return record.lines
    base = check.records["quickstart-fp32"].data
    return [
        "The quickstart (fp32) with `train.deterministic=true` against the default (off on CUDA: cuDNN's "
        "autotuner on, atomics-based kernels allowed). Compute: mean seconds per epoch spent in training "
        "steps, epochs after the first (the default's first epoch pays the autotuning).",
        "",
        *table(
            ["run", "wall (s)", "compute per later epoch (s)", "training (s)"],
            [
                [
                    "default",
                    fmt(base["wall_s"], 1),
                    fmt(later_compute(base["epochs"]), 2),
                    fmt(base["summary"]["seconds"], 1),
                ],
                [
                    "deterministic",
                    fmt(d["wall_s"], 1),
                    fmt(later_compute(d["epochs"]), 2),
                    fmt(d["summary"]["seconds"], 1),
                ],
            ],
        ),
        "",
        f"**`train.deterministic=true` costs {d['compute_ratio']:.2f}x the default's compute per epoch here.** "
        "performance.py's option row 'deterministic on' measures the same on one step.",
    ]


def section_camvid(check: Any, record: Record) -> list[str]:
    d = record.data
    if "summary" not in d:
        return record.lines
    s, t = d["summary"], d["summary"].get("timing", {})
    test = s.get("test", {}).get("semseg", {}).get("miou")
    return [
        f"`mtlzoo train {LITE0} train.progress=false` as committed (EfficientNet-Lite0 with its ImageNet weights, "
        "180x240 images, 160x224 crops, batch 8, the config's `num_workers: 2`)"
        + (f"; dry run: {' '.join(d['overrides'])}" if check.dry else "")
        + ".",
        "",
        *table(
            [
                "epochs",
                "training (s)",
                "epochs/s",
                "wall (s)",
                "data",
                "compute",
                "eval",
                "write",
                "test mIoU",
            ],
            [
                [
                    s["epochs"],
                    fmt(s["seconds"], 1),
                    fmt(d["epochs_per_s"], 3),
                    fmt(d["wall_s"], 1),
                    *(fmt(t.get(k), 1) for k in ("data", "compute", "eval", "write")),
                    fmt(test),
                ]
            ],
        ),
    ]


def section_performance(check: Any, record: Record) -> list[str]:
    res = record.data
    if "overhead" not in res:
        return record.lines
    o = res["overhead"]
    out = [
        f"`python benchmarks/performance.py --quick` on the GPU; the full report: "
        "[performance_cuda.md](performance_cuda.md). Workload: "
        f"{res['workload'].get('image')} images, channels-last {res['workload'].get('channels_last')}, "
        f"deterministic {res['workload'].get('deterministic')}.",
        "",
        *table(
            ["loop", "median step (ms)", "images/s", "step memory (MiB)"],
            [
                [
                    name,
                    fmt(1e3 * o[f"{key}_s"]["median"], 2),
                    fmt(o["images_per_s"][key], 0),
                    fmt(o["step_memory_bytes"][key] / 2**20, 0) if o.get("step_memory_bytes") else "-",
                ]
                for name, key in (("mtlzoo Trainer.train_step", "mtlzoo"), ("hand-written loop", "hand"))
            ],
        ),
        "",
        f"Ratio mtlzoo / hand-written: **{o['ratio']['median']:.3f}** median of {o['ratio']['n']} rounds, "
        f"**{o['fast_ratio']:.3f}** fast-step (target <= 1.03).",
        "",
    ]
    rows = []
    for x in res.get("options", []):
        if "error" in x:
            rows.append([x["name"], "-", "-", x["error"][:120]])
        else:
            rows.append([x["name"], f"{x['speedup']['median']:.2f}x", f"{x['fast_speedup']:.2f}x", ""])
    if rows:
        out += ["Options against the CUDA defaults (speed-up = default time / option time):", ""]
        out += table(["option", "median", "fast steps", "note"], rows)
    return out


def section_combiner(check: Any, record: Record) -> list[str]:
    res = record.data
    if "blocks" not in res:
        return record.lines
    a = res["args"]
    rows = combiner_rows(res)
    return [
        f"`python benchmarks/combiner_cost.py` on {a['device']}, batch {a['batch']} at {a['size']}, "
        f"{a['repeats']} interleaved repeats; the full table: [combiner_cost_cuda.md](combiner_cost_cuda.md). "
        "x hand-written: step time over the hand-written step's in the same process; memory: the CUDA "
        "allocator's peak of a step over the hand-written step's. Targets (issue 20): `sum` <= 1.03x time and "
        "<= 1.05x memory; params-mode gradient methods at or below torchjd autojac's ratio (the same method's "
        "row, else UPGrad's) at T=3 and T=8.",
        "",
        *table(
            ["T", "row", "x hand-written (time)", "x hand-written (memory)", "target (time)", ""],
            [
                [x["tasks"], x["row"], fmt(x["time"], 2), fmt(x["memory"], 2), x["target"], x["verdict"]]
                for x in rows
            ],
        ),
    ]


def section_export(check: Any, record: Record) -> list[str]:
    res = record.data
    if "load" not in res:
        return record.lines
    load = res["load"]
    device = res["predict"].get("device")
    out = [
        f"On the quickstart-fp32 run: `mtlzoo predict RUN --split val --limit {EXPORT_CHILD_TASKS} --device {device}` "
        f"({res['predict']['images']} images with pictures and contact sheets in {res['predict']['seconds']:.1f} s); "
        f"`mtlzoo.load(run, device={device!r})` in {load['seconds']:.1f} s, {load['images_per_s']:.0f} images/s "
        "(64x64, batch 32), its raw predictions against the CPU's: "
        + ", ".join(f"{k} {v:.1e}" for k, v in load["max_abs_diff"].items())
        + ".",
        "",
    ]
    for key in ("pt2", "onnx"):
        if key in res:
            diffs = res[key]["max_abs_diff"]
            out.append(
                f"- `mtlzoo export RUN --format {key}`: exit {res[key]['rc']} in {res[key]['seconds']:.1f} s; "
                "largest difference from predict per task: "
                + (", ".join(f"{k} {v:.1e}" for k, v in diffs.items()) or "not printed")
            )
    return out


def section_bench(check: Any, record: Record) -> list[str]:
    d = record.data
    if "cells" not in d:
        return record.lines
    s = d["spec"]
    return [
        f"`mtlzoo bench SPEC --jobs {d['jobs']}` on one device: base {MULTITASK}, overrides "
        f"`{' '.join(s['overrides'])}`, combiners {', '.join(s['grid']['combiner'])}, seeds {s['seeds']}, "
        f"baselines {s['baselines']}. {d['cells']} of {d['planned']} cells committed in {d['wall_s']:.0f} s"
        + (" (table: [gpu_bench_camvid.md](gpu_bench_camvid.md))" if d["cells"] else "")
        + ".",
    ]


SECTIONS: dict[str, Callable[[Any, Record], list[str]]] = {
    "quickstart-fp32": section_quickstart,
    "quickstart-bf16": section_quickstart,
    "quickstart-compiled": section_quickstart,
    "determinism": section_determinism,
    "camvid": section_camvid,
    "performance": section_performance,
    "combiner": section_combiner,
    "export": section_export,
    "bench": section_bench,
}
