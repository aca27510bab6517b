"""Every registered combiner, in every ``wrt`` mode, trains a >10M-parameter shared backbone:
one step gives every shared parameter tensor a finite, non-zero gradient and moves it."""

from __future__ import annotations

import dataclasses

import pytest
import timm
import torch
import torch.nn.functional as F
from conftest import GRADIENT_LEVEL_COMBINERS, LOSS_LEVEL_COMBINERS
from torch import nn

from mtlzoo.contract.combine import Step

LOSS_LEVEL = list(LOSS_LEVEL_COMBINERS)
GRADIENT_LEVEL = list(GRADIENT_LEVEL_COMBINERS)
TASKS = ["seg", "depth", "cls"]


@pytest.fixture(scope="module")
def registry(zoo):
    return zoo.registries["combiner"]


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    # zero_init_last=False: timm zero-inits the last norm of each residual block, which leaves
    # the blocks' inner layers without gradient at step 0 whatever the combiner
    backbone = timm.create_model("resnet18", features_only=True, pretrained=False, zero_init_last=False)
    # each head reads its own map and the last one, so every task reaches every layer (a
    # combiner may give a task zero weight: the layers it alone reached would rightly get nothing)
    heads = nn.ModuleDict(
        {
            "seg": nn.ModuleList([nn.Conv2d(64, 3, 1), nn.Conv2d(512, 3, 1)]),  # stride-4 map
            "depth": nn.ModuleList([nn.Conv2d(128, 1, 1), nn.Conv2d(512, 1, 1)]),  # stride-8 map
            "cls": nn.ModuleList([nn.Conv2d(256, 5, 1), nn.Conv2d(512, 5, 1)]),  # stride-16 map, pooled
        }
    )
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 32, 32, generator=g)
    targets = {
        "seg": torch.randint(0, 3, (2, 32, 32), generator=g),
        "depth": torch.rand(2, 1, 32, 32, generator=g),
        "cls": torch.randint(0, 5, (2,), generator=g),
    }
    return backbone, heads, x, targets


def losses_of(backbone, heads, x, t):
    feats = backbone(x)
    size = x.shape[-2:]

    def dense(head, k):
        out = head[0](feats[k]) + F.interpolate(head[1](feats[4]), size=feats[k].shape[-2:], mode="nearest")
        return F.interpolate(out, size=size, mode="bilinear", align_corners=False)

    seg, depth = dense(heads["seg"], 1), dense(heads["depth"], 2)
    cls = heads["cls"][0](feats[3]).mean((2, 3)) + heads["cls"][1](feats[4]).mean((2, 3))
    return feats, {
        "seg": F.cross_entropy(seg, t["seg"]),
        "depth": F.l1_loss(depth, t["depth"]) + 0.1,
        "cls": F.cross_entropy(cls, t["cls"]),
    }


def cases():
    out = [(name, None) for name in LOSS_LEVEL if name != "gradnorm"]
    out += [("gradnorm", "features"), ("gradnorm", "params")]
    out += [(name, wrt) for name in GRADIENT_LEVEL for wrt in ("params", "features")]
    return out


def test_every_combiner_is_registered(registry):
    assert set(LOSS_LEVEL + GRADIENT_LEVEL) <= set(registry.names())
    for name in GRADIENT_LEVEL:
        fields = {f.name: f for f in dataclasses.fields(registry.get(name).options)}
        assert fields["wrt"].default == "params"
        assert [o["type"] for o in registry.get(name).describe_options() if o["name"] == "wrt"] == [
            "'params' | 'features'"
        ]


@pytest.mark.parametrize("name,wrt", cases(), ids=lambda v: str(v))
def test_one_step_trains_the_shared_backbone(registry, setup, name, wrt):
    backbone, heads, x, t = setup
    shared = list(backbone.parameters())
    assert sum(p.numel() for p in shared) > 10_000_000
    opts = {"wrt": wrt} if wrt else {}
    entry = registry.get(name)
    combiner = entry.call(TASKS, options=entry.build_options(opts, "combiner"))
    params = shared + list(heads.parameters()) + [p for p in combiner.parameters() if p.requires_grad]
    for p in params:
        p.grad = None
    before = [p.detach().clone() for p in shared]
    saved = {k: v.clone() for k, v in {**backbone.state_dict(), **heads.state_dict()}.items()}
    feats, losses = losses_of(backbone, heads, x, t)
    step = Step(losses, feats, shared, {k: list(heads[k].parameters()) for k in TASKS}, step=3, epoch=0)
    logs = combiner.backward(losses, step)
    assert all(torch.isfinite(torch.as_tensor(v)) for v in logs.values())
    missing = [
        n for n, p in backbone.named_parameters() if p.grad is None or not bool(p.grad.abs().sum() > 0)
    ]
    assert not missing, f"{name}/{wrt}: no gradient for {missing[:5]} ({len(missing)} tensors)"
    assert all(bool(torch.isfinite(p.grad).all()) for p in shared)
    for head in heads.values():
        assert all(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in head.parameters())
    torch.optim.SGD(params, lr=0.1).step()
    try:
        moved = [not torch.equal(b, p.detach()) for b, p in zip(before, shared)]
        assert all(moved), f"{name}/{wrt}: {moved.count(False)} shared tensors did not move"
    finally:  # the next case starts from the same model (parameters and batch statistics)
        backbone.load_state_dict({k: v for k, v in saved.items() if k in backbone.state_dict()})
        heads.load_state_dict({k: v for k, v in saved.items() if k in heads.state_dict()})
