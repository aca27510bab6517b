"""One broken part per contract: the conformance kit (and the zoo) must name each failure."""

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import Metric

from mtlzoo import Backbone, Combiner, DatasetInfo, FeatureInfo, TargetInfo, TargetKind, TaskType, hookimpl


class WrongFeatureInfo(Backbone):
    """Says its one map has 32 channels; it has 16."""

    feature_info = [FeatureInfo(32, 2)]

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3, stride=2, padding=1)

    def forward(self, x):
        return [self.conv(x)]


class FeatureInfoOnly(nn.Module):
    """A plain module with feature_info but none of the other backbone attributes
    (size_divisor, input_mean, input_std)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.feature_info = [FeatureInfo(8, 2)]

    def forward(self, x):
        return [self.conv(x)]


class WrongChannels(nn.Module):
    """Returns out_channels + 2 channels."""

    def __init__(self, feature_info, out_channels):
        super().__init__()
        self.conv = nn.Conv2d(feature_info[-1].channels, out_channels + 2, 1)

    def forward(self, features, size):
        return F.interpolate(self.conv(features[-1]), size=size, mode="bilinear", align_corners=False)


class NotScalar(nn.Module):
    """Returns one loss per pixel instead of a scalar."""

    def __init__(self, task):
        super().__init__()

    def forward(self, pred, target):
        return (pred.float() - target.float()).abs()


def loss_without_task(options):
    """A loss factory whose signature forgot the task argument (refused at registration)."""
    return nn.L1Loss()


class BatchAverage(Metric):
    """Averages per-batch averages: depends on how the split is batched."""

    higher_is_better = False
    full_state_update = False

    def __init__(self, task):
        super().__init__()
        self.add_state("sum_of_means", default=torch.zeros(()), dist_reduce_fx="sum")
        self.add_state("batches", default=torch.zeros(()), dist_reduce_fx="sum")

    def update(self, pred, target):
        self.sum_of_means += (pred.float() - target.float()).abs().mean()
        self.batches += 1

    def compute(self):
        return self.sum_of_means / self.batches


class NoDirection(Metric):
    """Does not say whether higher is better."""

    full_state_update = False

    def __init__(self, task):
        super().__init__()
        self.add_state("n", default=torch.zeros(()), dist_reduce_fx="sum")

    def update(self, pred, target):
        self.n += target.numel()

    def compute(self):
        return self.n


class NaNMetric(Metric):
    """Divides by a count it never increments: NaN whatever the data."""

    higher_is_better = False
    full_state_update = False

    def __init__(self, task):
        super().__init__()
        self.add_state("total", default=torch.zeros(()), dist_reduce_fx="sum")
        self.add_state("count", default=torch.zeros(()), dist_reduce_fx="sum")

    def update(self, pred, target):
        self.total += (pred.float() - target.float()).abs().sum() * 0

    def compute(self):
        return self.total / self.count


class NoBackward(Combiner):
    """Never calls backward: the shared parameters get no gradient."""

    def backward(self, losses, step):
        return {}


class StateInAttribute(Combiner):
    """Keeps its running state in a plain attribute, which checkpoints do not carry."""

    def __init__(self, task_names):
        super().__init__(task_names)
        self.running = torch.ones(len(self.task_names))

    def backward(self, losses, step):
        stacked = self.stack(losses)
        self.running = 0.5 * self.running + 0.5 * stacked.detach()
        step.backward((stacked / self.running).sum())
        return {}


@dataclass
class Alpha:
    """A valid options dataclass."""

    alpha: float = 1.0


@dataclass
class BadDefault:
    """An options dataclass whose default is not one of its own choices (refused at registration)."""

    wrt: Literal["params", "features"] = "parmas"


class BadSamples(torch.utils.data.Dataset):
    """Depth as [H,W], a float mask, and a declared target it never yields."""

    def __init__(self, split):
        self.info = DatasetInfo(
            "bad_samples",
            {
                "semseg": TargetInfo("segmentation", 3, ("a", "b", "c"), 255),
                "depth": TargetInfo("depth"),
                "labels": TargetInfo("labels", 3, ("a", "b", "c")),
            },
        )

    def __len__(self):
        return 4

    def __getitem__(self, i):
        return {"image": torch.rand(3, 8, 8), "semseg": torch.zeros(8, 8), "depth": torch.ones(8, 8)}


def bad_derivation_task():
    """A task type whose derivation yields the wrong shape for its kind."""
    from mtlzoo import Derivation

    def derive(source):
        return Derivation(TargetInfo("depth"), lambda mask: mask.float())  # [H,W], depth needs [1,H,W]

    return TaskType(
        name="bad_derivation",
        target_kinds=("depth",),
        target="depth",
        head={"name": "dense"},
        loss={"name": "l1"},
        metrics=[{"name": "depth_abs_err"}],
        derive=derive,
        derive_from=("segmentation",),
    )


def bad_example_kind():
    """A target kind whose example does not have its declared shape."""
    return TargetKind(
        "bad_example", (1, "H", "W"), "float32", example=lambda info, h, w, g: torch.zeros(h, w)
    )


@hookimpl
def register_backbones(register):
    register("wrong_feature_info", WrongFeatureInfo, None, "feature_info disagrees with the maps")
    register("feature_info_only", FeatureInfoOnly, None, "a plain module without size_divisor")


@hookimpl
def register_heads(register):
    register("wrong_channels", WrongChannels, None, "returns out_channels + 2 channels")


@hookimpl
def register_losses(register):
    register("not_scalar", NotScalar, None, "returns a loss per pixel", targets=("depth",))
    register("loss_without_task", loss_without_task, Alpha, "factory has no task parameter")


@hookimpl
def register_metrics(register):
    register("batch_average", BatchAverage, None, "averages of batch averages", targets=("depth",))
    register("no_direction", NoDirection, None, "no higher_is_better", targets=("depth",))
    register("nan_metric", NaNMetric, None, "NaN whatever the data", targets=("depth",))


@hookimpl
def register_combiners(register):
    register("no_backward", NoBackward, None, "never calls backward")
    register("state_in_attribute", StateInAttribute, None, "state outside buffers")
    register("bad_default", NoBackward, BadDefault, "an invalid option default")
    register("sum", NoBackward, None, "tries to take a built-in name")


@hookimpl
def register_datasets(register):
    register("bad_samples", BadSamples, None, "samples disagree with the info")


@hookimpl
def register_tasks(register):
    register("bad_derivation", bad_derivation_task, None, "derivation of the wrong shape")


@hookimpl
def register_target_kinds(register):
    register("bad_example", bad_example_kind, None, "example of the wrong shape")
