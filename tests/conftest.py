"""Shared fixtures: tiny specs, the repository root, the shared CamVid copy."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CAMVID = (ROOT / ".." / "shared" / "data" / "camvid").resolve()

# keep torch to the 2 cores and quiet for the whole suite (subprocesses inherit this)
os.environ.setdefault("OMP_NUM_THREADS", "2")
# under pytest-xdist (`make test` runs `-n auto`) the workers share the cores: in-process torch
# takes its share, so that two workers on two cores do not spin against each other
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _WORKERS > 1:
    import torch

    torch.set_num_threads(max(1, (os.cpu_count() or 1) // _WORKERS))


def assert_process_gone(pid: int, tries: int = 50) -> None:
    """Fail unless process `pid` has ended (gone, or a zombie waiting to be reaped) within ~5 s.

    The kill is delivered at once; reaping by init can take a moment, so a zombie counts as ended.
    """
    import time

    for _ in range(tries):
        try:
            os.kill(pid, 0)
            if Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z":
                return
        except (ProcessLookupError, FileNotFoundError):
            return
        time.sleep(0.1)
    raise AssertionError(f"process {pid} still runs")


@pytest.fixture
def root() -> Path:
    """The repository root."""
    return ROOT


#: what registering and listing plugins must never import (checked in a fresh process)
HEAVY_MODULES = (
    "torch",
    "torchvision",
    "timm",
    "segmentation_models_pytorch",
    "torchmetrics",
    "scipy",
    "numpy",
    "PIL",
)

#: every built-in combiner, in registration order (`mtlzoo list combiner`)
COMBINERS = (
    *("sum", "weighted", "uncertainty", "dwa", "rlw", "gls", "imtl_l", "famo", "gradnorm"),
    *("mgda", "pcgrad", "cagrad", "nash_mtl", "imtl_g", "aligned_mtl", "gradvac", "graddrop", "upgrad"),
    *("config", "db_mtl", "fairgrad", "excess_mtl", "moco", "modo", "sdmgrad", "stch", "dualproj"),
    *("krum", "trimmed_mean", "auto_lambda", "moml", "forum"),
)
#: the built-in combiners that learn their weights on a held-out batch (they need step.heldout)
BILEVEL_COMBINERS = ("auto_lambda", "moml", "forum")
#: the built-in combiners that weight the losses (one backward pass of a weighted sum)
LOSS_LEVEL_COMBINERS = (
    "sum",
    "weighted",
    "uncertainty",
    "dwa",
    "rlw",
    "gls",
    "imtl_l",
    "famo",
    "gradnorm",
    "stch",
)
#: the built-in combiners that work on the task gradients, in registration order
GRADIENT_LEVEL_COMBINERS = tuple(c for c in COMBINERS if c not in (*LOSS_LEVEL_COMBINERS, *BILEVEL_COMBINERS))


def tiny_spec(**overrides) -> dict:
    """A fast 3-task spec on `shapes` with the in-house CNN backbone (seconds on CPU)."""
    spec = {
        "name": "tiny",
        "seed": 0,
        "model": {"backbone": {"name": "cnn", "channels": [8, 16, 32], "norm": "group"}},
        "tasks": {
            "semseg": {"type": "segmentation"},
            "depth": {"type": "depth"},
            "labels": {"type": "labels"},
        },
        "combiner": {"name": "sum"},
        "data": {"name": "shapes", "size": [32, 32], "train_size": 16, "val_size": 8, "test_size": 8},
        # CPU: the tests compare exact figures (seeded runs, resumes, DDP vs one process), which only
        # CPU reproduces bit for bit; tests/test_cuda.py runs the CUDA path
        "train": {"epochs": 1, "batch_size": 8, "progress": False, "out_dir": "runs", "device": "cpu"},
    }
    for key, value in overrides.items():
        node = spec
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = value
    return spec


@pytest.fixture(scope="session")
def zoo():
    """One zoo of the installed plugins for the whole session, loaded strictly (a broken
    built-in plugin fails the tests instead of being skipped)."""
    from mtlzoo import Zoo

    return Zoo.load(strict=True)


@pytest.fixture
def spec_factory():
    """Build a tiny spec dict with dotted-key overrides: spec_factory(**{"train.epochs": 2})."""
    return tiny_spec
