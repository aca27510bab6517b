"""The built-in architectures (mtan, cross_stitch, nddr, padnet, mti_net): each trains the
quickstart by setting ``model.architecture.name`` alone with sum, pcgrad (params) and mgda
(features, or its one-line refusal); the Step's Gramian and shared gradient equal explicit
per-task autograd on the quickstart's heads; declared parameter counts equal hand counts;
one-line errors; the parameter-count benchmark script runs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from mtlzoo import ConfigError, Zoo
from mtlzoo.contract.combine import Step
from mtlzoo.runtime.train import Trainer

ROOT = Path(__file__).resolve().parents[1]
NEW = ["mtan", "cross_stitch", "nddr", "padnet", "mti_net"]
#: architectures with one network per task: no shared representation
PER_TASK_NETWORKS = {"cross_stitch", "nddr"}
SMALL_CNN = {"name": "cnn", "channels": [8, 16, 32, 64]}


def quickstart(arch: str | None = None, backbone: dict | None = None, combiner: dict | None = None) -> dict:
    """The quickstart spec with the tiny budget (1 epoch, 32/16/16 scenes, batch 16); with
    another ``backbone`` (the small CNN) the scenes are 32x32."""
    spec = yaml.safe_load((ROOT / "configs" / "quickstart.yaml").read_text())
    if arch is not None:
        spec["model"]["architecture"] = {"name": arch}
    if backbone is not None:
        spec["model"]["backbone"] = backbone
        spec["data"]["size"] = [32, 32]
    if combiner is not None:
        spec["combiner"] = combiner
    spec["data"].update(train_size=32, val_size=16, test_size=16)
    spec["train"].update(epochs=1, batch_size=16, progress=False, device="cpu")
    return spec


def test_list_architecture_shows_every_builtin(zoo):
    assert {e.name for e in zoo.list("architecture")} >= {"hps", *NEW}
    for name in NEW:
        entry = zoo.entry("architecture", name)
        assert entry.builtin and entry.options is not None and entry.help


def test_cli_list_architecture(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "mtlzoo", "list", "architecture"], capture_output=True, text=True, cwd=tmp_path
    )
    assert out.returncode == 0, out.stderr
    for name in ["hps", *NEW]:
        assert name in out.stdout


def _train(zoo, spec: dict) -> tuple[dict, dict, dict]:
    exp = zoo.build(spec)
    before = {n: p.detach().clone() for n, p in exp.model.named_shared_parameters()}
    summary = Trainer(exp, None).fit()
    after = dict(exp.model.named_shared_parameters())
    return exp, summary, {n: not torch.equal(before[n], after[n].detach()) for n in before}


COMBINERS = [{"name": "sum"}, {"name": "pcgrad", "wrt": "params"}, {"name": "mgda", "wrt": "features"}]


@pytest.mark.parametrize("combiner", COMBINERS, ids=lambda c: f"{c['name']}-{c.get('wrt', '')}")
@pytest.mark.parametrize("arch", NEW)
def test_the_quickstart_trains_by_naming_the_architecture(zoo, arch, combiner):
    spec = quickstart(arch, SMALL_CNN, combiner)
    if combiner.get("wrt") == "features" and arch in PER_TASK_NETWORKS:
        with pytest.raises(ConfigError) as err:
            zoo.build(spec)
        message = str(err.value)
        assert (
            message.startswith(
                f"combiner.wrt: architecture '{arch}' (plugin builtin_architectures) has no shared representation"
            )
            and message.endswith("use wrt: params")
            and "\n" not in message
        )
        return
    exp, summary, moved = _train(zoo, spec)
    assert type(exp.model).__module__.startswith("mtlzoo.builtin.architectures")
    assert set(summary["final"]) == {"semseg", "depth", "normals", "boundary", "labels"}
    assert summary["parameters"] == exp.model.num_parameters()
    # every shared parameter (backbone copies, units, attention, branches ...) took the update
    assert moved and all(moved.values()), [n for n, m in moved.items() if not m][:5]


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["mtan", "cross_stitch"])
def test_the_quickstart_trains_on_its_resnet18(zoo, arch):
    spec = quickstart(arch, combiner={"name": "pcgrad", "wrt": "params"})
    assert spec["model"]["backbone"] == {"name": "timm", "arch": "resnet18"}
    exp, summary, moved = _train(zoo, spec)
    assert summary["steps"] == 2 and all(moved.values())
    counts = exp.model.num_parameters()
    resnet18 = 11_176_512  # timm resnet18 features_only
    if arch == "mtan":
        assert counts["shared"] == resnet18
    else:
        assert counts["shared"] == 5 * resnet18 + 5 * 5 * 5  # five copies + one 5x5 matrix per stage


# -- Gramian and shared gradient vs explicit per-task autograd -----------------------------------------
def _losses(model, out) -> dict[str, torch.Tensor]:
    losses = {}
    for t, pred in out.preds.items():
        loss = pred.float().square().mean() + 0.1
        aux = out.aux.get(t) or []
        if aux and model.aux_weight:
            loss = loss + model.aux_weight * torch.stack([a.float().square().mean() for a in aux]).mean()
        losses[t] = loss
    return losses


def _flat(grads, params) -> torch.Tensor:
    return torch.cat(
        [(g if g is not None else torch.zeros_like(p)).reshape(-1) for g, p in zip(grads, params)]
    )


@pytest.mark.parametrize("arch", NEW)
def test_gramian_and_shared_gradient_equal_per_task_autograd(zoo, arch):
    exp = zoo.build(quickstart(arch, SMALL_CNN))
    model = exp.model.train()
    shared = model.shared_parameters()
    task_params = {t: model.task_parameters(t) for t in model.task_names}
    modes = ["params"] + (["features"] if model.has_shared_representation else [])
    assert model.has_shared_representation == (arch not in PER_TASK_NETWORKS)
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    for wrt in modes:
        out = model.forward_train(images)
        losses = _losses(model, out)
        assert all(len(out.aux.get(t, [])) > 0 for t in losses) == (arch in ("padnet", "mti_net"))
        # explicit: one autograd pass per task over the declared shared parameters
        j = torch.stack(
            [
                _flat(torch.autograd.grad(v, shared, retain_graph=True, allow_unused=True), shared)
                for v in losses.values()
            ]
        ).double()
        heads_want = {
            t: _flat(torch.autograd.grad(losses[t], ps, retain_graph=True, allow_unused=True), ps)
            for t, ps in task_params.items()
        }
        step = Step(losses, out.shared, shared, task_params)
        gram = step.gramian(wrt)
        assert gram.shape == (5, 5) and torch.allclose(gram, gram.T)
        if wrt == "params":
            want = j @ j.T
            torch.testing.assert_close(gram, want, rtol=1e-4, atol=1e-7 * float(want.abs().max()))
        w = torch.linspace(0.5, 1.5, len(losses), dtype=torch.float64)
        model.zero_grad(set_to_none=True)
        step.backward_weighted(w, wrt)
        missing = [n for n, p in model.named_shared_parameters() if p.grad is None]
        assert not missing, f"{wrt}: shared parameters without a gradient: {missing[:5]}"
        got = torch.cat([p.grad.reshape(-1) for p in shared]).double()
        want_g = w @ j
        torch.testing.assert_close(got, want_g, rtol=1e-4, atol=1e-6 * float(want_g.abs().max()))
        # heads="own": each task's parameters get the gradient of the losses that use them (its own)
        for t, ps in task_params.items():
            got_t = _flat([p.grad for p in ps], ps)
            torch.testing.assert_close(
                got_t, heads_want[t], rtol=1e-4, atol=1e-6 * float(heads_want[t].abs().max())
            )
        model.zero_grad(set_to_none=True)


# -- parameter counts by hand ------------------------------------------------------------------------------
def _hand_spec(arch: dict) -> dict:
    spec = quickstart(backbone={"name": "cnn", "channels": [4, 8], "norm": "none"})
    spec["tasks"] = {
        "semseg": {
            "type": "segmentation",
            "head": {"name": "fcn", "use": "last", "channels": 4, "norm": "none"},
        },
        "labels": {"type": "labels", "from": "semseg"},
    }
    spec["model"]["architecture"] = arch
    return spec


def _hand_counts(arch: str, k: int, n: int) -> tuple[int, int, int]:
    """(shared, semseg, labels) for the cnn [4, 8] backbone (no norm: every conv has a bias),
    an fcn head (last map, 4 channels) with k classes and a classification head with n labels."""
    backbone = (3 * 4 * 9 + 4) + (4 * 4 * 9 + 4) + (4 * 8 * 9 + 8) + (8 * 8 * 9 + 8)  # 1140
    fcn, cls = 8 * 4 * 9 + 4 + 4 * k + k, 8 * n + n  # conv3x3 8->4, 1x1 4->k; Linear 8->n
    if arch == "hps":
        return backbone, fcn, cls
    if arch == "mtan":  # bottleneck design, per-task extractors
        att = (4 * 1 + 1 + 1 * 4 + 4) + (16 * 2 + 2 + 2 * 8 + 8)  # 1x1 convs: 4->1->4, [u;f]=16->2->8
        extractor = (4 * 2 + 2) + (2 * 2 * 9 + 2) + (2 * 8 + 8) + (4 * 8 + 8)  # bottleneck 4->8 + shortcut
        return backbone, fcn + att + extractor, cls + att + extractor
    if arch == "cross_stitch":  # two networks, one 2x2 matrix per stage
        return 2 * backbone + 2 * 4, fcn, cls
    if arch == "nddr":  # per stage and task a 1x1 conv over both tasks' maps, no bias
        return 2 * backbone + 2 * (2 * 4 * 4) + 2 * (2 * 8 * 8), fcn, cls
    sa = lambda c: 2 * c * c * 9  # noqa: E731 - spatial attention: gate and message convs, no bias
    if arch == "padnet":  # channels 8, both maps (4 + 8 channels) fused at stride 2
        branch = (12 * 2 + 2) + (2 * 2 * 9 + 2) + (2 * 8 + 8) + (12 * 8 + 8) + (8 * 2 + 2) + 38 + (2 * 8 + 8)
        return backbone + 2 * branch, (8 * k + k) + sa(8) + fcn, (8 * n + n) + sa(8) + cls
    assert arch == "mti_net"  # widths [4, 8] at strides 2 and 4 (the backbone's: its heads as built)
    basic = lambda i, o: (i * o * 9 + o) + (o * o * 9 + o) + (0 if i == o else i * o + o)  # noqa: E731
    blocks = basic(12, 4) + basic(4, 4) + basic(8, 8) + basic(8, 8)
    fpm = basic(16, 4) + basic(4, 4) + (4 * 16 + 16) + basic(16, 8) + 2 * ((8 * 1 + 1) + (1 * 8 + 8))
    initial = lambda c: (4 * c + c) + (8 * c + c)  # noqa: E731
    # both heads read only the coarser map: distillation into a task only there (sa(8), no sa(4))
    return backbone + 2 * blocks + fpm, initial(k) + sa(8) + fcn, initial(n) + sa(8) + cls


HAND = {
    "hps": {"name": "hps"},
    "mtan": {"name": "mtan", "norm": "none"},
    "cross_stitch": {"name": "cross_stitch"},
    "nddr": {"name": "nddr", "norm": "none"},
    "padnet": {"name": "padnet", "channels": 8, "min_stride": 1, "norm": "none"},
    "mti_net": {"name": "mti_net", "channels": [4, 8], "min_stride": 1, "norm": "none"},
}


@pytest.mark.parametrize("arch", list(HAND))
def test_parameter_counts_equal_a_hand_count(zoo, arch):
    exp = zoo.build(_hand_spec(HAND[arch]))
    k, n = exp.tasks["semseg"].info.out_channels, exp.tasks["labels"].info.out_channels
    shared, semseg, labels = _hand_counts(arch, k, n)
    counts = exp.model.num_parameters()
    assert (counts["shared"], counts["semseg"], counts["labels"]) == (shared, semseg, labels)
    assert counts["total"] == shared + semseg + labels
    if arch == "cross_stitch":
        channel = zoo.build(_hand_spec({"name": "cross_stitch", "alphas": "channel"})).model.num_parameters()
        assert channel["shared"] == 2 * 1140 + 2 * 2 * (4 + 8)


# -- initialisation and options ---------------------------------------------------------------------------
def test_cross_stitch_and_nddr_start_near_the_identity(zoo):
    cs = zoo.build(quickstart("cross_stitch", SMALL_CNN)).model
    alpha = cs.units[0].alpha.detach()
    assert alpha.shape == (5, 5, 1)
    torch.testing.assert_close(alpha.diagonal().flatten(), torch.full((5,), 0.9))
    off = alpha[~torch.eye(5, dtype=torch.bool)]
    torch.testing.assert_close(off, torch.full_like(off, 0.1 / 4))
    nddr = zoo.build(quickstart("nddr", SMALL_CNN)).model
    w = nddr.fusion[1].layers[2][0].weight.detach()[:, :, 0, 0]  # task 2, stage 2: [16, 5 * 16]
    blocks = w.reshape(16, 5, 16).permute(1, 0, 2)
    for s in range(5):
        torch.testing.assert_close(blocks[s], torch.eye(16) * (0.9 if s == 2 else 0.1 / 4))
    assert nddr.fusion[0].layers[0][1].momentum == 0.05


def test_mtan_shares_extractors_on_request_and_then_has_no_shared_representation(zoo):
    own = zoo.build(quickstart("mtan", SMALL_CNN)).model
    spec = quickstart("mtan", SMALL_CNN)
    spec["model"]["architecture"]["share_extractors"] = True
    shared = zoo.build(spec).model
    a, b = own.num_parameters(), shared.num_parameters()
    extractors = sum(p.numel() for p in shared.extractors.parameters())
    assert b["shared"] == a["shared"] + extractors and a["semseg"] == b["semseg"] + extractors
    assert own.has_shared_representation and not shared.has_shared_representation
    spec["combiner"] = {"name": "mgda", "wrt": "features"}
    with pytest.raises(
        ConfigError, match=r"^combiner.wrt: architecture 'mtan' .* has no shared representation"
    ):
        zoo.build(spec)


def test_aux_weights_default_to_the_reference_losses(zoo):
    pad = zoo.build(quickstart("padnet", SMALL_CNN)).model
    mti = zoo.build(quickstart("mti_net", SMALL_CNN)).model
    assert pad.aux_weight == 1.0  # initial + final, both with the task's weight
    assert len(mti.scales) == 3 and mti.aux_weight == 3.0  # strides 4, 8, 16: one weight-1 loss each
    out = mti.forward_train(torch.rand(2, 3, 32, 32))
    assert all(len(out.aux[t]) == 3 for t in mti.task_names)
    assert out.aux["labels"][0].shape == out.preds["labels"].shape == (2, exp_labels(zoo))


def exp_labels(zoo) -> int:
    return zoo.build(quickstart(None, SMALL_CNN)).tasks["labels"].info.out_channels


def test_stage_architectures_refuse_a_backbone_without_stages_in_one_line(zoo):
    for arch in ("mtan", "cross_stitch", "nddr"):
        spec = quickstart(arch, {"name": "smp", "arch": "efficientnet-b0"})
        with pytest.raises(ConfigError) as err:
            zoo.build(spec)
        message = str(err.value)
        assert (
            message.startswith(
                f"model.architecture: architecture '{arch}' runs the backbone stage by stage, but backbone "
                f"SmpBackbone does not offer stages"
            )
            and "\n" not in message
        )


def test_options_are_validated_with_their_paths(zoo):
    bad = [
        ({"name": "mtan", "design": "segnet"}, r"model.architecture.design: 'segnet' is not one of"),
        (
            {"name": "cross_stitch", "alpha_self": 1.5},
            r"model.architecture.alpha_self: must be >= 0 and <= 1",
        ),
        ({"name": "padnet", "channels": 2}, r"model.architecture.channels: must be >= 4"),
        ({"name": "mti_net", "channels": [0]}, r"model.architecture.channels"),
    ]
    for node, match in bad:
        spec = quickstart(backbone=SMALL_CNN)
        spec["model"]["architecture"] = node
        with pytest.raises(ConfigError, match=match):
            zoo.spec(spec)
    spec = quickstart(backbone=SMALL_CNN)
    spec["model"]["architecture"] = {"name": "mti_net", "channels": [8, 8]}
    with pytest.raises(
        ConfigError, match=r"^model.architecture: .*channels needs one width per scale, 3 for this"
    ):
        zoo.build(spec)


def test_a_zoo_of_the_architectures_plugin_alone_registers_them():
    import mtlzoo.builtin.architectures as A

    alone = Zoo.load(entry_points=False, plugins=[("builtin_architectures", A)], strict=True)
    # tested in tests/test_moe_architectures.py and tests/test_lora_architecture.py
    moe_and_adapters = {"mmoe", "cgc", "ple", "dselect_k", "ltb", "lora"}
    assert {e.name for e in alone.list("architecture")} == {"hps", *NEW, *moe_and_adapters}


@pytest.mark.slow
def test_the_parameter_table_script_runs(tmp_path):
    out = tmp_path / "params.md"
    run = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "architecture_params.py"), "--out", str(out)],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    text = out.read_text()
    for name in ["hps", *NEW]:
        assert f"| {name}" in text
    assert "SegNet-MTAN" in text
    # docs/architectures.md states these counts: every row of the script's tables is there as written
    docs = (ROOT / "docs" / "architectures.md").read_text().splitlines()
    stale = [line for line in text.splitlines() if line.startswith("|") and line not in docs]
    assert not stale, (
        f"docs/architectures.md is stale; `python benchmarks/architecture_params.py` gives {stale}"
    )


# -- the papers' setups for GPU users --------------------------------------------------------------------
PAPER_CONFIGS = {
    "nyuv2/mtan.yaml": "mtan",
    "nyuv2/cross_stitch.yaml": "cross_stitch",
    "nyuv2/nddr.yaml": "nddr",
    "nyuv2/padnet.yaml": "padnet",
    "nyuv2/mti_net.yaml": "mti_net",
    "cityscapes/mtan.yaml": "mtan",
    "cityscapes/cross_stitch.yaml": "cross_stitch",
}


@pytest.mark.parametrize("path", list(PAPER_CONFIGS))
def test_the_papers_setups_validate(zoo, path):
    cfg = zoo.spec(ROOT / "configs" / path)
    assert cfg.model.architecture.name == PAPER_CONFIGS[path]
    assert cfg.train.device == "cuda" and cfg.combiner.name == "sum"


@pytest.mark.slow
def test_the_hrnet_setups_build_on_a_tiny_nyuv2(zoo, tmp_path):
    import mtlzoo.builtin.datasets as D
    from mtlzoo.builtin.datasets.layouts import write_npy

    root = write_npy(tmp_path / "nyuv2", D.NYUV2_FOLDERS, hw=(64, 64))
    for path in ("nyuv2/padnet.yaml", "nyuv2/mti_net.yaml"):
        exp = zoo.build(
            ROOT / "configs" / path, [f"data.root={root}", "augment.crop=[64,64]", "train.device=cpu"]
        )
        out = exp.model.forward_train(torch.rand(2, 3, 64, 64))
        scales = len(exp.model.scales) if path.endswith("mti_net.yaml") else 1
        assert out.preds["semseg"].shape == (2, 13, 64, 64) and len(out.aux["depth"]) == scales == 4 ** (
            scales > 1
        )


def test_mti_net_distils_into_a_task_only_at_the_scales_its_head_reads(zoo, capsys):
    # the image-level head pools the coarsest map: messages into it at the finer scales were
    # built and never trained ("12 of 26 of its own parameters got no gradient" on CamVid)
    exp = zoo.build(quickstart("mti_net", SMALL_CNN))
    model = exp.model
    coarsest = len(model.scales) - 1
    assert [("labels" in d.messages) for d in model.distillation] == [
        k == coarsest for k in range(coarsest + 1)
    ]
    assert all(set(d.messages) >= {"semseg", "depth", "normals", "boundary"} for d in model.distillation)
    # the labels task still sends messages to the others at every scale
    assert all("labels" in d.messages["semseg"] for d in model.distillation)
    Trainer(exp, None).fit()
    assert "got no gradient" not in capsys.readouterr().err
