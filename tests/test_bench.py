"""`mtlzoo bench`: planning, delta-m by hand, resumable runs, failed cells, tables."""

from __future__ import annotations

import csv
import json

import pytest
import yaml

from mtlzoo.apps.bench import delta_m, load_bench, plan, run_bench
from mtlzoo.apps.cli import main


def test_delta_m_by_hand():
    st = {"seg": {"miou": 0.50, "acc": 0.80}, "depth": {"abs": 0.20}}
    mt = {"seg": {"miou": 0.55, "acc": 0.76, "loss": 9.0}, "depth": {"abs": 0.18}}
    dirs = {"seg": {"miou": True, "acc": True}, "depth": {"abs": False}}
    dm, per_task = delta_m(mt, st, dirs)
    # seg: (+10% - 5%) / 2 = +2.5 ; depth: lower is better, 0.18 vs 0.20 -> +10 ; mean 6.25
    assert per_task["seg"] == pytest.approx(2.5)
    assert per_task["depth"] == pytest.approx(10.0)
    assert dm == pytest.approx(6.25)


def write(tmp_path, spec_factory, grid, seeds=(0,), **extra):
    base = tmp_path / "base.yaml"
    base.write_text(
        yaml.safe_dump(
            spec_factory(**{"tasks": {"semseg": {"type": "segmentation"}, "depth": {"type": "depth"}}})
        )
    )
    bench = {
        "name": "tinybench",
        "base": "base.yaml",
        "grid": grid,
        "seeds": list(seeds),
        "out_dir": str(tmp_path / "runs"),
        "results_dir": str(tmp_path / "results"),
        **extra,
    }
    path = tmp_path / "bench.yaml"
    path.write_text(yaml.safe_dump(bench))
    return path


def test_plan_adds_single_task_baselines_per_setting(zoo, tmp_path, spec_factory):
    path = write(
        tmp_path,
        spec_factory,
        {
            "combiner": ["sum", {"name": "weighted", "weights": {"depth": 2.0}}],
            "train.optimizer.lr": [0.001, 0.01],
        },
        seeds=(0, 1),
    )
    spec, base = load_bench(path)
    cells = plan(spec, zoo.spec(base))
    grid_cells = [c for c in cells if c.baseline_task is None]
    base_cells = [c for c in cells if c.baseline_task]
    assert len(grid_cells) == 2 * 2 * 2 and len(base_cells) == 2 * 2 * 2  # lr x task x seed
    assert len({c.id for c in cells}) == len(cells)
    b = base_cells[0]
    other = ({"semseg", "depth"} - {b.baseline_task}).pop()
    assert f"~tasks.{other}" in b.overrides and 'combiner={"name": "sum"}' in b.overrides


def test_bench_runs_resumes_reports_failures_and_writes_tables(zoo, tmp_path, spec_factory, capsys):
    path = write(
        tmp_path, spec_factory, {"combiner": ["sum", {"name": "weighted", "weights": {"nope": 1.0}}]}
    )
    summary = run_bench(path, log=lambda *_: None, zoo=zoo)
    # the weighted cell names an unknown task: it fails, the others still run
    ((failed_id, error),) = summary["failures"].items()
    assert failed_id.startswith("combiner=weighted") and "unknown task" in error
    md = (tmp_path / "results" / "tinybench.md").read_text()
    assert "Δm" in md and "single-task (semseg)" in md and "| sum |" in md and "(1 failed)" in md
    # the header states the budget every cell shared
    assert "1 epochs x batch 8 (" in md and "optimizer steps per run)" in md and "ran on cpu x1" in md
    rows = list(csv.DictReader(open(tmp_path / "results" / "tinybench.csv")))
    sum_row = next(r for r in rows if r["method"] == "sum")
    assert sum_row["delta_m_mean"] != "" and "semseg.miou_mean" in sum_row
    # delta-m in the csv equals delta_m() of the cell summaries
    runs = tmp_path / "runs" / "tinybench"
    s = lambda cid: json.loads((runs / cid / "summary.json").read_text())  # noqa: E731
    mt = s("combiner=sum__seed0")
    st = {
        "semseg": s("single_semseg__seed0")["test"]["semseg"],
        "depth": s("single_depth__seed0")["test"]["depth"],
    }
    expected, _ = delta_m(mt["test"], st, mt["directions"])
    assert float(sum_row["delta_m_mean"]) == pytest.approx(expected)
    # a second call skips the finished cells (their folders are not touched)
    stamp = (runs / "combiner=sum__seed0" / "summary.json").stat().st_mtime_ns
    run_bench(path, log=lambda *_: None, zoo=zoo)
    assert (runs / "combiner=sum__seed0" / "summary.json").stat().st_mtime_ns == stamp
    # an edited spec never reuses cells made from the old config: each is reported, none is run
    table = (tmp_path / "results" / "tinybench.md").read_text()
    spec = yaml.safe_load(path.read_text())
    spec["overrides"] = ["train.epochs=2"]
    path.write_text(yaml.safe_dump(spec))
    summary = run_bench(path, log=lambda *_: None, zoo=zoo)
    error = summary["failures"]["combiner=sum__seed0"]
    assert "made with a different config (train.epochs: 1 in the run, 2 now)" in error
    assert "delete" in error and "combiner=sum__seed0" in error
    assert (runs / "combiner=sum__seed0" / "summary.json").stat().st_mtime_ns == stamp
    assert (tmp_path / "results" / "tinybench.md").read_text() == table  # no empty table over it
    # plots: every metric per method, and the two-task view (matplotlib comes with `make test`)
    pytest.importorskip("matplotlib")
    for png in ("tinybench_metrics.png", "tinybench_pareto.png"):
        assert (tmp_path / "results" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bench_cli_plan_and_bad_spec(tmp_path, spec_factory, capsys):
    path = write(tmp_path, spec_factory, {"combiner": ["sum"]})
    assert main(["bench", str(path), "--plan"]) == 0
    out = capsys.readouterr().out
    assert "combiner=sum__seed0" in out and "single_depth__seed0" in out
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nbase: missing.yaml\n")
    assert main(["bench", str(bad)]) == 2
    assert "base: 'missing.yaml' not found" in capsys.readouterr().err


def test_architectures_are_a_method_axis_sharing_the_baselines(zoo, tmp_path, spec_factory):
    path = write(
        tmp_path, spec_factory, {"model.architecture": ["hps", {"name": "hps"}], "combiner": ["sum", "dwa"]}
    )
    spec, base = load_bench(path)
    cells = plan(spec, zoo.spec(base))
    grid_cells = [c for c in cells if c.baseline_task is None]
    assert {c.method for c in grid_cells} == {"hps + sum", "hps + dwa"} and len(grid_cells) == 4
    baselines = [c for c in cells if c.baseline_task]
    assert len(baselines) == 2 and all("model.architecture=null" in c.overrides for c in baselines)
    assert {c.setting for c in cells} == {""}
