"""Built-in losses against hand-computed values on tiny tensors, and their registration."""

from __future__ import annotations

import math

import pytest
import torch

import mtlzoo.builtin.losses as plugin
from mtlzoo import Zoo
from mtlzoo.builtin.losses import BCEOptions, CrossEntropyOptions, WeightedBCEOptions
from mtlzoo.builtin.losses import impl as L
from mtlzoo.contract.data import TargetInfo
from mtlzoo.contract.errors import ConfigError
from mtlzoo.contract.tasks import TaskInfo

LOG2, LOG3, LOG4 = math.log(2), math.log(3), math.log(4)
TARGETS = {
    "ce": ("segmentation", "class"),
    "weighted_bce": ("boundary",),
    "bce": ("labels",),
    "l1": ("depth",),
    "l2": ("depth",),
    "berhu": ("depth",),
    "cosine": ("normals",),
}
NAMES = list(TARGETS)
OPTIONS = {"ce": CrossEntropyOptions, "weighted_bce": WeightedBCEOptions, "bce": BCEOptions}


def task(
    kind="segmentation", num_classes=2, ignore_index=255, class_weights=None, out=None, name="t"
) -> TaskInfo:
    info = TargetInfo(kind, num_classes, ignore_index=ignore_index, class_weights=class_weights)
    return TaskInfo(name, kind, name, out if out is not None else max(num_classes, 1), info)


def leaf(data) -> torch.Tensor:
    return torch.tensor(data, dtype=torch.float32).requires_grad_(True)


def assert_close(value: torch.Tensor, expected: float) -> None:
    assert value.dim() == 0
    assert value.item() == pytest.approx(expected, rel=1e-5, abs=1e-6)


def has_grad(pred: torch.Tensor, loss: torch.Tensor) -> torch.Tensor:
    loss.backward()
    assert pred.grad is not None and torch.isfinite(pred.grad).all()
    return pred.grad


@pytest.fixture(scope="module")
def plugin_zoo() -> Zoo:
    """A zoo of this plugin only (other built-in packages may be mid-migration)."""
    return Zoo.load(entry_points=False, plugins=[("builtin_losses", plugin)], strict=True)


def config_error(zoo: Zoo, node, t: TaskInfo, path: str) -> str:
    with pytest.raises(ConfigError) as err:
        zoo.make("loss", node, t, path=path)
    return str(err.value)


# -- registration -------------------------------------------------------------------------
def test_hook_registers_every_loss_lazily_with_options_and_targets():
    seen = {}

    def register(name, factory, options=None, help="", *, targets=None):
        seen[name] = (factory, options, help, targets)

    plugin.register_losses(register)
    assert list(seen) == NAMES
    for name, (factory, options, help, targets) in seen.items():
        assert factory == f"mtlzoo.builtin.losses.impl:make_{name}"  # imported only when built
        assert options is OPTIONS.get(name)
        assert help
        assert targets == TARGETS[name]


def test_registered_entries_and_targets(plugin_zoo):
    for name in NAMES:
        entry = plugin_zoo.entry("loss", name)
        assert entry.plugin == "builtin_losses"
        assert entry.options is OPTIONS.get(name)
        assert entry.targets == TARGETS[name]
    assert plugin_zoo.problems == []


def default_case(name: str, kind: str):
    """Task, prediction, target and the hand-computed value with default options."""
    if kind == "segmentation":
        return task(), seg_logits(), torch.tensor([[[1, 0]]]), (math.log(4 / 3) + LOG2) / 2
    if kind == "class":
        return (
            task("class", ignore_index=None),
            leaf([[0.0, LOG3], [LOG3, 0.0]]),
            torch.tensor([1, 1]),
            (math.log(4 / 3) + LOG4) / 2,
        )
    if kind == "boundary":
        return (task("boundary", 0), *boundary_case(), (2 / 3 * LOG2 + 1 / 3 * LOG2 + 1 / 3 * LOG4) / 3)
    if kind == "labels":
        return task("labels", 2, None), leaf([[0.0, LOG3]]), torch.tensor([[1.0, 0.0]]), (LOG2 + LOG4) / 2
    if kind == "depth":
        return (task("depth", 0, None), *depth_case(), DEPTH_EXPECTED[name])
    return (task("normals", 0, None), *normals_case(), (0 + 1 + (1 - 1 / math.sqrt(2))) / 3)


@pytest.mark.parametrize("name,kind", [(n, k) for n, kinds in TARGETS.items() for k in kinds])
def test_every_loss_builds_through_the_zoo_with_its_defaults(plugin_zoo, name, kind):
    t, pred, target, expected = default_case(name, kind)
    loss = plugin_zoo.make("loss", {"name": name}, t, path=f"tasks.{kind}.loss")
    assert isinstance(loss, torch.nn.Module)
    value = loss(pred, target)
    assert_close(value, expected)
    has_grad(pred, value)


@pytest.mark.parametrize("name", ["l1", "l2", "berhu", "cosine"])
def test_losses_without_options_refuse_options(plugin_zoo, name):
    t = task("depth", 0, None)
    assert (
        config_error(plugin_zoo, {"name": name, "eps": 1.0}, t, "tasks.depth.loss")
        == f"tasks.depth.loss.eps: loss {name!r} takes no options; remove ['eps']"
    )


# -- ce -----------------------------------------------------------------------------------
def seg_logits():
    # pixel 0: logits (0, ln 3) -> p = (1/4, 3/4); pixel 1: logits (0, 0) -> p = (1/2, 1/2)
    return leaf([[[[0.0, 0.0]], [[LOG3, 0.0]]]])  # [1, 2, 1, 2]


def ce(t: TaskInfo, **options) -> L.CrossEntropyLoss:
    return L.make_ce(t, CrossEntropyOptions(**options))


def test_ce_segmentation_mean_over_pixels():
    pred = seg_logits()
    loss = ce(task())(pred, torch.tensor([[[1, 0]]]))
    assert_close(loss, (math.log(4 / 3) + LOG2) / 2)
    has_grad(pred, loss)


def test_ce_skips_ignored_pixels():
    pred = seg_logits()
    loss = ce(task())(pred, torch.tensor([[[1, 255]]]))
    assert_close(loss, math.log(4 / 3))
    grad = has_grad(pred, loss)
    assert torch.all(grad[..., 1] == 0)  # the void pixel gets no gradient


def test_ce_all_ignored_is_zero_with_grad():
    pred = seg_logits()
    loss = ce(task())(pred, torch.full((1, 1, 2), 255))
    assert_close(loss, 0.0)
    assert torch.all(has_grad(pred, loss) == 0)


def test_ce_dataset_class_weights_weighted_mean():
    pred = seg_logits()
    loss = ce(task(class_weights=(1.0, 3.0)), class_weights="dataset")(pred, torch.tensor([[[1, 0]]]))
    assert_close(loss, (3 * math.log(4 / 3) + LOG2) / 4)
    # unweighted by default even when the dataset offers weights
    assert_close(
        ce(task(class_weights=(1.0, 3.0)))(seg_logits(), torch.tensor([[[1, 0]]])),
        (math.log(4 / 3) + LOG2) / 2,
    )


def test_ce_label_smoothing():
    # 2 classes, eps 0.2: target distribution (0.1, 0.9)
    loss = ce(task(), label_smoothing=0.2)(seg_logits(), torch.tensor([[[1, 255]]]))
    assert_close(loss, -(0.1 * math.log(1 / 4) + 0.9 * math.log(3 / 4)))


def test_ce_options_through_the_zoo(plugin_zoo):
    loss = plugin_zoo.make(
        "loss",
        {"name": "ce", "class_weights": "dataset", "label_smoothing": 0.2},
        task(class_weights=(1.0, 3.0)),
        path="tasks.semseg.loss",
    )
    assert loss.label_smoothing == pytest.approx(0.2)
    assert loss.weight.tolist() == [1.0, 3.0]


def test_ce_single_label_class_targets():
    pred = leaf([[0.0, LOG3], [0.0, 0.0], [LOG3, 0.0]])  # [3, 2]
    loss = ce(task("class", ignore_index=None))(pred, torch.tensor([1, 0, 1]))
    assert_close(loss, (math.log(4 / 3) + LOG2 + LOG4) / 3)
    has_grad(pred, loss)


def test_ce_task_checks_in_the_factory():
    with pytest.raises(ConfigError, match="class weights"):
        ce(task(), class_weights="dataset")
    with pytest.raises(ConfigError, match="3 class weights for 2 classes"):
        ce(task(class_weights=(1.0, 2.0, 3.0)), class_weights="dataset")


def test_ce_option_errors_name_the_key_path(plugin_zoo):
    semseg = task(name="semseg")
    path = "tasks.semseg.loss"
    assert config_error(plugin_zoo, {"name": "ce", "class_weights": "dataset"}, semseg, path) == (
        "tasks.semseg.loss: loss 'ce' of task 'semseg': class_weights='dataset' but the dataset offers no "
        "class weights for target 'semseg'; use class_weights: none"
    )
    assert config_error(
        plugin_zoo,
        {"name": "ce", "class_weights": "dataset"},
        task(class_weights=(1.0, 2.0, 3.0), name="semseg"),
        path,
    ) == (
        "tasks.semseg.loss: loss 'ce' of task 'semseg': the dataset gives 3 class weights for 2 classes; "
        "use class_weights: none"
    )
    assert (
        config_error(plugin_zoo, {"name": "ce", "class_weights": "median"}, semseg, path)
        == "tasks.semseg.loss.class_weights: 'median' is not one of 'none', 'dataset'"
    )
    assert (
        config_error(plugin_zoo, {"name": "ce", "label_smoothing": 1.0}, semseg, path)
        == "tasks.semseg.loss.label_smoothing: must be >= 0 and < 1, got 1"
    )
    assert (
        config_error(plugin_zoo, {"name": "ce", "label_smoothing": 1.5}, semseg, path)
        == "tasks.semseg.loss.label_smoothing: must be >= 0 and < 1, got 1.5"
    )
    assert (
        config_error(plugin_zoo, {"name": "ce", "label_smoothing": float("nan")}, semseg, path)
        == "tasks.semseg.loss.label_smoothing: must be a finite number, got nan"
    )


def test_ce_shape_mismatch_is_reported():
    with pytest.raises(ValueError, match="target of shape"):
        ce(task())(seg_logits(), torch.zeros(1, 2, 2, dtype=torch.long))


# -- weighted_bce ---------------------------------------------------------------------------
def boundary_case():
    # targets [[1, 0], [0, void]]; logits [[0, 0], [ln 3, 5]]
    pred = leaf([[[[0.0, 0.0], [LOG3, 5.0]]]])
    target = torch.tensor([[[[1.0, 0.0], [0.0, 255.0]]]])
    return pred, target


def weighted_bce(t: TaskInfo, **options) -> L.WeightedBCELoss:
    return L.make_weighted_bce(t, WeightedBCEOptions(**options))


def test_weighted_bce_balanced_by_batch_fractions():
    pred, target = boundary_case()
    loss = weighted_bce(task("boundary", 0))(pred, target)
    # 1 positive, 2 negatives: beta = 2/3; bce = log2, log2, log4; / 3 valid pixels
    assert_close(loss, (2 / 3 * LOG2 + 1 / 3 * LOG2 + 1 / 3 * LOG4) / 3)
    grad = has_grad(pred, loss)
    assert grad[0, 0, 1, 1] == 0  # the unknown pixel is skipped


def test_weighted_bce_fixed_pos_weight():
    pred, target = boundary_case()
    loss = weighted_bce(task("boundary", 0), pos_weight=0.9)(pred, target)
    assert_close(loss, (0.9 * LOG2 + 0.1 * LOG2 + 0.1 * LOG4) / 3)


def test_weighted_bce_ignores_the_void_value_only():
    pred, target = boundary_case()
    other = pred.detach().clone()
    other[0, 0, 1, 1] = -40.0  # whatever is predicted on void pixels
    crit = weighted_bce(task("boundary", 0))
    assert_close(crit(other, target), crit(pred, target).item())
    # without an ignore index the 255 pixel would be a (positive) target and change the loss
    unmasked = L.WeightedBCELoss(None, None)(pred, target.clamp(0, 1))
    assert crit(pred, target).item() != pytest.approx(unmasked.item())


def test_weighted_bce_all_void_is_zero_with_grad():
    pred, _ = boundary_case()
    loss = weighted_bce(task("boundary", 0))(pred, torch.full((1, 1, 2, 2), 255.0))
    assert_close(loss, 0.0)
    has_grad(pred, loss)


def test_weighted_bce_option_range(plugin_zoo):
    t = task("boundary", 0)
    assert (
        config_error(plugin_zoo, {"name": "weighted_bce", "pos_weight": 10.0}, t, "tasks.boundary.loss")
        == "tasks.boundary.loss.pos_weight: must be >= 0 and <= 1, got 10"
    )
    loss = plugin_zoo.make("loss", {"name": "weighted_bce", "pos_weight": 0.9}, t, path="tasks.boundary.loss")
    assert loss.pos_weight == pytest.approx(0.9)


# -- bce ------------------------------------------------------------------------------------
def test_bce_multilabel_mean_and_pos_weight(plugin_zoo):
    pred = leaf([[0.0, LOG3]])
    target = torch.tensor([[1.0, 0.0]])
    loss = L.make_bce(task("labels", 2, None), BCEOptions())(pred, target)
    assert_close(loss, (LOG2 + LOG4) / 2)
    has_grad(pred, loss)
    assert_close(
        L.make_bce(task("labels", 2, None), BCEOptions(pos_weight=2.0))(pred, target), (2 * LOG2 + LOG4) / 2
    )
    assert (
        config_error(
            plugin_zoo, {"name": "bce", "pos_weight": 0.0}, task("labels", 2, None), "tasks.labels.loss"
        )
        == "tasks.labels.loss.pos_weight: must be > 0, got 0"
    )


# -- depth ----------------------------------------------------------------------------------
def depth_case():
    pred = leaf([[[[1.0, 2.0], [3.0, 4.0]]]])
    target = torch.tensor([[[[2.0, 0.0], [1.0, -1.0]]]])  # two valid pixels: errors -1 and 2
    return pred, target


DEPTH_EXPECTED = {
    "l1": (1 + 2) / 2,
    "l2": (1 + 4) / 2,
    # c = 0.2 * 2 = 0.4; both errors exceed c: (d^2 + c^2) / 2c
    "berhu": ((1 + 0.16) / 0.8 + (4 + 0.16) / 0.8) / 2,
}


@pytest.mark.parametrize("name,expected", list(DEPTH_EXPECTED.items()))
def test_depth_losses_mean_over_valid_pixels(name, expected):
    pred, target = depth_case()
    loss = getattr(L, f"make_{name}")(task("depth", 0, None))(pred, target)
    assert_close(loss, expected)
    grad = has_grad(pred, loss)
    assert grad[0, 0, 0, 1] == 0 and grad[0, 0, 1, 1] == 0  # invalid pixels


def test_berhu_is_l1_below_c():
    pred = leaf([[[[1.1, 2.0, 5.0]]]])
    target = torch.tensor([[[[1.0, 2.0, 3.0]]]])  # errors 0.1, 0, 2 -> c = 0.4
    loss = L.make_berhu(task("depth", 0, None))(pred, target)
    assert_close(loss, (0.1 + 0 + (4 + 0.16) / 0.8) / 3)


@pytest.mark.parametrize("name", ["l1", "l2", "berhu"])
def test_depth_losses_nan_target_and_no_valid_pixel(name):
    make = getattr(L, f"make_{name}")
    pred = leaf([[[[1.0, 2.0]]]])
    loss = make(task("depth", 0, None))(pred, torch.tensor([[[[float("nan"), 3.0]]]]))
    assert torch.isfinite(loss)
    pred = leaf([[[[1.0, 2.0]]]])
    loss = make(task("depth", 0, None))(pred, torch.zeros(1, 1, 1, 2))
    assert_close(loss, 0.0)
    assert torch.all(has_grad(pred, loss) == 0)


def test_depth_loss_accepts_target_without_channel_axis_and_rejects_other_sizes():
    pred, target = depth_case()
    assert_close(L.L1Loss()(pred, target[:, 0]), 1.5)
    with pytest.raises(ValueError, match="resolution"):
        L.L1Loss()(pred, torch.ones(1, 1, 4, 4))


# -- cosine ---------------------------------------------------------------------------------
def normals_case():
    # 4 pixels: same direction (pred scaled), orthogonal, no measurement, 45 degrees
    pred = torch.tensor([[0.0, 0.0, 2.0], [1.0, 0.0, 0.0], [5.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    target = torch.tensor([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    return pred.T.reshape(1, 3, 2, 2).clone().requires_grad_(True), target.T.reshape(1, 3, 2, 2)


def test_cosine_over_valid_normals():
    pred, target = normals_case()
    loss = L.make_cosine(task("normals", 0, None))(pred, target)
    assert_close(loss, (0 + 1 + (1 - 1 / math.sqrt(2))) / 3)
    grad = has_grad(pred, loss)
    assert torch.all(grad[0, :, 1, 0] == 0)  # the pixel with no measurement


def test_cosine_no_valid_pixel_is_zero():
    pred = torch.ones(1, 3, 2, 2, requires_grad=True)
    loss = L.CosineLoss()(pred, torch.zeros(1, 3, 2, 2))
    assert_close(loss, 0.0)
    has_grad(pred, loss)
