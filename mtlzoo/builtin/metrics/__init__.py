"""Built-in metrics, exact over a whole split.

===================  ============  ===========================================================
name                 key           value
===================  ============  ===========================================================
miou                 miou          mean IoU over the classes present in target or prediction
pixel_acc            pixel_acc     fraction of non-void pixels labelled correctly
boundary_f1          boundary_f1   F1 of boundary pixels at a pixel tolerance
depth_abs_err        abs_err       mean ``|pred - gt|`` over valid depth pixels
depth_rel_err        rel_err       mean ``|pred - gt| / gt`` over valid depth pixels
depth_rmse           rmse          ``sqrt(mean (pred - gt)^2)`` over valid depth pixels
depth_log10          log10         mean ``|log10 pred - log10 gt|`` over valid depth pixels
depth_delta          delta<k>      fraction of valid pixels with ``max(pred/gt, gt/pred) < 1.25^k``
iou_per_class        iou           IoU of every class (a 1-D tensor: ``iou/<class>`` in results)
normal_mean_angle    mean_angle    mean angular error (degrees) over valid normal pixels
normal_median_angle  median_angle  exact median angular error (degrees)
normal_within        within_<t>    % of valid normal pixels with an error below ``t`` degrees
accuracy             accuracy      top-1 (class targets) or exact-match (multi-label) accuracy
map                  map           multi-label mean average precision (macro)
===================  ============  ===========================================================

Every metric is a :class:`torchmetrics.Metric` built by ``factory(task: TaskInfo, options)``
(``factory(task)`` for the metrics without options) with ``update(pred, target)`` (raw head
output, target as in :mod:`mtlzoo.contract.data`) and ``compute()`` returning one scalar
tensor, or a 1-D tensor of per-class values (``iou_per_class``: one value per class, named by
the metric's ``class_names``; the trainer reports them as ``<key>/<class name>``, details that
never select checkpoints or enter delta-m).

The depth task's defaults stay ``depth_abs_err`` and ``depth_rel_err``; the other depth metrics
are opt-in through a task's ``metrics:`` list, e.g. ``metrics: [{name: depth_abs_err}, {name:
depth_rmse}, {name: depth_delta, power: 1}]`` (a task's list replaces its type's defaults).

States are sums, a confusion matrix or concatenations, reduced with ``"sum"`` /
``"cat"`` across ranks, so a value never depends on the batch size or the number of ranks.
Each metric sets ``higher_is_better`` (the depth and angle errors are lower-is-better) and a
``key`` (its name in logs).

This module only declares options and registers the metrics; the metrics live in one module
per target family, imported (with torch and torchmetrics) when one of its metrics is first
built: :mod:`~mtlzoo.builtin.metrics.segmentation` (confusion-matrix metrics),
:mod:`~mtlzoo.builtin.metrics.boundary`, :mod:`~mtlzoo.builtin.metrics.depth`,
:mod:`~mtlzoo.builtin.metrics.normals` and :mod:`~mtlzoo.builtin.metrics.image_level`
(accuracy, mAP), on the base and helpers of :mod:`~mtlzoo.builtin.metrics.common`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ...contract.hooks import hookimpl
from ...contract.options import option

_PKG = "mtlzoo.builtin.metrics"


@dataclass
class BoundaryF1Options:
    """Options of ``boundary_f1``.

    Attributes:
        tolerance: a predicted (true) boundary pixel is matched when a true (predicted) one
            lies within this many pixels (Chebyshev distance); 0 asks for the exact pixel.
        threshold: a pixel is predicted as boundary when ``sigmoid(logit) > threshold``, a
            probability in (0, 1).
    """

    tolerance: int = option(2, ge=0, le=256, help="pixels (Chebyshev distance); 0 = the exact pixel")
    threshold: float = option(0.5, gt=0, lt=1, help="probability above which a pixel is a boundary")


@dataclass
class NormalWithinOptions:
    """Options of ``normal_within``.

    Attributes:
        threshold: angle in degrees, in (0, 180]; the metric is the percentage of valid
            pixels whose error is below it (logged as ``within_<threshold>``, e.g.
            ``within_11.25``).
    """

    threshold: float = option(11.25, gt=0, le=180, help="angle in degrees")


@dataclass
class DepthLogOptions:
    """Options of ``depth_log10``.

    Attributes:
        min_depth: predictions below it are raised to it before the logarithm (a depth head
            may output 0 or less; Eigen et al.'s NYUv2 evaluation clamps at 1e-3).
    """

    min_depth: float = option(1e-3, gt=0, help="predictions are clamped to at least this depth")


@dataclass
class DepthDeltaOptions:
    """Options of ``depth_delta``.

    Attributes:
        power: the threshold is ``1.25 ** power`` (1, 2 or 3: the literature's delta < 1.25,
            1.25^2 and 1.25^3); logged as ``delta<power>`` (``delta1``, ``delta2``, ``delta3``).
        min_depth: predictions below it are raised to it before the ratio.
    """

    power: int = option(1, ge=1, le=3, help="threshold 1.25**power")
    min_depth: float = option(1e-3, gt=0, help="predictions are clamped to at least this depth")


@dataclass
class AccuracyOptions:
    """Options of ``accuracy``.

    Attributes:
        multilabel: for multi-hot targets, ``"exact"`` counts an image right only when all its
            labels are right (subset accuracy, key ``accuracy``); ``"per_label"`` counts each
            (image, label) decision (key ``label_accuracy``). A label is predicted when
            ``sigmoid(logit) > 0.5``. Ignored for single-label class targets.
    """

    multilabel: Literal["exact", "per_label"] = "exact"


@hookimpl
def register_metrics(register):
    """Register the built-in metrics."""
    register(
        "miou",
        f"{_PKG}.segmentation:make_miou",
        None,
        "Mean IoU over classes present in target or prediction (void ignored)",
        targets=("segmentation",),
    )
    register(
        "iou_per_class",
        f"{_PKG}.segmentation:make_iou_per_class",
        None,
        "IoU of every class, one value per class (reported as iou/<class>)",
        targets=("segmentation",),
    )
    register(
        "pixel_acc",
        f"{_PKG}.segmentation:make_pixel_acc",
        None,
        "Pixel accuracy over non-void pixels",
        targets=("segmentation",),
    )
    register(
        "boundary_f1",
        f"{_PKG}.boundary:make_boundary_f1",
        BoundaryF1Options,
        "Boundary F1 at a pixel tolerance",
        targets=("boundary",),
    )
    register(
        "depth_abs_err",
        f"{_PKG}.depth:make_depth_abs_err",
        None,
        "Mean absolute depth error over valid pixels",
        targets=("depth",),
    )
    register(
        "depth_rel_err",
        f"{_PKG}.depth:make_depth_rel_err",
        None,
        "Mean absolute relative depth error over valid pixels",
        targets=("depth",),
    )
    register(
        "depth_rmse",
        f"{_PKG}.depth:make_depth_rmse",
        None,
        "Root mean squared depth error over valid pixels",
        targets=("depth",),
    )
    register(
        "depth_log10",
        f"{_PKG}.depth:make_depth_log10",
        DepthLogOptions,
        "Mean absolute log10 depth error over valid pixels",
        targets=("depth",),
    )
    register(
        "depth_delta",
        f"{_PKG}.depth:make_depth_delta",
        DepthDeltaOptions,
        "Fraction of valid depth pixels with max(pred/gt, gt/pred) < 1.25^power",
        targets=("depth",),
    )
    register(
        "normal_mean_angle",
        f"{_PKG}.normals:make_normal_mean_angle",
        None,
        "Mean angular error of normals (degrees)",
        targets=("normals",),
    )
    register(
        "normal_median_angle",
        f"{_PKG}.normals:make_normal_median_angle",
        None,
        "Exact median angular error of normals (degrees)",
        targets=("normals",),
    )
    register(
        "normal_within",
        f"{_PKG}.normals:make_normal_within",
        NormalWithinOptions,
        "Percentage of normal pixels with an angular error below a threshold",
        targets=("normals",),
    )
    register(
        "accuracy",
        f"{_PKG}.image_level:make_accuracy",
        AccuracyOptions,
        "Top-1 accuracy (class) or exact-match accuracy (labels)",
        targets=("class", "labels"),
    )
    register(
        "map",
        f"{_PKG}.image_level:make_map",
        None,
        "Multi-label mean average precision (macro over classes with a positive)",
        targets=("labels",),
    )


__all__ = [
    "BoundaryF1Options",
    "DepthLogOptions",
    "DepthDeltaOptions",
    "NormalWithinOptions",
    "AccuracyOptions",
    "register_metrics",
]
