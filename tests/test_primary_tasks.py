"""Primary and auxiliary tasks (issue 23): ``tasks.<name>.primary`` in the spec, the best
checkpoint chosen on the first primary task, ``summary.json``, and bench tables with delta-m
over the primary tasks beside delta-m over all tasks."""

from __future__ import annotations

import csv
import json

import pytest
import yaml

from mtlzoo.apps.bench import delta_m, run_bench
from mtlzoo.apps.bench.report import primary_tasks
from mtlzoo.contract.errors import ConfigError
from mtlzoo.runtime.selection import better, selection
from mtlzoo.runtime.train import Trainer


def test_the_task_node_takes_primary_and_fills_it_in(zoo, spec_factory):
    cfg = zoo.spec(spec_factory(**{"tasks.depth.primary": True}))
    assert cfg.tasks.depth.primary is True and cfg.tasks.semseg.primary is False


@pytest.mark.parametrize("value", ["yes", 1, None])
def test_primary_must_be_a_boolean(zoo, spec_factory, value):
    with pytest.raises(ConfigError) as err:
        zoo.spec(spec_factory(**{"tasks.depth.primary": value}))
    assert str(err.value) == (
        f"tasks.depth.primary: true marks a primary task (the others are auxiliary), got {value!r}"
    )


def test_a_misspelt_primary_is_named(zoo, spec_factory):
    with pytest.raises(ConfigError, match=r"tasks.depth.primry: unknown key .*did you mean 'primary'"):
        zoo.spec(spec_factory(**{"tasks.depth.primry": True}))


class Task:
    def __init__(self, name, metrics):
        self.name, self.metrics = name, dict.fromkeys(metrics)


def test_selection_defaults_to_the_first_primary_tasks_first_metric():
    tasks = {"a": Task("a", ["m1"]), "b": Task("b", ["m2", "m3"]), "c": Task("c", [])}
    assert selection(None, tasks, []) == ("a", "m1")
    assert selection(None, tasks, ["b", "a"]) == ("b", "m2")
    assert selection(None, tasks, ["c"]) == ("c", "loss")
    assert selection("a.loss", tasks, ["b"]) == ("a", "loss")  # train.select wins
    with pytest.raises(ConfigError, match="train.select: 'b.m9' is not a task metric"):
        selection("b.m9", tasks, [])
    assert better(0.5, {}, True) and not better(float("nan"), {}, True)
    assert better(0.4, {"value": 0.5}, False) and not better(0.4, {"value": 0.5}, True)


def test_the_run_chooses_its_best_checkpoint_on_the_primary_task(zoo, spec_factory):
    spec = spec_factory(**{"tasks.labels.primary": True, "train.epochs": 2})
    trainer = Trainer(zoo.build(spec), None)
    summary = trainer.fit()
    assert summary["primary"] == ["labels"] and summary["best"]["metric"] == "labels.map"
    assert summary["best"]["value"] == max(r["val"]["labels"]["map"] for r in trainer.history)
    plain = Trainer(zoo.build(spec_factory()), None).fit()
    assert plain["primary"] == [] and plain["best"]["metric"] == "semseg.miou"


def test_bench_tables_report_delta_m_over_the_primary_tasks(zoo, tmp_path, spec_factory):
    base = tmp_path / "base.yaml"
    tasks = {"semseg": {"type": "segmentation"}, "depth": {"type": "depth", "primary": True}}
    base.write_text(yaml.safe_dump(spec_factory(tasks=tasks)))
    bench = {
        "name": "prim",
        "base": "base.yaml",
        "grid": {"combiner": ["sum"]},
        "seeds": [0],
        "out_dir": str(tmp_path / "runs"),
        "results_dir": str(tmp_path / "results"),
    }
    path = tmp_path / "bench.yaml"
    path.write_text(yaml.safe_dump(bench))
    summary = run_bench(path, log=lambda *_: None, zoo=zoo)
    assert not summary["failures"]
    runs = tmp_path / "runs" / "prim"
    s = lambda cid: json.loads((runs / cid / "summary.json").read_text())  # noqa: E731
    mt = s("combiner=sum__seed0")
    assert mt["primary"] == ["depth"]
    st = {
        "semseg": s("single_semseg__seed0")["test"]["semseg"],
        "depth": s("single_depth__seed0")["test"]["depth"],
    }
    everything, per_task = delta_m(mt["test"], st, mt["directions"])
    only_depth, _ = delta_m({"depth": mt["test"]["depth"]}, st, mt["directions"])
    assert only_depth == pytest.approx(per_task["depth"]) and only_depth != pytest.approx(everything)
    rows = list(csv.DictReader(open(tmp_path / "results" / "prim.csv")))
    row = next(r for r in rows if r["method"] == "sum")
    assert float(row["delta_m_mean"]) == pytest.approx(everything)
    assert float(row["delta_m_primary_mean"]) == pytest.approx(only_depth)
    md = (tmp_path / "results" / "prim.md").read_text()
    assert (
        "| Δm % | Δm primary % |" in md and "Δm primary: the same over the primary tasks only (depth)." in md
    )


def test_records_without_primary_tasks_keep_the_table_as_it_was():
    assert primary_tasks({"a": {"summary": {}}, "b": {"summary": {"primary": []}}}) == []
    assert primary_tasks(
        {"a": {"summary": {"primary": ["x"]}}, "b": {"summary": {"primary": ["y", "x"]}}}
    ) == [
        "x",
        "y",
    ]
