"""`mtlzoo bench` in pieces: committed cell files, slices, time budget, --jobs, last-K means,
per-class tables, grids with left-out tasks."""

from __future__ import annotations

import csv
import json
import math
import shutil
import statistics

import pytest
import yaml

from mtlzoo.apps.bench import cells as C
from mtlzoo.apps.bench import load_bench, plan, run_bench
from mtlzoo.apps.bench.cli import parse_budget
from mtlzoo.apps.bench.plan import Cell
from mtlzoo.apps.bench.report import per_class_markdown, per_class_rows, summarise
from mtlzoo.apps.cli import main
from mtlzoo.contract.errors import MtlzooError

TWO_TASKS = {"tasks": {"semseg": {"type": "segmentation"}, "depth": {"type": "depth"}}}


def write(tmp_path, spec_factory, grid, seeds=(0,), base=TWO_TASKS, **extra):
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(spec_factory(**base)))
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


def quiet(*_):
    pass


def cells_of(tmp_path):
    return tmp_path / "results" / "tinybench" / "cells"


def test_cell_files_hold_results_and_tables_rebuild_from_them_alone(zoo, tmp_path, spec_factory):
    path = write(tmp_path, spec_factory, {"combiner": ["sum"]}, **{"overrides": ["train.epochs=2"]})
    run_bench(path, log=quiet, zoo=zoo)
    files = sorted(p.name for p in cells_of(tmp_path).iterdir())
    assert files == ["combiner=sum__seed0.json", "single_depth__seed0.json", "single_semseg__seed0.json"]
    record = json.loads((cells_of(tmp_path) / "combiner=sum__seed0.json").read_text())
    run = tmp_path / "runs" / "tinybench" / "combiner=sum__seed0"
    summary = json.loads((run / "summary.json").read_text())
    assert record["summary"] == summary
    assert record["cell"] == {
        "id": "combiner=sum__seed0",
        "method": "sum",
        "setting": "",
        "seed": 0,
        "baseline_task": None,
    }
    # every evaluation, for protocols such as last-K means
    logged = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in record["history"]] == [1, 2]
    assert [h["val"] for h in record["history"]] == [r["val"] for r in logged]
    assert record["config"]["train"]["epochs"] == 2 and "out_dir" not in record["config"]["train"]
    assert record["config_sha256"] == C.digest(record["config"])
    assert "mtlzoo.builtin.combiners.basic" in record["code"]["modules"] or any(
        m.startswith("mtlzoo.builtin.combiners") for m in record["code"]["modules"]
    )
    assert any(m.startswith("mtlzoo.builtin.metrics") for m in record["code"]["modules"])
    assert record["machine"]["cores"] >= 1 and "load" in record and record["jobs"] == 1
    # the tables come from the cell files alone: without the run folders they are the same
    table = (tmp_path / "results" / "tinybench.md").read_text()
    csv_text = (tmp_path / "results" / "tinybench.csv").read_text()
    shutil.rmtree(tmp_path / "runs")
    assert main(["bench", str(path), "--report-only"]) == 0
    assert (tmp_path / "results" / "tinybench.md").read_text() == table
    assert (tmp_path / "results" / "tinybench.csv").read_text() == csv_text
    assert not (tmp_path / "runs").exists()  # nothing ran
    assert "3 of 3 cells committed in" in table and "min / cell" in table


def test_a_cell_from_other_model_code_is_refused(zoo, tmp_path, spec_factory, capsys):
    path = write(tmp_path, spec_factory, {"combiner": ["sum"]})
    run_bench(path, log=quiet, zoo=zoo)
    cell_file = cells_of(tmp_path) / "combiner=sum__seed0.json"
    record = json.loads(cell_file.read_text())
    module = next(m for m in record["code"]["modules"] if m.startswith("mtlzoo.builtin.combiners"))
    record["code"]["modules"][module] = "0" * 16  # as if made before an edit of that module
    cell_file.write_text(json.dumps(record))
    summary = run_bench(path, log=quiet, zoo=zoo, report_only=True)
    error = summary["failures"]["combiner=sum__seed0"]
    assert f"made with another version of its model code ({module} changed)" in error
    run_dir = tmp_path / "runs" / "tinybench" / "combiner=sum__seed0"
    assert f"delete {cell_file} and its run folder {run_dir} to run it again" in error
    assert main(["bench", str(path), "--plan"]) == 0
    assert "combiner=sum__seed0 [refused (" in capsys.readouterr().out
    # a broken cell file: one line naming it and the way out
    cell_file.write_text("{not json")
    summary = run_bench(path, log=quiet, zoo=zoo, report_only=True)
    assert "unreadable cell file" in summary["failures"]["combiner=sum__seed0"]


def test_a_run_folder_from_other_model_code_is_neither_collected_nor_resumed(zoo, tmp_path, spec_factory):
    # deleting a refused cell file must not bring the old run folder's results back in under
    # the new code: each run folder records the code it started with
    path = write(tmp_path, spec_factory, {"combiner": ["sum"]}, baselines=False)
    run_bench(path, log=quiet, zoo=zoo)
    run_dir = tmp_path / "runs" / "tinybench" / "combiner=sum__seed0"
    stamp = json.loads((run_dir / C.CODE_STAMP).read_text())
    record = json.loads((cells_of(tmp_path) / "combiner=sum__seed0.json").read_text())
    assert stamp == record["code"]
    module = next(m for m in stamp["modules"] if m.startswith("mtlzoo.builtin.combiners"))
    (run_dir / C.CODE_STAMP).write_text(
        json.dumps({**stamp, "modules": {**stamp["modules"], module: "0" * 16}})
    )
    (cells_of(tmp_path) / "combiner=sum__seed0.json").unlink()
    summary = run_bench(path, log=quiet, zoo=zoo, report_only=True)
    error = summary["failures"]["combiner=sum__seed0"]
    assert f"its run folder was made with another version of its model code ({module} changed)" in error
    assert error.endswith(f"delete {run_dir} to run it again with the current code")
    # running it again refuses too (a finished folder is not reused, an interrupted one not resumed)
    (run_dir / "summary.json").unlink()
    summary = run_bench(path, log=quiet, zoo=zoo)
    assert "its run folder was made with another version" in summary["failures"]["combiner=sum__seed0"]
    assert not (cells_of(tmp_path) / "combiner=sum__seed0.json").exists()
    # the way out works: a fresh folder runs and is stamped with the current code
    shutil.rmtree(run_dir)
    summary = run_bench(path, log=quiet, zoo=zoo)
    assert summary["committed"] == ["combiner=sum__seed0"] and not summary["failures"]
    assert C.stamped_code(run_dir) == stamp


def test_a_run_folder_that_cannot_show_its_code_is_refused_and_one_without_results_starts_again(
    zoo, tmp_path, spec_factory, capsys
):
    path = write(tmp_path, spec_factory, {"combiner": ["sum"]}, baselines=False)
    run_bench(path, log=quiet, zoo=zoo)
    run_dir = tmp_path / "runs" / "tinybench" / "combiner=sum__seed0"
    cell_file = cells_of(tmp_path) / "combiner=sum__seed0.json"
    stamp = (run_dir / C.CODE_STAMP).read_text()
    cell_file.unlink()
    # made before folders were stamped: its results cannot be collected (nor resumed) under this code
    (run_dir / C.CODE_STAMP).unlink()
    summary = run_bench(path, log=quiet, zoo=zoo, report_only=True)
    assert summary["failures"]["combiner=sum__seed0"] == (
        f"MtlzooError: cell combiner=sum__seed0: its run folder does not say which model code made it "
        f"({C.CODE_STAMP} missing); delete {run_dir} to run it again with the current code"
    )
    (run_dir / C.CODE_STAMP).write_text("{not json")
    (run_dir / "summary.json").unlink()  # interrupted: only its last checkpoint is left
    assert main(["bench", str(path), "--plan"]) == 0
    assert (
        "combiner=sum__seed0 [refused (MtlzooError: cell combiner=sum__seed0: its run folder does not say"
        in (capsys.readouterr().out)
    )
    summary = run_bench(path, log=quiet, zoo=zoo)
    assert f"({C.CODE_STAMP} unreadable)" in summary["failures"]["combiner=sum__seed0"]
    assert not cell_file.exists()
    # a folder with nothing to reuse (a cell that failed before its first checkpoint) starts
    # again under the current code, whatever its stamp says, and is stamped anew
    shutil.rmtree(run_dir / "checkpoints")
    (run_dir / C.CODE_STAMP).write_text(json.dumps({"mtlzoo": "0.0", "modules": {}}))
    summary = run_bench(path, log=quiet, zoo=zoo)
    assert summary["committed"] == ["combiner=sum__seed0"] and not summary["failures"]
    assert (run_dir / C.CODE_STAMP).read_text() == stamp


def test_config_changes_count_spec_edits_not_new_options():
    saved = {"train": {"epochs": 1, "lr": 0.1}, "tasks": {"a": {"type": "x"}, "b": {"type": "y"}}}
    assert C.config_changes(saved, saved) == []
    # an option added to an existing node since the cell ran: a code change, not a spec edit
    assert C.config_changes(saved, {**saved, "train": {"epochs": 1, "lr": 0.1, "cache": True}}) == []
    # a task left out, an edited value: both count
    assert C.config_changes(saved, {**saved, "tasks": {"a": {"type": "x"}}}) == [
        "tasks.b.type: 'y' in the cell, '<unset>' now"
    ]
    assert C.config_changes(saved, {**saved, "train": {"epochs": 2, "lr": 0.1}}) == [
        "train.epochs: 1 in the cell, 2 now"
    ]
    # absolute paths keep their last part: a data root elsewhere is the same data
    assert C._portable({"root": "/data/camvid", "rel": "x/y"}) == {"root": "<abs>/camvid", "rel": "x/y"}


def test_the_memory_format_is_recorded_but_does_not_make_another_config(zoo, tmp_path, spec_factory):
    # channels-last only reorders float sums (as the thread count does): a cell made without it
    # stays valid when the spec turns it on, and each cell file says how it ran
    path = write(tmp_path, spec_factory, {"combiner": ["sum"]}, seeds=(0, 1), baselines=False)
    run_bench(path, log=quiet, zoo=zoo, seeds=[0])
    spec = yaml.safe_load(path.read_text())
    path.write_text(yaml.safe_dump({**spec, "overrides": ["train.channels_last=true"]}))
    summary = run_bench(path, log=quiet, zoo=zoo)
    assert summary["committed"] == ["combiner=sum__seed0", "combiner=sum__seed1"] and not summary["failures"]
    assert (
        not (tmp_path / "runs" / "tinybench" / "combiner=sum__seed0" / "config.yaml")
        .read_text()
        .count("channels_last: true")
    )  # seed 0 was reused, not run again
    before, after = (
        json.loads((cells_of(tmp_path) / f"combiner=sum__seed{s}.json").read_text()) for s in (0, 1)
    )
    assert (before["channels_last"], after["channels_last"]) == (False, True)
    assert "channels_last" not in after["config"]["train"] and before["config"] == after["config"] | {
        "seed": before["config"]["seed"]
    }
    md = (tmp_path / "results" / "tinybench.md").read_text()
    assert "channels-last (1 cell)" in md


def test_the_cpu_generation_and_vector_instructions_are_recorded_and_shown(monkeypatch, tmp_path):
    # virtual machines name different hosts alike ("AMD EPYC"): the family/model and the
    # instructions torch uses tell a table's reader when two cells' times are not comparable
    import torch

    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(
        "processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 17\n"
        "model name\t: AMD EPYC\nstepping\t: 1\n\nprocessor\t: 1\nmodel\t\t: 99\n"
    )
    real = C.Path

    def fake_path(p, *rest):
        return real(cpuinfo) if str(p) == "/proc/cpuinfo" else real(p, *rest)

    monkeypatch.setattr(C, "Path", fake_path)
    m = C.machine("cpu")
    assert m["cpu"] == "AMD EPYC" and m["cpu_generation"] == "AuthenticAMD family 25 model 17 stepping 1"
    assert m["cpu_isa"] == torch.backends.cpu.get_cpu_capability()
    assert C.describe_machine({"machine": m}) == (
        f"CPU AMD EPYC (AuthenticAMD family 25 model 17 stepping 1, {m['cpu_isa']}; {m['cores']} cores)"
    )
    # a cell from before the fields existed says so rather than passing for the same machine
    old = {"machine": {"cpu": "AMD EPYC", "cores": 2}}
    assert C.describe_machine(old) == "CPU AMD EPYC (generation not recorded; 2 cores)"
    assert C.describe_machine({"machine": {"gpu": "NVIDIA H200", "cpu": "x"}}) == "GPU NVIDIA H200"
    cpuinfo.write_text("Hardware\t: some board\n")  # no family line (not x86): left out
    assert "cpu_generation" not in C.machine("cpu")


def test_slices_and_the_time_budget(zoo, tmp_path, spec_factory):
    path = write(tmp_path, spec_factory, {"combiner": ["sum"]}, seeds=(0, 1))
    # a zero budget starts nothing and writes no table
    summary = run_bench(path, log=quiet, zoo=zoo, budget_seconds=0)
    assert summary["committed"] == [] and not (tmp_path / "results" / "tinybench.md").exists()
    run_bench(path, log=quiet, zoo=zoo, seeds=[1], patterns=["combiner=*"])
    assert sorted(p.name for p in cells_of(tmp_path).iterdir()) == ["combiner=sum__seed1.json"]
    md = (tmp_path / "results" / "tinybench.md").read_text()
    assert "1 of 6 cells committed" in md and "| sum | - | 1/2 |" in md
    summary = run_bench(path, log=quiet, zoo=zoo, patterns=["single_*"])
    assert len(summary["committed"]) == 5 and summary["not_run"] == ["combiner=sum__seed0"]


def test_cells_another_process_committed_meanwhile_are_in_the_tables(
    zoo, tmp_path, spec_factory, monkeypatch
):
    # two bench processes on one checkout (two workers, or sessions sharing it): the one that
    # finishes last must not write tables from the cells it saw when it started
    import mtlzoo.apps.bench.run as R

    path = write(tmp_path, spec_factory, {"combiner": ["sum"]})
    run_bench(path, log=quiet, zoo=zoo, patterns=["single_depth*"])
    elsewhere = tmp_path / "single_depth__seed0.json"
    shutil.move(cells_of(tmp_path) / "single_depth__seed0.json", elsewhere)
    shutil.rmtree(tmp_path / "runs" / "tinybench" / "single_depth__seed0")  # the other process's run folder
    real = R._run_here

    def run_while_another_commits(*args, **kwargs):
        out = real(*args, **kwargs)
        shutil.move(elsewhere, cells_of(tmp_path) / "single_depth__seed0.json")  # the other process's cell
        return out

    monkeypatch.setattr(R, "_run_here", run_while_another_commits)
    summary = run_bench(path, log=quiet, zoo=zoo, patterns=["single_semseg*"])
    assert summary["committed"] == ["single_depth__seed0", "single_semseg__seed0"]
    assert "2 of 3 cells committed" in (tmp_path / "results" / "tinybench.md").read_text()


def test_a_finished_run_folder_is_collected_into_a_cell_file(zoo, tmp_path, spec_factory):
    path = write(tmp_path, spec_factory, {"combiner": ["sum"]})
    run_bench(path, log=quiet, zoo=zoo)
    cell_file = cells_of(tmp_path) / "combiner=sum__seed0.json"
    before = json.loads(cell_file.read_text())
    cell_file.unlink()  # a run that finished before cell files existed
    messages = []
    run_bench(path, log=messages.append, zoo=zoo, budget_seconds=0)
    after = json.loads(cell_file.read_text())
    assert after["migrated_from_run_folder"] is True and after["summary"] == before["summary"]
    assert any("collected from its finished run folder" in m for m in messages)


def test_a_legacy_table_is_kept_until_every_cell_is_committed(zoo, tmp_path, spec_factory):
    path = write(tmp_path, spec_factory, {"combiner": ["sum"]})
    results = tmp_path / "results"
    results.mkdir()
    (results / "tinybench.md").write_text("# an older table, made from run folders\n")
    messages = []
    run_bench(path, log=messages.append, zoo=zoo, patterns=["single_depth*"])
    assert (results / "tinybench.md").read_text() == "# an older table, made from run folders\n"
    assert any("predates cell files" in m for m in messages)
    run_bench(path, log=quiet, zoo=zoo)  # every cell committed: the table is rebuilt
    assert "3 of 3 cells committed" in (results / "tinybench.md").read_text()


@pytest.mark.slow  # trains the cells twice, in parallel jobs and in turn
def test_jobs_give_the_metrics_of_a_sequential_run_and_report_a_failing_job(zoo, tmp_path, spec_factory):
    results = {}
    grid = {"combiner": ["sum", {"name": "weighted", "weights": {"nope": 1.0}}]}
    for jobs in (1, 2):
        folder = tmp_path / f"jobs{jobs}"
        folder.mkdir()
        path = write(folder, spec_factory, grid, **{"overrides": ["train.device=cpu"]})
        summary = run_bench(path, log=quiet, zoo=zoo, jobs=jobs, threads=1)
        # the weighted cell names an unknown task: it fails in its job, the others run
        ((failed, error),) = summary["failures"].items()
        assert failed.startswith("combiner=weighted") and "unknown task" in error
        assert len(summary["committed"]) == 3
        results[jobs] = {
            p.name: json.loads(p.read_text())
            for p in sorted((folder / "results" / "tinybench" / "cells").iterdir())
        }
    assert list(results[1]) == list(results[2])
    for name, seq in results[1].items():
        par = results[2][name]
        assert par["jobs"] == 2 and seq["jobs"] == 1 and par["threads"] == seq["threads"] == 1
        for key in ("test", "best", "final"):
            assert par["summary"][key] == seq["summary"][key], (name, key)
        assert par["history"] == seq["history"]
        assert par["config"] == seq["config"]


def test_last_k_mean_averages_the_last_evaluations(zoo, tmp_path, spec_factory):
    path = write(
        tmp_path,
        spec_factory,
        {"combiner": ["sum"]},
        seeds=(0, 1),
        **{"overrides": ["train.epochs=3"], "report": "last_k_mean", "last_k": 2},
    )
    run_bench(path, log=quiet, zoo=zoo)
    md = (tmp_path / "results" / "tinybench.md").read_text()
    assert "**Best on val**" in md
    # the last-k table says which split it averages: val here, while the best-on-val table reports test
    assert "**Last-2 mean on val** (not test:" in md
    rows = {r["method"]: r for r in csv.DictReader(open(tmp_path / "results" / "tinybench_last2.csv"))}
    per_seed = []
    for seed in (0, 1):
        record = json.loads((cells_of(tmp_path) / f"combiner=sum__seed{seed}.json").read_text())
        assert len(record["history"]) == 3
        per_seed.append(statistics.fmean(h["val"]["semseg"]["miou"] for h in record["history"][1:]))
    assert float(rows["sum"]["semseg.miou_mean"]) == pytest.approx(statistics.fmean(per_seed))
    assert float(rows["sum"]["semseg.miou_std"]) == pytest.approx(statistics.stdev(per_seed))
    assert rows["sum"]["delta_m_mean"] != ""


def record_of(cell: Cell, test: dict) -> dict:
    directions = {"seg": {"miou": True, "iou": True}}
    return {
        "cell": {"id": cell.id},
        "summary": {"test": test, "directions": directions, "steps": 10, "seconds": 5.0},
        "history": [],
    }


def test_per_class_table_shows_which_classes_gain_or_lose():
    cells = [Cell(f"st{s}", "single-task (seg)", [], s, baseline_task="seg") for s in range(2)]
    cells += [Cell(f"mt{s}", "sum", [], s) for s in range(2)]
    st = [{"road": 0.8, "car": 0.4, "sky": None}, {"road": 0.6, "car": 0.2, "sky": None}]
    mt = [{"road": 0.9, "car": 0.1, "sky": None}, {"road": 0.7, "car": 0.3, "sky": None}]

    def results(per_class, miou):
        return {"seg": {"miou": miou, **{f"iou/{k}": v for k, v in per_class.items()}}}

    records = {f"st{s}": record_of(cells[s], results(st[s], 0.5)) for s in range(2)}
    records |= {f"mt{s}": record_of(cells[2 + s], results(mt[s], 0.55)) for s in range(2)}
    spec = type("S", (), {"split": "test"})()
    summary = summarise(spec, cells, records, {})
    # the detail keys stay out of the main columns and of delta-m
    assert summary["directions"] == {"seg": {"miou": True}}
    sum_row = next(r for r in summary["rows"] if r["method"] == "sum")
    assert sum_row["delta_m"][0] == pytest.approx(10.0)  # miou 0.55 vs 0.5 only
    entries = {(e["method"], e["class"]): e for e in per_class_rows(summary)}
    assert entries[("sum", "road")]["mean"] == pytest.approx(0.8)
    assert entries[("sum", "road")]["diff_vs_single_task"] == pytest.approx(0.8 - 0.7)
    assert entries[("sum", "car")]["diff_vs_single_task"] == pytest.approx(0.2 - 0.3)
    assert math.isnan(entries[("sum", "sky")]["mean"])  # absent everywhere: no value
    md = "\n".join(per_class_markdown(per_class_rows(summary)))
    assert "| road | 0.7000 | 0.8000 (+0.1000) |" in md
    assert "| car | 0.3000 | 0.2000 (-0.1000) |" in md
    assert "| sky | - | - |" in md
    assert "Classes better than single-task: sum 1/2." in md


def test_grid_lists_and_left_out_tasks_share_the_baselines(zoo, tmp_path, spec_factory):
    base = {
        "tasks": {
            "semseg": {"type": "segmentation"},
            "depth": {"type": "depth"},
            "labels": {"type": "labels"},
        }
    }
    grid = [
        {"drop_tasks": [[], ["labels"]], "combiner": ["sum", "dwa"]},
        {"model.architecture": ["mtan"], "combiner": ["sum"]},
    ]
    path = write(tmp_path, spec_factory, grid, base=base)
    spec, base_path = load_bench(path)
    cells = plan(spec, zoo.spec(base_path))
    methods = [c.method for c in cells if not c.baseline_task]
    # the product runs over the grid's keys in their order (safe_dump sorted them: combiner first)
    assert methods == ["sum", "sum (without labels)", "dwa", "dwa (without labels)", "mtan + sum"]
    without = next(c for c in cells if c.method == "sum (without labels)")
    assert "~tasks.labels" in without.overrides
    assert len({c.id for c in cells}) == len(cells)
    assert sorted(c.baseline_task for c in cells if c.baseline_task) == ["depth", "labels", "semseg"]
    bad = write(tmp_path, spec_factory, {"drop_tasks": ["labels"]})
    with pytest.raises(Exception, match=r"grid.drop_tasks: give lists of task names"):
        load_bench(bad)


def test_budget_parsing_and_cli_options(tmp_path, spec_factory, capsys):
    assert parse_budget("90m") == 5400 and parse_budget("2h") == 7200 and parse_budget("45s") == 45
    assert parse_budget("1.5") == 90
    path = write(tmp_path, spec_factory, {"combiner": ["sum"]})
    for bad, message in ((["--budget", "soon"], "'soon' is not a duration"), (["--jobs", "0"], "'0': give")):
        with pytest.raises(SystemExit):
            main(["bench", str(path), *bad])
        assert message in capsys.readouterr().err
    assert main(["bench", str(path), "--plan"]) == 0
    assert "combiner=sum__seed0 [todo]" in capsys.readouterr().out


def test_a_cell_records_the_code_it_started_with(zoo, tmp_path, spec_factory, monkeypatch):
    # files may change while a cell trains (a refactor beside a long bench): the cell is
    # committed with the code version read before it trained
    from mtlzoo.apps.bench import run as R

    path = write(tmp_path, spec_factory, {"combiner": ["sum"]}, baselines=False)
    now = {"mtlzoo": "before", "modules": {}}
    monkeypatch.setattr(C, "code_version", lambda zoo, cfg: dict(now))
    real = R.run_cell

    def train_then_edit(*args, **kwargs):
        summary = real(*args, **kwargs)
        now["mtlzoo"] = "after"  # the files changed while the cell trained
        return summary

    monkeypatch.setattr(R, "run_cell", train_then_edit)
    run_bench(path, log=quiet, zoo=zoo)
    record = json.loads((cells_of(tmp_path) / "combiner=sum__seed0.json").read_text())
    assert record["code"]["mtlzoo"] == "before"


def test_a_module_whose_file_is_gone_is_not_read(tmp_path, monkeypatch):
    import importlib
    import sys

    (tmp_path / "gone_module_x.py").write_text("VALUE = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.import_module("gone_module_x")
    (tmp_path / "gone_module_x.py").unlink()
    try:
        assert C._file("gone_module_x") is None
    finally:
        sys.modules.pop("gone_module_x", None)


def test_the_table_header_gives_a_data_root_relative_to_the_working_folder(tmp_path, monkeypatch):
    from omegaconf import OmegaConf

    from mtlzoo.apps.bench.report import budget_text

    monkeypatch.chdir(tmp_path)
    cfg = OmegaConf.create(
        {
            "train": {
                "epochs": 2,
                "batch_size": 4,
                "amp": "off",
                "optimizer": {"name": "adamw", "lr": 0.001},
                "scheduler": {"name": "cosine"},
            },
            "model": {"backbone": {"name": "timm", "arch": "resnet18"}},
            "data": {"name": "camvid", "root": str(tmp_path.parent / "data" / "camvid")},
            "augment": {"crop": None},
        }
    )
    text = budget_text(cfg, [{"steps": 10}])
    assert "'root': '../data/camvid'" in text and str(tmp_path.parent) not in text
    assert text.startswith("2 epochs x batch 4 (10 optimizer steps per run), adamw lr 0.001")


def test_the_main_table_gives_mean_and_std_over_seeds():
    from mtlzoo.apps.bench.report import _main_table

    cells = [Cell(f"st{s}", "single-task (seg)", [], s, baseline_task="seg") for s in range(2)]
    cells += [Cell(f"mt{s}", "sum", [], s) for s in range(2)]
    cells += [Cell("one0", "one", [], 0), Cell("none0", "none", [], 0)]
    miou = {"st0": 0.5, "st1": 0.7, "mt0": 0.66, "mt1": 0.72, "one0": 0.6, "none0": None}
    records = {c.id: record_of(c, {"seg": {"miou": miou[c.id]}}) for c in cells}
    summary = summarise(type("S", (), {"split": "test"})(), cells, records, {})
    md, csv_rows = _main_table(summary["rows"], summary["directions"])
    table = {
        line.split(" | ")[0].strip("| "): [v.strip() for v in line.strip("| ").split(" | ")]
        for line in md[: md.index("")]  # the main table, before the per-task one
        if line.startswith("| ")
    }
    assert table["method"][3] == "Δm %" and table["method"][-1] == "seg.miou ↑"
    # two seeds: mean ± std (baseline mean 0.6; Δm per seed +10 % and +20 %)
    assert table["sum"][3] == f"15.0000 ± {statistics.stdev([10.0, 20.0]):.4f}"
    assert table["sum"][-1] == f"0.6900 ± {statistics.stdev([0.66, 0.72]):.4f}"
    assert table["single-task (seg)"][3] == "(baseline)"
    assert table["single-task (seg)"][-1] == f"0.6000 ± {statistics.stdev([0.5, 0.7]):.4f}"
    # one seed: the mean alone; a metric the run did not give (NaN): a dash
    assert table["one"][3] == "0.0000" and table["one"][-1] == "0.6000"
    assert table["none"][3] == "-" and table["none"][-1] == "-"
    # the per-task table under it, one row per multi-task method
    per_task = md[md.index("| method | setting | seg |") + 2 :]
    assert per_task[0] == f"| sum | - | 15.0000 ± {statistics.stdev([10.0, 20.0]):.4f} |"
    assert {r["method"]: r["delta_m_mean"] for r in csv_rows}["sum"] == pytest.approx(15.0)


def test_a_job_for_a_cell_not_in_the_plan_fails_in_one_line(tmp_path, spec_factory, capsys):
    import torch

    from mtlzoo.apps.bench import jobs

    path = write(tmp_path, spec_factory, {"combiner": ["sum"]})
    threads = torch.get_num_threads()
    try:
        assert jobs.main([str(path), "combiner=nope__seed0", "--threads", "1"]) == 1
    finally:
        torch.set_num_threads(threads)
    assert capsys.readouterr().out.strip() == (
        f"error: MtlzooError: {path}: no cell 'combiner=nope__seed0' in the plan"
    )
    assert not cells_of(tmp_path).exists()


def test_a_run_folder_that_keeps_its_data_root_relative_is_the_same_config(tmp_path):
    # a cell's run folder writes a relative data root relative to itself; an interrupted cell
    # resumes (and a finished one is collected) though the validated spec holds it absolute
    from mtlzoo.apps.bench.run import _check_same_config

    data = tmp_path / "shared" / "data" / "camvid"
    run_dir = tmp_path / "repo" / "runs" / "bench" / "b" / "cell"
    run_dir.mkdir(parents=True)
    cfg = {"data": {"name": "camvid", "root": str(data)}, "train": {"epochs": 2}}
    saved = {"data": {"name": "camvid", "root": "../../../../../shared/data/camvid"}, "train": {"epochs": 2}}
    (run_dir / "config.yaml").write_text(yaml.safe_dump(saved))
    _check_same_config(cfg, run_dir)
    saved["data"]["root"] = "../../../../../shared/data/other"
    (run_dir / "config.yaml").write_text(yaml.safe_dump(saved))
    with pytest.raises(MtlzooError, match=r"data\.root: '(\.\./){5}shared/data/other' in the run"):
        _check_same_config(cfg, run_dir)


def test_a_cell_resumed_before_wall_time_counted_resumes_costs_its_epochs_time():
    from mtlzoo.apps.bench.report import cell_cost

    # summary.json of a run resumed at epoch 16 of 20, written before the fix: 211 s of wall
    # time for the last session, 1187 s in its epochs' own timing
    old = {
        "steps": 920,
        "seconds": 211.0,
        "timing": {"total": 1187.0},
        "parameters": {"shared": 1, "total": 2},
    }
    assert cell_cost(old)["seconds"] == 1187.0 and cell_cost(old)["step_seconds"] == pytest.approx(1187 / 920)
    fresh = {"steps": 920, "seconds": 800.0, "timing": {"total": 770.0}}
    assert cell_cost(fresh)["seconds"] == 800.0  # set-up and the test pass count too
    assert math.isnan(cell_cost({"steps": 920})["seconds"])
