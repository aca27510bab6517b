"""torchrun + gloo: a 2-process run takes exactly the steps of a 1-process run on the
concatenated batch (per-task gradients are averaged over ranks before any combiner sees them)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file


def spec(
    tmp_path: Path,
    combiner: dict,
    batch: int,
    name: str,
    architecture: dict | None = None,
    device: str = "cpu",
) -> Path:
    """A 3-task run on shapes, 3 steps of SGD, every part without batch statistics; on the CPU
    (gloo, exact equality) unless ``device`` says otherwise (tests/test_cuda.py: nccl)."""
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
            "device": device,  # not auto: with CUDA present it would take one GPU per rank
        },
    }
    if architecture is not None:
        data["model"]["architecture"] = architecture
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def launch(args: list[str], cwd: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run(args, capture_output=True, text=True, cwd=cwd, env=env, timeout=900)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]


TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
TRAIN_EACH = str(Path(__file__).with_name("train_each.py"))


def train_pairs(root: Path, cases: dict[str, dict]) -> dict[str, Path]:
    """For each case (id -> spec() keyword arguments) train a 1-process run on batch 8 and a
    2-process torchrun + gloo run on batch 4 per rank; one launch of each for all the cases.

    Returns the case folders, each holding ``one/`` and ``two/`` run folders; a case whose run
    failed has its exit status or traceback in ``failed.txt`` instead."""
    folders = {case: root / case for case in cases}
    ones, twos = [], []
    for case, kwargs in cases.items():
        folders[case].mkdir()
        ones.append(str(spec(folders[case], batch=8, name="one", **kwargs)))
        twos.append(str(spec(folders[case], batch=4, name="two", **kwargs)))
    launch([sys.executable, TRAIN_EACH, str(root / "one.json"), *ones], root)
    launch([*TORCHRUN, TRAIN_EACH, str(root / "two.json"), *twos], root)
    for result in ("one.json", "two.json"):
        for path, status in json.loads((root / result).read_text()).items():
            if status != 0:
                (Path(path).parent / "failed.txt").write_text(f"{path}: {status}")
    return folders


def assert_same_steps(folder: Path) -> dict[str, torch.Tensor]:
    """The 2-process run's weights equal the 1-process run's; rank 0 alone wrote the run folder."""
    if (folder / "failed.txt").exists():
        pytest.fail((folder / "failed.txt").read_text())
    a = load_file(str(folder / "one" / "checkpoints" / "last" / "weights.safetensors"))
    b = load_file(str(folder / "two" / "checkpoints" / "last" / "weights.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-5, atol=1e-5, msg=f"{k} differs")
    lines = (folder / "two" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 1
    assert not (folder / "two-2").exists()
    return a


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


def combiner_id(combiner: dict) -> str:
    return f"{combiner['name']}-{combiner.get('wrt', '')}"


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("gloo")
    return train_pairs(root, {combiner_id(c): {"combiner": c} for c in COMBINERS})


@pytest.mark.slow
@pytest.mark.parametrize("combiner", COMBINERS, ids=combiner_id)
def test_two_process_gloo_equals_one_process_on_concatenated_batch(runs, combiner):
    assert_same_steps(runs[combiner_id(combiner)])


def test_a_failing_spec_is_reported_and_the_next_one_still_trains(tmp_path):
    good = spec(tmp_path, {"name": "sum"}, batch=8, name="good")
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"name": "bad", "combiner": {"name": "no_such_combiner"}}))
    launch([sys.executable, TRAIN_EACH, str(tmp_path / "r.json"), str(bad), str(good)], tmp_path)
    results = json.loads((tmp_path / "r.json").read_text())
    assert results == {str(bad): 2, str(good): 0}
    assert (tmp_path / "good" / "checkpoints" / "last" / "weights.safetensors").is_file()
