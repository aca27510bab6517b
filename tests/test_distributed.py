"""torchrun + gloo: a 2-process run takes exactly the steps of a 1-process run on the
concatenated batch (per-task gradients are averaged over ranks before any combiner sees them)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file


def spec(tmp_path: Path, combiner: dict, batch: int, name: str, architecture: dict | None = None) -> Path:
    """A 3-task run on shapes, 3 steps of SGD, every part without batch statistics."""
    heads = {"norm": "none"}
    data = {
        "name": name,
        "seed": 0,
        "model": {"backbone": {"name": "cnn", "channels": [8, 16, 32], "norm": "none"}},
        "tasks": {
            "semseg": {"type": "segmentation", "head": {"name": "fcn", "channels": 8, **heads}},
            "depth": {"type": "depth", "head": {"name": "dense", "channels": 8, **heads}},
            "labels": {"type": "labels"},
        },
        "combiner": combiner,
        "data": {"name": "shapes", "size": [32, 32], "train_size": 24, "val_size": 4, "test_size": 4},
        "train": {
            "epochs": 1,
            "batch_size": batch,
            "progress": False,
            "out_dir": str(tmp_path),
            "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9},
            "scheduler": {"name": "none"},
            "max_steps_per_epoch": 3,
        },
    }
    if architecture is not None:
        data["model"]["architecture"] = architecture
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def launch(args: list[str], cwd: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run(args, capture_output=True, text=True, cwd=cwd, env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]


COMBINERS = [
    {"name": "sum"},
    {"name": "uncertainty"},
    {"name": "pcgrad", "wrt": "params"},
    {"name": "mgda", "wrt": "features"},
    {"name": "modo", "wrt": "params"},
    {"name": "sdmgrad", "wrt": "features"},
    {"name": "moco", "wrt": "params"},
    {"name": "excess_mtl", "wrt": "features"},
]


@pytest.mark.slow
@pytest.mark.parametrize("combiner", COMBINERS, ids=lambda c: f"{c['name']}-{c.get('wrt', '')}")
def test_two_process_gloo_equals_one_process_on_concatenated_batch(tmp_path, combiner):
    one = spec(tmp_path, combiner, batch=8, name="one")
    two = spec(tmp_path, combiner, batch=4, name="two")
    launch([sys.executable, "-m", "mtlzoo", "train", str(one)], tmp_path)
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    launch([*torchrun, "-m", "mtlzoo", "train", str(two)], tmp_path)
    a = load_file(str(tmp_path / "one" / "checkpoints" / "last" / "weights.safetensors"))
    b = load_file(str(tmp_path / "two" / "checkpoints" / "last" / "weights.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-5, atol=1e-5, msg=f"{k} differs")
    # rank 0 alone wrote the run folder: one metrics line, one summary
    lines = (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 1
    assert not (tmp_path / "two-2").exists()
