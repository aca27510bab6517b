"""Built-in metrics against hand-computed values, and exactness over a split."""

from __future__ import annotations

import importlib

import pytest
import torch

import mtlzoo.builtin.metrics as plugin
from mtlzoo import Zoo
from mtlzoo.builtin.metrics import (
    AccuracyOptions,
    BoundaryF1Options,
    DepthDeltaOptions,
    DepthLogOptions,
    NormalWithinOptions,
)
from mtlzoo.builtin.metrics.boundary import make_boundary_f1
from mtlzoo.builtin.metrics.common import MtlMetric
from mtlzoo.builtin.metrics.depth import (
    make_depth_abs_err,
    make_depth_delta,
    make_depth_log10,
    make_depth_rel_err,
    make_depth_rmse,
)
from mtlzoo.builtin.metrics.image_level import average_precision, make_accuracy, make_map
from mtlzoo.builtin.metrics.normals import (
    NormalMeanAngle,
    make_normal_mean_angle,
    make_normal_median_angle,
    make_normal_within,
)
from mtlzoo.builtin.metrics.segmentation import make_iou_per_class, make_miou, make_pixel_acc
from mtlzoo.contract.data import TargetInfo
from mtlzoo.contract.errors import ConfigError
from mtlzoo.contract.tasks import TaskInfo

TARGETS = {
    "miou": ("segmentation",),
    "iou_per_class": ("segmentation",),
    "pixel_acc": ("segmentation",),
    "boundary_f1": ("boundary",),
    "depth_abs_err": ("depth",),
    "depth_rel_err": ("depth",),
    "depth_rmse": ("depth",),
    "depth_log10": ("depth",),
    "depth_delta": ("depth",),
    "normal_mean_angle": ("normals",),
    "normal_median_angle": ("normals",),
    "normal_within": ("normals",),
    "accuracy": ("class", "labels"),
    "map": ("labels",),
}
NAMES = list(TARGETS)
#: the module of mtlzoo.builtin.metrics that holds each metric
FAMILY = {
    **dict.fromkeys(("miou", "iou_per_class", "pixel_acc"), "segmentation"),
    "boundary_f1": "boundary",
    **dict.fromkeys(("depth_abs_err", "depth_rel_err", "depth_rmse", "depth_log10", "depth_delta"), "depth"),
    **dict.fromkeys(("normal_mean_angle", "normal_median_angle", "normal_within"), "normals"),
    **dict.fromkeys(("accuracy", "map"), "image_level"),
}
OPTIONS = {
    "boundary_f1": BoundaryF1Options,
    "normal_within": NormalWithinOptions,
    "accuracy": AccuracyOptions,
    "depth_log10": DepthLogOptions,
    "depth_delta": DepthDeltaOptions,
}
LOWER_IS_BETTER = {
    "depth_abs_err",
    "depth_rel_err",
    "depth_rmse",
    "depth_log10",
    "normal_mean_angle",
    "normal_median_angle",
}
KEYS = {
    "miou": "miou",
    "iou_per_class": "iou",
    "pixel_acc": "pixel_acc",
    "boundary_f1": "boundary_f1",
    "depth_abs_err": "abs_err",
    "depth_rel_err": "rel_err",
    "depth_rmse": "rmse",
    "depth_log10": "log10",
    "depth_delta": "delta1",
    "normal_mean_angle": "mean_angle",
    "normal_median_angle": "median_angle",
    "normal_within": "within_11.25",
    "accuracy": "accuracy",
    "map": "map",
}


def task(kind="segmentation", num_classes=3, ignore_index=255, name="t") -> TaskInfo:
    info = TargetInfo(kind, num_classes, ignore_index=ignore_index)
    return TaskInfo(name, kind, name, max(num_classes, 1), info)


@pytest.fixture(scope="module")
def plugin_zoo() -> Zoo:
    """A zoo of this plugin only (other built-in packages may be mid-migration)."""
    return Zoo.load(entry_points=False, plugins=[("builtin_metrics", plugin)], strict=True)


def config_error(zoo: Zoo, node, t: TaskInfo, path: str) -> str:
    with pytest.raises(ConfigError) as err:
        zoo.make("metric", node, t, path=path)
    return str(err.value)


def as_number(result: torch.Tensor) -> float | list[float]:
    """A metric's value: a float, or the list of per-class values of a 1-D result."""
    return result.tolist() if result.dim() == 1 else float(result)


def value(metric, *batches) -> float | list[float]:
    metric.reset()
    for pred, target in batches:
        metric.update(pred, target)
    return as_number(metric.compute())


def check_exact(metric, batch_a, batch_b, expected: float, dim: int = 0) -> None:
    """Two batches give the value of their concatenation (along ``dim``: images, or pixels of a
    row for per-pixel metrics), and not the mean of the batch values."""
    two = value(metric, batch_a, batch_b)
    cat = value(metric, (torch.cat([batch_a[0], batch_b[0]], dim), torch.cat([batch_a[1], batch_b[1]], dim)))
    mean = (value(metric, batch_a) + value(metric, batch_b)) / 2
    assert two == pytest.approx(expected, abs=1e-5)
    assert cat == pytest.approx(expected, abs=1e-5)
    assert mean != pytest.approx(expected, abs=1e-3)


# -- registration -------------------------------------------------------------------------
def test_hook_registers_every_metric_lazily_with_options_and_targets():
    seen = {}

    def register(name, factory, options=None, help="", *, targets=None):
        seen[name] = (factory, options, help, targets)

    plugin.register_metrics(register)
    assert list(seen) == NAMES
    for name, (factory, options, help, targets) in seen.items():
        # a "module:attr" string, imported only when built, in the module of the metric's family
        assert factory == f"mtlzoo.builtin.metrics.{FAMILY[name]}:make_{name}"
        module, attr = factory.split(":")
        assert callable(getattr(importlib.import_module(module), attr))
        assert options is OPTIONS.get(name)
        assert help
        assert targets == TARGETS[name]


def test_registered_entries_and_targets(plugin_zoo):
    for name in NAMES:
        entry = plugin_zoo.entry("metric", name)
        assert entry.plugin == "builtin_metrics"
        assert entry.options is OPTIONS.get(name)
        assert entry.targets == TARGETS[name]
    assert plugin_zoo.problems == []


@pytest.mark.parametrize("name", NAMES)
def test_every_metric_builds_through_the_zoo_with_direction_and_key(plugin_zoo, name):
    t, batch, _, _ = ALL_CASES[name]
    metric = plugin_zoo.make("metric", {"name": name}, t, path=f"tasks.{t.kind}.metrics[0]")
    assert isinstance(metric, MtlMetric)
    assert metric.higher_is_better is (name not in LOWER_IS_BETTER)
    assert metric.key == KEYS[name]
    torch.manual_seed(0)
    assert torch.isfinite(torch.tensor(value(metric, batch()))).all()


@pytest.mark.parametrize("name", [n for n in NAMES if n not in OPTIONS])
def test_metrics_without_options_refuse_options(plugin_zoo, name):
    t = ALL_CASES[name][0]
    assert (
        config_error(plugin_zoo, {"name": name, "eps": 1}, t, "tasks.t.metrics[0]")
        == f"tasks.t.metrics[0].eps: metric {name!r} takes no options; remove ['eps']"
    )


def test_class_metrics_need_classes(plugin_zoo):
    no_classes = TaskInfo("labels", "labels", "labels", 0, TargetInfo("labels", 0))
    assert (
        config_error(plugin_zoo, "map", no_classes, "tasks.labels.metrics[0]")
        == "tasks.labels.metrics[0]: metric 'map' of task 'labels': the target declares no classes"
    )


# -- segmentation ---------------------------------------------------------------------------
def seg_batch():
    target = torch.tensor([[[0, 0], [1, 255]]])
    pred = torch.tensor([[[0, 1], [1, 2]]])  # class 2 only predicted on the void pixel
    return pred, target


def test_miou_over_present_classes_ignoring_void():
    # class 0: inter 1, union 2; class 1: inter 1, union 2; class 2 absent (void pixel not counted)
    assert value(make_miou(task()), seg_batch()) == pytest.approx(0.5)
    assert value(make_pixel_acc(task()), seg_batch()) == pytest.approx(2 / 3)


def test_miou_counts_a_class_predicted_but_absent_from_the_target():
    pred, target = seg_batch()
    pred[0, 0, 1] = 2  # class 2 predicted on a class-0 pixel: IoU 0 and now present
    # class 0: 1/2 -> 1/2 (inter 1, union 2); class 1: inter 1, union 1; class 2: 0
    assert value(make_miou(task()), (pred, target)) == pytest.approx((0.5 + 1 + 0) / 3)


def test_miou_from_logits_and_without_ignore_index():
    pred, target = seg_batch()
    logits = torch.nn.functional.one_hot(pred, 3).permute(0, 3, 1, 2).float() * 5
    assert value(make_miou(task()), (logits, target)) == pytest.approx(0.5)
    # no ignore index: 255 is out of range and still not counted
    assert value(make_miou(task(ignore_index=None)), (pred, target)) == pytest.approx(0.5)


def test_per_class_iou_by_hand_names_and_nan_for_absent_classes():
    named = TaskInfo(
        "semseg", "segmentation", "semseg", 3, TargetInfo("segmentation", 3, ("road", "car", "sky"), 255)
    )
    metric = make_iou_per_class(named)
    assert metric.key == "iou" and metric.class_names == ("road", "car", "sky") and metric.higher_is_better
    # class 0: inter 1 union 2; class 1: inter 1 union 2; class 2: predicted only on void -> 0/0
    road, car, sky = value(metric, seg_batch())
    assert (road, car) == pytest.approx((0.5, 0.5)) and sky != sky  # NaN
    # mIoU is the mean of the per-class values that are defined
    assert value(make_miou(task()), seg_batch()) == pytest.approx((road + car) / 2)
    pred, target = seg_batch()
    pred[0, 0, 1] = 2  # now predicted on a class-0 pixel: IoU 0, defined
    assert value(metric, (pred, target)) == pytest.approx([0.5, 1.0, 0.0])
    assert make_iou_per_class(task()).class_names == ("0", "1", "2")  # no names: the indices


def test_per_class_iou_is_exact_over_batches():
    metric = make_iou_per_class(task())
    a = (torch.zeros(1, 2, 2, dtype=torch.long), torch.zeros(1, 2, 2, dtype=torch.long))
    b = (torch.tensor([[[0, 1], [1, 1]]]), torch.tensor([[[1, 1], [255, 1]]]))
    # split: class 0 inter 4 union 5; class 1 inter 2 union 3; class 2 absent
    both = value(metric, a, b)
    assert both[:2] == pytest.approx([4 / 5, 2 / 3]) and both[2] != both[2]
    assert value(metric, (torch.cat([a[0], b[0]]), torch.cat([a[1], b[1]])))[:2] == pytest.approx(both[:2])


def test_segmentation_metrics_are_exact_over_batches():
    a = (torch.zeros(1, 2, 2, dtype=torch.long), torch.zeros(1, 2, 2, dtype=torch.long))  # all right
    b = (torch.zeros(1, 2, 2, dtype=torch.long), torch.tensor([[[1, 255], [255, 255]]]))  # 1 wrong pixel
    # split: class 0 inter 4 union 5; class 1 inter 0 union 1
    check_exact(make_miou(task()), a, b, (4 / 5 + 0) / 2)
    check_exact(make_pixel_acc(task()), a, b, 4 / 5)


# -- boundary -------------------------------------------------------------------------------
def edge(col: int, size: int = 8) -> torch.Tensor:
    """A boundary map [1,1,size,size] with a vertical edge at ``col``."""
    t = torch.zeros(1, 1, size, size)
    t[..., col] = 1.0
    return t


def logits(mask: torch.Tensor) -> torch.Tensor:
    return mask * 20 - 10


@pytest.mark.parametrize(
    "shift,tolerance,expected",
    [
        (0, 0, 1.0),
        (1, 0, 0.0),
        (1, 1, 1.0),
        (2, 1, 0.0),
        (2, 2, 1.0),
        (3, 2, 0.0),
    ],
)
def test_boundary_f1_tolerance_on_a_shifted_edge(shift, tolerance, expected):
    metric = make_boundary_f1(task("boundary", 0), BoundaryF1Options(tolerance=tolerance))
    assert value(metric, (logits(edge(3 + shift)), edge(3))) == pytest.approx(expected)


def test_boundary_f1_precision_recall_and_ignored_pixels():
    target, pred = edge(3), logits(edge(3) + edge(7))  # 8 matched + 8 spurious predicted pixels
    metric = make_boundary_f1(task("boundary", 0), BoundaryF1Options(tolerance=1))
    assert value(metric, (pred, target)) == pytest.approx(2 * 0.5 * 1 / 1.5)  # P = 1/2, R = 1
    target[..., 7] = 255.0  # the spurious column is unknown: not a prediction any more
    assert value(metric, (pred, target)) == pytest.approx(1.0)


def test_boundary_f1_threshold():
    pred = edge(3) * 0.5  # sigmoid(0.5) = 0.62 on the edge, 0.5 elsewhere
    default = make_boundary_f1(task("boundary", 0), BoundaryF1Options())
    assert value(default, (pred, edge(3))) == pytest.approx(1.0)
    strict = make_boundary_f1(task("boundary", 0), BoundaryF1Options(threshold=0.7))
    assert value(strict, (pred, edge(3))) == pytest.approx(0.0)


def test_boundary_f1_is_exact_over_batches():
    a = (logits(edge(3)), edge(3))  # perfect
    b = (logits(edge(3)), torch.zeros(1, 1, 8, 8))  # 8 spurious predictions, no true edge: F1 0
    check_exact(make_boundary_f1(task("boundary", 0), BoundaryF1Options()), a, b, 2 * 0.5 / 1.5)


def test_boundary_f1_options_are_checked(plugin_zoo):
    t, path = task("boundary", 0), "tasks.boundary.metrics[0]"
    assert (
        config_error(plugin_zoo, {"name": "boundary_f1", "tolerance": -1}, t, path)
        == "tasks.boundary.metrics[0].tolerance: must be >= 0 and <= 256, got -1"
    )
    assert (
        config_error(plugin_zoo, {"name": "boundary_f1", "threshold": 1.5}, t, path)
        == "tasks.boundary.metrics[0].threshold: must be > 0 and < 1, got 1.5"
    )
    assert (
        config_error(plugin_zoo, {"name": "boundary_f1", "threshold": 0}, t, path)
        == "tasks.boundary.metrics[0].threshold: must be > 0 and < 1, got 0"
    )
    node = {"name": "boundary_f1", "tolerance": 0, "threshold": 0.7}
    metric = plugin_zoo.make("metric", node, t, path=path)
    assert (metric.tolerance, metric.threshold) == (0, pytest.approx(0.7))


# -- depth ----------------------------------------------------------------------------------
def test_depth_errors_over_valid_pixels():
    pred = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    target = torch.tensor([[[[2.0, 0.0], [1.0, float("nan")]]]])
    assert value(make_depth_abs_err(task("depth", 0)), (pred, target)) == pytest.approx((1 + 2) / 2)
    assert value(make_depth_rel_err(task("depth", 0)), (pred, target)) == pytest.approx((1 / 2 + 2 / 1) / 2)
    # the two valid pixels err by 1 and 2: sqrt((1 + 4) / 2)
    assert value(make_depth_rmse(task("depth", 0)), (pred, target)) == pytest.approx(2.5**0.5)


def test_depth_log10_by_hand_with_clamped_predictions():
    pred = torch.tensor([[[[10.0, 1.0], [100.0, 0.0]]]])
    target = torch.tensor([[[[1.0, 10.0], [100.0, 10.0]]]])
    # |1 - 0|, |0 - 1|, |2 - 2|, |log10(1e-3) - 1| = 4 (the 0 prediction is raised to min_depth)
    log10 = make_depth_log10(task("depth", 0), DepthLogOptions())
    assert log10.key == "log10" and log10.higher_is_better is False
    assert value(log10, (pred, target)) == pytest.approx((1 + 1 + 0 + 4) / 4)
    assert value(make_depth_log10(task("depth", 0), DepthLogOptions(min_depth=0.1)), (pred, target)) == (
        pytest.approx((1 + 1 + 0 + 2) / 4)
    )


@pytest.mark.parametrize("power,expected", [(1, 1 / 4), (2, 2 / 4), (3, 3 / 4)])
def test_depth_delta_thresholds_by_hand(power, expected):
    # ratios max(p/g, g/p): 1.2, 1.3, 1.9, 2.0 (0.5 vs 1) and an invalid pixel (gt 0);
    # thresholds 1.25, 1.5625, 1.953125
    pred = torch.tensor([[[[1.2, 1.3, 1.9, 0.5, 3.0]]]])
    target = torch.tensor([[[[1.0, 1.0, 1.0, 1.0, 0.0]]]])
    metric = make_depth_delta(task("depth", 0), DepthDeltaOptions(power=power))
    assert metric.key == f"delta{power}" and metric.higher_is_better is True
    assert value(metric, (pred, target)) == pytest.approx(expected)


def test_depth_delta_power_is_checked(plugin_zoo):
    msg = config_error(
        plugin_zoo, {"name": "depth_delta", "power": 4}, task("depth", 0), "tasks.d.metrics[2]"
    )
    assert msg.startswith("tasks.d.metrics[2].power:") and "4" in msg


def test_depth_errors_are_exact_over_batches():
    a = (torch.tensor([[[[3.0, 9.0]]]]), torch.tensor([[[[2.0, 0.0]]]]))  # 1 valid pixel, error 1 (rel 1/2)
    b = (torch.full((1, 1, 1, 2), 4.0), torch.ones(1, 1, 1, 2))  # 2 valid pixels, error 3 (rel 3)
    check_exact(make_depth_abs_err(task("depth", 0)), a, b, (1 + 6) / 3)
    check_exact(make_depth_rel_err(task("depth", 0)), a, b, (0.5 + 6) / 3)
    check_exact(make_depth_rmse(task("depth", 0)), a, b, ((1 + 9 + 9) / 3) ** 0.5)
    c = (torch.tensor([[[[1.1, 2.0]]]]), torch.ones(1, 1, 1, 2))  # delta1: 1 of 2 (ratios 1.1, 2)
    d = (torch.full((1, 1, 1, 4), 3.0), torch.ones(1, 1, 1, 4))  # delta1: 0 of 4
    check_exact(make_depth_delta(task("depth", 0), DepthDeltaOptions()), c, d, 1 / 6, dim=-1)
    e = (torch.tensor([[[[10.0]]]]), torch.ones(1, 1, 1, 1))  # log10 error 1
    f = (torch.ones(1, 1, 1, 2), torch.ones(1, 1, 1, 2))  # log10 error 0, twice
    check_exact(make_depth_log10(task("depth", 0), DepthLogOptions()), e, f, 1 / 3, dim=-1)


# -- normals --------------------------------------------------------------------------------
def normals_at(angles_deg: list[float], invalid: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Predictions at known angles from a +z target, plus ``invalid`` pixels with no normal."""
    a = torch.deg2rad(torch.tensor(angles_deg, dtype=torch.float64))
    pred = torch.stack([torch.sin(a), torch.zeros_like(a), torch.cos(a)]).float()
    target = torch.zeros_like(pred)
    target[2] = 1.0
    pred = torch.cat([pred, torch.ones(3, invalid)], 1)
    target = torch.cat([target, torch.zeros(3, invalid)], 1)
    return pred.reshape(1, 3, 1, -1), target.reshape(1, 3, 1, -1)


def test_normal_angle_metrics_on_known_angles():
    batch = normals_at([0, 10, 20, 40, 90], invalid=2)
    t = task("normals", 0)
    assert value(make_normal_mean_angle(t), batch) == pytest.approx(32.0, abs=1e-4)
    assert value(make_normal_median_angle(t), batch) == pytest.approx(20.0, abs=1e-4)
    assert value(make_normal_within(t, NormalWithinOptions()), batch) == pytest.approx(40.0)
    assert value(make_normal_within(t, NormalWithinOptions(threshold=22.5)), batch) == pytest.approx(60.0)
    assert value(make_normal_within(t, NormalWithinOptions(threshold=30)), batch) == pytest.approx(60.0)
    assert value(make_normal_within(t, NormalWithinOptions(threshold=90.5)), batch) == pytest.approx(100.0)


def test_normal_median_even_count_and_prediction_scale():
    pred, target = normals_at([10, 20, 40, 90])
    median = make_normal_median_angle(task("normals", 0))
    assert value(median, (pred * 3, target)) == pytest.approx(30.0, abs=1e-4)


def test_normal_small_angles_are_accurate():
    # acos(cos(0.01 deg)) in float32 is off by ~0.02 deg; atan2 is not
    assert value(NormalMeanAngle(), normals_at([0.01])) == pytest.approx(0.01, rel=1e-3)


def test_normal_metrics_are_exact_over_batches():
    a, b = normals_at([1, 2, 3]), normals_at([100])
    t = task("normals", 0)
    check_exact(make_normal_median_angle(t), a, b, 2.5, dim=-1)  # median of 1, 2, 3, 100
    check_exact(make_normal_mean_angle(t), a, b, 106 / 4, dim=-1)
    check_exact(make_normal_within(t, NormalWithinOptions(threshold=2.5)), a, b, 50.0, dim=-1)


def test_normal_within_key_and_threshold_check(plugin_zoo):
    t, path = task("normals", 0), "tasks.normals.metrics[2]"
    for threshold, key in ((22.5, "within_22.5"), (30, "within_30"), (11.25, "within_11.25")):
        metric = plugin_zoo.make("metric", {"name": "normal_within", "threshold": threshold}, t, path=path)
        assert metric.key == key
    assert make_normal_within(t, NormalWithinOptions(threshold=30.0)).key == "within_30"
    assert (
        config_error(plugin_zoo, {"name": "normal_within", "threshold": 0}, t, path)
        == "tasks.normals.metrics[2].threshold: must be > 0 and <= 180, got 0"
    )
    assert (
        config_error(plugin_zoo, {"name": "normal_within", "threshold": 200}, t, path)
        == "tasks.normals.metrics[2].threshold: must be > 0 and <= 180, got 200"
    )
    assert (
        config_error(plugin_zoo, {"name": "normal_within", "threshold": float("inf")}, t, path)
        == "tasks.normals.metrics[2].threshold: must be a finite number, got inf"
    )


# -- accuracy -------------------------------------------------------------------------------
def test_accuracy_single_label_top1_with_ignore():
    pred = torch.tensor([[2.0, 1.0], [0.0, 3.0], [1.0, 0.0]])
    top1 = make_accuracy(task("class", 2, None), AccuracyOptions())
    assert value(top1, (pred, torch.tensor([0, 0, 1]))) == pytest.approx(1 / 3)
    with_ignore = make_accuracy(task("class", 2, -1), AccuracyOptions())
    assert value(with_ignore, (pred, torch.tensor([0, -1, -1]))) == pytest.approx(1.0)


def test_accuracy_multilabel_exact_or_per_label(plugin_zoo):
    pred = torch.tensor([[1.0, -1.0], [1.0, 1.0]])
    target = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    t, path = task("labels", 2, None), "tasks.labels.metrics[1]"
    exact = plugin_zoo.make("metric", "accuracy", t, path=path)
    per_label = plugin_zoo.make("metric", {"name": "accuracy", "multilabel": "per_label"}, t, path=path)
    assert (exact.key, per_label.key) == ("accuracy", "label_accuracy")
    assert value(exact, (pred, target)) == pytest.approx(1 / 2)
    assert value(per_label, (pred, target)) == pytest.approx(3 / 4)
    direct = make_accuracy(t, AccuracyOptions(multilabel="per_label"))
    assert value(direct, (pred, target)) == pytest.approx(3 / 4)
    assert (
        config_error(plugin_zoo, {"name": "accuracy", "multilabel": "any"}, t, path)
        == "tasks.labels.metrics[1].multilabel: 'any' is not one of 'exact', 'per_label'"
    )


def test_accuracy_is_exact_over_batches():
    a = (torch.tensor([[1.0, 0.0]]), torch.tensor([0]))  # 1 of 1
    b = (torch.tensor([[1.0, 0.0]] * 3), torch.tensor([1, 1, 1]))  # 0 of 3
    check_exact(make_accuracy(task("class", 2, None), AccuracyOptions()), a, b, 1 / 4)


# -- mAP ------------------------------------------------------------------------------------
def map_batch():
    scores = torch.tensor([[0.9, 0.8, 0.0], [0.8, 0.4, 0.0], [0.7, 0.35, 0.0], [0.6, 0.1, 0.0]])
    target = torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    return scores, target


def test_average_precision_by_hand():
    # ranks 1..4 hold labels 1,0,1,0: AP = 1 * 1/2 + 2/3 * 1/2
    assert float(
        average_precision(torch.tensor([0.9, 0.8, 0.7, 0.6]), torch.tensor([1, 0, 1, 0]))
    ) == pytest.approx(5 / 6)
    # tied scores form one threshold (scikit-learn): precision 1/2 at recall 1
    assert float(average_precision(torch.tensor([0.5, 0.5]), torch.tensor([1, 0]))) == pytest.approx(0.5)
    # raw logits: a sigmoid would tie these saturated scores
    assert float(average_precision(torch.tensor([40.0, 30.0]), torch.tensor([1, 0]))) == pytest.approx(1.0)


def test_map_macro_over_classes_with_a_positive():
    # class 0: 5/6; class 1: labels 1,0,0,1 in score order -> 1 * 1/2 + 2/4 * 1/2 = 3/4;
    # class 2 has no positive and is left out
    assert value(make_map(task("labels", 3, None)), map_batch()) == pytest.approx((5 / 6 + 3 / 4) / 2)


def test_map_is_exact_over_batches():
    scores, target = map_batch()
    check_exact(
        make_map(task("labels", 3, None)),
        (scores[:2], target[:2]),
        (scores[2:], target[2:]),
        (5 / 6 + 3 / 4) / 2,
    )


# -- distributed sync and devices -----------------------------------------------------------
def _rand_depth():
    return torch.rand(2, 1, 4, 4) + 0.5, torch.rand(2, 1, 4, 4)


# name -> (task, batch of rank 0, batch of rank 1 (different data), options)
ALL_CASES = {
    "miou": (task(), seg_batch, lambda: (torch.zeros(1, 2, 2, dtype=torch.long),) * 2, {}),
    "pixel_acc": (task(), seg_batch, lambda: (torch.zeros(1, 2, 2, dtype=torch.long),) * 2, {}),
    "boundary_f1": (
        task("boundary", 0),
        lambda: (logits(edge(2) + edge(6)), edge(3)),
        lambda: (logits(edge(3)), edge(3)),
        {"tolerance": 1},
    ),
    "iou_per_class": (
        task(),
        lambda: (torch.tensor([[[0, 1], [1, 2]]]), torch.tensor([[[0, 0], [1, 2]]])),
        lambda: (torch.tensor([[[2, 2], [1, 0]]]), torch.tensor([[[2, 1], [1, 0]]])),
        {},
    ),
    "depth_abs_err": (task("depth", 0), _rand_depth, _rand_depth, {}),
    "depth_rel_err": (task("depth", 0), _rand_depth, _rand_depth, {}),
    "depth_rmse": (task("depth", 0), _rand_depth, _rand_depth, {}),
    "depth_log10": (task("depth", 0), _rand_depth, _rand_depth, {}),
    "depth_delta": (task("depth", 0), _rand_depth, _rand_depth, {"power": 1}),
    "normal_mean_angle": (
        task("normals", 0),
        lambda: normals_at([3, 10, 50], 1),
        lambda: normals_at([80, 85]),
        {},
    ),
    "normal_median_angle": (
        task("normals", 0),
        lambda: normals_at([3, 10, 50, 60], 1),
        lambda: normals_at([80, 85]),
        {},
    ),
    "normal_within": (
        task("normals", 0),
        lambda: normals_at([3, 10, 50], 1),
        lambda: normals_at([80, 5]),
        {"threshold": 30.0},
    ),
    "accuracy": (
        task("class", 2, None),
        lambda: (torch.randn(3, 2), torch.randint(0, 2, (3,))),
        lambda: (torch.tensor([[1.0, 0.0]] * 2), torch.tensor([1, 1])),
        {},
    ),
    "map": (
        task("labels", 3, None),
        lambda: (torch.randn(4, 3), (torch.rand(4, 3) > 0.5).float()),
        lambda: (torch.randn(5, 3), (torch.rand(5, 3) > 0.5).float()),
        {},
    ),
}


def make(zoo, name):
    """The metric of ``ALL_CASES[name]``, built through the zoo, and its two batches."""
    t, batch0, batch1, opts = ALL_CASES[name]
    return zoo.make("metric", {"name": name, **opts}, t, path=f"tasks.{t.kind}.metrics[0]"), batch0, batch1


@pytest.mark.parametrize("name", NAMES)
def test_distributed_sync_equals_one_process_on_all_data(plugin_zoo, name):
    """Two 'ranks' synced through torchmetrics' own reduction path give the single-process value."""
    torch.manual_seed(0)
    rank0, batch0, batch1 = make(plugin_zoo, name)
    rank1, single, alone = (make(plugin_zoo, name)[0] for _ in range(3))
    b0, b1 = batch0(), batch1()
    rank0.update(*b0)
    rank1.update(*b1)
    rank1.update(*b1)  # ranks may see different amounts of data
    for b in (b0, b1, b1):
        single.update(*b)
    other = {}
    for attr in rank1._reductions:
        v = getattr(rank1, attr)
        other[attr] = torch.cat(v) if isinstance(v, list) else v
    queue = iter(other.values())

    def gather(tensor, group=None):  # what all_gather returns on rank 0 of 2
        return [tensor, next(queue)]

    rank0.dist_sync_fn = gather
    rank0.distributed_available_fn = lambda: True
    expected = as_number(single.compute())
    assert as_number(rank0.compute()) == pytest.approx(expected, abs=1e-5)
    assert value(alone, b0) != pytest.approx(expected, abs=1e-4)  # rank 0's data alone differs


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", NAMES)
def test_metrics_run_on_cuda(plugin_zoo, name):
    torch.manual_seed(0)
    metric, batch, _ = make(plugin_zoo, name)
    pred, target = batch()
    expected = value(metric, (pred, target))
    metric = metric.to("cuda")
    assert value(metric, (pred.cuda(), target.cuda())) == pytest.approx(expected, abs=1e-5)
