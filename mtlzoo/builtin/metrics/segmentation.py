"""Segmentation metrics from a split-wide confusion matrix: ``miou``, ``pixel_acc`` and
``iou_per_class``."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ...contract.tasks import TaskInfo
from .common import MtlMetric, class_count, safe_ratio, shape_mismatch


def _segmentation_labels(pred: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    """``(predicted labels, target labels)``, both ``[B,H,W]`` int64.

    ``pred`` is either logits ``[B,C,H,W]`` (argmax is taken) or labels shaped like the target.
    """
    if target.dim() == 4 and target.shape[1] == 1:
        target = target[:, 0]
    if pred.dim() == target.dim() + 1:
        pred = pred.argmax(dim=1)
    if pred.shape != target.shape:
        raise shape_mismatch("segmentation metric", pred, target)
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
        return safe_ratio((iou * present).sum(), present.sum())


class PixelAccuracy(ConfusionMatrixMetric):
    """Fraction of non-void pixels whose predicted class is right."""

    higher_is_better = True

    def compute(self) -> Tensor:
        """Correct pixels / non-void pixels."""
        return safe_ratio(self.confmat.diagonal().sum(), self.confmat.sum())


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
    return MeanIoU(class_count(task, "miou"), task.ignore_index, key="miou")


def make_pixel_acc(task: TaskInfo) -> PixelAccuracy:
    """Build ``pixel_acc`` for a segmentation task."""
    return PixelAccuracy(class_count(task, "pixel_acc"), task.ignore_index, key="pixel_acc")


def make_iou_per_class(task: TaskInfo) -> PerClassIoU:
    """Build ``iou_per_class`` for a segmentation task (class names from the dataset)."""
    n = class_count(task, "iou_per_class")
    return PerClassIoU(n, task.ignore_index, task.class_names, key="iou")


__all__ = [
    "ConfusionMatrixMetric",
    "MeanIoU",
    "PixelAccuracy",
    "PerClassIoU",
    "make_miou",
    "make_pixel_acc",
    "make_iou_per_class",
]
