"""Built-in task types: their defaults, and that those defaults name real losses and metrics."""

from __future__ import annotations

import dataclasses

import pytest

from mtlzoo.builtin import tasks as T
from mtlzoo.data import TargetInfo
from mtlzoo.errors import ConfigError
from mtlzoo.plugins import PluginManager
from mtlzoo.tasks import TaskInfo, TaskType

EXPECTED = {
    # type: (target kinds, target key, head, loss, metric specs, out channels for a 5-class target)
    "segmentation": (("segmentation",), "semseg", "fcn", "ce", [{"name": "miou"}, {"name": "pixel_acc"}], 5),
    "boundary": (("boundary",), "boundary", "boundary", "weighted_bce", [{"name": "boundary_f1"}], 1),
    "depth": (("depth",), "depth", "dense", "l1", [{"name": "depth_abs_err"}, {"name": "depth_rel_err"}], 1),
    "normals": (("normals",), "normals", "normals", "cosine",
                [{"name": "normal_mean_angle"}, {"name": "normal_median_angle"},
                 {"name": "normal_within", "threshold": 11.25}, {"name": "normal_within", "threshold": 22.5},
                 {"name": "normal_within", "threshold": 30.0}], 3),
    "labels": (("labels",), "labels", "classification", "bce", [{"name": "map"}, {"name": "accuracy"}], 5),
    "classification": (("class",), "class", "classification", "ce", [{"name": "accuracy"}], 5),
}


@pytest.fixture(scope="module")
def registries():
    pm = PluginManager()
    pm.load_entry_points()
    return pm.registries


def test_hook_register_tasks():
    seen = {}

    def register(name, factory, schema=None, help=""):
        seen[name] = (factory, schema, help)

    T.register_tasks(register)
    assert sorted(seen) == sorted(EXPECTED)
    assert all(schema is None and help for _, schema, help in seen.values())


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_task_type_defaults(name, registries):
    entry = registries["task"].get(name)
    assert entry.plugin == "builtin_tasks"
    ttype = entry.factory()
    assert isinstance(ttype, TaskType) and ttype.name == name
    kinds, target, head, loss, metrics, channels = EXPECTED[name]
    assert ttype.target_kinds == kinds
    assert ttype.target == target
    assert ttype.head == {"name": head}
    assert ttype.loss == {"name": loss}
    assert ttype.metrics == metrics
    assert ttype.out_channels(TargetInfo(kinds[0], 5)) == channels
    # each call is a fresh value: a caller editing its dicts cannot change the defaults
    ttype.metrics.append({"name": "x"})
    assert entry.factory().metrics == metrics


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_default_loss_and_metrics_build_through_the_registries(name, registries):
    """The names a type refers to exist, their options fit the schema, and log keys are distinct."""
    ttype = registries["task"].get(name).factory()
    kind = ttype.target_kinds[0]
    info = TargetInfo(kind, 4 if kind in ("segmentation", "labels", "class") else 0,
                      ignore_index=255 if kind in ("segmentation", "boundary") else None)
    task = TaskInfo("t", name, ttype.target, ttype.out_channels(info), info)
    loss_entry = registries["loss"].get(ttype.loss["name"])
    assert loss_entry.factory(task) is not None
    keys = []
    for spec in ttype.metrics:
        spec = dict(spec)
        entry = registries["metric"].get(spec.pop("name"))
        fields = {f.name for f in dataclasses.fields(entry.schema)} if entry.schema else set()
        assert set(spec) <= fields
        metric = entry.factory(task, **spec)
        keys.append(metric.key)
    assert len(set(keys)) == len(keys)
    if name == "normals":
        assert keys[2:] == ["within_11.25", "within_22.5", "within_30"]


@pytest.mark.parametrize("name,classes", [("segmentation", 1), ("classification", 1), ("labels", 0)])
def test_class_tasks_refuse_targets_without_enough_classes(name, classes):
    ttype = getattr(T, name)()
    with pytest.raises(ConfigError, match="at least"):
        ttype.out_channels(TargetInfo(ttype.target_kinds[0], classes))


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_a_spec_naming_only_the_type_resolves_with_every_default(name, registries):
    from mtlzoo.config import resolve_task

    task = resolve_task("t", {"type": name}, registries)
    assert task["head"]["name"] == EXPECTED[name][2]
    assert task["target"] == EXPECTED[name][1]
    assert task["loss"]["name"] == EXPECTED[name][3]
    assert [m["name"] for m in task["metrics"]] == [m["name"] for m in EXPECTED[name][4]]
