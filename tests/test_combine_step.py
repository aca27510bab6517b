"""Step: per-task gradients, Gramians and the final update, checked against plain autograd
on a small backbone that exercises every path of the layer-wise Gramian (strided, dilated,
1x1, depthwise and weight-shared convolutions, biases, norm layers, multi-scale features),
and against a 1-process run in a 2-process gloo group."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mtlzoo.contract import _autogram
from mtlzoo.contract.combine import Step

NAMES = ["seg", "dense", "cls", "const"]


class TinyBackbone(nn.Module):
    """Three feature maps, each computed from the previous one."""

    def __init__(self, norm: str = "batch"):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)  # the first conv (has a bias)
        self.norm = nn.BatchNorm2d(8) if norm == "batch" else nn.GroupNorm(2, 8)
        self.c1 = nn.Conv2d(8, 12, 3, stride=2, padding=1, bias=False)
        self.dw = nn.Conv2d(12, 12, 3, padding=2, dilation=2, groups=12)  # depthwise: left to autograd
        self.c2 = nn.Conv2d(12, 16, 1, stride=2, bias=False)
        self.twice = nn.Conv2d(16, 16, 3, padding=1, bias=False)  # weight used twice

    def forward(self, x):
        a = F.relu(self.norm(self.stem(x)))
        b = F.relu(self.c1(a))
        b = b + self.dw(b)
        c = F.relu(self.c2(b))
        c = self.twice(F.relu(self.twice(c)))
        return [a, b, c]


class Heads(nn.Module):
    """seg uses maps 0 and 2, dense map 1, cls map 2; ``const`` has no parameters."""

    def __init__(self):
        super().__init__()
        self.seg = nn.ModuleList([nn.Conv2d(8, 3, 1), nn.Conv2d(16, 3, 1)])
        self.dense = nn.Conv2d(12, 1, 3, padding=1)
        self.cls = nn.Linear(16, 4)

    def losses(self, feats, targets):
        a, b, c = feats
        seg = self.seg[0](a) + F.interpolate(self.seg[1](c), size=a.shape[-2:], mode="nearest")
        dense = self.dense(b)
        cls = self.cls(c.mean((2, 3)))
        return {
            "seg": F.cross_entropy(seg, targets["seg"]),
            "dense": F.mse_loss(dense, targets["dense"]),
            "cls": F.cross_entropy(cls, targets["cls"]),
            "const": torch.tensor(0.5),  # does not depend on the model
        }

    def params(self):
        return {
            "seg": list(self.seg.parameters()),
            "dense": list(self.dense.parameters()),
            "cls": list(self.cls.parameters()),
            "const": [],
        }


def build(norm: str = "batch", batch: int = 4, seed: int = 0):
    """Backbone, heads, images and targets (deterministic)."""
    torch.manual_seed(seed)
    bb, heads = TinyBackbone(norm), Heads()
    g = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(batch, 3, 16, 16, generator=g)
    targets = {
        "seg": torch.randint(0, 3, (batch, 16, 16), generator=g),
        "dense": torch.randn(batch, 1, 8, 8, generator=g),
        "cls": torch.randint(0, 4, (batch,), generator=g),
    }
    return bb, heads, x, targets


def make_step(bb, heads, x, targets, **kw):
    feats = bb(x)
    losses = heads.losses(feats, targets)
    return Step(losses, feats, list(bb.parameters()), heads.params(), **kw), losses


def flat(grads, like):
    """Concatenate gradients, zeros for the unused ones."""
    return torch.cat([(a if a is not None else torch.zeros_like(b)).reshape(-1) for a, b in zip(grads, like)])


def reference(bb, heads, x, targets):
    """Per-task gradients by plain autograd: J (T x P shared), head grads, feature partials."""
    feats = bb(x)
    losses = heads.losses(feats, targets)
    shared = list(bb.parameters())
    rows = []
    for loss in losses.values():
        if not loss.requires_grad:
            rows.append(torch.zeros(sum(p.numel() for p in shared)))
            continue
        g = torch.autograd.grad(loss, shared, retain_graph=True, allow_unused=True)
        rows.append(flat(g, shared))
    detached = [f.detach().requires_grad_() for f in feats]
    dl = heads.losses(detached, targets)
    frows = []
    for loss in dl.values():
        g = torch.autograd.grad(loss, detached, allow_unused=True) if loss.requires_grad else [None] * 3
        frows.append(flat(g, detached))
    heads_own = {}
    for name, loss in losses.items():
        for p in heads.params()[name]:
            heads_own[p] = torch.autograd.grad(loss, p, retain_graph=True)[0]
    return torch.stack(rows).double(), torch.stack(frows).double(), heads_own


def shared_grad(bb):
    return torch.cat(
        [(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in bb.parameters()]
    ).double()


def zero(*mods):
    for m in mods:
        for p in m.parameters():
            p.grad = None


W = torch.tensor([0.3, 1.2, 0.7, 2.0], dtype=torch.float64)


@pytest.fixture(params=["auto", "direct", "kernel"])
def layer_mode(request, monkeypatch):
    """Run with the size-based choice, or force every hooked conv to one of the two ways."""
    if request.param != "auto":
        kernel = request.param == "kernel"

        def choose(self, tasks):
            self.kernel = kernel
            self.store = [None] * tasks

        monkeypatch.setattr(_autogram._ConvSite, "choose", choose)
    return request.param


def test_layer_gramian_and_update_equal_autograd(layer_mode):
    bb, heads, x, t = build()
    J, _, own = reference(bb, heads, x, t)
    step, _ = make_step(bb, heads, x, t)
    G = step.gramian("params")
    assert torch.allclose(G, J @ J.T, rtol=1e-5, atol=1e-8)
    layers = step._layers
    hooked = {id(s.param) for s in layers.sites}
    assert id(bb.c1.weight) in hooked and id(bb.c2.weight) in hooked
    for p in (bb.stem.weight, bb.dw.weight, bb.twice.weight):  # first conv, depthwise, shared twice
        assert id(p) not in hooked and any(p is q for q in layers.fallback)
    zero(bb, heads)
    step.backward_weighted(W, "params")
    assert torch.allclose(shared_grad(bb), W @ J, rtol=1e-5, atol=1e-7)
    for p, g in own.items():  # heads: their own, unweighted loss
        assert torch.allclose(p.grad, g, atol=1e-7)


def test_auto_choice_uses_both_ways_on_resnet_like_shapes():
    site = _autogram._ConvSite.__new__(_autogram._ConvSite)
    site.param = torch.empty(512, 512, 3, 3)
    site.x = torch.empty(8, 512, 2, 2)
    site.stride, site.padding, site.dilation = [1, 1], [1, 1], [1, 1]
    site.choose(3)
    assert site.kernel  # deep layer: many parameters, 32 output positions
    site.param, site.x = torch.empty(64, 64, 3, 3), torch.empty(8, 64, 32, 32)
    site.choose(3)
    assert not site.kernel  # early layer: 8192 output positions


def test_feature_gradients_are_partial_derivatives():
    bb, heads, x, t = build()
    J, Jf, _ = reference(bb, heads, x, t)
    step, _ = make_step(bb, heads, x, t)
    rows = step.task_gradients("features")
    assert torch.allclose(rows.double(), Jf, atol=1e-7)
    assert torch.allclose(step.gramian("features"), Jf @ Jf.T, rtol=1e-5, atol=1e-9)
    zero(bb, heads)
    step.backward_weighted(W, "features")
    assert torch.allclose(shared_grad(bb), W @ J, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("chunk", [None, 1, 3])
def test_task_gradient_matrix_in_chunks(chunk):
    bb, heads, x, t = build()
    J, _, _ = reference(bb, heads, x, t)
    step, _ = make_step(bb, heads, x, t, chunk_size=chunk)
    assert torch.allclose(step.task_gradients("params").double(), J, atol=1e-7)
    assert torch.allclose(step.gramian("params"), J @ J.T, rtol=1e-5, atol=1e-9)  # from the matrix
    zero(bb, heads)
    step.set_shared_gradient(torch.tensor([1.0, -1.0, 0.5, 3.0]) @ step.task_gradients("params"))
    assert torch.allclose(shared_grad(bb), torch.tensor([1.0, -1.0, 0.5, 3.0]).double() @ J, atol=1e-6)


def test_heads_weighted_and_plain_weighted_backward():
    bb, heads, x, t = build()
    J, _, own = reference(bb, heads, x, t)
    weights = {n: float(w) for n, w in zip(NAMES, W)}
    for prepare in (lambda s: None, lambda s: s.gramian("features")):
        zero(bb, heads)
        step, _ = make_step(bb, heads, x, t)
        prepare(step)
        step.backward_weighted(weights, "features", heads="weighted")
        assert torch.allclose(shared_grad(bb), W @ J, rtol=1e-5, atol=1e-7)
        for name, ps in heads.params().items():
            for p in ps:
                assert torch.allclose(p.grad, weights[name] * own[p], atol=1e-7)


def test_set_shared_gradient_on_features_backpropagates_once():
    bb, heads, x, t = build()
    J, Jf, _ = reference(bb, heads, x, t)
    step, _ = make_step(bb, heads, x, t)
    rows = step.task_gradients("features")
    step.set_shared_gradient(W.float() @ rows, "features", head_weights=[2.0, 2.0, 2.0, 2.0])
    assert torch.allclose(shared_grad(bb), W @ J, rtol=1e-5, atol=1e-7)


def test_validation_and_helpers():
    bb, heads, x, t = build()
    step, losses = make_step(bb, heads, x, t, step=5)
    with pytest.raises(ValueError, match="wrt must be one of"):
        step.gramian("param")
    with pytest.raises(ValueError, match="4 weights"):
        step.backward_weighted([1.0, 2.0])
    with pytest.raises(ValueError, match="heads must be one of"):
        step.backward_weighted(W, heads="all")
    with pytest.raises(ValueError, match="chunk_size"):
        Step(losses, [], [], {}, chunk_size=0)
    assert torch.equal(step.global_losses(), torch.stack([loss.detach() for loss in losses.values()]))
    a = torch.rand(3, generator=step.generator(1))
    assert torch.equal(a, torch.rand(3, generator=step.generator(1)))
    other, _ = make_step(bb, heads, x, t, step=6)
    assert not torch.equal(a, torch.rand(3, generator=other.generator(1)))
    assert step.num_shared("params") == sum(p.numel() for p in bb.parameters())
    assert step.num_shared("features") == sum(f.numel() for f in step.features)


# -- distributed -------------------------------------------------------------------------------
WORKER = textwrap.dedent("""
    import os, sys, torch, torch.distributed as dist
    sys.path.insert(0, {tests!r})
    from test_combine_step import build, make_step, W
    rank = int(os.environ["RANK"])
    dist.init_process_group("gloo", init_method="file://" + {store!r}, rank=rank, world_size=2)
    bb, heads, x, t = build(norm="group", batch=4)
    half = slice(2 * rank, 2 * rank + 2)
    x, t = x[half], {{k: v[half] for k, v in t.items()}}
    out = {{}}
    for wrt in ("params", "features"):
        for p in list(bb.parameters()) + list(heads.parameters()):
            p.grad = None
        step, _ = make_step(bb, heads, x, t)
        out["gram_" + wrt] = step.gramian(wrt)
        out["losses"] = step.global_losses()
        step.backward_weighted(W, wrt)
        out["grad_" + wrt] = torch.cat([p.grad.reshape(-1) for p in bb.parameters()])
        out["head_" + wrt] = torch.cat([p.grad.reshape(-1) for p in heads.parameters()])
    torch.save(out, {out!r} + str(rank))
    dist.destroy_process_group()
""")


@pytest.mark.slow
def test_two_ranks_see_what_one_process_sees_on_the_whole_batch(tmp_path):
    tests = str(Path(__file__).parent)
    script = tmp_path / "worker.py"
    script.write_text(WORKER.format(tests=tests, store=str(tmp_path / "store"), out=str(tmp_path / "out")))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WORLD_SIZE": "2"}
    procs = [
        subprocess.Popen(
            [sys.executable, str(script)],
            env={**env, "RANK": str(r)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for r in range(2)
    ]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-3000:]
    results = [torch.load(tmp_path / f"out{r}") for r in range(2)]
    bb, heads, x, t = build(norm="group", batch=4)
    ref = {}
    for wrt in ("params", "features"):
        zero(bb, heads)
        step, losses = make_step(bb, heads, x, t)
        ref["gram_" + wrt] = step.gramian(wrt)
        ref["losses"] = step.global_losses()
        step.backward_weighted(W, wrt)
        ref["grad_" + wrt] = shared_grad(bb).float()
        ref["head_" + wrt] = torch.cat([p.grad.reshape(-1) for p in heads.parameters()])
    for r in results:
        for key, value in ref.items():
            assert torch.allclose(r[key].double(), value.double(), rtol=1e-4, atol=1e-6), key
