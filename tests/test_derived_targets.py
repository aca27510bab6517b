"""A derived target never silently replaces a dataset target that another task reads."""

from __future__ import annotations

import pytest
import torch

from mtlzoo import ConfigError


def test_a_derived_target_shadowing_a_key_another_task_reads_is_refused(zoo, spec_factory):
    # `shapes` yields its own `boundary`; `edges` derives one from the mask under the boundary
    # type's default key `boundary`, which task `boundary` reads from the dataset
    tasks = {"semseg": {"type": "segmentation"}, "boundary": {"type": "boundary"}}
    tasks["edges"] = {"type": "boundary", "from": "semseg", "width": 3}
    with pytest.raises(ConfigError) as err:
        zoo.build(spec_factory(tasks=tasks))
    assert str(err.value) == (
        "tasks.edges: derives target 'boundary', but dataset 'shapes' yields 'boundary' too and task 'boundary' "
        "reads it (it would train on the derived values); give tasks.edges another `target` (e.g. target: edges)"
    )


def test_with_its_own_target_key_each_task_gets_its_own_values(zoo, spec_factory):
    tasks = {"semseg": {"type": "segmentation"}, "boundary": {"type": "boundary"}}
    tasks["edges"] = {"type": "boundary", "from": "semseg", "width": 3, "target": "edges"}
    exp = zoo.build(spec_factory(tasks=tasks))
    sample = exp.dataset("train")[0]
    raw = exp.dataset("train").base[0]
    assert exp.tasks["boundary"].target == "boundary" and exp.tasks["edges"].target == "edges"
    assert torch.equal(sample["boundary"], raw["boundary"])  # the dataset's own, untouched
    assert not torch.equal(sample["edges"], sample["boundary"])  # width 3: thicker than shapes' own
    assert sample["edges"].sum() > sample["boundary"].sum()


def test_a_derived_target_may_replace_a_dataset_key_no_task_reads(zoo, spec_factory):
    # the quickstart does this: shapes' own boundary is replaced by one derived at width 1
    tasks = {
        "semseg": {"type": "segmentation"},
        "boundary": {"type": "boundary", "from": "semseg", "width": 3},
    }
    exp = zoo.build(spec_factory(tasks=tasks))
    assert exp.tasks["boundary"].target == "boundary"
    assert exp.dataset("train")[0]["boundary"].sum() > exp.dataset("train").base[0]["boundary"].sum()


def test_a_derived_task_named_like_its_key_is_told_another_key(zoo, spec_factory):
    tasks = {
        "semseg": {"type": "segmentation"},
        "shapes_boundary": {"type": "boundary", "target": "boundary"},
    }
    tasks["boundary"] = {"type": "boundary", "from": "semseg"}
    with pytest.raises(
        ConfigError, match=r"^tasks.boundary: derives target 'boundary'.*task 'shapes_boundary' reads"
    ):
        zoo.build(spec_factory(tasks=tasks))
    with pytest.raises(
        ConfigError, match=r"give tasks.boundary another `target` \(e.g. target: boundary_derived\)$"
    ):
        zoo.build(spec_factory(tasks=tasks))
