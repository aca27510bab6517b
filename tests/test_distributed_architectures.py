"""torchrun + gloo with architectures: a 2-process run of mtan and of cross_stitch takes exactly
the steps of a 1-process run on the concatenated batch (no batch statistics anywhere: cnn
backbone, heads and attention without norm layers)."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_distributed import assert_same_steps, train_pairs

CASES = [
    ({"name": "mtan", "norm": "none"}, {"name": "sum"}),
    ({"name": "mtan", "norm": "none"}, {"name": "pcgrad", "wrt": "params"}),
    ({"name": "mtan", "norm": "none"}, {"name": "mgda", "wrt": "features"}),
    ({"name": "cross_stitch", "alphas": "channel"}, {"name": "sum"}),
    ({"name": "cross_stitch", "alphas": "channel"}, {"name": "pcgrad", "wrt": "params"}),
]


def case_id(case: tuple[dict, dict]) -> str:
    architecture, combiner = case
    return f"{architecture['name']}-{combiner['name']}-{combiner.get('wrt', '')}".rstrip("-")


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """test_distributed's 3-task run (no batch statistics anywhere) with each architecture."""
    root = tmp_path_factory.mktemp("gloo_architectures")
    return train_pairs(root, {case_id(c): {"architecture": c[0], "combiner": c[1]} for c in CASES})


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_two_process_gloo_equals_one_process_with_an_architecture(runs, case):
    weights = assert_same_steps(runs[case_id(case)])
    # the architecture's own parameters are in the checkpoint
    prefix = "attention." if case[0]["name"] == "mtan" else "units."
    assert any(k.startswith(prefix) or f".{prefix}" in k for k in weights), sorted(weights)[:10]
