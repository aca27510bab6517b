"""The conformance kit reports the real problem once (a NaN metric by its NaN, a combiner that
makes no gradient without knock-on failures) and is hermetic: other plugins change nothing."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torchmetrics import Metric

from mtlzoo import Combiner, TaskType, Zoo, hookimpl
from mtlzoo.testing import check_plugin


class NaNMetric(Metric):
    """0 / 0 whatever the data."""

    higher_is_better = False
    full_state_update = False

    def __init__(self, task):
        super().__init__()
        self.add_state("count", default=torch.zeros(()), dist_reduce_fx="sum")

    def update(self, pred, target):
        pass

    def compute(self):
        return self.count / self.count


class NoBackward(Combiner):
    """Never backpropagates."""

    def backward(self, losses, step):
        return {}


def one_channel_l1(task):
    """An L1 loss for depth that insists on one predicted channel, as depth has."""

    def loss(pred, target):
        if pred.shape[1] != 1:
            raise ValueError(f"depth has one channel, got {pred.shape[1]}")
        return (pred - target).abs().mean()

    return loss


class Mine:
    @hookimpl
    def register_metrics(self, register):
        register("nan_metric", NaNMetric, None, "NaN whatever the data", targets=("depth",))

    @hookimpl
    def register_combiners(self, register):
        register("no_backward", NoBackward, None, "never calls backward")

    @hookimpl
    def register_losses(self, register):
        register("one_channel_l1", one_channel_l1, None, "depth L1", targets=("depth",))


@dataclass
class _Nothing:
    """No options worth having."""

    unused: int = 0


def _three_channel_depth(options: _Nothing) -> TaskType:
    """Another plugin's task type that predicts depth with three channels."""
    return TaskType(
        name="aaa_depth3",
        target_kinds=("depth",),
        target="depth",
        head={"name": "dense"},
        loss={"name": "l1"},
        metrics=[{"name": "depth_abs_err"}],
        out_channels=lambda info: 3,
    )


class Other:
    @hookimpl
    def register_tasks(self, register):
        register("aaa_depth3", _three_channel_depth, _Nothing, "depth as three channels")


class Broken:
    @hookimpl
    def register_heads(self, register):
        raise RuntimeError("this plugin is broken")


def _failures(report) -> dict[tuple[str, str], str]:
    return {(r.part.split(" (")[0], r.contract): r.message for r in report.failures()}


def test_a_nan_metric_is_named_by_its_nan_and_nothing_else_fails_for_it():
    zoo = Zoo.load(plugins=[("mine", Mine())])
    report = check_plugin(zoo, "mine", ["metric"])
    failed = _failures(report)
    assert list(failed) == [("metric 'nan_metric'", "metric.finite[depth]")]
    assert failed[("metric 'nan_metric'", "metric.finite[depth]")] == (
        "AssertionError: compute() returned nan over 6 samples of valid targets and random predictions; "
        "a metric's value is finite"
    )
    assert not any("exact sums" in r.message for r in report.results)


def test_a_combiner_that_makes_no_gradient_fails_that_contract_alone():
    zoo = Zoo.load(plugins=[("mine", Mine())])
    failed = _failures(check_plugin(zoo, "mine", ["combiner"]))
    assert list(failed) == [("combiner 'no_backward'", "combiner.gradients")]
    message = failed[("combiner 'no_backward'", "combiner.gradients")]
    assert (
        "nor has any task's parameter: the combiner made none; a combiner must call step.backward" in message
    )
    assert "AttributeError" not in message


def test_the_kit_sees_the_checked_plugin_and_the_built_ins_only():
    alone = check_plugin(Zoo.load(plugins=[("mine", Mine())]), "mine", ["loss"])
    crowded_zoo = Zoo.load(plugins=[("mine", Mine()), ("other", Other()), ("broken", Broken())])
    assert [r.status for r in crowded_zoo.records if r.name == "broken"] == ["failed"]
    # the other plugin's task type learns depth with 3 channels and sorts first: the kit once
    # borrowed its out_channels for every depth loss it checked
    assert [e.name for e in crowded_zoo.list("task")][0] == "aaa_depth3"
    crowded = check_plugin(crowded_zoo, "mine", ["loss"])
    assert alone.ok and crowded.ok, crowded.failures()
    assert [r.as_dict() for r in crowded.results] == [r.as_dict() for r in alone.results]
