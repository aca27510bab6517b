"""What a dataset tells the rest of mtlzoo about its samples, and what a target kind is.

A dataset plugin yields dicts ``{"image": FloatTensor[3,H,W] in [0, 1], <target key>:
Tensor}`` and describes each target key with a :class:`TargetInfo` inside its
:class:`DatasetInfo`. Each target names a **target kind** (a registered
:class:`TargetKind`), which says what the tensor looks like and how the pipeline moves it
with the image. The built-in kinds:

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

Plugins add kinds with the ``register_target_kinds`` hook.

**Partial labels.** A dataset whose samples carry only some targets (two datasets' worth of
labels in one, say) declares those targets with ``TargetInfo(..., partial=True)`` and leaves
the key out of a sample that lacks it. The pipeline then fills the missing target with its
kind's fill (:meth:`TargetKind.pad_value`, a tensor of the kind's shape and dtype) and adds
``"<key>/present"``: a ``bool`` scalar per sample, True where the sample had the target
(:data:`PRESENT_SUFFIX`, :func:`present_key`), so that batches collate; a target derived
from a partial one is partial with it. Losses and metrics then see only the labelled
samples. A declared target that is not partial must be in every sample.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:  # torch is imported only where tensors are handled
    from torch import Generator, Tensor

Dim = int | str  # a fixed size, or "H" / "W" (the image's) or "C" (the target's number of classes)


@dataclass(frozen=True)
class TargetInfo:
    """Describes one target key of a dataset.

    Attributes:
        kind: a registered target kind (``mtlzoo list target_kind``).
        num_classes: number of evaluated classes (segmentation, labels, class); else 0.
        class_names: names of those classes, in index order.
        ignore_index: value marking pixels (or images) to ignore, or None.
        class_weights: optional per-class loss weights (e.g. median frequency balancing).
        palette: optional RGB colour (0-255) of each class, for pictures of predictions
            (``mtlzoo predict``); ``None``: a fixed palette is used.
        partial: samples may lack this target (partial labels, see the module docstring):
            a sample without it leaves the key out.
    """

    kind: str
    num_classes: int = 0
    class_names: tuple[str, ...] = ()
    ignore_index: int | None = None
    class_weights: tuple[float, ...] | None = None
    palette: tuple[tuple[int, int, int], ...] | None = None
    partial: bool = False


#: a partial target ``key`` comes with ``key + PRESENT_SUFFIX``: True where a sample has it
PRESENT_SUFFIX = "/present"


def present_key(key: str) -> str:
    """The batch key of the per-sample availability of partial target ``key``."""
    return key + PRESENT_SUFFIX


@dataclass(frozen=True)
class DatasetInfo:
    """Describes a dataset: its name, every target key it yields and, optionally, the
    per-channel mean and std of its images (in [0, 1] units). The model normalises with
    those statistics when its backbone expects none of its own (random init).

    ``cacheable`` (default True) promises that ``dataset[i]`` is a pure function of ``i``
    (augmentation belongs to the pipeline, not the dataset), so the pipeline may keep decoded
    samples in memory (``train.cache``); a dataset whose samples change from call to call
    sets it to False."""

    name: str
    targets: dict[str, TargetInfo] = field(default_factory=dict)
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    cacheable: bool = True


@dataclass(frozen=True)
class TargetKind:
    """One kind of target: its tensor and how the data pipeline moves it with the image.

    Attributes:
        name: the registered name datasets use in :attr:`TargetInfo.kind`.
        shape: the sample tensor's shape, one entry per dimension: an int is a fixed size,
            ``"H"``/``"W"`` the image's height/width, ``"C"`` the target's
            ``num_classes``. A kind is *dense* (it moves with the image, and heads predict
            it at the image's resolution) when its shape has ``"H"`` and ``"W"``.
        dtype: ``"int64"`` or ``"float32"``.
        interpolation: how resizing treats it: ``"nearest"`` (labels, and values that must
            not mix across an object edge) or ``"bilinear"``.
        pad: fill where a crop reaches past the image: ``"ignore"`` (the target's
            ``ignore_index``, 0 when it has none) or ``"zero"``.
        on_flip: ``f(tensor) -> tensor`` applied after a horizontal flip (normals negate
            their x component); ``None``: values do not change.
        on_scale: ``f(tensor, s) -> tensor`` applied when the sample is zoomed by ``s``
            (depth divides by ``s``); ``None``: values do not change.
        check: ``f(tensor, info) -> str | None``: what is wrong with a sample's values (a
            label out of range, NaN ...), or ``None``; used by ``mtlzoo data check`` after
            the shape and dtype checks.
        example: ``f(info, height, width, generator) -> tensor``: a valid random target of
            one sample (the conformance kit tests losses and metrics with it).
        decode: ``f(pred, info) -> tensor``: one sample's head output turned into a value of
            this kind's convention (class indices from logits, probabilities, unit normals),
            for ``predict``; ``None``: the output as it is.
        render: ``f(value, info) -> uint8 array [H, W, 3]``: a picture of one sample's target
            or decoded prediction (``mtlzoo predict`` overlays and contact sheets); ``None``
            for kinds that are not pictures.
        save: ``f(value, info, stem) -> list[Path]``: write one sample's decoded prediction in
            its own file formats next to ``stem`` (e.g. an index PNG, a 16-bit depth PNG, JSON
            scores); ``None``: only ``render``'s picture is written.
    """

    name: str
    shape: tuple[Dim, ...]
    dtype: Literal["int64", "float32"]
    interpolation: Literal["nearest", "bilinear"] = "nearest"
    pad: Literal["ignore", "zero"] = "zero"
    on_flip: Callable[[Tensor], Tensor] | None = None
    on_scale: Callable[[Tensor, float], Tensor] | None = None
    check: Callable[[Tensor, TargetInfo], str | None] | None = None
    example: Callable[[TargetInfo, int, int, Generator], Tensor] | None = None
    decode: Callable[[Tensor, TargetInfo], Tensor] | None = None
    render: Callable[[Tensor, TargetInfo], Any] | None = None
    save: Callable[[Tensor, TargetInfo, Any], list[Any]] | None = None

    @property
    def dense(self) -> bool:
        """True when the target is a map over the image (``"H"`` and ``"W"`` in its shape)."""
        return "H" in self.shape and "W" in self.shape

    def expected_shape(self, info: TargetInfo, height: int, width: int) -> tuple[int, ...]:
        """The sample tensor's shape for an image of ``height`` x ``width``."""
        sizes = {"H": int(height), "W": int(width), "C": int(info.num_classes)}
        return tuple(sizes[d] if isinstance(d, str) else int(d) for d in self.shape)

    def describe(self) -> str:
        """``int64 [H,W]``-style summary."""
        return f"{self.dtype} [{','.join(str(d) for d in self.shape)}]"

    def pad_value(self, info: TargetInfo) -> float:
        """What a crop past the image fills this target with."""
        if self.pad == "ignore" and info.ignore_index is not None:
            return float(info.ignore_index)
        return 0.0


def sample_problems(sample: Any, info: DatasetInfo, kinds: Mapping[str, TargetKind], where: str) -> list[str]:
    """Everything wrong with one raw sample of a dataset, compared with its ``info``: the
    image (``float32 [3,H,W]``, finite, in [0, 1]), every target ``info`` declares (present,
    the dtype and shape of its kind, the kind's value check). ``where`` prefixes each message
    (``"camvid train[12]"`` or a file name). Empty: the sample is good."""
    import torch

    if not isinstance(sample, Mapping):
        return [f"{where}: a sample must be a dict of tensors, got {type(sample).__name__}"]
    problems = []
    image = sample.get("image")
    hw: tuple[int, int] | None = None
    if not torch.is_tensor(image):
        problems.append(f"{where}: no 'image' tensor (keys: {sorted(sample)})")
    elif image.dtype != torch.float32 or image.dim() != 3 or image.shape[0] != 3:
        problems.append(
            f"{where}: image must be float32 [3,H,W], got {str(image.dtype).replace('torch.', '')} "
            f"{list(image.shape)}"
        )
    else:
        hw = (int(image.shape[1]), int(image.shape[2]))
        if not bool(torch.isfinite(image).all()):
            problems.append(f"{where}: image has NaN or infinite values")
        elif image.numel() and (float(image.min()) < 0 or float(image.max()) > 1):
            problems.append(
                f"{where}: image values must be in [0, 1] (raw RGB; the model normalises), got "
                f"[{float(image.min()):.3g}, {float(image.max()):.3g}]"
            )
    for key, tinfo in info.targets.items():
        kind = kinds.get(tinfo.kind)
        value = sample.get(key)
        if value is None:
            if not tinfo.partial:
                problems.append(
                    f"{where}: target {key!r} declared by the dataset's info is missing (keys: {sorted(sample)}); "
                    f"a dataset whose samples may lack it declares it with TargetInfo(partial=True)"
                )
            continue
        if kind is None:
            problems.append(f"{where}: target {key!r} has unknown kind {tinfo.kind!r}")
            continue
        if not torch.is_tensor(value):
            problems.append(f"{where}: target {key!r} must be a tensor, got {type(value).__name__}")
            continue
        dtype = str(value.dtype).replace("torch.", "")
        if dtype != kind.dtype:
            problems.append(f"{where}: target {key!r} ({kind.name}) must be {kind.dtype}, got {dtype}")
            continue
        if hw is not None or not kind.dense:
            want = kind.expected_shape(tinfo, *(hw or (0, 0)))
            if tuple(value.shape) != want:
                problems.append(
                    f"{where}: target {key!r} ({kind.name}) must have shape {list(want)} "
                    f"({kind.describe()}), got {list(value.shape)}"
                )
                continue
        if kind.check is not None:
            msg = kind.check(value, tinfo)
            if msg:
                problems.append(f"{where}: target {key!r} ({kind.name}): {msg}")
    return problems


__all__ = ["TargetInfo", "DatasetInfo", "TargetKind", "sample_problems", "PRESENT_SUFFIX", "present_key"]
