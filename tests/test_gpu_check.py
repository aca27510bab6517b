"""benchmarks/gpu_check.py: its dry run on the CPU runs every part that needs no CUDA and reports
the rest as skipped; a failing, hanging or budget-cut part is reported and never hides the
others; the tables it writes from the parts' outputs (combiner targets, export differences,
README's CPU table, JUnit results). No timing is asserted."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import assert_process_gone

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def gc():
    spec = importlib.util.spec_from_file_location("mtlzoo_gpu_check", ROOT / "benchmarks" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses need the module registered
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("gpu_check")
    committed = (
        (ROOT / "benchmarks" / "results" / "gpu.md").read_bytes()
        if (ROOT / "benchmarks" / "results" / "gpu.md").exists()
        else None
    )
    out = subprocess.run(
        [sys.executable, "benchmarks/gpu_check.py", "--dry-run", "--out", str(folder / "gpu.md")]
        + ["--workdir", str(folder / "work")],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=900,
    )
    return folder, out, committed


@pytest.mark.slow
def test_the_dry_run_runs_every_cpu_part_and_skips_the_cuda_ones(dry_run, gc):
    folder, out, committed = dry_run
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    state = json.loads((folder / "gpu_check.json").read_text())
    assert state["dry_run"] is True
    status = {name: part["status"] for name, part in state["parts"].items()}
    ran = ("env", "quickstart-fp32", "camvid", "export", "combiner", "bench")
    cuda = ("tests", "quickstart-bf16", "quickstart-compiled", "determinism", "performance", "ddp")
    assert {n: status[n] for n in ran} == dict.fromkeys(ran, "ok")
    assert {n: status[n] for n in cuda} == dict.fromkeys(cuda, "skipped")
    report = (folder / "gpu.md").read_text()
    assert "Dry run on the CPU with tiny settings" in report
    assert report.count("| skipped | - | skipped: ") == len(cuda)
    # each part's section, from its own output
    cpu = gc.readme_table((ROOT / "README.md").read_text())[("semseg", "miou")]
    assert f"| semseg | miou | {cpu:.4f} |" in report  # README's CPU table beside the run's metrics
    assert "| variant | wall (s) | training (s) |" in report
    assert "| 1 | " in report.split("## CamVid lite0")[1]  # one epoch
    assert "torchjd autojac Mean" in report and "| 2 | sum |" in report
    assert "1 of 1 cells committed" in report
    assert "`mtlzoo.load(run, device='cpu')`" in report
    # the tables beside the report, the logs in the work folder; the committed report untouched
    assert (folder / "combiner_cost_cuda.md").is_file() and (folder / "gpu_bench_camvid.md").is_file()
    logs = {p.name for p in (folder / "work").glob("check-*/logs/*.log")}
    assert {"env.log", "fp32.log", "camvid_lite0.log", "export.log", "combiner.log", "bench.log"} <= logs
    now = ROOT / "benchmarks" / "results" / "gpu.md"
    assert (now.read_bytes() if now.exists() else None) == committed


def fake_parts(gc, pid_file: Path):
    """Parts for the driver alone: one that works, one that raises, one that outlives its time
    limit (with a grandchild), one that needs CUDA."""

    def fine(check, record, limit):
        record.status, record.summary = "ok", "fine"

    def broken(check, record, limit):
        raise RuntimeError("boom")

    def hangs(check, record, limit):
        script = (
            "import subprocess, sys, time; "
            "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)']); "
            f"open({str(pid_file)!r}, 'w').write(str(p.pid)); time.sleep(120)"
        )
        ran = check.run("hangs", [sys.executable, "-c", script], limit)
        record.status = "timeout" if ran.rc is None else "ok"
        record.summary = ran.why()

    return [
        ("env", "Machine", 0, fine, 10, False),
        ("broken", "Broken", 1, broken, 10, False),
        ("hangs", "Hangs", 2, hangs, 3, False),
        ("after", "After", 3, fine, 10, False),
        ("gpu", "On the GPU", 4, fine, 10, True),
    ]


def test_a_failing_or_hanging_part_is_reported_and_the_next_still_runs(gc, tmp_path, monkeypatch):
    pid_file = tmp_path / "grandchild"
    parts = fake_parts(gc, pid_file)
    monkeypatch.setattr(gc, "PARTS", parts)
    monkeypatch.setattr(gc, "RUN_ORDER", [p[0] for p in parts])
    code = gc.main(["--dry-run", "--out", str(tmp_path / "gpu.md"), "--workdir", str(tmp_path / "w")])
    assert code == 1
    state = json.loads((tmp_path / "gpu_check.json").read_text())["parts"]
    assert {n: p["status"] for n, p in state.items()} == {
        "env": "ok",
        "broken": "FAIL",
        "hangs": "timeout",
        "after": "ok",
        "gpu": "skipped",
    }
    assert state["broken"]["summary"] == "RuntimeError: boom"
    assert state["hangs"]["summary"].startswith("cut off at its time limit after 3 s (log: logs/hangs.log)")
    report = (tmp_path / "gpu.md").read_text()
    assert (
        "| Broken | FAIL |" in report and "| After | ok |" in report and "| On the GPU | skipped |" in report
    )
    assert_process_gone(int(pid_file.read_text()))  # the whole session was killed: the grandchild too


def test_parts_past_the_budget_are_not_run_and_fail_the_check(gc, tmp_path, monkeypatch):
    parts = fake_parts(gc, tmp_path / "pid")
    monkeypatch.setattr(gc, "PARTS", parts)
    monkeypatch.setattr(gc, "RUN_ORDER", [p[0] for p in parts])
    argv = ["--dry-run", "--out", str(tmp_path / "gpu.md"), "--workdir", str(tmp_path / "w"), "--budget", "0"]
    assert gc.main([*argv, "--parts", "after"]) == 1
    state = json.loads((tmp_path / "gpu_check.json").read_text())["parts"]
    assert list(state) == ["env", "after"]  # env always runs first: the others need to know the device
    assert state["after"]["status"] == "not run"
    assert "budget was spent before it could start" in state["after"]["summary"]


def test_copy_to_gets_the_report_the_tables_and_the_logs(gc, tmp_path, monkeypatch):
    def writes(check, record, limit):
        table = check.results / "combiner_cost_cuda.md"
        table.write_text("# a table\n")
        check.written.append(table)
        ran = check.run("says", [sys.executable, "-c", "print('hello')"], limit)
        record.status, record.summary = ("ok" if ran.ok else "FAIL"), ran.stdout.strip()

    parts = [("env", "Machine", 0, writes, 10, False)]
    monkeypatch.setattr(gc, "PARTS", parts)
    monkeypatch.setattr(gc, "RUN_ORDER", ["env"])
    out = tmp_path / "out"
    argv = ["--dry-run", "--out", str(tmp_path / "r" / "gpu.md"), "--workdir", str(tmp_path / "w")]
    assert gc.main([*argv, "--copy-to", str(out)]) == 0
    assert {p.name for p in out.iterdir()} == {"gpu.md", "gpu_check.json", "combiner_cost_cuda.md", "logs"}
    assert "hello" in (out / "logs" / "says.log").read_text()


def test_usage_errors(gc, capsys):
    with pytest.raises(SystemExit) as exc:
        gc.main(["--dry-run"])
    assert exc.value.code == 2 and "--dry-run needs --out PATH" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        gc.main(["--dry-run", "--out", "x.md", "--parts", "quickstart,nope"])
    assert "unknown part(s) quickstart, nope" in capsys.readouterr().err


def test_without_cuda_the_real_check_stops_at_the_machine(tmp_path):
    out = subprocess.run(
        [
            sys.executable,
            "benchmarks/gpu_check.py",
            "--parts",
            "env,camvid",
            "--out",
            str(tmp_path / "gpu.md"),
        ]
        + ["--workdir", str(tmp_path / "w")],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
        env={**os.environ, "CUDA_VISIBLE_DEVICES": ""},
    )
    assert out.returncode == 1
    state = json.loads((tmp_path / "gpu_check.json").read_text())["parts"]
    assert state["env"]["status"] == "FAIL"
    assert state["env"]["summary"] == "no CUDA device here: use --dry-run on a CPU machine"
    assert state["camvid"] == {
        **state["camvid"],
        "status": "not run",
        "summary": "not run: no CUDA device here",
    }


# -- what the report computes from the parts' outputs ---------------------------------------------
def cost_row(name, options, time_s, hand_s, peak_mb, label=None):
    return {
        "name": name,
        "options": options,
        "time_s": time_s,
        "hand_s": hand_s,
        "peak_mb": peak_mb,
        "label": label or name,
    }


def test_combiner_rows_read_the_issue_targets_off_the_table(gc):
    res = {
        "blocks": [
            {
                "tasks": 3,
                "sum": {"time_s": 1.02, "hand_s": 1.0, "peak_mb": 106.0, "sum_s": 1.0},
                "rows": [
                    cost_row("hand", {}, 1.0, 1.0, 100.0, "hand-written sum step"),
                    cost_row("torchjd", {"aggregator": "MGDA"}, 1.5, 1.0, 300.0, "torchjd autojac MGDA"),
                    cost_row("torchjd", {"aggregator": "UPGrad"}, 1.6, 1.0, 300.0, "torchjd autojac UPGrad"),
                    cost_row("mgda", {"wrt": "params"}, 1.4, 1.0, 150.0, "mgda (params)"),
                    cost_row("pcgrad", {"wrt": "params"}, 1.7, 1.0, 150.0, "pcgrad (params)"),
                    cost_row("pcgrad", {"wrt": "features"}, 1.1, 1.0, 120.0, "pcgrad (features)"),
                    {
                        "name": "upgrad",
                        "options": {"wrt": "params"},
                        "label": "upgrad (params)",
                        "error": "x",
                    },
                ],
            }
        ]
    }
    rows = {r["row"]: r for r in gc.combiner_rows(res)}
    # sum: 1.02x the hand-written time (<= 1.03 ok) but 1.06x its memory (> 1.05): a miss
    assert rows["sum"]["time"] == pytest.approx(1.02) and rows["sum"]["memory"] == pytest.approx(1.06)
    assert rows["sum"]["verdict"] == "MISS"
    assert rows["mgda (params)"]["target"] == "<= 1.50 (torchjd autojac MGDA)"
    assert rows["mgda (params)"]["verdict"] == "ok"
    assert rows["pcgrad (params)"]["target"] == "<= 1.60 (torchjd autojac UPGrad)"  # no torchjd PCGrad row
    assert rows["pcgrad (params)"]["verdict"] == "MISS"
    assert rows["pcgrad (features)"]["verdict"] == "" and rows["upgrad (params)"]["verdict"] == "FAIL"
    assert (
        rows["torchjd autojac UPGrad"]["time"] == pytest.approx(1.6) and "hand-written sum step" not in rows
    )


def test_export_differences_are_read_from_the_command_output(gc):
    text = (
        "exported runs/q/model-best.pt2 (49.4 MiB): input 'image' float32 [batch, 3, H, W]\n"
        "verified against predict on 1x3x64x128, 3x3x129x63, 2x3x33x38; max |difference| per task:\n"
        "  semseg    0\n  depth     1.5e-06\n  labels    2.38e-07\n"
        "wrote something else\n"
    )
    assert gc.export_diffs(text) == {"semseg": 0.0, "depth": 1.5e-06, "labels": 2.38e-07}
    assert gc.export_diffs("no table here") == {}


def test_readme_table_is_parsed_between_its_markers(gc):
    text = (
        "before\n| semseg | miou (higher is better) | 0.1 |\n<!-- demo-table:start -->\n```\nval metrics:\n"
        "| task     | metric                  | value  |\n|----------|---|---|\n"
        "| semseg   | miou (higher is better) | 0.6892 |\n| depth    | loss                    | 0.6871 |\n"
        "```\n<!-- demo-table:end -->\n| depth | loss | 9 |\n"
    )
    assert gc.readme_table(text) == {("semseg", "miou"): 0.6892, ("depth", "loss"): 0.6871}
    readme = gc.readme_table((ROOT / "README.md").read_text())
    assert len(readme) == 17 and ("normals", "within_11.25") in readme


def test_junit_cases_say_what_passed_failed_and_why_skipped(gc, tmp_path):
    xml = tmp_path / "junit.xml"
    xml.write_text(
        '<testsuites><testsuite name="pytest" tests="3">'
        '<testcase classname="tests.test_cuda" name="test_a" time="1.5"/>'
        '<testcase classname="tests.test_cuda" name="test_b" time="0.2"><failure message="assert 1 == 2">tb'
        "</failure></testcase>"
        '<testcase classname="tests.test_cuda" name="test_two_gpus_over_nccl" time="0">'
        '<skipped type="pytest.skip" message="needs two GPUs">x</skipped></testcase>'
        "</testsuite></testsuites>"
    )
    assert gc.junit_cases(xml) == [
        {"name": "test_a", "outcome": "passed", "seconds": 1.5, "message": ""},
        {"name": "test_b", "outcome": "failed", "seconds": 0.2, "message": "assert 1 == 2"},
        {
            "name": "test_two_gpus_over_nccl",
            "outcome": "skipped",
            "seconds": 0.0,
            "message": "needs two GPUs",
        },
    ]
    assert gc.junit_cases(tmp_path / "missing.xml") == []


def test_later_epochs_leave_out_the_first(gc):
    epochs = [{"compute": 9.0, "total": 12.0}, {"compute": 2.0, "total": 3.0}, {"compute": 4.0, "total": 5.0}]
    assert gc.later_compute(epochs) == 3.0 and gc.later_total(epochs) == 4.0
    assert gc.later_compute(epochs[:1]) == 9.0 and gc.later_compute([]) == 0.0


def test_the_report_of_a_gpu_run_has_every_section(gc, tmp_path):
    """The sections only a GPU run fills, from records shaped as the parts leave them."""
    import argparse

    args = argparse.Namespace(
        dry_run=False,
        out=str(tmp_path / "gpu.md"),
        results=str(tmp_path),
        workdir=str(tmp_path / "w"),
        copy_to=None,
        budget=470.0,
    )
    check = gc.Check(args)
    r = check.records
    epochs = [{"data": 0.5, "compute": 4.0, "eval": 1.0, "write": 0.5, "total": 6.0}] + [
        {"data": 0.2, "compute": 2.0, "eval": 0.5, "write": 0.3, "total": 3.0}
    ] * 3
    final = {"semseg": {"miou": 0.7, "loss": 0.2}}

    def run(name, wall, compute_scale=1.0):
        r[name].status = "ok"
        r[name].data = {
            "wall_s": wall,
            "summary": {
                "seconds": wall - 4,
                "device": "cuda:0",
                "epochs": 4,
                "final": final,
                "timing": {"data": 1.1, "compute": 10.0, "eval": 2.5, "write": 1.4},
            },
            "epochs": [{k: v * compute_scale if k == "compute" else v for k, v in e.items()} for e in epochs],
            "overrides": [],
        }

    run("quickstart-fp32", 15.0)
    run("quickstart-bf16", 13.0)
    run("quickstart-compiled", 70.0)
    run("determinism", 18.0, compute_scale=1.5)
    r["determinism"].data["compute_ratio"] = 1.5
    run("camvid", 45.0)
    r["camvid"].data["epochs_per_s"] = 0.24
    r["performance"].status = "ok"
    r["performance"].data = {
        "workload": {"image": [32, 3, 256, 256], "channels_last": True, "deterministic": False},
        "overhead": {
            "mtlzoo_s": {"median": 0.0205},
            "hand_s": {"median": 0.02},
            "ratio": {"median": 1.025, "n": 6},
            "fast_ratio": 1.02,
            "images_per_s": {"mtlzoo": 1561.0, "hand": 1600.0},
            "step_memory_bytes": {"mtlzoo": 3 * 2**30, "hand": 2.9 * 2**30},
        },
        "options": [
            {"name": "bf16 autocast", "speedup": {"median": 1.6}, "fast_speedup": 1.7},
            {"name": "deterministic on", "error": "RuntimeError: no"},
        ],
    }
    r["export"].status = "ok"
    r["export"].data = {
        "predict": {"rc": 0, "seconds": 6.0, "images": 32, "device": "cuda"},
        "load": {"rc": 0, "seconds": 1.5, "max_abs_diff": {"semseg": 2e-4}, "images_per_s": 900.0},
        "pt2": {"rc": 0, "seconds": 20.0, "max_abs_diff": {"semseg": 1e-6}},
    }
    r["bench"].status = "ok"
    r["bench"].data = {
        "cells": 40,
        "planned": 40,
        "wall_s": 95.0,
        "jobs": 8,
        "spec": {
            "overrides": ["train.epochs=2"],
            "grid": {"combiner": ["sum"]},
            "seeds": [0],
            "baselines": True,
        },
    }
    r["tests"].status, r["tests"].lines = "ok", ["a table of tests"]
    text = gc.render(check, [name for name, *_ in gc.PARTS])
    assert "| fp32 | 15.0 | 11.0 | 6.0 | 3.0 | 1.1 | 10.0 | 2.5 | 1.4 |" in text
    assert "| semseg | miou |" in text and "| 0.7000 | 0.7000 | 0.7000 |" in text
    assert "**`train.deterministic=true` costs 1.50x the default's compute per epoch here.**" in text
    assert "| 4 | 41.0 | 0.240 | 45.0 |" in text
    assert "Ratio mtlzoo / hand-written: **1.025** median of 6 rounds, **1.020** fast-step" in text
    assert "| mtlzoo Trainer.train_step | 20.50 | 1561 | 3072 |" in text
    assert (
        "| bf16 autocast | 1.60x | 1.70x |  |" in text
        and "| deterministic on | - | - | RuntimeError: no |" in text
    )
    assert "`mtlzoo.load(run, device='cuda')` in 1.5 s, 900 images/s" in text
    assert "`mtlzoo export RUN --format pt2`: exit 0 in 20.0 s" in text
    assert "40 of 40 cells committed in 95 s" in text
    assert "## CUDA tests\n\na table of tests" in text
    assert (
        text.index("## Quickstart fp32")
        < text.index("## train.deterministic on CUDA")
        < text.index("## CamVid lite0")
    )
