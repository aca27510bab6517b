"""What a dataset tells the rest of mtlzoo about its samples.

A dataset plugin yields dicts ``{"image": FloatTensor[3,H,W], <target key>: Tensor}`` and
describes each target key with a :class:`TargetInfo` inside its :class:`DatasetInfo`.
Target tensors follow one convention per kind so that heads, losses and metrics can be
mixed freely:

==============  ==========================  ==================================================
kind            tensor                      meaning
==============  ==========================  ==================================================
segmentation    int64 ``[H,W]``             class index per pixel; ``ignore_index`` = void
boundary        float32 ``[1,H,W]``         1 on boundary pixels, 0 elsewhere, ``ignore_index``
                                            (as a float) where unknown
depth           float32 ``[1,H,W]``         depth per pixel; 0 (or less) = no measurement
normals         float32 ``[3,H,W]``         unit surface normal per pixel (x right, y down,
                                            z towards the camera); all-zero = no measurement
labels          float32 ``[C]``             multi-hot image-level labels (classes present)
class           int64 ``[]``                one class index per image
==============  ==========================  ==================================================
"""

from __future__ import annotations

from dataclasses import dataclass, field

TARGET_KINDS = ("segmentation", "boundary", "depth", "normals", "labels", "class")


@dataclass(frozen=True)
class TargetInfo:
    """Describes one target key of a dataset.

    Attributes:
        kind: one of :data:`TARGET_KINDS`.
        num_classes: number of evaluated classes (segmentation, labels, class); else 0.
        class_names: names of those classes, in index order.
        ignore_index: value marking pixels to ignore (segmentation/boundary), or None.
        class_weights: optional per-class loss weights (e.g. median frequency balancing).
    """

    kind: str
    num_classes: int = 0
    class_names: tuple[str, ...] = ()
    ignore_index: int | None = None
    class_weights: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if self.kind not in TARGET_KINDS:
            raise ValueError(f"unknown target kind {self.kind!r}; expected one of {TARGET_KINDS}")


@dataclass(frozen=True)
class DatasetInfo:
    """Describes a dataset: its name, every target key it yields and, optionally, the
    per-channel mean and std of its images (in [0, 1] units). The pipeline normalises with
    those statistics when the backbone starts from random weights, and with the statistics
    of the backbone's pretrained weights otherwise."""

    name: str
    targets: dict[str, TargetInfo] = field(default_factory=dict)
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
