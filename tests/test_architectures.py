"""The architecture plugin kind: hps is today's model, plugin architectures with or without a
shared representation work with every combiner path, deep supervision, and the one-line
errors of broken architectures."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from torch import nn

from mtlzoo import Architecture, ConfigError, PluginError, Zoo, hookimpl, option
from mtlzoo.contract.architecture import ArchitectureOutput, unique
from mtlzoo.contract.model import MultiTaskModel
from mtlzoo.runtime.train import Trainer
from mtlzoo.testing import check_plugin


def test_hook_register_architectures(zoo):
    record = next(r for r in zoo.records if r.name == "builtin_architectures")
    assert "hps" in record.registered["architecture"]
    assert zoo.entry("architecture", "hps").builtin


def test_hps_is_exactly_the_model_without_an_architecture(zoo, spec_factory):
    plain = zoo.build(spec_factory())
    hps = zoo.build(spec_factory(**{"model.architecture": {"name": "hps"}}))
    assert type(hps.model) is type(plain.model) is MultiTaskModel
    a, b = plain.model.state_dict(), hps.model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert zoo.spec(spec_factory()).model.architecture is None


class TwoNets(Architecture):
    """One network per task, mixed by a learned scalar (a toy cross-stitch): no shared
    representation; every network and the mixing weights are shared."""

    has_shared_representation = False

    def __init__(self, parts, options):
        super().__init__()
        self.names = list(parts.heads)
        stages = parts.stages(label="two_nets")
        assert stages
        self.nets = nn.ModuleList(parts.backbone_copy() for _ in self.names)
        self.mix = nn.Parameter(torch.tensor(options.mix))
        self.heads = nn.ModuleDict(parts.heads)
        self.aux_weight = options.aux_weight

    @property
    def task_names(self):
        return self.names

    def run(self, images):
        maps = [net(images) for net in self.nets]
        mixed = [
            [(1 - self.mix) * m[k] + self.mix * sum(o[k] for o in maps) / len(maps) for k in range(len(m))]
            for m in maps
        ]
        size = tuple(images.shape[-2:])
        preds = {t: self.heads[t](mixed[i], size) for i, t in enumerate(self.names)}
        aux = {t: [self.heads[t](maps[i], size)] for i, t in enumerate(self.names)}
        return ArchitectureOutput(preds, aux, None)

    def shared_parameters(self):
        return unique([*self.nets.parameters(), self.mix])

    def task_parameters(self, task):
        return unique(self.heads[task].parameters())


@dataclass
class TwoNetsOptions:
    mix: float = option(0.3, ge=0, le=1)
    aux_weight: float = option(0.5, ge=0)


class Leaky(TwoNets):
    def shared_parameters(self):
        return unique(self.nets.parameters())  # forgets self.mix


class Plugin:
    @hookimpl
    def register_architectures(self, register):
        register("two_nets", TwoNets, TwoNetsOptions, "one network per task, mixed")
        register("leaky", Leaky, TwoNetsOptions, "forgets to declare a parameter")


@pytest.fixture(scope="module")
def arch_zoo():
    return Zoo.load(plugins=[("arch_plugin", Plugin())])


def test_an_architecture_without_a_shared_representation_keeps_the_contract(arch_zoo):
    report = check_plugin(arch_zoo, "arch_plugin", kinds=["architecture"])
    results = {(r.part.split(" (")[0], r.contract): r for r in report.results}
    for contract in ("architecture.outputs", "architecture.parameters", "architecture.gramian[params]"):
        assert results[("architecture 'two_nets'", contract)].ok, results[
            ("architecture 'two_nets'", contract)
        ]
    assert ("architecture 'two_nets'", "architecture.gramian[features]") not in results
    bad = results[("architecture 'leaky'", "architecture.parameters")]
    assert not bad.ok and "neither shared nor any task's (e.g. mix)" in bad.message


@pytest.mark.parametrize(
    "combiner",
    [
        {"name": "sum"},
        {"name": "pcgrad", "wrt": "params"},
        {"name": "mgda", "wrt": "params"},
        {"name": "uncertainty"},
    ],
)
def test_every_combiner_path_trains_an_architecture_without_a_shared_representation(
    arch_zoo, spec_factory, combiner
):
    spec = spec_factory(**{"model.architecture": {"name": "two_nets"}, "combiner": combiner})
    exp = arch_zoo.build(spec)
    assert exp.model.has_shared_representation is False and exp.model.aux_weight == 0.5
    before = {n: p.detach().clone() for n, p in exp.model.named_shared_parameters()}
    summary = Trainer(exp, None).fit()
    assert set(summary["final"]) == {"semseg", "depth", "labels"}
    moved = [n for n, p in exp.model.named_shared_parameters() if not torch.equal(before[n], p.detach())]
    assert "mix" in moved and len(moved) == len(before)


def test_features_mode_on_an_architecture_without_one_is_one_line(arch_zoo, spec_factory):
    spec = spec_factory(
        **{"model.architecture": {"name": "two_nets"}, "combiner": {"name": "mgda", "wrt": "features"}}
    )
    with pytest.raises(ConfigError) as err:
        arch_zoo.build(spec)
    assert str(err.value).startswith(
        "combiner.wrt: architecture 'two_nets' (plugin arch_plugin) has no shared representation"
    ) and "use wrt: params" in str(err.value)


def test_deep_supervision_losses_are_added_with_the_aux_weight(arch_zoo, spec_factory):
    exp = arch_zoo.build(spec_factory(**{"model.architecture": {"name": "two_nets", "aux_weight": 0.0}}))
    trainer = Trainer(exp, None)
    batch = next(iter(trainer.train_loader))
    _, _, plain = trainer.compute_losses(batch)
    exp.model.aux_weight = 2.0
    _, _, with_aux = trainer.compute_losses(batch)
    out = exp.model.forward_train(batch["image"])
    for name, task in exp.tasks.items():
        aux = task.loss(out.aux[name][0].float(), batch[task.target])
        torch.testing.assert_close(with_aux[name], plain[name] + 2.0 * aux)


def test_broken_architectures_are_named_when_the_model_is_built(arch_zoo, spec_factory):
    with pytest.raises(
        PluginError,
        match=r"^model.architecture: architecture 'leaky' \(plugin arch_plugin\): 1 "
        r"trainable parameters are neither shared nor any task's",
    ):
        arch_zoo.build(spec_factory(**{"model.architecture": {"name": "leaky"}}))
    with pytest.raises(ConfigError, match=r"^model.architecture.mix: must be >= 0 and <= 1, got 2"):
        arch_zoo.spec(spec_factory(**{"model.architecture": {"name": "two_nets", "mix": 2.0}}))
    with pytest.raises(ConfigError, match=r"two_nets runs the backbone stage by stage, but backbone"):
        arch_zoo.build(
            spec_factory(
                **{
                    "model.architecture": {"name": "two_nets"},
                    "model.backbone": {"name": "smp", "arch": "efficientnet-b0"},
                }
            )
        )
