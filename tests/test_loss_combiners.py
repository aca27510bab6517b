"""Loss-level combiners: gradients equal to torchjd's scalarizers where both implement the
method, hand-computed values otherwise, and state that survives a checkpoint; and the
registration of all built-in combiners (torch-free, every name buildable from its defaults)."""

from __future__ import annotations

import pytest
import torch
import torchjd.scalarization as tjs
from conftest import BILEVEL_COMBINERS, COMBINERS, LOSS_LEVEL_COMBINERS
from torch import nn

import mtlzoo.builtin.combiners as C
from mtlzoo import Zoo
from mtlzoo.builtin.combiners import basic
from mtlzoo.builtin.combiners import loss_level as lc
from mtlzoo.contract.combine import Combiner, Step
from mtlzoo.contract.errors import ConfigError

NAMES = ["a", "b", "c"]
CENTERS = torch.tensor([[1.0, 0.0, 2.0], [0.0, -1.0, 0.5], [3.0, 1.0, 0.0]])


class Toy(nn.Module):
    """Shared theta -> features f = 2 theta; head scalars b_t; L_t = |f - c_t|^2 (1 + b_t^2)."""

    def __init__(self, scale: float = 1.0):
        super().__init__()
        self.theta = nn.Parameter(torch.tensor([0.5, -0.2, 0.3]))
        self.b = nn.Parameter(torch.tensor([0.1, -0.3, 0.2]))
        self.scale = scale

    def losses(self):
        f = 2 * self.theta
        return f, {
            t: self.scale * ((f - CENTERS[i]) ** 2).sum() * (1 + self.b[i] ** 2) for i, t in enumerate(NAMES)
        }

    def step(self, k=0, epoch=0):
        f, losses = self.losses()
        return losses, Step(
            losses, [f], [self.theta], {t: [self.b] if t == "a" else [] for t in NAMES}, step=k, epoch=epoch
        )

    def zero(self):
        self.theta.grad = None
        self.b.grad = None


def reference_grads(model, scalar):
    model.zero()
    scalar.backward()
    return model.theta.grad.clone(), model.b.grad.clone()


def ours(model, comb, k=0, epoch=0):
    model.zero()
    losses, step = model.step(k, epoch)
    logs = comb.backward(losses, step)
    return model.theta.grad.clone(), model.b.grad.clone(), logs


@pytest.fixture(scope="module")
def zoo() -> Zoo:
    """A zoo of this plugin only (other built-in packages may be mid-migration)."""
    return Zoo.load(entry_points=False, plugins=[("builtin_combiners", C)], strict=True)


def config_error(zoo: Zoo, node: dict, names: list[str] = NAMES) -> str:
    with pytest.raises(ConfigError) as err:
        zoo.make("combiner", node, names, path="combiner")
    return str(err.value)


def test_sum_is_the_gradient_of_the_plain_sum():
    model = Toy()
    t, b, logs = ours(model, basic.SumCombiner(NAMES))
    _, losses = model.losses()
    rt, rb = reference_grads(model, sum(losses.values()))
    assert torch.allclose(t, rt) and torch.allclose(b, rb) and logs == {}


def test_weighted_uses_the_spec_weights_and_the_default_for_the_rest():
    model = Toy()
    comb = basic.WeightedCombiner(NAMES, C.WeightedOptions(weights={"a": 2.0, "c": 0.0}, default=0.5))
    t, b, logs = ours(model, comb)
    _, losses = model.losses()
    rt, rb = reference_grads(model, 2.0 * losses["a"] + 0.5 * losses["b"])
    assert torch.allclose(t, rt) and torch.allclose(b, rb)
    assert logs == {"w/a": 2.0, "w/b": 0.5, "w/c": 0.0}
    assert torch.equal(comb.weights, torch.tensor([2.0, 0.5, 0.0]))


def test_weighted_refuses_unknown_tasks_and_negative_weights(zoo):
    assert config_error(zoo, {"name": "weighted", "weights": {"a": 1.0, "x": 2.0}}) == (
        "combiner.weights names unknown task(s) ['x']; tasks are ['a', 'b', 'c']"
    )
    assert config_error(zoo, {"name": "weighted", "weights": {"b": -1.0}}) == (
        "combiner.weights.b: must be >= 0, got -1"
    )
    assert config_error(zoo, {"name": "weighted", "default": -0.5}) == (
        "combiner.default: must be >= 0, got -0.5"
    )


def test_uncertainty_matches_torchjd_uw():
    model, comb, ref = Toy(), lc.UncertaintyCombiner(NAMES, C.UncertaintyOptions()), tjs.UW(3)
    with torch.no_grad():
        comb.log_vars.copy_(torch.tensor([0.3, -0.5, 1.0]))
        ref.log_var.copy_(comb.log_vars)
    t, b, logs = ours(model, comb)
    _, losses = model.losses()
    rt, rb = reference_grads(model, ref(torch.stack(list(losses.values()))))
    assert torch.allclose(t, rt) and torch.allclose(b, rb)
    assert torch.allclose(comb.log_vars.grad, ref.log_var.grad)
    assert logs["w/a"] == pytest.approx(0.5 * float(torch.exp(torch.tensor(-0.3))))


def test_imtl_l_matches_torchjd():
    model, comb, ref = Toy(), lc.IMTLLCombiner(NAMES), tjs.IMTLL(3)
    with torch.no_grad():
        comb.log_scales.copy_(torch.tensor([0.2, 0.0, -0.7]))
        ref.log_scale.copy_(comb.log_scales)
    t, b, _ = ours(model, comb)
    _, losses = model.losses()
    rt, rb = reference_grads(model, ref(torch.stack(list(losses.values()))))
    assert torch.allclose(t, rt) and torch.allclose(b, rb)
    assert torch.allclose(comb.log_scales.grad, ref.log_scale.grad)


def test_gls_is_the_gradient_of_the_geometric_mean():
    model = Toy()
    t, b, _ = ours(model, lc.GLSCombiner(NAMES))
    _, losses = model.losses()
    rt, rb = reference_grads(model, tjs.GeometricMean()(torch.stack(list(losses.values()))))
    assert torch.allclose(t, rt, rtol=1e-5) and torch.allclose(b, rb, rtol=1e-5)


def test_rlw_weights_are_random_per_step_and_reproducible():
    model, comb = Toy(), lc.RLWCombiner(NAMES, C.RLWOptions(seed=3))
    _, _, w0 = ours(model, comb, k=0)
    _, _, w0_again = ours(model, comb, k=0)
    t1, b1, w1 = ours(model, comb, k=1)
    assert w0 == w0_again and w0 != w1
    w = torch.tensor([w1[f"w/{n}"] for n in NAMES])
    assert (w > 0).all() and abs(float(w.sum()) - 1) < 1e-6
    _, losses = model.losses()
    rt, rb = reference_grads(model, sum(w[i] * losses[n] for i, n in enumerate(NAMES)))
    assert torch.allclose(t1, rt) and torch.allclose(b1, rb)


def test_dwa_matches_torchjd_over_epochs():
    comb, ref = lc.DWACombiner(NAMES, C.DWAOptions(temperature=2.0)), tjs.DWA(temperature=2.0)
    for epoch in range(4):
        for batch in range(2):
            model = Toy(scale=1.0 / (1 + epoch + 0.3 * batch * (epoch % 2)))  # losses shrink unevenly
            with torch.no_grad():
                model.b.add_(0.1 * batch)
            t, b, logs = ours(model, comb, k=epoch * 2 + batch, epoch=epoch)
            _, losses = model.losses()
            rt, rb = reference_grads(model, ref(torch.stack(list(losses.values()))))
            assert torch.allclose(t, rt, rtol=1e-5) and torch.allclose(b, rb, rtol=1e-5)
        ref.step()
    assert int(comb.num_history) == 2 and logs["w/a"] != 1.0


def test_famo_same_batch_matches_torchjd():
    comb = lc.FAMOCombiner(NAMES, C.FAMOOptions(lr=0.1, weight_decay=1e-3, update="same_batch"))
    ref = tjs.FAMO(3, lr=0.1, weight_decay=1e-3)
    assert comb.needs_losses_after_step
    model = Toy()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    for k in range(3):
        t, b, _ = ours(model, comb, k=k)
        _, losses = model.losses()
        rt, rb = reference_grads(model, ref(torch.stack(list(losses.values()))))
        assert torch.allclose(t, rt, rtol=1e-5) and torch.allclose(b, rb, rtol=1e-5)
        opt.step()
        with torch.no_grad():
            _, after = model.losses()
        comb.after_step(after)
        ref.update(torch.stack(list(after.values())))
        assert torch.allclose(comb.logits.float(), ref._w.detach(), atol=1e-6)
    assert comb.logits.abs().max() > 0


def test_famo_next_batch_updates_from_the_next_losses_without_trainer_help():
    comb = lc.FAMOCombiner(NAMES, C.FAMOOptions(lr=0.1))
    ref = tjs.FAMO(3, lr=0.1)
    assert not comb.needs_losses_after_step
    models = [Toy(scale=s) for s in (1.0, 0.7, 0.5)]
    for k, model in enumerate(models):  # losses shrink unevenly (equal shrinking is degenerate)
        with torch.no_grad():
            model.b.mul_(1 + k)
        _, losses = model.losses()
        values = torch.stack(list(losses.values()))
        if k:
            ref.update(values)  # torchjd: update with the next batch's losses
        t, _, _ = ours(model, comb, k=k)
        rt, _ = reference_grads(model, ref(values))
        assert torch.allclose(t, rt, rtol=1e-5)
    assert torch.allclose(comb.logits.float(), ref._w.detach(), atol=1e-6)


def test_famo_state_round_trip():
    a = lc.FAMOCombiner(NAMES, C.FAMOOptions())
    for k, s in enumerate((1.0, 0.6, 0.3)):
        ours(Toy(scale=s), a, k=k)
    b = lc.FAMOCombiner(NAMES, C.FAMOOptions())
    b.load_state_dict(a.state_dict())
    ga, gb = ours(Toy(scale=0.2), a, k=3)[0], ours(Toy(scale=0.2), b, k=3)[0]
    assert torch.allclose(ga, gb)
    fresh = ours(Toy(scale=0.2), lc.FAMOCombiner(NAMES, C.FAMOOptions()), k=3)[0]
    assert not torch.allclose(ga, fresh)


def test_dwa_and_uncertainty_state_round_trip():
    for make in (
        lambda: lc.DWACombiner(NAMES, C.DWAOptions()),
        lambda: lc.UncertaintyCombiner(NAMES, C.UncertaintyOptions(init=0.2)),
    ):
        a = make()
        for epoch in range(3):
            ours(Toy(scale=1.0 / (1 + epoch * (1 + epoch))), a, k=epoch, epoch=epoch)
            with torch.no_grad():
                for p in a.parameters():
                    p.sub_(0.1 * p.grad)
        b = make()
        b.load_state_dict(a.state_dict())
        assert torch.allclose(ours(Toy(), a, k=9, epoch=3)[0], ours(Toy(), b, k=9, epoch=3)[0])


def test_gradnorm_hand_computed():
    model = Toy()
    comb = lc.GradNormCombiner(NAMES, C.GradNormOptions(alpha=1.5))
    with torch.no_grad():
        comb.weights.copy_(torch.tensor([1.0, 2.0, 3.0]))  # renormalised to sum 3
    _, losses = model.losses()
    L = torch.stack([loss.detach() for loss in losses.values()]).double()
    f = 2 * model.theta.detach()
    # d L_t / d f = 2 (f - c_t)(1 + b_t^2)
    gf = torch.stack([2 * (f - CENTERS[i]) * (1 + model.b.detach()[i] ** 2) for i in range(3)]).double()
    n = gf.norm(dim=1)
    t, b, logs = ours(model, comb)
    w = torch.tensor([0.5, 1.0, 1.5], dtype=torch.float64)
    gw = w * n
    target = gw.mean() * 1.0  # first step: loss ratios are all 1
    assert torch.allclose(comb.weights.grad.double(), torch.sign(gw - target) * n, rtol=1e-5)
    rt, rb = reference_grads(model, sum(float(w[i]) * losses[x] for i, x in enumerate(NAMES)))
    assert torch.allclose(t, rt, rtol=1e-5) and torch.allclose(b, rb, rtol=1e-5)  # heads weighted
    assert torch.allclose(comb.initial_losses, L)
    assert logs["w/c"] == pytest.approx(1.5)


@pytest.mark.parametrize("wrt", ["params", "features"])
def test_gradnorm_state_round_trip(wrt):
    a = lc.GradNormCombiner(NAMES, C.GradNormOptions(wrt=wrt))
    ours(Toy(), a)
    with torch.no_grad():
        a.weights.sub_(0.1 * a.weights.grad)
    a.weights.grad = None
    b = lc.GradNormCombiner(NAMES, C.GradNormOptions(wrt=wrt))
    b.load_state_dict(a.state_dict())
    ra, rb_ = ours(Toy(scale=0.5), a, k=1), ours(Toy(scale=0.5), b, k=1)
    assert torch.allclose(ra[0], rb_[0]) and torch.allclose(a.weights.grad, b.weights.grad)
    assert torch.allclose(b.initial_losses, a.initial_losses) and bool(b.has_initial)


def test_bad_options_are_config_errors(zoo):
    assert config_error(zoo, {"name": "dwa", "temperature": 0.0}) == (
        "combiner.temperature: must be > 0, got 0"
    )
    assert config_error(zoo, {"name": "famo", "update": "later"}) == (
        "combiner.update: 'later' is not one of 'next_batch', 'same_batch'"
    )
    assert config_error(zoo, {"name": "famo", "lr": -0.1}) == "combiner.lr: must be >= 0, got -0.1"
    assert config_error(zoo, {"name": "famo", "weight_decay": -1}) == (
        "combiner.weight_decay: must be >= 0, got -1"
    )
    assert config_error(zoo, {"name": "gradnorm", "wrt": "param"}) == (
        "combiner.wrt: 'param' is not one of 'params', 'features' (did you mean 'params'?)"
    )
    assert config_error(zoo, {"name": "gls", "seed": 1}).startswith(
        "combiner.seed: combiner 'gls' takes no options"
    )


# -- registration ---------------------------------------------------------------------------------
ALL = list(COMBINERS)


def test_hook_registers_all_32_names_lazily_in_order():
    seen = {}

    def register(name, factory, options=None, help=""):
        seen[name] = (factory, options, help)

    C.register_combiners(register)
    assert list(seen) == ALL and len(ALL) == 32
    for name, (factory, _options, help) in seen.items():
        assert isinstance(factory, str) and factory.startswith("mtlzoo.builtin.combiners."), name
        assert help, name
    assert [n for n, (_, o, _) in seen.items() if o is None] == ["sum", "gls", "imtl_l"]
    assert [n for n, (_, o, _) in seen.items() if o is C.WrtOptions] == [
        "imtl_g",
        "upgrad",
        "config",
        "dualproj",
    ]


def test_registry_holds_every_loss_combiner(zoo):
    for name in LOSS_LEVEL_COMBINERS:
        entry = zoo.entry("combiner", name)
        assert entry.plugin == "builtin_combiners"
        assert zoo.make("combiner", {"name": name}, NAMES, path="combiner").level == "loss"
    famo = zoo.make("combiner", {"name": "famo", "update": "same_batch", "lr": 1}, NAMES, path="combiner")
    assert famo.needs_losses_after_step and famo.lr == 1.0 and isinstance(famo.lr, float)


@pytest.mark.parametrize("name", ALL)
def test_every_name_builds_from_its_defaults(zoo, name):
    comb = zoo.make("combiner", {"name": name}, ["a", "b", "c"], path="combiner")  # krum needs 3
    assert isinstance(comb, Combiner) and comb.task_names == ["a", "b", "c"]
    levels = {**dict.fromkeys(LOSS_LEVEL_COMBINERS, "loss"), **dict.fromkeys(BILEVEL_COMBINERS, "bilevel")}
    assert comb.level == levels.get(name, "gradient")
    if comb.level == "gradient":
        assert comb.wrt == "params"


def test_wrt_typo_is_one_line_naming_the_key(zoo):
    message = config_error(zoo, {"name": "pcgrad", "wrt": "parmas"}, ["a", "b"])
    assert message == "combiner.wrt: 'parmas' is not one of 'params', 'features' (did you mean 'params'?)"
    assert "\n" not in message
