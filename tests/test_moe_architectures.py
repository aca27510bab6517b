"""The mixture-of-experts architectures (mmoe, cgc, ple, dselect_k, ltb): each passes the
conformance kit, trains a quickstart-like tiny spec under a gradient combiner, works at any
input size with pooled and per-pixel gates; the Step's Gramian and both modes' shared
gradients equal explicit per-task autograd with the regularisers in the losses; parameter
counts equal hand counts; DSelect-k's gate and regulariser equal LibMTL's formulas on
identical inputs; LTB evaluates deterministically on its argmax paths."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml

from mtlzoo import ConfigError
from mtlzoo.contract.combine import Step
from mtlzoo.runtime.train import Trainer
from mtlzoo.testing import check_entry

ROOT = Path(__file__).resolve().parents[1]
MOE = ["mmoe", "cgc", "ple", "dselect_k", "ltb"]
SMALL_CNN = {"name": "cnn", "channels": [8, 16, 32, 64]}


def quickstart(arch: dict | None = None, combiner: dict | None = None) -> dict:
    """configs/quickstart.yaml (five tasks) on the small CNN, 32x32 scenes, 32 training
    scenes in batches of 16 (two steps)."""
    spec = yaml.safe_load((ROOT / "configs" / "quickstart.yaml").read_text())
    spec["model"]["backbone"] = SMALL_CNN
    if arch is not None:
        spec["model"]["architecture"] = arch
    if combiner is not None:
        spec["combiner"] = combiner
    spec["data"].update(size=[32, 32], train_size=32, val_size=16, test_size=16)
    spec["train"].update(epochs=1, batch_size=16, progress=False, device="cpu")
    return spec


def test_list_architecture_shows_the_moe_family(zoo):
    names = {e.name for e in zoo.list("architecture")}
    assert set(MOE) <= names
    for name in MOE:
        entry = zoo.entry("architecture", name)
        assert entry.builtin and entry.options is not None and entry.help


def test_cli_list_architecture_shows_them(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "mtlzoo", "list", "architecture"], capture_output=True, text=True, cwd=tmp_path
    )
    assert out.returncode == 0, out.stderr
    for name in MOE:
        assert name in out.stdout


@pytest.mark.parametrize("arch", MOE)
def test_the_conformance_kit_passes(zoo, arch):
    results = check_entry(zoo, zoo.entry("architecture", arch))
    failed = [f"{r.contract}: {r.message}" for r in results if not r.ok]
    assert not failed, failed
    # every example built, had its outputs checked and its Gramian compared in both modes
    contracts = [r.contract for r in results]
    examples = contracts.count("factory")
    assert examples >= 2
    assert contracts.count("architecture.gramian[params]") == examples
    assert contracts.count("architecture.gramian[features]") == examples


# -- training ------------------------------------------------------------------------------------------------
def _train(zoo, spec: dict):
    exp = zoo.build(spec)
    before = {n: p.detach().clone() for n, p in exp.model.named_shared_parameters()}
    summary = Trainer(exp, None).fit()
    after = dict(exp.model.named_shared_parameters())
    moved = {n: not torch.equal(before[n], after[n].detach()) for n in before}
    return exp, summary, moved


@pytest.mark.parametrize("arch", MOE)
def test_the_quickstart_trains_under_pcgrad(zoo, arch):
    exp, summary, moved = _train(zoo, quickstart({"name": arch}, {"name": "pcgrad", "wrt": "params"}))
    assert type(exp.model).__module__.startswith("mtlzoo.builtin.architectures")
    assert set(summary["final"]) == {"semseg", "depth", "normals", "boundary", "labels"}
    assert summary["steps"] == 2 and summary["parameters"] == exp.model.num_parameters()
    assert all(math.isfinite(v) for m in summary["final"].values() for v in m.values())
    # backbone and experts took the update (LTB: the blocks off the sampled paths get zero gradients)
    backbone = {n: m for n, m in moved.items() if n.startswith("backbone.")}
    assert backbone and all(backbone.values())
    if arch != "ltb":
        assert all(moved.values()), [n for n, m in moved.items() if not m][:5]


@pytest.mark.parametrize(
    "arch",
    [
        {"name": "ple", "gate": "pixel", "min_stride": 4},
        {"name": "dselect_k", "experts": 3, "gate": "pixel"},
        {"name": "ltb", "layers": 3},
    ],
    ids=lambda a: a["name"],
)
def test_features_mode_trains_under_mgda(zoo, arch):
    exp, summary, _ = _train(zoo, quickstart(arch, {"name": "mgda", "wrt": "features"}))
    assert exp.model.has_shared_representation and summary["steps"] == 2


# -- gradients vs explicit autograd ------------------------------------------------------------------------
def _flat(grads, params) -> torch.Tensor:
    return torch.cat(
        [(g if g is not None else torch.zeros_like(p)).reshape(-1) for g, p in zip(grads, params)]
    )


CASES = [
    {"name": "mmoe"},
    {"name": "mmoe", "gate": "pixel", "min_stride": 4},
    {"name": "cgc", "min_stride": 4},
    {"name": "ple"},
    {"name": "ple", "levels": 3, "gate": "pixel"},
    {"name": "dselect_k", "experts": 3, "entropy_reg": 0.5},
    {"name": "dselect_k", "gate": "pixel"},
    {"name": "ltb"},
    {"name": "ltb", "layers": 3, "branches": 3},
]


@pytest.mark.parametrize("arch", CASES, ids=lambda a: "-".join(f"{v}" for v in a.values()))
def test_gramian_and_shared_gradients_equal_per_task_autograd(zoo, arch):
    """With the regularisers in the losses, as the trainer adds them: the Gramian equals
    ``J J^T`` over the declared shared parameters, ``backward_weighted`` gives ``sum_t w_t g_t``
    in both modes (so the shared representation is a valid cut), and each task's own
    parameters get its own loss's gradient."""
    model = zoo.build(quickstart(arch)).model.train()
    shared = model.shared_parameters()
    task_params = {t: model.task_parameters(t) for t in model.task_names}
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    for wrt in ("params", "features"):
        torch.manual_seed(0)  # LTB samples its paths
        out = model.forward_train(images)
        regs = out.regularizers
        assert set(regs) == (set(model.task_names) if arch["name"] == "dselect_k" else set())
        losses = {t: p.float().square().mean() + 0.1 + regs.get(t, 0.0) for t, p in out.preds.items()}
        j = torch.stack(
            [
                _flat(torch.autograd.grad(v, shared, retain_graph=True, allow_unused=True), shared)
                for v in losses.values()
            ]
        ).double()
        own = {
            t: _flat(torch.autograd.grad(losses[t], ps, retain_graph=True, allow_unused=True), ps)
            for t, ps in task_params.items()
        }
        step = Step(losses, out.shared, shared, task_params)
        gram = step.gramian(wrt)
        if wrt == "params":
            torch.testing.assert_close(gram, j @ j.T, rtol=1e-4, atol=1e-7 * float((j @ j.T).abs().max()))
        w = torch.linspace(0.5, 1.5, len(losses), dtype=torch.float64)
        model.zero_grad(set_to_none=True)
        step.backward_weighted(w, wrt)
        assert not [n for n, p in model.named_shared_parameters() if p.grad is None]
        got = torch.cat([p.grad.reshape(-1) for p in shared]).double()
        torch.testing.assert_close(got, w @ j, rtol=1e-4, atol=1e-6 * float((w @ j).abs().max()))
        for t, ps in task_params.items():
            torch.testing.assert_close(
                _flat([p.grad for p in ps], ps), own[t], rtol=1e-4, atol=1e-6 * float(own[t].abs().max())
            )
        model.zero_grad(set_to_none=True)


# -- shapes and sizes ------------------------------------------------------------------------------------
@pytest.mark.parametrize("gate", ["pooled", "pixel"])
def test_any_input_size_works(zoo, gate):
    for name in MOE:
        node = {"name": name, "min_stride": 2} | ({"gate": gate} if name != "ltb" else {})
        model = zoo.build(quickstart(node)).model.eval()
        with torch.no_grad():
            for h, w in ((32, 32), (48, 80), (40, 24)):
                preds = model(torch.rand(1, 3, h, w))
                assert preds["semseg"].shape[-2:] == (h, w) and preds["labels"].shape[0] == 1


def test_experts_act_on_the_maps_of_min_stride_and_keep_their_shapes(zoo):
    model = zoo.build(quickstart({"name": "mmoe", "min_stride": 8, "experts": 2})).model
    assert model.scales == [2, 3]  # the cnn's strides are 2, 4, 8, 16
    blocks = model.experts[0].blocks
    assert [b.body[0].in_channels for b in blocks] == [32, 64]
    assert [b.body[0].out_channels for b in blocks] == [8, 16]  # reduction 4


def test_pixel_gates_give_a_weight_per_position(zoo):
    model = zoo.build(quickstart({"name": "mmoe", "gate": "pixel", "experts": 3, "min_stride": 4})).model
    maps = model.chosen(model.backbone(torch.rand(2, 3, 32, 32)))
    weights, _ = model.gates["semseg"](maps)
    assert [tuple(w.shape) for w in weights] == [(2, 3, 8, 8), (2, 3, 4, 4), (2, 3, 2, 2)]
    torch.testing.assert_close(weights[0].sum(1), torch.ones(2, 8, 8))
    pooled = zoo.build(quickstart({"name": "mmoe", "experts": 3})).model
    weights, _ = pooled.gates["semseg"](pooled.chosen(pooled.backbone(torch.rand(2, 3, 32, 32))))
    assert all(w.shape == (2, 3, 1, 1) for w in weights) and weights[0] is weights[1]


def test_options_are_validated_with_their_paths(zoo):
    bad = [
        ({"name": "mmoe", "experts": 0}, r"model.architecture.experts: must be >= 1"),
        ({"name": "mmoe", "gate": "global"}, r"model.architecture.gate: 'global' is not one of"),
        ({"name": "dselect_k", "experts": 1}, r"model.architecture.experts: must be >= 2"),
        ({"name": "ple", "levels": 0}, r"model.architecture.levels: must be >= 1"),
        ({"name": "ltb", "tau": 0}, r"model.architecture.tau: must be > 0"),
    ]
    for node, match in bad:
        with pytest.raises(ConfigError, match=match):
            zoo.spec(quickstart(node))


# -- parameter counts by hand ------------------------------------------------------------------------------
def _hand_spec(arch: dict) -> dict:
    spec = quickstart({**arch, "norm": "none"})
    spec["model"]["backbone"] = {"name": "cnn", "channels": [4, 8], "norm": "none"}
    spec["tasks"] = {
        "semseg": {
            "type": "segmentation",
            "head": {"name": "fcn", "use": "last", "channels": 4, "norm": "none"},
        },
        "labels": {"type": "labels", "from": "semseg"},
    }
    return spec


HAND = {
    "mmoe": {"name": "mmoe", "experts": 2},
    "dselect_k": {"name": "dselect_k", "experts": 3, "k": 2},
    "cgc": {"name": "cgc", "shared_experts": 1, "task_experts": 1},
    "ple": {"name": "ple", "shared_experts": 1, "task_experts": 1, "levels": 2},
    "ltb": {"name": "ltb", "layers": 3},
}


def _hand_counts(arch: str, k: int, n: int) -> tuple[int, int, int]:
    """(shared, semseg, labels): cnn [4, 8] without norm (1140 parameters; the experts act on
    its coarsest map, 8 channels at stride 4), an fcn head (last map, 4 channels, k classes)
    and a classification head (n labels)."""
    backbone = 1140
    fcn, cls = 8 * 4 * 9 + 4 + 4 * k + k, 8 * n + n
    expert = (8 * 2 + 2) + (2 * 2 * 9 + 2) + (2 * 8 + 8)  # bottleneck 8 -> 2 -> 2 -> 8, biases (no norm)
    gate = lambda e: 8 * e + e  # noqa: E731 - Linear(8 pooled channels -> e)
    if arch == "mmoe":
        return backbone + 2 * expert, gate(2) + fcn, gate(2) + cls
    if arch == "dselect_k":  # m = 2 binary digits: z logits 2 x 2, w logits 2
        return backbone + 3 * expert, gate(4) + gate(2) + fcn, gate(4) + gate(2) + cls
    if arch == "cgc":
        own = expert + gate(2)
        return backbone + expert, own + fcn, own + cls
    if arch == "ple":  # level 1: everything shared but the task gates; level 2: shared expert shared
        shared = backbone + (expert + 2 * expert + gate(1 + 2)) + expert
        own = gate(2) + expert + gate(2)
        return shared, own + fcn, own + cls
    assert arch == "ltb"  # two inner layers of two blocks, 2 x 2 parent logits in layer 1
    own = expert + 2
    return backbone + 4 * expert + 4, own + fcn, own + cls


@pytest.mark.parametrize("arch", list(HAND))
def test_parameter_counts_equal_a_hand_count(zoo, arch):
    exp = zoo.build(_hand_spec(HAND[arch]))
    k, n = exp.tasks["semseg"].info.out_channels, exp.tasks["labels"].info.out_channels
    shared, semseg, labels = _hand_counts(arch, k, n)
    counts = exp.model.num_parameters()
    assert (counts["shared"], counts["semseg"], counts["labels"]) == (shared, semseg, labels)
    assert counts["total"] == shared + semseg + labels


# -- DSelect-k against LibMTL's formulas -------------------------------------------------------------------
def _libmtl_dselect(z: torch.Tensor, w: torch.Tensor, n: int, k: int, gamma: float):
    """LibMTL's ``DSelect_k.forward`` and ``_entropy_reg_loss`` on given logits, written out:
    ``(expert weights [B, n], regulariser summed over the batch)``."""
    m = math.ceil(math.log2(n))
    codes = torch.tensor([[c == "1" for c in format(e, f"0{m}b")] for e in range(n)]).unsqueeze(0)
    t = z.reshape(-1, k, 1, m)
    s = torch.where(
        t <= -gamma / 2,
        torch.zeros_like(t),
        torch.where(t >= gamma / 2, torch.ones_like(t), (-2 / gamma**3) * t**3 + (3 / (2 * gamma)) * t + 0.5),
    )
    selectors = torch.where(codes.unsqueeze(0), s, 1 - s).prod(3)
    weights = torch.einsum("ij,ij...->i...", F.softmax(w, dim=1), selectors)
    reg = -(selectors * torch.log(selectors + 1e-6)).sum() * 1e-6
    if n != 2**m:
        reg = reg + (1 / selectors.sum(-1)).sum()
    return weights, reg


@pytest.mark.parametrize("n", [3, 4, 5])
def test_dselect_k_gate_equals_libmtl_on_identical_inputs(n):
    from mtlzoo.builtin.architectures.experts import DSelectGate

    torch.manual_seed(n)
    gate = DSelectGate([6, 10], n, k=2, gamma=1.0, entropy_reg=1e-6, mode="pooled")
    with torch.no_grad():  # logits spread over the smooth-step's range, its flat parts included
        for p in gate.parameters():
            p.normal_(0, 0.5)
    maps = [torch.randn(4, 6, 3, 5), torch.randn(4, 10, 2, 3)]
    weights, reg = gate(maps)
    pooled = torch.cat([m.mean((2, 3)) for m in maps], 1)
    want, want_reg = _libmtl_dselect(gate.z.fc(pooled), gate.w.fc(pooled), n, 2, 1.0)
    torch.testing.assert_close(weights[0][:, :, 0, 0], want, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(reg, want_reg / 4, rtol=1e-6, atol=1e-9)  # LibMTL sums over the batch
    if n == 4:  # a power of two: the selectors are distributions, so are the weights
        torch.testing.assert_close(weights[0].sum(1), torch.ones(4, 1, 1))


def test_dselect_k_regularizer_is_part_of_the_task_loss_in_training_only(zoo):
    exp = zoo.build(quickstart({"name": "dselect_k", "experts": 3, "entropy_reg": 1.0}))
    trainer = Trainer(exp, None)
    batch = next(iter(torch.utils.data.DataLoader(exp.datasets["train"], batch_size=4)))
    exp.model.train()
    torch.manual_seed(0)
    _, preds, losses = trainer.compute_losses(batch)
    out = exp.model.forward_train(batch["image"])
    for name, task in exp.tasks.items():
        plain = trainer._task_loss(task, preds[name], batch[task.target])
        reg = out.regularizers[name]
        assert float(reg.detach()) > 0
        torch.testing.assert_close(losses[name] - plain, reg, rtol=1e-5, atol=1e-6)
    # the regulariser trains the task's gate: its gradient reaches the selectors' logits
    grads = torch.autograd.grad(out.regularizers["semseg"], list(exp.model.gates["semseg"].z.parameters()))
    assert all(float(g.abs().sum()) > 0 for g in grads)
    exp.model.eval()
    assert exp.model.forward_train(batch["image"]).regularizers == {}


# -- LTB --------------------------------------------------------------------------------------------------
def test_ltb_evaluates_its_argmax_paths_deterministically(zoo):
    model = zoo.build(quickstart({"name": "ltb", "layers": 3, "branches": 2})).model
    with torch.no_grad():  # layer 1: block 0 prefers parent 1, block 1 parent 0; tasks pick blocks
        model.alpha[0][0].copy_(torch.tensor([0.0, 2.0]))
        model.alpha[0][1].copy_(torch.tensor([3.0, 0.0]))
        for k, t in enumerate(model.task_names):
            model.task_alpha[t].copy_(torch.tensor([1.0, 0.0]) if k % 2 else torch.tensor([0.0, 1.0]))
    paths = model.paths()
    assert paths["semseg"] == [0, 1, 0] and paths["depth"] == [1, 0, 1]
    model.eval()
    images = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        a, b = model(images), model(images)
        maps = list(model.backbone(model.normalize(images)))
        x = model.chosen(maps)
        # semseg: layer-0 block 0 -> layer-1 block 1 -> its own block
        manual = model.task_blocks["semseg"](model.blocks[1][1](model.blocks[0][0](x)))
        want = model.heads["semseg"](model.task_maps(maps, manual), (32, 32))
    assert all(torch.equal(a[t], b[t]) for t in a)
    torch.testing.assert_close(a["semseg"], want)


def test_ltb_samples_hard_paths_in_training_and_learns_its_logits(zoo):
    model = zoo.build(
        quickstart({"name": "ltb", "layers": 2, "tau": 2.0, "tau_decay_steps": 4})
    ).model.train()
    images = torch.rand(2, 3, 32, 32)
    torch.manual_seed(0)
    out = model.forward_train(images)
    loss = sum(p.float().square().mean() for p in out.preds.values())
    grads = torch.autograd.grad(loss, list(model.task_alpha.values()))
    assert all(g.shape == (5,) and float(g.abs().sum()) > 0 for g in grads)
    assert int(model.steps) == 1
    assert model.temperature() == pytest.approx(2.0 / math.sqrt(1 + 1 / 4))
    # a straight-through sample is one-hot
    w = model._choice(model.task_alpha["semseg"], warm=False)
    assert sorted(w.detach().tolist())[-1] == 1.0 and float(w.detach().sum()) == 1.0
    assert "steps" in model.state_dict()


@pytest.mark.parametrize("gate", ["pooled", "pixel"])
@pytest.mark.parametrize(
    "arch",
    [{"name": "mmoe"}, {"name": "cgc"}, {"name": "ple"}, {"name": "ple", "levels": 3}, {"name": "dselect_k"}],
    ids=lambda a: "-".join(f"{v}" for v in a.values()),
)
def test_every_parameter_of_a_task_trains_when_its_head_reads_one_scale(zoo, arch, gate, capsys):
    # the image-level task's classification head reads only the coarsest map: its own experts
    # and per-scale gate convs exist only there (they used to be built at every chosen scale
    # and never train: "18 of 31 of its own parameters got no gradient" on the quickstart)
    exp = zoo.build(quickstart({**arch, "gate": gate}))
    model = exp.model
    assert model.reads["labels"] == [False] * (len(model.scales) - 1) + [True]
    assert all(
        model.reads[t] == [True] * len(model.scales) for t in ("semseg", "depth", "normals", "boundary")
    )
    Trainer(exp, None).fit()
    assert "got no gradient" not in capsys.readouterr().err
    if arch["name"] == "cgc":
        assert [len(e.blocks) for e in model.task_experts["labels"]] == [1]
        assert [len(e.blocks) for e in model.task_experts["semseg"]] == [len(model.scales)]
