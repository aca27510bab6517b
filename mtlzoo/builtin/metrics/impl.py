"""The built-in metrics and their factories (options in :mod:`mtlzoo.builtin.metrics`).

Every factory is ``factory(task: TaskInfo, options)``, or ``factory(task)`` for a metric
without options, and returns a :class:`MtlMetric` (a :class:`torchmetrics.Metric` with a
log ``key``). Running sums are kept in float64 (counts in int64) so that a split of
millions of pixels sums exactly enough for batch-size independence; backends without
float64 (Apple MPS) are not supported.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics import Metric

from ...contract.errors import ConfigError
from ...contract.tasks import TaskInfo
from . import AccuracyOptions, BoundaryF1Options, DepthDeltaOptions, DepthLogOptions, NormalWithinOptions


class MtlMetric(Metric):
    """Base of the built-in metrics: adds the log ``key`` and zero-initialised sum states;
    other keyword arguments go to :class:`torchmetrics.Metric` (``sync_on_compute`` ...)."""

    is_differentiable = False
    full_state_update = False  # states are reductions of batch states
    higher_is_better: bool = True

    def __init__(self, key: str, **kwargs: Any):
        super().__init__(**kwargs)
        self.key = key

    def _sum_state(self, name: str, dtype: torch.dtype = torch.float64, shape: tuple[int, ...] = ()) -> None:
        self.add_state(name, default=torch.zeros(shape, dtype=dtype), dist_reduce_fx="sum")


def _ratio(num: Tensor, den: Tensor, empty: float = 0.0) -> Tensor:
    """``num / den`` as float, ``empty`` when ``den`` is 0."""
    num = num.double()
    den = den.double()
    return torch.where(den > 0, num / den.clamp_min(1e-300), torch.full_like(num, empty)).float()


def _mismatch(what: str, pred: Tensor, target: Tensor, need: str = "") -> ValueError:
    """The error for a prediction that does not fit its target (a head/task mismatch)."""
    shapes = f"prediction {tuple(pred.shape)} does not match target {tuple(target.shape)}"
    return ValueError(f"{what}: {shapes}{need}")


def _num_classes(task: TaskInfo, what: str) -> int:
    n = task.num_classes or task.out_channels
    if n < 1:
        raise ConfigError(f"metric {what!r} of task {task.name!r}: the target declares no classes")
    return int(n)


# -- segmentation ---------------------------------------------------------------------------
def _segmentation_labels(pred: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    """``(predicted labels, target labels)``, both ``[B,H,W]`` int64.

    ``pred`` is either logits ``[B,C,H,W]`` (argmax is taken) or labels shaped like the target.
    """
    if target.dim() == 4 and target.shape[1] == 1:
        target = target[:, 0]
    if pred.dim() == target.dim() + 1:
        pred = pred.argmax(dim=1)
    if pred.shape != target.shape:
        raise _mismatch("segmentation metric", pred, target)
    return pred.long(), target.long()


class ConfusionMatrixMetric(MtlMetric):
    """A split-wide ``C x C`` confusion matrix (rows: target, columns: prediction).

    Pixels whose target is ``ignore_index`` (void) or outside ``[0, C)`` are not counted.
    """

    def __init__(
        self, num_classes: int, ignore_index: int | None = None, key: str = "confmat", **kwargs: Any
    ):
        super().__init__(key, **kwargs)
        self.num_classes = int(num_classes)
        self.ignore_index = ignore_index
        self._sum_state("confmat", torch.long, (self.num_classes, self.num_classes))

    def update(self, pred: Tensor, target: Tensor) -> None:
        """Add a batch: logits ``[B,C,H,W]`` (or labels ``[B,H,W]``) against ``[B,H,W]``."""
        labels, target = _segmentation_labels(pred, target)
        c = self.num_classes
        valid = (target >= 0) & (target < c)
        if self.ignore_index is not None:
            valid &= target != self.ignore_index
        # invalid pixels go to an extra bin that is dropped (cheaper than boolean indexing)
        idx = torch.where(valid, target * c + labels.clamp(0, c - 1), torch.full_like(target, c * c))
        counts = torch.bincount(idx.flatten(), minlength=c * c + 1)[: c * c]
        self.confmat += counts.reshape(c, c).to(self.confmat)


class MeanIoU(ConfusionMatrixMetric):
    """Mean intersection-over-union.

    Averaged over the classes *present* in the split, i.e. with at least one target or
    predicted pixel on non-void pixels (``union > 0``). A class absent from both has an
    undefined IoU (0/0) and is left out rather than counted as 0 or 1, as mmsegmentation
    does; a class predicted but never in the target counts with IoU 0. With no class
    present at all the value is 0.
    """

    higher_is_better = True

    def compute(self) -> Tensor:
        """Mean IoU over present classes."""
        cm = self.confmat.double()
        inter = cm.diagonal()
        union = cm.sum(0) + cm.sum(1) - inter
        present = union > 0
        iou = inter / union.clamp_min(1)
        return _ratio((iou * present).sum(), present.sum())


class PixelAccuracy(ConfusionMatrixMetric):
    """Fraction of non-void pixels whose predicted class is right."""

    higher_is_better = True

    def compute(self) -> Tensor:
        """Correct pixels / non-void pixels."""
        return _ratio(self.confmat.diagonal().sum(), self.confmat.sum())


class PerClassIoU(ConfusionMatrixMetric):
    """IoU of every class over the split: ``compute()`` returns a 1-D tensor of ``C`` values.

    ``class_names`` names them (the dataset's class names, else ``"0"``, ``"1"`` ...); the
    trainer reports them as ``<key>/<class name>`` (``iou/Sky``). A class absent from both
    target and prediction on non-void pixels has an undefined IoU (0/0) and is NaN, as in
    :class:`MeanIoU`, which averages exactly the classes that are not NaN here.
    """

    higher_is_better = True

    def __init__(
        self,
        num_classes: int,
        ignore_index: int | None = None,
        class_names: tuple[str, ...] | list[str] = (),
        key: str = "iou",
        **kwargs: Any,
    ):
        super().__init__(num_classes, ignore_index, key, **kwargs)
        names = [str(n) for n in class_names][: self.num_classes]
        self.class_names = tuple(names + [str(i) for i in range(len(names), self.num_classes)])

    def compute(self) -> Tensor:
        """IoU per class, NaN for a class with no target and no predicted pixel."""
        cm = self.confmat.double()
        inter = cm.diagonal()
        union = cm.sum(0) + cm.sum(1) - inter
        iou = inter / union.clamp_min(1)
        return torch.where(union > 0, iou, torch.full_like(iou, float("nan"))).float()


def make_miou(task: TaskInfo) -> MeanIoU:
    """Build ``miou`` for a segmentation task."""
    return MeanIoU(_num_classes(task, "miou"), task.ignore_index, key="miou")


def make_pixel_acc(task: TaskInfo) -> PixelAccuracy:
    """Build ``pixel_acc`` for a segmentation task."""
    return PixelAccuracy(_num_classes(task, "pixel_acc"), task.ignore_index, key="pixel_acc")


def make_iou_per_class(task: TaskInfo) -> PerClassIoU:
    """Build ``iou_per_class`` for a segmentation task (class names from the dataset)."""
    n = _num_classes(task, "iou_per_class")
    return PerClassIoU(n, task.ignore_index, task.class_names, key="iou")


# -- boundary -------------------------------------------------------------------------------
def _dilate(mask: Tensor, radius: int) -> Tensor:
    """Binary dilation of ``[B,1,H,W]`` by a ``(2r+1)^2`` square (Chebyshev ball)."""
    if radius == 0:
        return mask
    return F.max_pool2d(mask.float(), 2 * radius + 1, stride=1, padding=radius) > 0


class BoundaryF1(MtlMetric):
    """Boundary F-measure at a pixel tolerance, from split-wide counts.

    precision = predicted boundary pixels within ``tolerance`` of a true boundary pixel /
    predicted boundary pixels; recall = true boundary pixels within ``tolerance`` of a
    predicted one / true boundary pixels; F1 = 2PR / (P + R). Pixels whose target is
    ``ignore_index`` are neither predictions nor targets. Matching is by dilation, not a
    one-to-one assignment (a cheaper, slightly more lenient form of the BSDS measure).
    A split with no true and no predicted boundary pixel scores 1; a ratio with a zero
    denominator is otherwise 0.
    """

    higher_is_better = True

    def __init__(
        self,
        ignore_index: int | None,
        tolerance: int,
        threshold: float,
        key: str = "boundary_f1",
        **kwargs: Any,
    ):
        super().__init__(key, **kwargs)
        self.ignore_index = ignore_index
        self.tolerance = int(tolerance)
        self.threshold = float(threshold)
        for name in ("tp_pred", "n_pred", "tp_true", "n_true"):
            self._sum_state(name, torch.long)

    def update(self, pred: Tensor, target: Tensor) -> None:
        """Add a batch of logits ``[B,1,H,W]`` against boundary maps ``[B,1,H,W]``."""
        if target.dim() == 3:
            target = target.unsqueeze(1)
        if pred.shape != target.shape:
            raise _mismatch("boundary_f1", pred, target)
        target = target.float()
        valid = torch.ones_like(target, dtype=torch.bool)
        if self.ignore_index is not None:
            valid = target != float(self.ignore_index)
        true = valid & (target > 0.5)
        predicted = valid & (pred.float().sigmoid() > self.threshold)
        self.tp_pred += (predicted & _dilate(true, self.tolerance)).sum()
        self.n_pred += predicted.sum()
        self.tp_true += (true & _dilate(predicted, self.tolerance)).sum()
        self.n_true += true.sum()

    def compute(self) -> Tensor:
        """F1 of the split."""
        if int(self.n_pred) == 0 and int(self.n_true) == 0:
            return torch.tensor(1.0, device=self.n_pred.device)
        p = _ratio(self.tp_pred, self.n_pred)
        r = _ratio(self.tp_true, self.n_true)
        return _ratio(2 * p * r, p + r)


def make_boundary_f1(task: TaskInfo, options: BoundaryF1Options) -> BoundaryF1:
    """Build ``boundary_f1`` for a boundary task."""
    return BoundaryF1(task.ignore_index, options.tolerance, options.threshold)


# -- depth ----------------------------------------------------------------------------------
class DepthError(MtlMetric):
    """Mean absolute (``relative=False``) or absolute relative error over every valid pixel
    (``gt > 0``) of the split: ``sum |pred - gt| [/ gt]`` over the split / number of pixels."""

    higher_is_better = False

    def __init__(self, relative: bool = False, key: str | None = None, **kwargs: Any):
        super().__init__(key or ("rel_err" if relative else "abs_err"), **kwargs)
        self.relative = relative
        self._sum_state("total")
        self._sum_state("count", torch.long)

    def update(self, pred: Tensor, target: Tensor) -> None:
        """Add a batch of depth predictions ``[B,1,H,W]`` against ``[B,1,H,W]``."""
        if target.dim() == pred.dim() - 1:
            target = target.unsqueeze(1)
        if pred.shape != target.shape:
            raise _mismatch("depth metric", pred, target)
        target = target.float()
        valid = target > 0  # also False for NaN
        # masks, not boolean indexing: no host-device sync per batch
        gt = torch.where(valid, target, torch.ones_like(target)).double()
        err = (pred.double() - gt).abs()
        if self.relative:
            err = err / gt
        self.total += torch.where(valid, err, torch.zeros_like(err)).sum()
        self.count += valid.sum()

    def compute(self) -> Tensor:
        """Mean error of the split (0 with no valid pixel)."""
        return _ratio(self.total, self.count)


def make_depth_abs_err(task: TaskInfo) -> DepthError:
    """Build ``depth_abs_err``."""
    return DepthError(relative=False)


def make_depth_rel_err(task: TaskInfo) -> DepthError:
    """Build ``depth_rel_err``."""
    return DepthError(relative=True)


def _depth_pair(pred: Tensor, target: Tensor, what: str) -> tuple[Tensor, Tensor, Tensor]:
    """``(pred, gt, valid)`` in float64, ``[B,1,H,W]``; invalid pixels (``gt <= 0`` or NaN)
    get ``gt = 1`` so that every elementwise expression stays finite (masks, no indexing: no
    host-device sync per batch)."""
    if target.dim() == pred.dim() - 1:
        target = target.unsqueeze(1)
    if pred.shape != target.shape:
        raise _mismatch(what, pred, target)
    target = target.float()
    valid = target > 0  # also False for NaN
    gt = torch.where(valid, target, torch.ones_like(target)).double()
    return pred.double(), gt, valid


class DepthRMSE(MtlMetric):
    """Root mean squared error over every valid pixel (``gt > 0``) of the split:
    ``sqrt(sum (pred - gt)^2 / number of pixels)`` (pixels of the whole split, not a mean of
    per-image RMSEs)."""

    higher_is_better = False

    def __init__(self, key: str = "rmse", **kwargs: Any):
        super().__init__(key, **kwargs)
        self._sum_state("total")
        self._sum_state("count", torch.long)

    def update(self, pred: Tensor, target: Tensor) -> None:
        """Add a batch of depth predictions ``[B,1,H,W]`` against ``[B,1,H,W]``."""
        pred, gt, valid = _depth_pair(pred, target, "depth_rmse")
        sq = (pred - gt).square()
        self.total += torch.where(valid, sq, torch.zeros_like(sq)).sum()
        self.count += valid.sum()

    def compute(self) -> Tensor:
        """RMSE of the split (0 with no valid pixel)."""
        return _ratio(self.total, self.count).sqrt()


class DepthLog10(MtlMetric):
    """Mean ``|log10(pred) - log10(gt)|`` over every valid pixel (``gt > 0``) of the split;
    predictions below ``min_depth`` are raised to it first (the log of a depth <= 0 is
    undefined)."""

    higher_is_better = False

    def __init__(self, min_depth: float = 1e-3, key: str = "log10", **kwargs: Any):
        super().__init__(key, **kwargs)
        self.min_depth = float(min_depth)
        self._sum_state("total")
        self._sum_state("count", torch.long)

    def update(self, pred: Tensor, target: Tensor) -> None:
        """Add a batch of depth predictions ``[B,1,H,W]`` against ``[B,1,H,W]``."""
        pred, gt, valid = _depth_pair(pred, target, "depth_log10")
        err = (pred.clamp_min(self.min_depth).log10() - gt.log10()).abs()
        self.total += torch.where(valid, err, torch.zeros_like(err)).sum()
        self.count += valid.sum()

    def compute(self) -> Tensor:
        """Mean log10 error of the split (0 with no valid pixel)."""
        return _ratio(self.total, self.count)


class DepthDelta(MtlMetric):
    """Threshold accuracy: the fraction (0-1) of valid pixels (``gt > 0``) of the split with
    ``max(pred / gt, gt / pred) < 1.25 ** power``; predictions below ``min_depth`` are raised
    to it first. Key ``delta<power>``."""

    higher_is_better = True

    def __init__(self, power: int = 1, min_depth: float = 1e-3, key: str | None = None, **kwargs: Any):
        super().__init__(key or f"delta{int(power)}", **kwargs)
        self.threshold = 1.25 ** int(power)
        self.min_depth = float(min_depth)
        self._sum_state("below", torch.long)
        self._sum_state("count", torch.long)

    def update(self, pred: Tensor, target: Tensor) -> None:
        """Add a batch of depth predictions ``[B,1,H,W]`` against ``[B,1,H,W]``."""
        pred, gt, valid = _depth_pair(pred, target, "depth_delta")
        pred = pred.clamp_min(self.min_depth)
        ratio = torch.maximum(pred / gt, gt / pred)
        self.below += (valid & (ratio < self.threshold)).sum()
        self.count += valid.sum()

    def compute(self) -> Tensor:
        """Fraction of the split's valid pixels under the threshold (0 with none)."""
        return _ratio(self.below, self.count)


def make_depth_rmse(task: TaskInfo) -> DepthRMSE:
    """Build ``depth_rmse``."""
    return DepthRMSE()


def make_depth_log10(task: TaskInfo, options: DepthLogOptions) -> DepthLog10:
    """Build ``depth_log10``."""
    return DepthLog10(options.min_depth)


def make_depth_delta(task: TaskInfo, options: DepthDeltaOptions) -> DepthDelta:
    """Build ``depth_delta`` (key ``delta<power>``)."""
    return DepthDelta(options.power, options.min_depth)


# -- surface normals ------------------------------------------------------------------------
def normal_angle_map(pred: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    """Angular error in degrees ``[B,H,W]`` of every pixel, and the mask of valid pixels
    (target not all zero).

    Computed as ``atan2(|p x t|, p . t)`` of the normalised vectors, which stays accurate
    for small angles where ``acos`` does not. A zero prediction counts as 90 degrees.
    """
    if pred.shape != target.shape or pred.dim() != 4 or pred.shape[1] != 3:
        raise _mismatch("normals metric", pred, target, "; both must be [B,3,H,W]")
    target = target.float()
    valid = target.abs().sum(dim=1) > 0  # all-zero or NaN = no measurement
    t = F.normalize(torch.where(valid[:, None], target, torch.zeros_like(target)), dim=1)
    p = F.normalize(pred.float(), dim=1)
    cross = torch.linalg.vector_norm(torch.linalg.cross(p, t, dim=1), dim=1)
    angle = torch.rad2deg(torch.atan2(cross, (p * t).sum(dim=1)))
    angle = torch.where(p.abs().sum(dim=1) == 0, torch.full_like(angle, 90.0), angle)
    return angle, valid


def normal_angles(pred: Tensor, target: Tensor) -> Tensor:
    """Angular errors in degrees of the valid pixels only, as a 1-D tensor."""
    angle, valid = normal_angle_map(pred, target)
    return angle[valid]


class NormalMeanAngle(MtlMetric):
    """Mean angular error (degrees) over every valid normal pixel of the split."""

    higher_is_better = False

    def __init__(self, key: str = "mean_angle", **kwargs: Any):
        super().__init__(key, **kwargs)
        self._sum_state("total")
        self._sum_state("count", torch.long)

    def update(self, pred: Tensor, target: Tensor) -> None:
        """Add a batch of normals ``[B,3,H,W]``."""
        angle, valid = normal_angle_map(pred, target)
        self.total += torch.where(valid, angle, torch.zeros_like(angle)).double().sum()
        self.count += valid.sum()

    def compute(self) -> Tensor:
        """Mean angle of the split."""
        return _ratio(self.total, self.count)


class NormalMedianAngle(MtlMetric):
    """Exact median angular error (degrees) over every valid normal pixel of the split.

    Keeps every angle (a ``cat`` state, 4 bytes per valid pixel); for an even count the
    median is the mean of the two middle values (as numpy's).
    """

    higher_is_better = False

    def __init__(self, key: str = "median_angle", **kwargs: Any):
        super().__init__(key, **kwargs)
        self.add_state("angles", default=[], dist_reduce_fx="cat")

    def update(self, pred: Tensor, target: Tensor) -> None:
        """Add a batch of normals ``[B,3,H,W]``."""
        self.angles.append(normal_angles(pred, target).float())

    def compute(self) -> Tensor:
        """Median angle of the split (0 with no valid pixel)."""
        angles = self.angles
        if isinstance(angles, list):  # not synced: still a list of batches
            angles = torch.cat(angles) if angles else torch.zeros(0)
        n = angles.numel()
        if n == 0:
            return torch.tensor(0.0)
        # kthvalue: exact, O(n), and free of torch.quantile's size limit
        lo = torch.kthvalue(angles, (n + 1) // 2).values
        hi = torch.kthvalue(angles, n // 2 + 1).values
        return (lo.double() + hi.double()).div(2).float()


class NormalWithin(MtlMetric):
    """Percentage (0-100) of valid normal pixels with an angular error below ``threshold`` degrees."""

    higher_is_better = True

    def __init__(self, threshold: float, key: str | None = None, **kwargs: Any):
        super().__init__(key or f"within_{threshold:g}", **kwargs)
        self.threshold = float(threshold)
        self._sum_state("below", torch.long)
        self._sum_state("count", torch.long)

    def update(self, pred: Tensor, target: Tensor) -> None:
        """Add a batch of normals ``[B,3,H,W]``."""
        angle, valid = normal_angle_map(pred, target)
        self.below += (valid & (angle < self.threshold)).sum()
        self.count += valid.sum()

    def compute(self) -> Tensor:
        """Percentage of the split."""
        return 100 * _ratio(self.below, self.count)


def make_normal_mean_angle(task: TaskInfo) -> NormalMeanAngle:
    """Build ``normal_mean_angle``."""
    return NormalMeanAngle()


def make_normal_median_angle(task: TaskInfo) -> NormalMedianAngle:
    """Build ``normal_median_angle``."""
    return NormalMedianAngle()


def make_normal_within(task: TaskInfo, options: NormalWithinOptions) -> NormalWithin:
    """Build ``normal_within`` (key ``within_<threshold>``)."""
    return NormalWithin(options.threshold)


# -- image-level ----------------------------------------------------------------------------
class Accuracy(MtlMetric):
    """Accuracy over the split.

    Single-label targets ``[B]`` (int): top-1 of the logits ``[B,C]``; targets equal to
    ``ignore_index`` are skipped. Multi-hot targets ``[B,C]``: exact match of the predicted
    label set (``multilabel="exact"``) or the fraction of right label decisions
    (``"per_label"``). Exact match is the default because per-label accuracy is inflated by
    the many easy negatives of sparse label sets.
    """

    higher_is_better = True

    def __init__(self, ignore_index: int | None, multilabel: str, key: str | None = None, **kwargs: Any):
        super().__init__(key or ("accuracy" if multilabel == "exact" else "label_accuracy"), **kwargs)
        self.ignore_index = ignore_index
        self.multilabel = multilabel
        self._sum_state("correct", torch.long)
        self._sum_state("total", torch.long)

    def update(self, pred: Tensor, target: Tensor) -> None:
        """Add a batch of logits ``[B,C]`` against class indices ``[B]`` or multi-hot ``[B,C]``."""
        if target.shape == pred.shape:  # multi-hot labels
            right = (pred.float().sigmoid() > 0.5) == (target.float() > 0.5)
            if self.multilabel == "exact":
                right = right.all(dim=1)
            self.correct += right.sum()
            self.total += right.numel()
            return
        if target.dim() == 2 and target.shape[1] == 1:
            target = target[:, 0]
        if target.shape != pred.shape[:1]:
            raise _mismatch("accuracy", pred, target)
        target = target.long()
        valid = torch.ones_like(target, dtype=torch.bool)
        if self.ignore_index is not None:
            valid = target != self.ignore_index
        self.correct += ((pred.argmax(dim=1) == target) & valid).sum()
        self.total += valid.sum()

    def compute(self) -> Tensor:
        """Accuracy in [0, 1]."""
        return _ratio(self.correct, self.total)


def make_accuracy(task: TaskInfo, options: AccuracyOptions) -> Accuracy:
    """Build ``accuracy`` for a class or labels task."""
    return Accuracy(task.ignore_index, options.multilabel)


def average_precision(scores: Tensor, labels: Tensor) -> Tensor:
    """Average precision of one class: ``sum_k (R_k - R_{k-1}) P_k`` over the distinct score
    thresholds, highest first (no interpolation; tied scores form one threshold), as
    scikit-learn's ``average_precision_score``. ``labels`` must hold at least one positive."""
    order = torch.argsort(scores, descending=True, stable=True)
    s = scores[order]
    y = labels[order].double()
    tp = torch.cumsum(y, 0)
    fp = torch.cumsum(1 - y, 0)
    # the last index of every run of equal scores is one threshold
    end = torch.tensor([s.numel() - 1], device=s.device)
    last = torch.cat([torch.nonzero(s[1:] != s[:-1]).flatten(), end])
    tp, fp = tp[last], fp[last]
    precision = tp / (tp + fp)
    recall = tp / tp[-1]
    prev = torch.cat([recall.new_zeros(1), recall[:-1]])
    return ((recall - prev) * precision).sum()


class MeanAveragePrecision(MtlMetric):
    """Multi-label mean average precision over the split (macro).

    Scores and targets of every image are kept (``cat`` states) and AP is computed per class
    on the raw logits (a sigmoid would tie saturated scores); the mean is over the classes
    with at least one positive image in the split (AP is undefined without one). With no
    such class the value is 0.
    """

    higher_is_better = True

    def __init__(self, num_classes: int, key: str = "map", **kwargs: Any):
        super().__init__(key, **kwargs)
        self.num_classes = int(num_classes)
        self.add_state("scores", default=[], dist_reduce_fx="cat")
        self.add_state("targets", default=[], dist_reduce_fx="cat")

    def update(self, pred: Tensor, target: Tensor) -> None:
        """Add a batch of logits ``[B,C]`` against multi-hot targets ``[B,C]``."""
        if pred.shape != target.shape or pred.dim() != 2:
            raise _mismatch("map", pred, target, "; both must be [B,C]")
        self.scores.append(pred.detach().float())
        self.targets.append((target > 0.5).float())  # float like the scores, so ranks gather alike

    def compute(self) -> Tensor:
        """Mean AP over the classes with a positive."""
        scores, targets = self.scores, self.targets
        if isinstance(scores, list):
            if not scores:
                return torch.tensor(0.0)
            scores, targets = torch.cat(scores), torch.cat(targets)
        scores = scores.reshape(-1, self.num_classes)
        targets = targets.reshape(-1, self.num_classes)
        aps = [
            average_precision(scores[:, c], targets[:, c])
            for c in range(self.num_classes)
            if bool(targets[:, c].any())
        ]
        if not aps:
            return torch.tensor(0.0, device=scores.device)
        return torch.stack(aps).mean().float()


def make_map(task: TaskInfo) -> MeanAveragePrecision:
    """Build ``map`` for a multi-label task."""
    return MeanAveragePrecision(_num_classes(task, "map"))


__all__ = [
    "MtlMetric",
    "ConfusionMatrixMetric",
    "MeanIoU",
    "PixelAccuracy",
    "PerClassIoU",
    "BoundaryF1",
    "DepthError",
    "DepthRMSE",
    "DepthLog10",
    "DepthDelta",
    "NormalMeanAngle",
    "NormalMedianAngle",
    "NormalWithin",
    "Accuracy",
    "MeanAveragePrecision",
    "normal_angle_map",
    "normal_angles",
    "average_precision",
    "make_miou",
    "make_pixel_acc",
    "make_iou_per_class",
    "make_boundary_f1",
    "make_depth_abs_err",
    "make_depth_rel_err",
    "make_depth_rmse",
    "make_depth_log10",
    "make_depth_delta",
    "make_normal_mean_angle",
    "make_normal_median_angle",
    "make_normal_within",
    "make_accuracy",
    "make_map",
]
