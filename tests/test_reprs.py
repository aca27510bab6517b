"""``repr`` of a built combiner, architecture or head shows the options it was built with
(torchjd's aggregators print theirs), from the base classes: built-ins and third-party parts
alike, and after a deep copy."""

from __future__ import annotations

import copy
import types
from dataclasses import dataclass

import pytest

from mtlzoo import Zoo, hookimpl
from mtlzoo.contract.architecture import ArchitectureParts
from mtlzoo.contract.combine import Combiner
from mtlzoo.contract.features import FeatureInfo
from mtlzoo.testing.kit.architecture import _arch_setup

FEATURES = [FeatureInfo(8, 4), FeatureInfo(16, 8), FeatureInfo(32, 16), FeatureInfo(32, 32)]


def _combiner(zoo: Zoo, node: dict):
    return zoo.make("combiner", node, ["a", "b"], path="combiner")


def test_a_combiner_prints_every_option_in_declaration_order(zoo):
    mgda = _combiner(zoo, {"name": "mgda", "wrt": "features", "max_iter": 50})
    assert repr(mgda) == "MGDACombiner(wrt='features', normalization='none', max_iter=50, tol=1e-07)"
    weighted = _combiner(zoo, {"name": "weighted", "weights": {"a": 2.0}})
    assert repr(weighted) == "WeightedCombiner(weights={'a': 2.0}, default=1.0)"
    pcgrad = _combiner(zoo, {"name": "pcgrad", "reduction": "mean", "seed": 3})
    assert repr(pcgrad) == "PCGradCombiner(wrt='params', reduction='mean', seed=3)"
    # a combiner without options prints none, and a copy prints what the original does
    assert repr(_combiner(zoo, {"name": "sum"})) == "SumCombiner()"
    assert repr(copy.deepcopy(mgda)) == repr(mgda)


def test_a_head_prints_its_options_and_a_shared_head_class_its_settings(zoo):
    unet = zoo.make("head", {"name": "unet", "norm": "group"}, FEATURES, 3, path="head")
    first, settings = repr(unet).splitlines()[:2]
    assert first == "UnetHead(" and "norm='group'" in settings
    cls = zoo.make("head", {"name": "classification", "hidden": 7, "pool": "max"}, FEATURES, 5, path="head")
    assert repr(cls).splitlines()[1].strip() == "pool='max', hidden=7, dropout=0.0"
    # fcn, dense, normals and boundary are one class built by factories: its keyword settings show
    fcn = zoo.make("head", {"name": "fcn", "channels": 16}, FEATURES, 3, path="head")
    assert (
        repr(fcn).splitlines()[1].strip() == "channels=16, min_stride=4, convs=1, norm='batch', output='none'"
    )


@pytest.mark.parametrize(
    "node,shown",
    [
        (
            {"name": "mtan", "design": "conv", "norm": "group"},
            "design='conv', share_extractors=False, norm='group'",
        ),
        ({"name": "hps"}, ""),
    ],
)
def test_an_architecture_prints_its_options_above_its_modules(zoo, node, shown):
    backbone, extra, _ = _arch_setup(zoo)
    heads = {t: extra["make_head"](t, backbone.feature_info) for t in extra["infos"]}
    parts = ArchitectureParts(backbone, heads, extra["infos"], extra["make_head"])
    model = zoo.make("architecture", node, parts, path="model.architecture")
    lines = repr(model).splitlines()
    assert lines[0].endswith("(")
    assert lines[1].strip() == shown if shown else lines[1].strip().startswith("(")


@dataclass
class _ScaleOptions:
    """Options of the test's ``scaled_sum``.

    Attributes:
        scale: factor of the summed loss.
    """

    scale: float = 1.0


class _ScaledSum(Combiner):
    """A third-party combiner with no repr code of its own."""

    def __init__(self, task_names, options: _ScaleOptions):
        super().__init__(task_names)
        self.scale = options.scale

    def backward(self, losses, step):
        """Backpropagate ``scale * sum_t L_t``."""
        step.backward(self.scale * self.stack(losses).sum())
        return {}


def test_a_third_party_combiner_prints_its_options_without_code_of_its_own():
    plugin = types.SimpleNamespace(
        register_combiners=hookimpl(
            lambda register: register("scaled_sum", _ScaledSum, _ScaleOptions, "scaled sum")
        )
    )
    zoo = Zoo.load(plugins=[("repr_test", plugin)], entry_points=False)
    built = _combiner(zoo, {"name": "scaled_sum", "scale": 0.5})
    assert repr(built) == "_ScaledSum(scale=0.5)"
