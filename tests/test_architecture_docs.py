"""docs/architectures.md, "Writing an architecture": its example runs, and its rule for the shared
representation holds (an MMoE's dependent tensors, a path around the representation, task
parameters before it), checked against plain autograd."""

from __future__ import annotations

import re
import sys
import types
from pathlib import Path

import pytest
import torch
from torch import nn

from mtlzoo.contract.combine import Step

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "architectures.md"


def test_the_worked_example_runs(monkeypatch):
    section = DOC.read_text().split("## Writing an architecture", 1)[1]
    (code,) = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    module = types.ModuleType("mtlzoo_doc_architecture_example")
    monkeypatch.setitem(sys.modules, module.__name__, module)
    exec(compile(code, "docs/architectures.md example", "exec"), module.__dict__)  # noqa: S102 - our docs


class MoE(nn.Module):
    """A backbone conv (shared), two 1x1 experts on its map (shared), one gate and one head per
    task (task parameters); ``run(rep)`` returns the losses and the representation ``rep``."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.backbone = nn.Conv2d(3, 4, 3, padding=1)
        self.experts = nn.ModuleList(nn.Conv2d(4, 4, 1) for _ in range(2))
        self.gates = nn.ModuleDict({t: nn.Linear(4, 2) for t in "ab"})
        self.heads = nn.ModuleDict({t: nn.Conv2d(4, 1, 1) for t in "ab"})
        self.images = torch.rand(2, 3, 8, 8)

    def shared(self):
        return [*self.backbone.parameters(), *self.experts.parameters()]

    def task(self, t):
        return [*self.gates[t].parameters(), *self.heads[t].parameters()]

    def run(self, rep, detach_x=False):
        x = self.backbone(self.images).relu()
        outs = [e(x.detach() if detach_x else x) for e in self.experts]
        losses, mixes = {}, []
        for k, t in enumerate("ab"):
            g = self.gates[t](x.mean((2, 3))).softmax(-1)
            mixes.append(g[:, 0, None, None, None] * outs[0] + g[:, 1, None, None, None] * outs[1])
            losses[t] = self.heads[t](mixes[-1]).square().mean() * (1 + 2 * k)
        reps = {"maps and experts": [x, *outs], "experts only": outs, "per-task mixtures": mixes}
        return losses, reps[rep], x, outs

    def step(self, rep):
        for p in self.parameters():
            p.grad = None
        losses, feats, _, _ = self.run(rep)
        return Step(losses, feats, self.shared(), {t: self.task(t) for t in "ab"})

    def autograd(self, w):
        """Per-task gradient rows of the shared parameters, and the gradient of sum_t w_t L_t of
        every parameter (shared, then task a's, then task b's)."""
        losses, _, _, _ = self.run("experts only")
        params = [*self.shared(), *self.task("a"), *self.task("b")]
        rows = [
            torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, self.shared(), retain_graph=True)])
            for loss in losses.values()
        ]
        total = sum(w[i] * loss for i, loss in enumerate(losses.values()))
        return torch.stack(rows).double(), torch.autograd.grad(total, params)


W = torch.tensor([0.3, 1.7], dtype=torch.float64)


def update(m, rep):
    """An MGDA-UB-like update: the features Gramian (the per-task passes), then the weighted
    update from those cotangents."""
    step = m.step(rep)
    step.gramian("features")
    step.backward_weighted(W, wrt="features", heads="weighted")


def _grads(params):
    return [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]


def _same(a, b):
    return all(torch.allclose(x.float(), y.float(), atol=1e-6) for x, y in zip(a, b))


def test_rule_3_dependent_tensors_give_exact_updates_and_gramians():
    m = MoE()
    rows, want = m.autograd(W)
    params = [*m.shared(), *m.task("a"), *m.task("b")]
    update(m, "maps and experts")
    assert _same(_grads(params), want)
    assert torch.allclose(m.step("maps and experts").gramian("params"), rows @ rows.T, rtol=1e-5)


def test_rule_3_feature_rows_are_partial_derivatives():
    m = MoE()
    rows = m.step("maps and experts").task_gradients("features")
    for i, t in enumerate("ab"):
        # the maps' block: what reaches the loss through the gates, the experts held fixed
        losses, _, x, outs = m.run("maps and experts", detach_x=True)
        gx, *gouts = torch.autograd.grad(losses[t], [x, *outs])
        assert torch.allclose(rows[i], torch.cat([g.reshape(-1) for g in (gx, *gouts)]), atol=1e-7)
        # ... which is not the total derivative with respect to the maps
        losses, _, x, _ = m.run("maps and experts")
        (total,) = torch.autograd.grad(losses[t], [x])
        assert not torch.allclose(gx, total, atol=1e-4)


def test_rule_1_a_path_around_the_representation_is_lost():
    m = MoE()
    rows, want = m.autograd(W)
    update(m, "experts only")
    assert not _same(_grads(m.shared()), want[: len(m.shared())])  # the gates' path to the backbone
    assert not torch.allclose(m.step("experts only").gramian("params"), rows @ rows.T, rtol=1e-3)


def test_rule_2_task_parameters_before_the_representation_get_no_gradient():
    m = MoE()
    update(m, "per-task mixtures")
    assert all(p.grad is None for t in "ab" for p in m.gates[t].parameters())
    assert all(p.grad is not None for t in "ab" for p in m.heads[t].parameters())


@pytest.mark.parametrize(
    "statement",
    [
        "Tensors that depend on each other are allowed",
        "**A cut.**",
        "**Only shared parameters before it.**",
        "`regularizers[task]`",
        "deep supervision",
    ],
)
def test_the_section_states_the_rules_this_file_checks(statement):
    assert statement in DOC.read_text().split("## Writing an architecture", 1)[1]
