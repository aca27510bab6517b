"""mtlzoo-example's own tests: every part keeps mtlzoo's contracts (the conformance kit)."""

from mtlzoo.testing import check_plugin


def test_every_part_conforms(mtlzoo_conforms):
    report = mtlzoo_conforms("example")
    kinds = {r.part.split(" ")[0] for r in report.results}
    assert kinds == {
        "architecture",
        "backbone",
        "head",
        "loss",
        "metric",
        "combiner",
        "dataset",
        "task",
        "target_kind",
    }


def test_saliency_is_derived_from_a_mask(mtlzoo_zoo):
    import torch

    from mtlzoo import TargetInfo

    ttype = mtlzoo_zoo.call(
        mtlzoo_zoo.entry("task", "saliency"),
        options=mtlzoo_zoo.entry("task", "saliency").build_options({}, "t"),
        path="t",
    )
    derived = ttype.derive(TargetInfo("segmentation", 3, ("a", "b", "c"), 255))
    mask = torch.tensor([[0, 1], [2, 255]])
    assert derived.fn(mask).tolist() == [[[0.0, 1.0], [1.0, 0.0]]]
    assert check_plugin(mtlzoo_zoo, "example").ok
