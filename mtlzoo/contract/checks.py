"""Contract checks: what the hooks' docstrings promise, checked where it first can be.

Each check raises :class:`~mtlzoo.PluginError` with one line that names the plugin, the part
and the broken promise. The zoo runs them when it builds a model (a dry forward pass), the
trainer after the first step (gradients), and the conformance kit (:mod:`mtlzoo.testing`)
on every part a plugin registers.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from .backbone import is_marked_unused
from .data import TargetKind
from .errors import PluginError
from .features import FeatureInfo


def _float3(value: Any) -> bool:
    return (
        isinstance(value, Sequence)
        and len(value) == 3
        and all(isinstance(v, (int, float)) and math.isfinite(float(v)) for v in value)
    )


def backbone_attributes(backbone: Any, label: str) -> list[FeatureInfo]:
    """Check a built backbone's contract attributes; return its ``feature_info`` as FeatureInfos."""
    if not isinstance(backbone, nn.Module):
        raise PluginError(f"{label} built {type(backbone).__name__}, not an nn.Module")
    raw = getattr(backbone, "feature_info", None)
    try:
        info = [FeatureInfo(int(c), int(s)) for c, s in raw]  # type: ignore[union-attr]
    except (TypeError, ValueError):
        raise PluginError(
            f"{label}: feature_info must be a list of (channels, stride) pairs, got {raw!r}"
        ) from None
    if not info or any(fi.channels < 1 or fi.stride < 1 for fi in info):
        raise PluginError(
            f"{label}: feature_info must list at least one map with channels >= 1 and stride >= 1, got {info}"
        )
    if any(b.stride < a.stride for a, b in zip(info, info[1:])):
        raise PluginError(
            f"{label}: feature_info must be ordered fine to coarse (strides non-decreasing), got "
            f"strides {[fi.stride for fi in info]}"
        )
    mean, std = getattr(backbone, "input_mean", None), getattr(backbone, "input_std", None)
    if (mean is None) != (std is None):
        raise PluginError(f"{label}: set both input_mean and input_std, or neither")
    if mean is not None and not (_float3(mean) and _float3(std) and all(float(s) > 0 for s in std)):
        raise PluginError(
            f"{label}: input_mean/input_std must be 3 finite numbers each (std > 0), got {mean}, {std}"
        )
    div = getattr(backbone, "size_divisor", 1)
    if not isinstance(div, int) or isinstance(div, bool) or div < 1:
        raise PluginError(f"{label}: size_divisor must be an int >= 1, got {div!r}")
    return info


def feature_maps(maps: Any, info: Sequence[FeatureInfo], size: tuple[int, int], label: str) -> None:
    """Compare a forward pass's maps with ``feature_info``: count, channels, and strides
    (each map's height and width are the input's divided by its stride, rounded either way)."""
    if not isinstance(maps, (list, tuple)) or not all(torch.is_tensor(m) for m in maps):
        raise PluginError(
            f"{label}: forward must return a list of feature-map tensors, got {type(maps).__name__}"
        )
    shapes = [tuple(m.shape) for m in maps]
    declared = [(fi.channels, fi.stride) for fi in info]
    if len(maps) != len(info):
        raise PluginError(
            f"{label} broke its feature_info: forward returned {len(maps)} maps {shapes} but "
            f"feature_info lists {len(info)} (channels, stride) {declared}"
        )
    h, w = size
    for i, (m, fi) in enumerate(zip(maps, info)):
        if m.dim() != 4:
            raise PluginError(f"{label}: map {i} must be [B, C, h, w], got shape {list(m.shape)}")
        if m.shape[1] != fi.channels:
            raise PluginError(
                f"{label} broke its feature_info: map {i} has {m.shape[1]} channels but feature_info "
                f"says {fi.channels} (maps {shapes}, feature_info {declared})"
            )
        mh, mw = m.shape[-2:]
        if not (abs(mh - h / fi.stride) < 1 and abs(mw - w / fi.stride) < 1):
            raise PluginError(
                f"{label} broke its feature_info: map {i} is {mh}x{mw} for a {h}x{w} input, not "
                f"stride {fi.stride} (maps {shapes}, feature_info {declared})"
            )


def head_output(
    pred: Any, kind: TargetKind, out_channels: int, batch: int, size: tuple[int, int], label: str, task: str
) -> None:
    """Compare a head's output with what its task needs: ``[B, out_channels, H, W]`` for a
    dense target kind, ``[B, out_channels]`` otherwise, floating point."""
    want = (batch, out_channels, *size) if kind.dense else (batch, out_channels)
    if not torch.is_tensor(pred):
        raise PluginError(f"{label} of task {task!r} returned {type(pred).__name__}, not a tensor")
    if tuple(pred.shape) != want or not pred.is_floating_point():
        what = "[B, out_channels, H, W]" if kind.dense else "[B, out_channels]"
        raise PluginError(
            f"{label} of task {task!r} returned {str(pred.dtype).replace('torch.', '')} "
            f"{list(pred.shape)}, but a {kind.name} task needs {list(want)} {what} (floating point)"
        )


def _first_line(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"


def dry_forward(
    model: nn.Module,
    backbone: nn.Module,
    tasks: Mapping[str, Any],
    size: tuple[int, int],
    labels: Mapping[str, str],
) -> None:
    """One forward pass on a tiny random batch (eval mode, no gradients, no RNG consumed):
    the backbone's maps vs its ``feature_info``, then every task's prediction (and
    deep-supervision prediction) vs its task, and the shared representation the architecture
    declares. ``labels`` name the parts (``backbone``, ``architecture``, each task's head)."""
    was_training = model.training
    model.eval()
    info = [FeatureInfo(int(c), int(s)) for c, s in backbone.feature_info]
    bb = f"model.backbone: {labels['backbone']}"
    arch = f"model.architecture: {labels.get('architecture', 'the architecture')}"
    try:
        images = torch.rand(2, 3, *size, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            try:
                maps = backbone(model.normalize(images))
            except Exception as exc:  # noqa: BLE001 - plugin code
                raise PluginError(
                    f"{bb}: forward failed on a [2, 3, {size[0]}, {size[1]}] batch: {_first_line(exc)}"
                ) from exc
            feature_maps(maps, info, size, bb)
            try:
                out = model.forward_train(images)
            except Exception as exc:  # noqa: BLE001
                raise PluginError(
                    f"{arch}: forward failed on a [2, 3, {size[0]}, {size[1]}] batch: {_first_line(exc)}"
                ) from exc
            for name, task in tasks.items():
                label = f"tasks.{name}.head: {labels.get(name, 'the head')}"
                if name not in out.preds:
                    raise PluginError(f"{arch}: predicts no {name!r} (it predicts {sorted(out.preds)})")
                head_output(out.preds[name], task.kind, task.info.out_channels, 2, size, label, name)
                for a in out.aux.get(name, []):
                    head_output(
                        a, task.kind, task.info.out_channels, 2, size, f"{arch} (deep supervision)", name
                    )
            declared = bool(getattr(model, "has_shared_representation", True))
            if declared and not out.shared:
                raise PluginError(f"{arch}: declares a shared representation but run() returned none")
            if not declared and out.shared:
                raise PluginError(
                    f"{arch}: returned a shared representation but declares has_shared_representation False"
                )
    finally:
        model.train(was_training)


def parameter_groups(model: nn.Module, label: str) -> None:
    """Every trainable parameter is shared or belongs to exactly one task, never both."""
    owner: dict[int, str] = {}
    for p in model.shared_parameters():
        owner[id(p)] = "shared"
    for task in model.task_names:
        for p in model.task_parameters(task):
            if id(p) in owner:
                raise PluginError(
                    f"{label}: a parameter is declared both {owner[id(p)]} and of task {task!r}"
                )
            owner[id(p)] = task
    loose = [n for n, p in model.named_parameters() if p.requires_grad and id(p) not in owner]
    if loose:
        raise PluginError(
            f"{label}: {len(loose)} trainable parameters are neither shared nor any task's "
            f"(e.g. {loose[0]}); declare them in shared_parameters() or task_parameters()"
        )


def shared_gradients(named: Sequence[tuple[str, Tensor]], label: str) -> None:
    """After the first training step: every trainable shared parameter holds a gradient
    (parameters given to :func:`mtlzoo.mark_unused` excepted)."""
    missing = [n for n, p in named if p.requires_grad and p.grad is None and not is_marked_unused(p)]
    if missing:
        shown = ", ".join(missing[:3]) + (", ..." if len(missing) > 3 else "")
        raise PluginError(
            f"{label}: after the first step {len(missing)} of {len(named)} shared parameters have no gradient "
            f"({shown}); a combiner must call step.backward, step.backward_weighted or step.set_shared_gradient "
            f"(a backbone marks parameters unused by design with mtlzoo.mark_unused)"
        )


__all__ = [
    "backbone_attributes",
    "feature_maps",
    "head_output",
    "dry_forward",
    "parameter_groups",
    "shared_gradients",
]
