"""Contracts that name the right culprit: shared parameters without a gradient after the first
step are blamed on unread backbone maps (named, with the option that drops them), on the
architecture or on the combiner, whichever caused it; a backbone missing a contract attribute
is refused by the build and the kit alike; a derivation is checked by the build as by the kit."""

from __future__ import annotations

import pytest
import torch.nn.functional as F
from torch import nn

from mtlzoo import (
    Architecture,
    ArchitectureOutput,
    Backbone,
    Derivation,
    FeatureInfo,
    TargetInfo,
    TaskType,
    Zoo,
    hookimpl,
)
from mtlzoo.contract.errors import PluginError
from mtlzoo.runtime.train import Trainer
from mtlzoo.testing import check_plugin


class FirstMap(nn.Module):
    """A dense head that reads only the finest map."""

    def __init__(self, feature_info, out_channels):
        super().__init__()
        self.conv = nn.Conv2d(feature_info[0].channels, out_channels, 1)

    def forward(self, features, size):
        return F.interpolate(self.conv(features[0]), size=tuple(size), mode="bilinear")


class ClonedShared(Architecture):
    """Hard sharing whose declared shared representation is a copy the heads never read."""

    def __init__(self, parts):
        super().__init__()
        self.backbone = parts.backbone
        self.heads = nn.ModuleDict(parts.heads)

    @property
    def task_names(self):
        return list(self.heads)

    def run(self, images):
        maps = list(self.backbone(images))
        preds = {t: h(maps, images.shape[-2:]) for t, h in self.heads.items()}
        return ArchitectureOutput(preds, shared=[m.clone() for m in maps])

    def shared_parameters(self):
        return list(self.backbone.parameters())

    def task_parameters(self, task):
        return list(self.heads[task].parameters())


class FeatureInfoOnly(nn.Module):
    """A plain module with feature_info and no other backbone attribute."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.feature_info = [FeatureInfo(8, 2)]

    def forward(self, x):
        return [self.conv(x)]


def _flat_depth():
    """A task type whose derivation yields ``[H, W]`` where depth needs ``[1, H, W]``."""
    return TaskType(
        name="flat_depth",
        target_kinds=("depth",),
        target="flat",
        head={"name": "dense"},
        loss={"name": "l1"},
        metrics=[{"name": "depth_abs_err"}],
        derive=lambda source: Derivation(TargetInfo("depth"), lambda mask: mask.float()),
        derive_from=("segmentation",),
    )


class Parts:
    @hookimpl
    def register_heads(self, register):
        register("first_map", FirstMap, None, "reads the finest map only", targets=("dense",))

    @hookimpl
    def register_architectures(self, register):
        register("cloned_shared", ClonedShared, None, "a shared representation the heads do not read")

    @hookimpl
    def register_backbones(self, register):
        register("feature_info_only", FeatureInfoOnly, None, "no size_divisor")

    @hookimpl
    def register_tasks(self, register):
        register("flat_depth", _flat_depth, None, "derivation of the wrong shape")


@pytest.fixture(scope="module")
def blame_zoo():
    return Zoo.load(plugins=[("blame", Parts())], strict=True)


def _first_step_error(zoo, spec) -> str:
    trainer = Trainer(zoo.build(spec), None)
    with pytest.raises(PluginError) as err:
        trainer.fit()
    message = str(err.value)
    assert "\n" not in message
    return message


def test_timm_stages_no_head_reads_are_named_with_the_out_indices_that_drop_them(blame_zoo, spec_factory):
    spec = spec_factory(
        **{
            "model.backbone": {"name": "timm", "arch": "resnet18"},
            "tasks": {"semseg": {"type": "segmentation", "head": {"name": "first_map"}}},
        }
    )
    message = _first_step_error(blame_zoo, spec)
    assert message.startswith(
        "model.backbone: backbone 'timm' (plugin builtin_backbones): no head reads its maps 1, 2, 3, 4 "
        "(stride 4, 8, 16, 32), so the stages computing them (model.maxpool, model.layer1; model.layer2; "
        "model.layer3; model.layer4) get no gradient: 57 of 60 shared parameters; return only the maps the "
        "heads read (model.backbone.out_indices=[0])"
    ), message
    assert "combiner" not in message and "mark_unused" not in message
    # the suggestion works: the same run with that option trains
    spec["model"]["backbone"]["out_indices"] = [0]
    summary = Trainer(blame_zoo.build(spec), None).fit()
    assert set(summary["final"]) == {"semseg"}


def test_unread_stages_of_a_backbone_without_out_indices_get_a_generic_fix(blame_zoo, spec_factory):
    spec = spec_factory(**{"tasks": {"semseg": {"type": "segmentation", "head": {"name": "first_map"}}}})
    message = _first_step_error(blame_zoo, spec)
    assert message.startswith(
        "model.backbone: backbone 'cnn' (plugin builtin_backbones): no head reads its maps 1, 2 (stride 4, 8), "
        "so the stages computing them (stages.1; stages.2) get no gradient: 12 of 18 shared parameters; "
        "configure the backbone to return only the maps the heads read"
    ), message


def test_a_shared_representation_the_predictions_do_not_use_is_blamed_on_the_architecture(
    blame_zoo, spec_factory
):
    spec = spec_factory(
        **{"model.architecture": {"name": "cloned_shared"}, "combiner": {"name": "mgda", "wrt": "features"}}
    )
    message = _first_step_error(blame_zoo, spec)
    assert message.startswith(
        "model.architecture: architecture 'cloned_shared' (plugin blame): after the first step 18 of 18 shared "
        "parameters have no gradient"
    ), message
    assert "shared representation run() returns is not the one the predictions are computed from" in message
    assert not message.startswith("combiner")
    # a loss-level combiner backpropagates the losses themselves: the same model trains
    spec["combiner"] = {"name": "sum"}
    assert Trainer(blame_zoo.build(spec), None).fit()["final"]


def test_a_backbone_without_the_contract_attributes_is_refused_by_build_and_kit_alike(
    blame_zoo, spec_factory
):
    with pytest.raises(PluginError) as err:
        blame_zoo.build(spec_factory(**{"model.backbone": {"name": "feature_info_only"}}))
    problem = (
        "backbone 'feature_info_only' (plugin blame): FeatureInfoOnly has no input_mean, input_std, "
        "size_divisor attribute; a backbone sets feature_info, input_mean, input_std, size_divisor (subclass "
        "mtlzoo.Backbone for the defaults: no input statistics, size_divisor 1)"
    )
    assert str(err.value) == f"model.backbone: {problem}"
    report = check_plugin(blame_zoo, "blame", ["backbone"])
    (failed,) = report.failures()
    assert (failed.contract, failed.message) == ("backbone.attributes", f"PluginError: {problem}")


def test_a_derivation_of_the_wrong_shape_is_refused_by_build_and_kit_alike(blame_zoo, spec_factory):
    spec = spec_factory(
        **{"tasks": {"semseg": {"type": "segmentation"}, "flat": {"type": "flat_depth", "from": "semseg"}}}
    )
    with pytest.raises(PluginError) as err:
        blame_zoo.build(spec)
    problem = (
        "task 'flat_depth' (plugin blame): derived from a 'segmentation' target: target 'derived' (depth) must "
        "have shape [1, 12, 16] (float32 [1,H,W]), got [12, 16]"
    )
    assert str(err.value) == f"tasks.flat: {problem}"
    failed = {r.contract: r.message for r in check_plugin(blame_zoo, "blame", ["task"]).failures()}
    assert failed == {"task.derive": f"PluginError: {problem}"}


def test_a_backbone_subclass_has_the_attributes_by_default():
    class Tiny(Backbone):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, stride=2, padding=1)
            self.feature_info = [FeatureInfo(4, 2)]

        def forward(self, x):
            return [self.conv(x)]

    from mtlzoo.contract import checks

    # mtlzoo.Backbone gives size_divisor, input_mean and input_std their defaults
    assert checks.backbone_attributes(Tiny(), "tiny") == [FeatureInfo(4, 2)]
