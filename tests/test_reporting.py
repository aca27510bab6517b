"""The epoch line's time split and the data-bound hint."""

from __future__ import annotations

from mtlzoo.runtime.monitor import epoch_line, time_split
from mtlzoo.runtime.reporting import data_hint

RECORD = {
    "epoch": 3,
    "train": {"loss": {"semseg": 0.5}},
    "val": {"semseg": {"miou": 0.25, "iou/road": 0.5, "loss": 0.7}},
    "timing": {"data": 6.0, "compute": 10.0, "eval": 3.0, "write": 1.0, "total": 20.0},
}


def test_time_split_gives_each_part_its_share():
    assert time_split(RECORD["timing"]) == "0m20s (data 30% compute 50% eval 15% write 5%)"
    assert time_split({}) == "0m00s"


def test_the_epoch_line_shows_headline_metrics_the_split_and_a_hint():
    line = epoch_line(RECORD, 10, "val", 65.0, "raise train.num_workers (now 0)")
    assert line == (
        "epoch 3/10  loss semseg 0.500  val semseg.miou 0.2500  0m20s (data 30% compute 50% eval 15% write 5%; "
        "data-bound: raise train.num_workers (now 0))  eta 1m05s"
    )  # per-class details (iou/road) stay out of the line


def test_data_hint_names_what_to_raise_only_when_data_bound():
    assert data_hint(2.0, 8.0, 0, False, True) == ""  # 20% of the training time: not data-bound
    assert (
        data_hint(4.0, 6.0, 2, False, True)
        == "raise train.num_workers (now 2) or keep samples in memory (train.cache: on)"
    )
    assert data_hint(4.0, 6.0, 2, True, True) == "raise train.num_workers (now 2)"  # cached already
    assert data_hint(4.0, 6.0, 2, False, False) == "raise train.num_workers (now 2)"  # cannot be cached
