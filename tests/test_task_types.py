"""Task types and target kinds: built-in defaults, derivations, task-type options in a spec,
and a plugin task type with its own target kind and derivation."""

from __future__ import annotations

import functools
from dataclasses import dataclass

import pytest
import torch

from mtlzoo import ConfigError, Derivation, TargetInfo, TargetKind, TaskInfo, TaskType, Zoo, hookimpl, option
from mtlzoo.builtin import targets as K
from mtlzoo.builtin import tasks as T
from mtlzoo.contract.data import DatasetInfo, sample_problems
from mtlzoo.zoo.spec import resolve_task

EXPECTED = {
    # type: (target kinds, target key, head, loss, metric specs, out channels for a 5-class target)
    "segmentation": (("segmentation",), "semseg", "fcn", "ce", [{"name": "miou"}, {"name": "pixel_acc"}], 5),
    "boundary": (("boundary",), "boundary", "boundary", "weighted_bce", [{"name": "boundary_f1"}], 1),
    "depth": (("depth",), "depth", "dense", "l1", [{"name": "depth_abs_err"}, {"name": "depth_rel_err"}], 1),
    "normals": (
        ("normals",),
        "normals",
        "normals",
        "cosine",
        [
            {"name": "normal_mean_angle"},
            {"name": "normal_median_angle"},
            {"name": "normal_within", "threshold": 11.25},
            {"name": "normal_within", "threshold": 22.5},
            {"name": "normal_within", "threshold": 30.0},
        ],
        3,
    ),
    "labels": (("labels",), "labels", "classification", "bce", [{"name": "map"}, {"name": "accuracy"}], 5),
    "classification": (("class",), "class", "classification", "ce", [{"name": "accuracy"}], 5),
}
KINDS = {
    "segmentation": ("int64", ("H", "W")),
    "boundary": ("float32", (1, "H", "W")),
    "depth": ("float32", (1, "H", "W")),
    "normals": ("float32", (3, "H", "W")),
    "labels": ("float32", ("C",)),
    "class": ("int64", ()),
}


def task_type(zoo, name, **options):
    entry = zoo.entry("task", name)
    return zoo.call(entry, options=entry.build_options(options, f"tasks.{name}"), path=f"tasks.{name}")


def test_hook_register_tasks(zoo):
    record = next(r for r in zoo.records if r.name == "builtin_tasks")
    assert sorted(record.registered["task"]) == sorted(EXPECTED)
    assert zoo.entry("task", "boundary").options is T.BoundaryTaskOptions
    assert zoo.entry("task", "labels").options is T.LabelsTaskOptions
    assert all(zoo.entry("task", n).options is None for n in EXPECTED if n not in ("boundary", "labels"))


def test_hook_register_target_kinds(zoo):
    record = next(r for r in zoo.records if r.name == "builtin_targets")
    assert sorted(record.registered["target_kind"]) == sorted(KINDS)
    for name, (dtype, shape) in KINDS.items():
        kind = zoo.target_kind(name)
        assert (kind.name, kind.dtype, kind.shape) == (name, dtype, shape)
        assert kind.dense == ("H" in shape)
    assert zoo.target_kind("segmentation").pad_value(TargetInfo("segmentation", 3, ignore_index=255)) == 255.0
    assert zoo.target_kind("depth").pad_value(TargetInfo("depth")) == 0.0


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_task_type_defaults(zoo, name):
    ttype = task_type(zoo, name)
    assert isinstance(ttype, TaskType) and ttype.name == name
    kinds, target, head, loss, metrics, channels = EXPECTED[name]
    assert (ttype.target_kinds, ttype.target, ttype.head, ttype.loss, ttype.metrics) == (
        kinds,
        target,
        {"name": head},
        {"name": loss},
        metrics,
    )
    assert ttype.out_channels(TargetInfo(kinds[0], 5)) == channels
    # each call is a fresh value: a caller editing its dicts cannot change the defaults
    ttype.metrics.append({"name": "x"})
    assert task_type(zoo, name).metrics == metrics


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_default_loss_and_metrics_build_and_accept_the_kind(zoo, name):
    ttype = task_type(zoo, name)
    kind = ttype.target_kinds[0]
    info = TargetInfo(
        kind,
        4 if kind in ("segmentation", "labels", "class") else 0,
        ignore_index=255 if kind in ("segmentation", "boundary") else None,
    )
    task = TaskInfo("t", name, ttype.target, ttype.out_channels(info), info)
    assert zoo.make("loss", ttype.loss, task, path="tasks.t.loss") is not None
    keys = [zoo.make("metric", m, task, path="tasks.t.metrics").key for m in ttype.metrics]
    assert len(set(keys)) == len(keys)
    if name == "normals":
        assert keys[2:] == ["within_11.25", "within_22.5", "within_30"]
    for part, node in [("head", ttype.head), ("loss", ttype.loss), *[("metric", m) for m in ttype.metrics]]:
        assert zoo.entry(part, node["name"]).accepts(zoo.target_kind(kind))


@pytest.mark.parametrize("name,classes", [("segmentation", 1), ("classification", 1), ("labels", 0)])
def test_class_tasks_refuse_targets_without_enough_classes(zoo, name, classes):
    ttype = task_type(zoo, name)
    with pytest.raises(ConfigError, match="at least"):
        ttype.out_channels(TargetInfo(ttype.target_kinds[0], classes))


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_a_spec_naming_only_the_type_resolves_with_every_default(zoo, name):
    task = resolve_task("t", {"type": name}, zoo.registries)
    assert task["head"]["name"] == EXPECTED[name][2] and task["target"] == EXPECTED[name][1]
    assert task["loss"]["name"] == EXPECTED[name][3]
    assert [m["name"] for m in task["metrics"]] == [m["name"] for m in EXPECTED[name][4]]
    assert task["from"] is None


def test_task_type_options_are_set_in_the_task_node_and_validated(zoo):
    task = resolve_task("edges", {"type": "boundary", "from": "semseg", "width": 3}, zoo.registries)
    assert task["width"] == 3 and task["from"] == "semseg"
    with pytest.raises(ConfigError, match=r"^tasks.edges.width: must be >= 1 and <= 256, got 0"):
        resolve_task("edges", {"type": "boundary", "width": 0}, zoo.registries)
    with pytest.raises(
        ConfigError,
        match=r"^tasks.edges.widht: unknown key of a 'boundary' task \(did you mean "
        r"'width'\?\); valid keys: type, target, from, primary, head, loss, metrics, width",
    ):
        resolve_task("edges", {"type": "boundary", "widht": 3}, zoo.registries)
    with pytest.raises(ConfigError, match=r"^tasks.d.width: unknown key of a 'depth' task"):
        resolve_task("d", {"type": "depth", "width": 3}, zoo.registries)
    with pytest.raises(ConfigError, match=r"^tasks.d.from: a 'depth' target cannot be derived"):
        resolve_task("d", {"type": "depth", "from": "semseg"}, zoo.registries)


def test_parts_that_do_not_accept_the_task_kind_are_refused_in_one_line(zoo):
    with pytest.raises(
        ConfigError,
        match=r"^tasks.d.metrics\[0\]: metric 'miou' works on segmentation targets, "
        r"but a 'depth' task learns depth",
    ):
        resolve_task("d", {"type": "depth", "metrics": [{"name": "miou"}]}, zoo.registries)
    with pytest.raises(ConfigError, match=r"^tasks.d.loss: loss 'ce' works on segmentation, class targets"):
        resolve_task("d", {"type": "depth", "loss": {"name": "ce"}}, zoo.registries)
    with pytest.raises(
        ConfigError,
        match=r"^tasks.s.head: head 'classification' works on image targets, but a "
        r"'segmentation' task learns segmentation",
    ):
        resolve_task("s", {"type": "segmentation", "head": {"name": "classification"}}, zoo.registries)


def test_builtin_derivations_compute_boundaries_and_labels_from_a_mask(zoo):
    mask = torch.tensor([[0, 0, 1], [0, 0, 1], [2, 2, 255]])
    source = TargetInfo("segmentation", 3, ("a", "b", "c"), 255)
    boundary = task_type(zoo, "boundary", width=1).derive(source)
    assert boundary.info == TargetInfo("boundary", ignore_index=255)
    edge = boundary.fn(mask)
    assert edge.shape == (1, 3, 3) and edge[0, 0, 0] == 0 and edge[0, 0, 1] == 1
    labels = task_type(zoo, "labels").derive(source)
    assert labels.info == TargetInfo("labels", 3, ("a", "b", "c"))
    assert labels.fn(mask).tolist() == [1.0, 1.0, 1.0]
    assert labels.fn(torch.zeros(2, 2, dtype=torch.long)).tolist() == [1.0, 0.0, 0.0]


def test_labels_of_chosen_classes_above_an_area_threshold(zoo):
    # 8 non-void pixels: a covers 5, b 2, c 1
    mask = torch.tensor([[0, 0, 0, 1], [0, 0, 1, 2], [255, 255, 255, 255]])
    source = TargetInfo("segmentation", 3, ("a", "b", "c"), 255)
    rare = task_type(zoo, "labels", classes=["c", "b"], min_fraction=0.2).derive(source)
    assert rare.info == TargetInfo("labels", 2, ("c", "b"))
    assert rare.fn(mask).tolist() == [0.0, 1.0]  # c: 1/8 <= 0.2; b: 2/8 > 0.2
    assert task_type(zoo, "labels", min_fraction=0.25).derive(source).fn(mask).tolist() == [1.0, 0.0, 0.0]
    assert task_type(zoo, "labels", classes=["c"]).derive(source).fn(mask).tolist() == [1.0]
    with pytest.raises(ConfigError, match=r"classes \['sky'\] are not classes of its source target"):
        task_type(zoo, "labels", classes=["sky"]).derive(source)
    with pytest.raises(ConfigError, match=r"^tasks.labels.min_fraction: must be >= 0 and < 1, got 1"):
        task_type(zoo, "labels", min_fraction=1)


@pytest.mark.parametrize("name", sorted(KINDS))
def test_builtin_kind_examples_pass_their_own_checks(zoo, name):
    kind = zoo.target_kind(name)
    info = TargetInfo(name, 4, ("a", "b", "c", "d"), 255 if kind.pad == "ignore" else None)
    value = kind.example(info, 5, 7, torch.Generator().manual_seed(0))
    sample = {"image": torch.rand(3, 5, 7), "t": value}
    assert sample_problems(sample, DatasetInfo("x", {"t": info}), {name: kind}, "s") == []


@pytest.mark.parametrize(
    "name,bad,message",
    [
        ("segmentation", torch.tensor([[0, 7]]), "values 7 are not class indices (0..3 or 255)"),
        ("boundary", torch.tensor([[[0.0, 0.5]]]), "values 0.5 are not 0 or 1 (or 255)"),
        ("depth", torch.tensor([[[1.0, float("nan")]]]), "1 NaN or infinite depth values"),
        ("normals", torch.tensor([[[0.5]], [[0.0]], [[0.0]]]), "neither unit length nor zero"),
        ("labels", torch.tensor([0.0, 2.0, 1.0, 0.0]), "values 2 are not 0 or 1"),
        ("class", torch.tensor(9), "values 9 are not class indices"),
    ],
)
def test_builtin_kind_checks_name_the_bad_values(zoo, name, bad, message):
    info = TargetInfo(name, 4, ("a", "b", "c", "d"), 255 if name in ("segmentation", "boundary") else None)
    assert message in zoo.target_kind(name).check(bad, info)


def test_kind_value_changes_under_flip_and_zoom():
    n = torch.tensor([[[0.6]], [[0.0]], [[0.8]]])
    assert K.negate_x(n).flatten().tolist() == pytest.approx([-0.6, 0.0, 0.8])
    assert K.divide_by_scale(torch.tensor([[[4.0]]]), 2.0).item() == 2.0


# -- an open task type: a plugin adds a kind, a type deriving it from a mask, and uses it -------------
def _salient(mask, ignore_index):
    return ((mask != 0) & (mask != ignore_index)).float()[None]


@dataclass
class SalOptions:
    threshold: float = option(0.5, gt=0, lt=1)


class SalL1(torch.nn.Module):
    def __init__(self, task):
        super().__init__()

    def forward(self, pred, target):
        return (torch.sigmoid(pred) - target).abs().mean()


def sal_mae(task):
    import torchmetrics

    metric = torchmetrics.MeanAbsoluteError()
    metric.key = "mae"
    return metric


class SaliencyPlugin:
    @hookimpl
    def register_target_kinds(self, register):
        register(
            "saliency",
            lambda: TargetKind(
                "saliency", (1, "H", "W"), "float32", example=lambda info, h, w, g: torch.zeros(1, h, w)
            ),
        )

    @hookimpl
    def register_tasks(self, register):
        def saliency(options):
            def derive(source):
                return Derivation(
                    TargetInfo("saliency"), functools.partial(_salient, ignore_index=source.ignore_index)
                )

            return TaskType(
                "saliency",
                ("saliency",),
                "saliency",
                {"name": "fcn"},
                {"name": "sal_l1"},
                [{"name": "sal_mae"}],
                out_channels=lambda info: 1,
                derive=derive,
                derive_from=("segmentation",),
            )

        register("saliency", saliency, SalOptions, "saliency from a mask")

    @hookimpl
    def register_losses(self, register):
        register("sal_l1", SalL1, None, "", targets=("saliency",))

    @hookimpl
    def register_metrics(self, register):
        register("sal_mae", sal_mae, None, "", targets=("saliency",))


def test_a_plugin_task_type_derived_from_a_mask_builds_and_trains(tmp_path, spec_factory):
    from mtlzoo.runtime.train import Trainer

    zoo = Zoo.load(plugins=[("saliency_plugin", SaliencyPlugin())], strict=True)
    spec = spec_factory(
        **{
            "tasks": {
                "semseg": {"type": "segmentation"},
                "sal": {"type": "saliency", "from": "semseg", "threshold": 0.25},
            },
            "train.out_dir": str(tmp_path),
        }
    )
    cfg = zoo.spec(spec)
    assert cfg.tasks.sal.threshold == 0.25 and cfg.tasks.sal["from"] == "semseg"
    exp = zoo.build(cfg)
    sample = exp.dataset("train")[0]
    sal = sample["saliency"]  # the task type's default target key
    assert sal.shape == (1, 32, 32) and set(sal.unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(sal[0], ((sample["semseg"] != 0) & (sample["semseg"] != 255)).float())
    assert exp.info.targets["saliency"] == TargetInfo("saliency")
    summary = Trainer(exp, None).fit()
    assert set(summary["final"]["sal"]) == {"mae", "loss"}
