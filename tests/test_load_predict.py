"""After training: mtlzoo.load gives a ready model, with the training data gone."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

import mtlzoo
from mtlzoo import CheckpointError
from mtlzoo.runtime.train import Trainer, new_run_dir


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny camvid-layout run whose data folder is then deleted."""
    from mtlzoo import Zoo
    from mtlzoo.builtin.datasets.layouts import write_camvid

    tmp = tmp_path_factory.mktemp("run")
    root = write_camvid(tmp / "camvid", counts=(4, 2, 2), hw=(36, 48))
    spec = {
        "name": "tiny_camvid",
        "model": {"backbone": {"name": "cnn", "channels": [8, 16, 32]}},
        "tasks": {
            "semseg": {"type": "segmentation"},
            "edges": {"type": "boundary", "from": "semseg"},
            "present": {"type": "labels", "from": "semseg"},
        },
        "combiner": {"name": "sum"},
        "data": {"name": "camvid", "root": str(root)},
        "train": {"epochs": 1, "batch_size": 2, "progress": False, "device": "cpu"},  # x is on the CPU
    }
    zoo = Zoo.load(strict=True)
    d = new_run_dir(tmp / "runs", "tiny")
    trainer = Trainer(zoo.build(spec), d)
    trainer.fit()
    x = torch.rand(2, 3, 36, 48)
    trainer.model.eval()
    with torch.no_grad():
        expected = trainer.model(x)
    shutil.rmtree(root)
    return d, x, expected


def test_the_run_folder_records_what_inference_needs(run):
    d, _, _ = run
    card = json.loads((d / "model.json").read_text())
    assert card["format"] == 1 and card["size_divisor"] == 1
    assert card["dataset_info"]["targets"]["semseg"]["class_names"][0] == "Sky"
    assert card["tasks"]["edges"] == {
        "type": "boundary",
        "target": "boundary",
        "kind": "boundary",
        "out_channels": 1,
        "class_names": [],
    }
    assert card["normalization"] is not None and len(card["normalization"][0]) == 3


def test_load_works_with_the_training_data_gone(run):
    d, x, expected = run
    predictor = mtlzoo.load(d, "last")
    raw = predictor.predict(x)
    assert len(raw) == 2
    for name, value in expected.items():
        torch.testing.assert_close(raw[0][name], value[0])
    decoded = predictor(x[0])
    assert decoded[0]["semseg"].shape == (36, 48) and decoded[0]["semseg"].dtype == torch.int64


def test_any_input_size_is_padded_and_cropped_back(run):
    d, _, _ = run
    predictor = mtlzoo.load(d)
    predictor.size_divisor = 8  # as a stride-32 backbone would ask
    out = predictor.predict([torch.rand(3, 21, 37), torch.rand(3, 40, 40)])
    assert out[0]["semseg"].shape[-2:] == (21, 37) and out[1]["semseg"].shape[-2:] == (40, 40)
    assert out[0]["present"].shape == (11,)


def test_load_of_a_folder_that_is_not_a_run_is_one_line(tmp_path):
    with pytest.raises(CheckpointError, match="not a run folder with config.yaml and model.json"):
        mtlzoo.load(tmp_path)
