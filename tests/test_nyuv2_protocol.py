"""The NYUv2 SegNet/MTAN protocol configs and bench spec, run on a small fake copy in the
release's .npy layout (the real data cannot be downloaded here; the runs themselves need a GPU)."""

from __future__ import annotations

import csv
import json

import pytest
import yaml

import mtlzoo
from mtlzoo.apps.bench import run_bench
from mtlzoo.builtin.datasets import NYUV2_FOLDERS
from mtlzoo.builtin.datasets.layouts import write_npy

# the fake copy: 64x96 images, a crop of the whole image; one step of batch 2 per epoch
SMALL = ["augment.crop=[64,96]", "train.device=cpu", "train.max_steps_per_epoch=1", "train.progress=false"]
# the bench's logic on the real spec, with a small encoder in place of VGG-16-BN (seconds, not minutes)
TINY = ['model.backbone={"name": "cnn", "channels": [8, 16, 32], "norm": "group"}'] + [
    f"tasks.{t}.head.decoder_channels=[16,8,8]" for t in ("semseg", "depth", "normals")
]
CONFIGS = ["segnet_mtan", "segnet_semseg", "segnet_depth", "segnet_normals"]


@pytest.fixture(scope="module")
def fake_nyuv2(tmp_path_factory):
    return write_npy(tmp_path_factory.mktemp("data") / "nyuv2", NYUV2_FOLDERS, counts=(4, 2), hw=(64, 96))


@pytest.mark.parametrize("name", CONFIGS)
def test_segnet_configs_keep_the_papers_protocol(root, name):
    cfg = yaml.safe_load((root / "configs" / "nyuv2" / f"{name}.yaml").read_text())
    t = cfg["train"]
    assert (t["epochs"], t["batch_size"], t["optimizer"]["lr"], t["optimizer"]["weight_decay"]) == (
        200,
        2,
        1e-4,
        0,
    )
    assert t["scheduler"] == {"name": "step", "step_epochs": 100, "gamma": 0.5}
    assert cfg["augment"] == {"hflip": 0.5, "scale": [1.0, 1.5], "crop": [288, 384]}
    assert (t["eval_split"], t["test_split"]) == ("val", None)  # val/ is NYUv2's test split
    assert cfg["model"]["backbone"] == {"name": "timm", "arch": "vgg16_bn"}  # SegNet's encoder, from scratch
    text = (root / "configs" / "nyuv2" / f"{name}.yaml").read_text()
    assert f"mtlzoo train configs/nyuv2/{name}.yaml" in text or name == "segnet_mtan"


@pytest.mark.slow  # trains SegNet-MTAN end to end
def test_segnet_mtan_trains_on_a_fake_copy(root, fake_nyuv2, tmp_path):
    exp = mtlzoo.build(
        root / "configs" / "nyuv2" / "segnet_mtan.yaml", [f"data.root={fake_nyuv2}", "train.epochs=1", *SMALL]
    )
    assert list(exp.tasks) == ["semseg", "depth", "normals"]
    assert exp.info.targets["semseg"].num_classes == 13
    assert exp.model.num_parameters()["shared"] > 14e6  # VGG-16-BN's convolutions
    summary = mtlzoo.Trainer(exp).fit()  # no run folder: nothing written
    assert set(summary["final"]) == {"semseg", "depth", "normals"}
    assert {"miou", "pixel_acc"} <= set(summary["final"]["semseg"])


def test_the_nyuv2_bench_reports_the_last_10_protocol_and_the_papers_delta_m(root, fake_nyuv2, tmp_path, zoo):
    real = yaml.safe_load((root / "benchmarks" / "specs" / "nyuv2_segnet_mtan.yaml").read_text())
    spec = {
        **real,
        "base": str(root / "configs" / "nyuv2" / "segnet_mtan.yaml"),
        "overrides": [*real["overrides"], f"data.root={fake_nyuv2}", "train.epochs=3", *SMALL, *TINY],
        "last_k": 2,
        "out_dir": str(tmp_path / "runs"),
        "results_dir": str(tmp_path / "results"),
    }
    path = tmp_path / "bench.yaml"
    path.write_text(yaml.safe_dump(spec))
    summary = run_bench(path, log=lambda *_: None, zoo=zoo)
    assert summary["failures"] == {} and len(summary["committed"]) == 5
    md = (tmp_path / "results" / "nyuv2_segnet_mtan.md").read_text()
    assert "**Last-2 mean on " in md
    dm_line = next(line for line in md.splitlines() if line.startswith("Δm:"))
    assert "semseg: miou, pixel_acc" in dm_line and "depth: abs_err, rel_err" in dm_line
    assert "normals: mean_angle, median_angle, within_11.25, within_22.5, within_30" in dm_line
    assert "depth.rmse ↓" in md and "depth.delta1 ↑" in md and "depth.log10 ↓" in md
    # delta-m over the papers' 9 metrics only: recompute it from the cells' last-2 means
    cells = tmp_path / "results" / "nyuv2_segnet_mtan" / "cells"

    def last2(cell, task, key):
        history = json.loads((cells / f"{cell}.json").read_text())["history"]
        assert len(history) == 3
        return sum(h["val"][task][key] for h in history[-2:]) / 2

    keys = real["delta_m_metrics"]
    higher = {"miou": 1, "pixel_acc": 1, "abs_err": -1, "rel_err": -1, "mean_angle": -1, "median_angle": -1}
    per_task = []
    for task, ks in keys.items():
        terms = []
        for k in ks:
            st, mt = last2(f"single_{task}__seed0", task, k), last2("combiner=sum__seed0", task, k)
            terms.append(higher.get(k, 1) * (mt - st) / abs(st) * 100)
        per_task.append(sum(terms) / len(terms))
    rows = {
        r["method"]: r for r in csv.DictReader(open(tmp_path / "results" / "nyuv2_segnet_mtan_last2.csv"))
    }
    assert float(rows["sum"]["delta_m_mean"]) == pytest.approx(sum(per_task) / 3, rel=1e-6)
