"""benchmarks/combiner_cost.py: its reference steps compute the updates they stand for (the
torchjd autojac step through the heads' view of the stride-4 map is exact), and the rows and
targets it reads. No timing is asserted."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def cc():
    spec = importlib.util.spec_from_file_location(
        "mtlzoo_combiner_cost", ROOT / "benchmarks" / "combiner_cost.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


class Trunk(nn.Module):
    """Five maps like a features_only backbone; the stride-32 map is computed from the stride-4 one."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, stride=2, padding=1)
        self.layer1 = nn.Conv2d(4, 6, 3, stride=2, padding=1)
        self.deep = nn.Sequential(
            nn.Conv2d(6, 8, 3, stride=2, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1)
        )
        self.layer4 = nn.Conv2d(8, 10, 3, stride=4, padding=1)

    def forward(self, x):
        s2 = torch.relu(self.stem(x))
        s4 = torch.relu(self.layer1(s2))
        s8 = self.deep(s4)
        return [s2, s4, s8, s8 * 1.0, self.layer4(s8)]


def setup(cc, tasks=3):
    torch.manual_seed(0)
    trunk = Trunk()
    names = [f"t{i}" for i in range(tasks)]
    heads = cc.light_heads([4, 6, 8, 8, 10], names, width=4)
    x = torch.randn(2, 3, 32, 32)
    targets = {n: torch.randn(2, 1, 32, 32) for n in names}
    forward = cc.make_forward(trunk, heads, x, targets)
    shared = list(trunk.parameters())
    own = {n: list(heads[n].parameters()) for n in names}
    return trunk, heads, forward, shared, own, names


def grads_of(step, params):
    """The gradient a plain SGD step (lr 1) applied, by the parameters' change."""
    before = [p.detach().clone() for p in params]
    step(0)
    return [b - p.detach() for b, p in zip(before, params)]


def test_the_torchjd_mean_step_is_the_mean_of_the_task_gradients(cc):
    pytest.importorskip("torchjd")
    _, heads, forward, shared, own, names = setup(cc)
    task_params = [p for n in names for p in own[n]]
    # reference: autograd on the plain forward, sum of the losses
    feats, losses = forward()
    total = sum(losses.values())
    ref_shared = torch.autograd.grad(total, shared, retain_graph=True)
    ref_task = torch.autograd.grad(total, task_params)
    optimizer = torch.optim.SGD(shared + task_params, lr=1.0)
    step = cc.torchjd_step("Mean", forward, optimizer, shared, own, names)
    got = grads_of(step, shared + task_params)
    for g, r in zip(got[: len(shared)], ref_shared):
        torch.testing.assert_close(g, r / len(names), rtol=1e-4, atol=1e-6)  # the mean of the rows
    for g, r in zip(got[len(shared) :], ref_task):
        torch.testing.assert_close(g, r, rtol=1e-4, atol=1e-6)  # each head its own gradient


def test_the_cut_forward_gives_the_same_losses(cc):
    _, _, forward, _, _, _ = setup(cc)
    _, plain = forward()
    _, cut = forward(cut=True)
    assert {k: float(v.detach()) for k, v in plain.items()} == {k: float(v.detach()) for k, v in cut.items()}


def test_upgrad_runs_without_quadprog(cc):
    tjd = pytest.importorskip("torchjd.aggregation")
    aggregator = cc.torchjd_aggregator("UPGrad")
    J = torch.tensor([[1.0, 0.0], [-0.5, 1.0]], dtype=torch.float64)
    update = aggregator(J)
    assert (J @ update >= -1e-9).all()  # no conflict with either row
    if cc.quadprog_installed():
        torch.testing.assert_close(update, tjd.UPGrad()(J))
    assert type(cc.torchjd_aggregator("Mean")).__name__ == "Mean"


def test_rows_sizes_and_targets(cc):
    assert cc.parse_size("64") == (64, 64) and cc.parse_size("256x320") == (256, 320)
    with pytest.raises(SystemExit, match="is not N or HxW"):
        cc.parse_size("big")
    rows = cc.configurations({"mgda"}, {"params"}, True, ("Mean",))
    assert [cc.label(n, o) for n, o in rows] == [
        "hand-written sum step",
        "torchjd autojac Mean",
        "mgda (params)",
    ]
    assert cc.configurations(None, {"features", "params"}, False)[0] == ("weighted", {})
    torchjd = {"MGDA": 1.5, "UPGrad": 1.6}
    assert cc.hand_target("sum", {}, "loss", 3, torchjd) == (1.03, "")
    assert cc.hand_target("mgda", {"wrt": "params"}, "gradient", 8, torchjd) == (1.5, " (torchjd MGDA)")
    assert cc.hand_target("pcgrad", {"wrt": "params"}, "gradient", 3, torchjd) == (1.6, " (torchjd UPGrad)")
    assert cc.hand_target("pcgrad", {"wrt": "features"}, "gradient", 3, torchjd) is None
    assert cc.hand_target("pcgrad", {"wrt": "params"}, "gradient", 4, torchjd) is None
    # the CPU table's targets are unchanged; none for the references or sum against itself
    assert cc.target("pcgrad", {"wrt": "params"}, "gradient", 3) == 2.0
    assert cc.target("torchjd", {"aggregator": "Mean"}, "reference", 3) is None
    assert cc.target("sum", {}, "loss", 3) is None
