"""The parts that measure cost: performance.py and combiner_cost.py at GPU-sized batches, and
predict / load / export of the quickstart's GPU run (in a child process of its own)."""

from __future__ import annotations

import contextlib
import io
import json
import re
import sys
import time
from pathlib import Path
from typing import Any

from gpu_harness.common import ROOT, Record, read_json, result_line


def part_performance(check: Any, record: Record, limit: float) -> None:
    out, data = check.results / "performance_cuda.md", check.work / "performance.json"
    argv = [sys.executable, "benchmarks/performance.py", "--quick", "--out", str(out), "--json", str(data)]
    ran = check.run("performance", argv, limit)
    res = read_json(data)
    if not ran.ok or res is None:
        record.status = "timeout" if ran.rc is None else "FAIL"
        record.summary = ran.why()
        return
    check.written.append(out)
    record.status, record.data = "ok", res
    o = res["overhead"]
    memory = o.get("step_memory_bytes")
    mem = f", step memory {memory['mtlzoo'] / max(1, memory['hand']):.3f}x" if memory else ""
    record.summary = (
        f"Trainer.train_step / hand-written CUDA loop: {o['ratio']['median']:.3f} median, "
        f"{o['fast_ratio']:.3f} fast-step{mem} (target <= 1.03)"
    )


def part_combiner(check: Any, record: Record, limit: float) -> None:
    out, data = check.results / "combiner_cost_cuda.md", check.work / "combiner_cost.json"
    argv = [sys.executable, "benchmarks/combiner_cost.py", "--out", str(out), "--json", str(data)]
    if check.dry:
        argv += ["--device", "cpu", "--tasks", "2", "--modes", "params", "--only", "mgda", "--references"]
        argv += ["--torchjd", "Mean", "--size", "32", "--batch", "2", "--repeats", "1", "--warmup", "0"]
        argv += ["--threads", "1"]
    else:
        argv += ["--device", "cuda", "--tasks", "3,8", "--modes", "params", "--only", "mgda,upgrad,pcgrad"]
        argv += ["--repeats", "6"]
    ran = check.run("combiner", argv, limit)
    res = read_json(data)
    if res is None:
        record.status = "timeout" if ran.rc is None else "FAIL"
        record.summary = ran.why()
        return
    check.written.append(out)
    record.data = res
    rows = combiner_rows(res)
    misses = [r for r in rows if r["verdict"] == "MISS"]
    record.status = "ok" if ran.ok else "FAIL"
    record.summary = f"{len(rows)} rows against the hand-written step; targets missed: {len(misses)}" + (
        "" if ran.ok else f"; {ran.why()}"
    )


def combiner_rows(res: dict[str, Any]) -> list[dict[str, Any]]:
    """The rows issue 20's targets name, from combiner_cost.py's JSON: per task count, ``sum``
    (time and memory against the hand-written step), torchjd autojac, and each params-mode
    gradient method against torchjd's ratio (the same method's, else UPGrad's)."""
    same = {"mgda": "MGDA", "upgrad": "UPGrad"}
    out = []
    for block in res["blocks"]:
        tasks, base, rows = block["tasks"], block["sum"], block["rows"]
        hand = next((r for r in rows if r["name"] == "hand" and "error" not in r), None)
        if "error" in base or hand is None:
            out.append(
                {"tasks": tasks, "row": "sum", "time": None, "memory": None, "target": "", "verdict": "FAIL"}
            )
            continue
        torchjd = {r["options"]["aggregator"]: r for r in rows if r["name"] == "torchjd" and "error" not in r}
        t, m = base["time_s"] / base["hand_s"], base["peak_mb"] / max(1e-9, hand["peak_mb"])
        ok = t <= 1.03 and m <= 1.05
        out.append(
            {
                "tasks": tasks,
                "row": "sum",
                "time": t,
                "memory": m,
                "target": "<= 1.03 / <= 1.05",
                "verdict": "ok" if ok else "MISS",
            }
        )
        for r in rows:
            if r["name"] in ("hand",) or "error" in r:
                if "error" in r:
                    out.append(
                        {
                            "tasks": tasks,
                            "row": r["label"],
                            "time": None,
                            "memory": None,
                            "target": "",
                            "verdict": "FAIL",
                        }
                    )
                continue
            t = r["time_s"] / r["hand_s"]
            m = r["peak_mb"] / max(1e-9, hand["peak_mb"])
            target, verdict = "", ""
            if r["name"] != "torchjd" and r["options"].get("wrt") == "params":
                ref = torchjd.get(same.get(r["name"], "UPGrad"))
                if ref is not None:
                    goal = ref["time_s"] / ref["hand_s"]
                    target = f"<= {goal:.2f} ({ref['label']})"
                    verdict = "ok" if t <= goal else "MISS"
            out.append(
                {
                    "tasks": tasks,
                    "row": r["label"],
                    "time": t,
                    "memory": m,
                    "target": target,
                    "verdict": verdict,
                }
            )
    return out


EXPORT_CHILD_TASKS = 32  # images predicted from the val split


def part_export(check: Any, record: Record, limit: float) -> None:
    fp32 = check.records["quickstart-fp32"].data.get("run")
    if not fp32 or not check.records["quickstart-fp32"].data.get("summary"):
        record.status, record.summary = (
            "not run",
            "not run: it exports the quickstart-fp32 run, which did not finish",
        )
        return
    device = "cpu" if check.dry else "cuda"
    # the dry run's CNN has no export at any size, and a CPU export of ResNet-18 takes half a minute
    formats = "" if check.dry else ("pt2,onnx" if onnx_installed() else "pt2")
    argv = [
        sys.executable,
        str(ROOT / "benchmarks" / "gpu_check.py"),
        "--export-child",
        fp32,
        device,
        str(check.work / "export"),
        formats,
    ]
    ran = check.run("export", argv, limit)
    res = result_line(ran.stdout)
    record.data = res
    if not ran.ok or not res:
        record.status = "timeout" if ran.rc is None else "FAIL"
        record.summary = ran.why()
        return
    failed = [k for k, v in res.items() if isinstance(v, dict) and v.get("rc", 0) != 0]
    record.status = "FAIL" if failed else "ok"
    worst = max(res["load"]["max_abs_diff"].values())
    record.summary = (
        f"predict {res['predict']['seconds']:.1f} s ({res['predict']['images']} val images, --device {device}); "
        f"load(device={device!r}) max |diff| vs CPU {worst:.1e}; export "
        + (
            ", ".join(f"{f} {res[f]['seconds']:.0f} s" for f in formats.split(","))
            if formats
            else "not in a dry run"
        )
        + (
            ""
            if check.dry or "onnx" in formats
            else "; onnx not run: onnx, onnxscript or onnxruntime is missing"
        )
        + (f"; failed: {', '.join(failed)}" if failed else "")
    )


def onnx_installed() -> bool:
    """Whether ``mtlzoo export --format onnx`` can run here (onnx, onnxscript, onnxruntime)."""
    import importlib.util

    return all(importlib.util.find_spec(m) is not None for m in ("onnx", "onnxscript", "onnxruntime"))


def export_child(run: str, device: str, out: str, formats: str) -> None:
    """The export part's process: ``mtlzoo predict``, ``mtlzoo.load`` and ``mtlzoo export`` in one
    interpreter (the imports once); prints ``RESULT {json}``."""
    import torch

    import mtlzoo
    from mtlzoo.apps.cli import main

    def sync() -> None:
        if device == "cuda":
            torch.cuda.synchronize()

    res: dict[str, Any] = {}
    started = time.perf_counter()
    argv = ["predict", run, "--split", "val", "--limit", str(EXPORT_CHILD_TASKS), "--device", device]
    rc = main([*argv, "--out", f"{out}/preds"])
    index = read_json(Path(out) / "preds" / "predictions.json") or {}
    res["predict"] = {
        "rc": rc,
        "seconds": time.perf_counter() - started,
        "images": len(index.get("images", [])),
        "device": index.get("device"),
    }
    x = torch.rand(8, 3, 64, 96, generator=torch.Generator().manual_seed(0))
    on_cpu = mtlzoo.load(run).predict(x)
    started = time.perf_counter()
    predictor = mtlzoo.load(run, device=device)
    load_s = time.perf_counter() - started
    got = predictor.predict(x)
    many = torch.rand(64, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    predictor.predict(many[:32], batch_size=32)
    sync()
    started = time.perf_counter()
    predictor.predict(many, batch_size=32)
    sync()
    per_s = len(many) / (time.perf_counter() - started)
    diffs = {t: max(float((a[t] - b[t]).abs().max()) for a, b in zip(on_cpu, got)) for t in on_cpu[0]}
    res["load"] = {"rc": 0, "seconds": load_s, "max_abs_diff": diffs, "images_per_s": per_s}
    for fmt_ in [f for f in formats.split(",") if f]:
        buffer = io.StringIO()
        started = time.perf_counter()
        with contextlib.redirect_stdout(buffer):
            rc = main(["export", run, "--format", fmt_, "--out", f"{out}/model.{fmt_}"])
        text = buffer.getvalue()
        res[fmt_] = {"rc": rc, "seconds": time.perf_counter() - started, "max_abs_diff": export_diffs(text)}
    print("RESULT " + json.dumps(res), flush=True)


def export_diffs(text: str) -> dict[str, float]:
    """``{task: difference}`` of ``mtlzoo export``'s "max |difference| per task" lines."""
    lines = text.splitlines()
    start = next((i for i, x in enumerate(lines) if "max |difference| per task" in x), None)
    out: dict[str, float] = {}
    for line in lines[start + 1 :] if start is not None else []:
        m = re.match(r"^\s+(\S+)\s+([0-9.eE+-]+)\s*$", line)
        if not m:
            break
        out[m.group(1)] = float(m.group(2))
    return out
