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


def test_paired_comparison_by_hand():
    from mtlzoo.apps.bench.paired import paired_markdown, paired_rows
    from mtlzoo.apps.bench.plan import Cell

    cells = [Cell(f"st{s}", "single-task (seg)", [], s, baseline_task="seg") for s in range(3)]
    cells += [Cell(f"mt{s}", "sum", [], s) for s in range(3)]
    st, mt = [0.50, 0.40, 0.60], [0.55, 0.41, 0.58]
    metrics = {f"st{s}": {"seg": {"miou": st[s]}} for s in range(3)}
    metrics |= {f"mt{s}": {"seg": {"miou": mt[s]}, "depth": {"abs": 1.0}} for s in range(3)}
    dirs = {"seg": {"miou": True}, "depth": {"abs": False}}
    (got,) = paired_rows(cells, metrics, dirs).values()
    # diffs +0.05, +0.01, -0.02: mean 0.01333, sd 0.035119, t_{0.975,2} = 4.302653
    half = 4.302653 * 0.0351188 / 3**0.5
    assert got["seg"]["n"] == 3 and got["seg"]["wins"] == 2 and "depth" not in got  # no depth baseline
    assert got["seg"]["mean"] == pytest.approx(0.0133333, abs=1e-6)
    assert (got["seg"]["low"], got["seg"]["high"]) == pytest.approx(
        (0.0133333 - half, 0.0133333 + half), abs=1e-5
    )
    md = "\n".join(paired_markdown([{"method": "sum", "setting": "", "paired": got}], ["seg"]))
    assert "| sum | - | miou ↑ +0.0133 [-0.0739, +0.1006], 2/3 |" in md


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
    assert "1 epoch x batch 8 (" in md and "optimizer steps per run)" in md and "ran on cpu x1" in md
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
    # the paired comparison against the same seed's single-task model, in the table
    diff = mt["test"]["semseg"]["miou"] - st["semseg"]["miou"]
    assert "Paired against the single-task model of the same seed" in md
    assert f"miou ↑ {diff:+.4f}, {int(diff > 0)}/1" in md
    # a second call skips the committed cells (their folders and files are not touched)
    stamp = (runs / "combiner=sum__seed0" / "summary.json").stat().st_mtime_ns
    cell_file = tmp_path / "results" / "tinybench" / "cells" / "combiner=sum__seed0.json"
    cell_stamp = cell_file.stat().st_mtime_ns
    run_bench(path, log=lambda *_: None, zoo=zoo)
    assert (runs / "combiner=sum__seed0" / "summary.json").stat().st_mtime_ns == stamp
    assert cell_file.stat().st_mtime_ns == cell_stamp
    # an edited spec never reuses cells made from the old config: each is reported, none is run
    table = (tmp_path / "results" / "tinybench.md").read_text()
    spec = yaml.safe_load(path.read_text())
    spec["overrides"] = ["train.epochs=2"]
    path.write_text(yaml.safe_dump(spec))
    summary = run_bench(path, log=lambda *_: None, zoo=zoo)
    error = summary["failures"]["combiner=sum__seed0"]
    assert "made with a different config (train.epochs: 1 in the cell, 2 now)" in error
    assert f"delete {cell_file}" in error
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


def test_tables_report_parameters_and_step_time_per_row(zoo, tmp_path, spec_factory):
    path = write(tmp_path, spec_factory, {"model.architecture": ["hps", "mtan"], "combiner": ["sum"]})
    summary = run_bench(path, log=lambda *_: None, zoo=zoo)
    runs = tmp_path / "runs" / "tinybench"
    cells = {
        arch: json.loads(
            next(runs.glob(f"*model.architecture={arch}*seed0")).joinpath("summary.json").read_text()
        )
        for arch in ("hps", "mtan")
    }
    rows = {r["method"]: r for r in summary["rows"]}
    for method, cell in zip(("hps + sum", "mtan + sum"), cells.values()):
        assert rows[method]["parameters"] == {k: float(cell["parameters"][k]) for k in ("shared", "total")}
        # the run's wall time, or its epochs' own times where they add up to more (a resumed run
        # from before the wall time counted the resume; here: the summary's 2-decimal rounding)
        seconds = max(cell["seconds"], cell["timing"]["total"])
        assert rows[method]["step_seconds"][0] == pytest.approx(seconds / cell["steps"])
    hps, mtan = cells.values()
    assert mtan["parameters"]["shared"] == hps["parameters"]["shared"] < mtan["parameters"]["total"]
    md = (tmp_path / "results" / "tinybench.md").read_text()
    header = next(line for line in md.splitlines() if line.startswith("| method"))
    assert "| parameters (shared / total) | s / step |" in header
    line = next(line for line in md.splitlines() if line.startswith("| mtan + sum |"))
    shared, total = (mtan["parameters"][k] / 1e3 for k in ("shared", "total"))
    assert (
        f"| {shared:.1f}k / {total:.1f}k | {max(mtan['seconds'], mtan['timing']['total']) / mtan['steps']:.2f} |"
        in line
    )
    csv_rows = {r["method"]: r for r in csv.DictReader(open(tmp_path / "results" / "tinybench.csv"))}
    assert int(csv_rows["mtan + sum"]["parameters_total"]) == mtan["parameters"]["total"]
    assert float(csv_rows["single-task (depth)"]["step_seconds_mean"]) > 0


def test_replot_redraws_from_the_committed_tables(tmp_path, root, capsys):
    import shutil

    results = tmp_path / "results"
    results.mkdir()
    for suffix in (".md", ".csv"):
        shutil.copy(root / "benchmarks" / "results" / f"camvid{suffix}", results / f"camvid{suffix}")
    spec = tmp_path / "camvid.yaml"
    spec.write_text(f"name: camvid\nbase: {root / 'configs' / 'quickstart.yaml'}\nresults_dir: {results}\n")
    assert main(["bench", str(spec), "--replot"]) == 0
    assert (results / "camvid_metrics.png").read_bytes()[:4] == b"\x89PNG"
    from mtlzoo.apps.bench.plots import summary_from_tables

    summary = summary_from_tables(results, "camvid")
    assert summary["directions"]["semseg"]["miou"] is True and len(summary["rows"]) == 7
    sum_row = next(r for r in summary["rows"] if r["method"] == "sum")
    assert sum_row["metrics"]["semseg"]["miou"][0] == pytest.approx(0.30714801)
