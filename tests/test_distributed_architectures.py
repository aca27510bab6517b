"""torchrun + gloo with architectures: a 2-process run of mtan and of cross_stitch takes exactly
the steps of a 1-process run on the concatenated batch (no batch statistics anywhere: cnn
backbone, heads and attention without norm layers)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from test_distributed import launch
from test_distributed import spec as distributed_spec


def spec(tmp_path: Path, architecture: dict, combiner: dict, batch: int, name: str) -> Path:
    """test_distributed's 3-task run (no batch statistics anywhere) with ``architecture``."""
    return distributed_spec(tmp_path, combiner, batch, name, architecture)


CASES = [
    ({"name": "mtan", "norm": "none"}, {"name": "sum"}),
    ({"name": "mtan", "norm": "none"}, {"name": "pcgrad", "wrt": "params"}),
    ({"name": "mtan", "norm": "none"}, {"name": "mgda", "wrt": "features"}),
    ({"name": "cross_stitch", "alphas": "channel"}, {"name": "sum"}),
    ({"name": "cross_stitch", "alphas": "channel"}, {"name": "pcgrad", "wrt": "params"}),
]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("architecture", "combiner"), CASES, ids=lambda c: f"{c['name']}-{c.get('wrt', '')}".rstrip("-")
)
def test_two_process_gloo_equals_one_process_with_an_architecture(tmp_path, architecture, combiner):
    one = spec(tmp_path, architecture, combiner, batch=8, name="one")
    two = spec(tmp_path, architecture, combiner, batch=4, name="two")
    launch([sys.executable, "-m", "mtlzoo", "train", str(one)], tmp_path)
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    launch([*torchrun, "-m", "mtlzoo", "train", str(two)], tmp_path)
    a = load_file(str(tmp_path / "one" / "checkpoints" / "last" / "weights.safetensors"))
    b = load_file(str(tmp_path / "two" / "checkpoints" / "last" / "weights.safetensors"))
    assert a.keys() == b.keys()
    # the architecture's own parameters are in the checkpoint (and moved)
    prefix = "attention." if architecture["name"] == "mtan" else "units."
    assert any(k.startswith(prefix) or f".{prefix}" in k for k in a), sorted(a)[:10]
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-5, atol=1e-5, msg=f"{k} differs")
