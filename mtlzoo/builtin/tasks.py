"""Built-in task types: the defaults behind ``{type: segmentation}`` and friends.

==============  ==========  ==============  ============  ===  =============================================
type            target key  head            loss          out  metrics (the first selects checkpoints)
==============  ==========  ==============  ============  ===  =============================================
segmentation    semseg      fcn             ce            C    miou, pixel_acc
boundary        boundary    boundary        weighted_bce  1    boundary_f1
depth           depth       dense           l1            1    depth_abs_err, depth_rel_err
normals         normals     normals         cosine        3    normal_mean_angle, normal_median_angle,
                                                               normal_within at 11.25, 22.5 and 30 degrees
labels          labels      classification  bce           C    map, accuracy
classification  class       classification  ce            C    accuracy
==============  ==========  ==============  ============  ===  =============================================

``out`` is the head's output channels; C is the target's number of classes.
``boundary`` and ``labels`` targets can be derived from a segmentation target
(``from: semseg``): a boundary map ``width`` pixels either side of every label change, the
multi-hot labels of the classes present (``labels`` options: ``classes``, a subset of the
source's classes by name, and ``min_fraction``, the share of an image's non-void pixels a class
must exceed to count as present). This module is torch-free (task types are data);
the derivations import torch when they run.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Optional

from ..contract.data import TargetInfo
from ..contract.errors import ConfigError
from ..contract.hooks import hookimpl
from ..contract.options import option
from ..contract.tasks import Derivation, TaskType


def _classes(type_name: str, minimum: int) -> Callable[[TargetInfo], int]:
    """Output channels = the target's number of classes, refusing fewer than ``minimum``."""

    def out_channels(info: TargetInfo) -> int:
        if info.num_classes < minimum:
            raise ConfigError(
                f"a {type_name!r} task needs a target with at least {minimum} classes, but the dataset's "
                f"{info.kind!r} target declares num_classes={info.num_classes}; fix the dataset's TargetInfo"
            )
        return info.num_classes

    return out_channels


def _fixed(channels: int) -> Callable[[TargetInfo], int]:
    """Output channels independent of the target."""
    return functools.partial(_constant, channels)


def _constant(channels: int, info: TargetInfo) -> int:
    return channels


def segmentation() -> TaskType:
    """Semantic segmentation: per-pixel classes, cross-entropy, mIoU."""
    return TaskType(
        name="segmentation",
        target_kinds=("segmentation",),
        target="semseg",
        head={"name": "fcn"},
        loss={"name": "ce"},
        metrics=[{"name": "miou"}, {"name": "pixel_acc"}],
        out_channels=_classes("segmentation", 2),
    )


def _boundary_map(mask: Any, width: int, ignore_index: int | None) -> Any:
    from .derive import boundary_from_mask

    return boundary_from_mask(mask, width, ignore_index)


def _present_labels(
    mask: Any,
    num_classes: int,
    ignore_index: int | None,
    min_fraction: float = 0.0,
    classes: tuple[int, ...] | None = None,
) -> Any:
    from .derive import labels_from_mask

    return labels_from_mask(mask, num_classes, ignore_index, min_fraction, classes)


@dataclass
class BoundaryTaskOptions:
    """Options of the ``boundary`` task type.

    Attributes:
        width: with ``from:``, a pixel is a boundary pixel when a pixel within ``width``
            (Chebyshev distance) has another label.
    """

    width: int = option(2, ge=1, le=256)


def boundary(options: BoundaryTaskOptions) -> TaskType:
    """Boundary detection: one logit per pixel, class-balanced BCE, boundary F1."""

    def derive(source: TargetInfo) -> Derivation:
        fn = functools.partial(_boundary_map, width=options.width, ignore_index=source.ignore_index)
        return Derivation(TargetInfo("boundary", ignore_index=source.ignore_index), fn)

    return TaskType(
        name="boundary",
        target_kinds=("boundary",),
        target="boundary",
        head={"name": "boundary"},
        loss={"name": "weighted_bce"},
        metrics=[{"name": "boundary_f1"}],
        out_channels=_fixed(1),
        derive=derive,
        derive_from=("segmentation",),
    )


def depth() -> TaskType:
    """Monocular depth: one value per pixel, L1 on valid pixels, absolute/relative error."""
    return TaskType(
        name="depth",
        target_kinds=("depth",),
        target="depth",
        head={"name": "dense"},
        loss={"name": "l1"},
        metrics=[{"name": "depth_abs_err"}, {"name": "depth_rel_err"}],
        out_channels=_fixed(1),
    )


def normals() -> TaskType:
    """Surface normals: a unit 3-vector per pixel, cosine loss, angular errors."""
    return TaskType(
        name="normals",
        target_kinds=("normals",),
        target="normals",
        head={"name": "normals"},
        loss={"name": "cosine"},
        metrics=[
            {"name": "normal_mean_angle"},
            {"name": "normal_median_angle"},
            {"name": "normal_within", "threshold": 11.25},
            {"name": "normal_within", "threshold": 22.5},
            {"name": "normal_within", "threshold": 30.0},
        ],
        out_channels=_fixed(3),
    )


@dataclass
class LabelsTaskOptions:
    """Options of the ``labels`` task type; they shape labels derived with ``from:``.

    Attributes:
        classes: names of the source's classes to recognise, in this order (``null``: all of
            them), e.g. the rarer classes of a dataset whose frequent ones are in every image.
        min_fraction: a class is present in an image when it covers more than this fraction
            of the image's non-void pixels (0: at least one pixel).
    """

    classes: Optional[list[str]] = None
    min_fraction: float = option(0.0, ge=0, lt=1)


def labels(options: LabelsTaskOptions | None = None) -> TaskType:
    """Multi-label image recognition: one logit per class, BCE, mean average precision."""
    options = options or LabelsTaskOptions()
    return TaskType(
        name="labels",
        target_kinds=("labels",),
        target="labels",
        head={"name": "classification"},
        loss={"name": "bce"},
        metrics=[{"name": "map"}, {"name": "accuracy"}],
        out_channels=_classes("labels", 1),
        derive=functools.partial(_derive_labels, options=options),
        derive_from=("segmentation",),
    )


def _derive_labels(source: TargetInfo, options: LabelsTaskOptions | None = None) -> Derivation:
    options = options or LabelsTaskOptions()
    names, picked = source.class_names, None
    if options.classes is not None:
        unknown = [c for c in options.classes if c not in source.class_names]
        if unknown or not options.classes:
            raise ConfigError(
                f"labels task: classes {unknown or '[]'} are not classes of its source target; "
                f"choose some of {list(source.class_names)}"
            )
        picked = tuple(source.class_names.index(c) for c in options.classes)
        names = tuple(options.classes)
    fn = functools.partial(
        _present_labels,
        num_classes=source.num_classes,
        ignore_index=source.ignore_index,
        min_fraction=options.min_fraction,
        classes=picked,
    )
    return Derivation(TargetInfo("labels", len(names) if picked else source.num_classes, names), fn)


def classification() -> TaskType:
    """Single-label image classification: softmax over classes, cross-entropy, accuracy."""
    return TaskType(
        name="classification",
        target_kinds=("class",),
        target="class",
        head={"name": "classification"},
        loss={"name": "ce"},
        metrics=[{"name": "accuracy"}],
        out_channels=_classes("classification", 2),
    )


@hookimpl
def register_tasks(register):
    """Register the built-in task types."""
    register("segmentation", segmentation, None, "Semantic segmentation (fcn head, ce, miou)")
    register(
        "boundary",
        boundary,
        BoundaryTaskOptions,
        "Boundary detection (boundary head, weighted_bce, boundary_f1)",
    )
    register("depth", depth, None, "Monocular depth (dense head, l1, abs/rel error)")
    register("normals", normals, None, "Surface normals (normals head, cosine, angular errors)")
    register(
        "labels",
        labels,
        LabelsTaskOptions,
        "Multi-label image recognition (classification head, bce, mAP)",
    )
    register(
        "classification",
        classification,
        None,
        "Single-label classification (classification head, ce, accuracy)",
    )
