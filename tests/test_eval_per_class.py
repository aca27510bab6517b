"""Per-class IoU end to end: `mtlzoo eval --json --per-class` and a bench's per-class table."""

from __future__ import annotations

import csv
import json
import math
import statistics

import pytest
import yaml

from mtlzoo.apps.bench import run_bench
from mtlzoo.apps.cli import main


def test_eval_json_per_class_iou_and_its_mean_is_miou(tmp_path, spec_factory, capsys):
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(spec_factory(**{"train.out_dir": str(tmp_path / "runs")})))
    assert main(["train", str(spec), "train.run_name=r"]) == 0
    capsys.readouterr()
    run = tmp_path / "runs" / "r"
    assert main(["eval", str(run), "--json", "--per-class", "--split", "test"]) == 0
    semseg = json.loads(capsys.readouterr().out)["metrics"]["semseg"]
    per_class = {k.split("/", 1)[1]: v for k, v in semseg.items() if k.startswith("iou/")}
    # shapes: background and the shape classes, named by the dataset
    assert len(per_class) >= 3 and "background" in per_class
    defined = [v for v in per_class.values() if v is not None and not math.isnan(v)]
    assert statistics.fmean(defined) == pytest.approx(semseg["miou"], abs=1e-6)
    # the console table keeps the headline metrics only
    assert main(["eval", str(run), "--per-class", "--split", "test"]) == 0
    out = capsys.readouterr().out
    assert "miou" in out and "iou/" not in out


def test_a_bench_with_per_class_iou_writes_the_per_class_table(zoo, tmp_path, spec_factory):
    tasks = {
        "semseg": {"type": "segmentation", "metrics": [{"name": "miou"}, {"name": "iou_per_class"}]},
        "depth": {"type": "depth"},
    }
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(spec_factory(tasks=tasks)))
    bench = {
        "name": "pc",
        "base": "base.yaml",
        "grid": {"combiner": ["sum"]},
        "out_dir": str(tmp_path / "runs"),
        "results_dir": str(tmp_path / "results"),
    }
    (tmp_path / "bench.yaml").write_text(yaml.safe_dump(bench))
    run_bench(tmp_path / "bench.yaml", log=lambda *_: None, zoo=zoo)
    md = (tmp_path / "results" / "pc.md").read_text()
    assert "Per-class `semseg.iou` ↑" in md and "| background |" in md
    header = next(line for line in md.splitlines() if line.startswith("| method"))
    assert "iou" not in header.replace("miou", "")  # details stay out of the main table
    rows = list(csv.DictReader(open(tmp_path / "results" / "pc_per_class.csv")))
    cell = json.loads((tmp_path / "results" / "pc" / "cells" / "combiner=sum__seed0.json").read_text())
    st = json.loads((tmp_path / "results" / "pc" / "cells" / "single_semseg__seed0.json").read_text())
    bg = next(r for r in rows if r["method"] == "sum" and r["class"] == "background")
    assert float(bg["mean"]) == cell["summary"]["test"]["semseg"]["iou/background"]
    expected = (
        cell["summary"]["test"]["semseg"]["iou/background"]
        - st["summary"]["test"]["semseg"]["iou/background"]
    )
    assert float(bg["diff_vs_single_task"]) == pytest.approx(expected)
