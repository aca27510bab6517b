"""The ``lora`` architecture: a frozen shared encoder with per-task low-rank updates. It
starts as the frozen model, trains only its updates (and what ``trainable`` names), keeps
frozen BatchNorm statistics, gives each task its own gradients, counts its parameters as a
hand count says, trains the quickstart under gradient combiners, adapts a ViT's linear
layers, and refuses what cannot work in one line."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from mtlzoo import ConfigError
from mtlzoo.runtime.train import Trainer
from mtlzoo.testing import check_entry

ROOT = Path(__file__).resolve().parents[1]
SMALL_CNN = {"name": "cnn", "channels": [8, 16, 32, 64]}
TINY_VIT = {
    "name": "timm",
    "arch": "vit_small_patch14_dinov2",
    "model_args": {"depth": 2, "embed_dim": 24, "num_heads": 2},
    "out_indices": [1],
    "pyramid_channels": 16,
}


def quickstart(arch: dict | None = None, combiner: dict | None = None, backbone: dict | None = None) -> dict:
    """configs/quickstart.yaml (five tasks) on the small CNN, 32x32, two steps of 16 scenes."""
    spec = yaml.safe_load((ROOT / "configs" / "quickstart.yaml").read_text())
    spec["model"]["backbone"] = backbone or SMALL_CNN
    if arch is not None:
        spec["model"]["architecture"] = arch
    if combiner is not None:
        spec["combiner"] = combiner
    spec["data"].update(size=[32, 32], train_size=32, val_size=16, test_size=16)
    spec["train"].update(epochs=1, batch_size=16, progress=False, device="cpu")
    return spec


def test_lora_is_listed_and_conforms(zoo):
    entry = zoo.entry("architecture", "lora")
    assert entry.builtin and entry.help
    failed = [f"{r.contract}: {r.message}" for r in check_entry(zoo, entry) if not r.ok]
    assert not failed, failed


def test_it_starts_as_the_frozen_model_and_freezes_the_backbone(zoo):
    plain = zoo.build(quickstart()).model.eval()
    lora = zoo.build(quickstart({"name": "lora", "rank": 2})).model
    assert not any(p.requires_grad for p in lora.backbone.parameters())
    assert lora.shared_parameters() == [] and not lora.has_shared_representation
    # the cnn's eight convs are adapted, per task
    assert len(lora.layer_names) == 8 and all(n.startswith("stages.") for n in lora.layer_names)
    images = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        a, b = plain(images), lora.eval()(images)
    for t in a:  # B_t starts at zero: every task sees the frozen encoder
        torch.testing.assert_close(a[t], b[t])


def test_each_task_gets_only_its_own_gradients(zoo):
    model = zoo.build(quickstart({"name": "lora", "rank": 2, "shared_rank": 1})).model.train()
    with torch.no_grad():  # non-zero updates so that every factor gets a gradient
        for p in [*model.lora.parameters(), *model.shared_lora.parameters()]:
            p.normal_(0, 0.1)
    out = model.forward_train(torch.rand(2, 3, 32, 32))
    names = model.task_names
    for t in names:
        loss = out.preds[t].float().square().mean()
        for s in names:
            grads = torch.autograd.grad(
                loss, list(model.lora[s].parameters()), retain_graph=True, allow_unused=True
            )
            total = sum(float(g.abs().sum()) for g in grads if g is not None)
            assert (total > 0) == (s == t), (t, s)
        shared = torch.autograd.grad(loss, model.shared_parameters(), retain_graph=True)
        assert all(float(g.abs().sum()) > 0 for g in shared)  # the shared update reaches every task


def test_parameter_counts_equal_a_hand_count(zoo):
    spec = quickstart({"name": "lora", "rank": 2, "shared_rank": 1})
    spec["model"]["backbone"] = {"name": "cnn", "channels": [4, 8], "norm": "none"}
    spec["tasks"] = {
        "semseg": {
            "type": "segmentation",
            "head": {"name": "fcn", "use": "last", "channels": 4, "norm": "none"},
        },
        "labels": {"type": "labels", "from": "semseg"},
    }
    exp = zoo.build(spec)
    k, n = exp.tasks["semseg"].info.out_channels, exp.tasks["labels"].info.out_channels
    # four 3x3 convs (3->4, 4->4, 4->8, 8->8): a rank-r update holds r * (in * 9 + out)
    per_rank = (3 * 9 + 4) + (4 * 9 + 4) + (4 * 9 + 8) + (8 * 9 + 8)  # 195
    fcn, cls = 8 * 4 * 9 + 4 + 4 * k + k, 8 * n + n
    counts = exp.model.num_parameters()
    assert (counts["shared"], counts["semseg"], counts["labels"]) == (
        per_rank,
        2 * per_rank + fcn,
        2 * per_rank + cls,
    )
    assert (
        counts["total"] == 1140 + per_rank + 2 * 2 * per_rank + fcn + cls
    )  # the frozen backbone is in the total


@pytest.mark.parametrize(
    "combiner",
    [{"name": "pcgrad", "wrt": "params"}, {"name": "mgda", "wrt": "params"}],
    ids=lambda c: c["name"],
)
def test_the_quickstart_trains_and_only_the_updates_move(zoo, combiner):
    exp = zoo.build(quickstart({"name": "lora", "rank": 4}, combiner, {**SMALL_CNN, "norm": "batch"}))
    state = {k: v.clone() for k, v in exp.model.backbone.state_dict().items()}
    up = {t: exp.model.lora[t][0].up.weight.detach().clone() for t in exp.model.task_names}
    summary = Trainer(exp, None).fit()
    assert summary["steps"] == 2 and set(summary["final"]) == set(exp.model.task_names)
    after = exp.model.backbone.state_dict()
    # frozen weights and frozen BatchNorm statistics are exactly as loaded
    assert all(torch.equal(state[k], after[k]) for k in state), [
        k for k in state if not torch.equal(state[k], after[k])
    ]
    moved = [not torch.equal(up[t], exp.model.lora[t][0].up.weight) for t in up]
    assert all(moved)
    ups = [exp.model.lora[t][0].up.weight for t in exp.model.task_names]
    assert not torch.equal(ups[0], ups[1])  # each task learned its own update


def test_features_mode_is_refused_in_one_line(zoo):
    with pytest.raises(ConfigError) as err:
        zoo.build(quickstart({"name": "lora", "shared_rank": 2}, {"name": "mgda", "wrt": "features"}))
    message = str(err.value)
    assert "architecture 'lora'" in message and "no shared representation" in message and "\n" not in message


def test_targets_that_match_nothing_are_refused_in_one_line(zoo):
    with pytest.raises(ConfigError) as err:
        zoo.build(quickstart({"name": "lora", "targets": ["*attn.qkv"]}))
    message = str(err.value)
    assert message.startswith("model.architecture") or "architecture 'lora'" in message
    assert "match no frozen linear or conv layer" in message and "\n" not in message


def test_a_vit_gets_updates_on_its_linear_layers_and_trains_its_pyramid(zoo):
    spec = quickstart({"name": "lora", "rank": 2, "targets": ["*attn.qkv", "*attn.proj"]}, backbone=TINY_VIT)
    spec["data"]["size"] = [28, 42]  # multiples of the 14-pixel patch
    exp = zoo.build(spec)
    model = exp.model
    assert model.layer_names == [
        "model.model.blocks.0.attn.qkv",
        "model.model.blocks.0.attn.proj",
        "model.model.blocks.1.attn.qkv",
        "model.model.blocks.1.attn.proj",
    ]
    shared = dict(model.named_shared_parameters())
    assert shared and all(n.startswith("backbone.pyramid.") for n in shared)  # new, so trained
    per_task = sum(p.numel() for p in model.lora["semseg"].parameters())
    assert per_task == 2 * 2 * ((24 + 72) + (24 + 24))  # rank 2, two blocks: qkv 24->72, proj 24->24
    summary = Trainer(exp, None).fit()
    assert summary["steps"] == 2
