"""Contract checks: what the hooks' docstrings promise, checked where it first can be.

Each check raises :class:`~mtlzoo.PluginError` with one line that names the plugin, the part
and the broken promise. The zoo runs them when it builds a model (a dry forward pass), the
trainer after the first step (gradients), and the conformance kit (:mod:`mtlzoo.testing`)
on every part a plugin registers.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from .backbone import is_marked_unused
from .data import DatasetInfo, TargetInfo, TargetKind, sample_problems
from .errors import ConfigError, PluginError
from .features import FeatureInfo

if TYPE_CHECKING:
    from .architecture import Architecture


def _float3(value: Any) -> bool:
    return (
        isinstance(value, Sequence)
        and len(value) == 3
        and all(isinstance(v, (int, float)) and math.isfinite(float(v)) for v in value)
    )


#: the attributes every backbone has (:class:`~mtlzoo.contract.backbone.Backbone` gives defaults)
BACKBONE_ATTRIBUTES = ("feature_info", "input_mean", "input_std", "size_divisor")


def backbone_attributes(backbone: Any, label: str) -> list[FeatureInfo]:
    """Check a built backbone's contract attributes (all of :data:`BACKBONE_ATTRIBUTES`,
    present and valid); return its ``feature_info`` as FeatureInfos. The build and the
    conformance kit both call this, so they accept and refuse the same backbones."""
    if not isinstance(backbone, nn.Module):
        raise PluginError(f"{label} built {type(backbone).__name__}, not an nn.Module")
    absent = [a for a in BACKBONE_ATTRIBUTES if not hasattr(backbone, a)]
    if absent:
        raise PluginError(
            f"{label}: {type(backbone).__name__} has no {', '.join(absent)} attribute; a backbone sets "
            f"{', '.join(BACKBONE_ATTRIBUTES)} (subclass mtlzoo.Backbone for the defaults: no input "
            f"statistics, size_divisor 1)"
        )
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
    if mean is not None and not (_float3(mean) and _float3(std) and all(float(s) > 0 for s in std or ())):
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


def derived_target(
    derivation: Any, source: TargetInfo, source_kind: TargetKind, kind: TargetKind, label: str
) -> None:
    """A task type's derivation turns a target of ``source_kind`` (its registered example)
    into a target that ``kind``, the kind it declares, accepts (dtype, shape, values). The
    build checks every derivation a spec asks for with this, and the conformance kit every
    derivation a task type offers, so both refuse the same derivations."""
    if kind.name != derivation.info.kind:
        raise PluginError(
            f"{label}: the derivation declares kind {derivation.info.kind!r}, checked as {kind.name!r}"
        )
    if source_kind.example is None:
        return  # nothing to derive from: the source kind's own check reports it
    value = source_kind.example(source, 12, 16, torch.Generator().manual_seed(0))
    try:
        derived = derivation.fn(value)
    except Exception as exc:  # noqa: BLE001 - plugin code
        raise PluginError(
            f"{label}: deriving a {kind.name!r} target from a {source_kind.name!r} example failed: "
            f"{_first_line(exc)}"
        ) from exc
    sample = {"image": torch.zeros(3, 12, 16), "derived": derived}
    info = DatasetInfo("derivation", {"derived": derivation.info})
    problems = sample_problems(
        sample, info, {kind.name: kind}, f"{label}: derived from a {source_kind.name!r} target"
    )
    if problems:
        raise PluginError("; ".join(problems))


def loss_value(loss: Any, label: str) -> None:
    """A loss module's value is a scalar tensor (what training backpropagates)."""
    if not (torch.is_tensor(loss) and loss.dim() == 0):
        shape = list(loss.shape) if torch.is_tensor(loss) else type(loss).__name__
        raise PluginError(f"{label} returned {shape}; a loss returns a scalar tensor")


def _first_line(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"


def dry_forward(
    model: Architecture,
    backbone: Any,
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
            except ConfigError:
                raise  # the backbone refuses the spec's input size: the spec's fault, said by the backbone
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


def parameter_groups(model: Architecture, label: str) -> None:
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


_COMBINER_FIX = "a combiner must call step.backward, step.backward_weighted or step.set_shared_gradient"


def _without_gradient(named: Sequence[tuple[str, Tensor]]) -> list[tuple[str, Tensor]]:
    return [(n, p) for n, p in named if p.requires_grad and p.grad is None and not is_marked_unused(p)]


def _shown(names: Sequence[str]) -> str:
    return ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")


def shared_gradients(named: Sequence[tuple[str, Tensor]], label: str) -> None:
    """After a backward pass: every trainable shared parameter holds a gradient
    (parameters given to :func:`mtlzoo.mark_unused` excepted)."""
    missing = [n for n, _ in _without_gradient(named)]
    if missing:
        raise PluginError(
            f"{label}: after the first step {len(missing)} of {len(named)} shared parameters have no gradient "
            f"({_shown(missing)}); {_COMBINER_FIX} (a backbone marks parameters unused by design with "
            f"mtlzoo.mark_unused)"
        )


def combiner_made_gradients(
    named: Sequence[tuple[str, Tensor]], task_params: Sequence[Tensor], label: str
) -> None:
    """After ``combiner.backward``: the combiner backpropagated something. Raises naming the
    combiner (``label``) when no trainable shared parameter and no task parameter holds a
    gradient; a partial gap is not the combiner's doing (see :func:`first_step_gradients`)."""
    trainable = [n for n, p in named if p.requires_grad and not is_marked_unused(p)]
    missing = [n for n, _ in _without_gradient(named)]
    if not trainable or len(missing) < len(trainable):
        return
    if any(p.grad is not None for p in task_params if p.requires_grad):
        return
    raise PluginError(
        f"{label}: after the first step {len(missing)} of {len(named)} shared parameters have no gradient "
        f"({_shown(missing)}), nor has any task's parameter: the combiner made none; {_COMBINER_FIX}"
    )


def _unread_stages(backbone: Any, missing: set[int]) -> list[tuple[int, str]] | None:
    """The backbone stages none of whose parameters got a gradient, as ``(map index, module
    names)``, when they hold every parameter in ``missing`` (ids); ``None`` otherwise or for a
    backbone without stages."""
    staged = backbone.staged() if callable(getattr(backbone, "staged", None)) else None
    if not staged:
        return None
    names = {id(m): n for n, m in backbone.named_modules() if n}
    out, covered = [], set()
    for i, stage in enumerate(staged):
        params = [p for p in stage.parameters() if p.requires_grad]
        if params and all(id(p) in missing for p in params):
            own = names.get(id(stage)) or ", ".join(names[id(c)] for c in stage.children() if id(c) in names)
            out.append((i, own or f"stage {i}"))
            covered |= {id(p) for p in params}
    return out if out and missing <= covered else None


def _drop_maps_hint(options: Mapping[str, Any] | None, first_unread: int | None) -> str:
    """How to make the backbone return only the maps the heads read."""
    if options is not None and "out_indices" in options and first_unread is not None:
        current = options.get("out_indices")
        keep = list(current)[:first_unread] if current else list(range(first_unread))
        return f"return only the maps the heads read (model.backbone.out_indices={keep})"
    return "configure the backbone to return only the maps the heads read (`mtlzoo config show` lists its options)"


def first_step_gradients(
    model: Architecture, labels: Mapping[str, str], backbone_options: Mapping[str, Any] | None = None
) -> None:
    """After the first training step of ``model`` (an :class:`~mtlzoo.Architecture`): every
    trainable shared parameter holds a gradient. When some do not, the one-line error blames
    what caused it:

    * none holds one, and no task parameter either: the combiner (``labels["combiner"]``)
      never backpropagated;
    * only backbone parameters lack one: no head reads the maps they compute (named by
      stage when the backbone has :meth:`~mtlzoo.Backbone.staged`), with how to drop those
      maps (``out_indices`` when the backbone's options, ``backbone_options``, have it);
    * otherwise the architecture (``labels["architecture"]``): its predictions do not depend
      on shared parameters it declares, or its shared representation is not what its
      predictions are computed from.
    """
    named = list(model.named_shared_parameters())
    missing = _without_gradient(named)
    if not missing:
        return
    task_params = [p for t in model.task_names for p in model.task_parameters(t)]
    combiner_made_gradients(named, task_params, f"combiner: {labels.get('combiner', 'the combiner')}")
    names = [n for n, _ in missing]
    count = f"{len(missing)} of {len(named)} shared parameters"
    backbone: Any = getattr(model, "backbone", None)
    own = [p for p in backbone.parameters() if p.requires_grad] if isinstance(backbone, nn.Module) else []
    in_backbone = {id(p) for _, p in missing} <= {id(p) for p in own}
    if own and in_backbone and len(missing) < len(own):
        where = f"model.backbone: {labels.get('backbone', 'the backbone')}"
        stages = _unread_stages(backbone, {id(p) for _, p in missing})
        if stages is None:
            raise PluginError(
                f"{where}: {count} get no gradient ({_shown(names)}) although the tasks' losses were "
                f"backpropagated: no head reads the maps they compute; "
                f"{_drop_maps_hint(backbone_options, None)}, use heads that read every map, or mark "
                f"parameters unused by design with mtlzoo.mark_unused"
            )
        info = [FeatureInfo(int(c), int(s)) for c, s in backbone.feature_info]
        idx = [i for i, _ in stages]
        strides = ", ".join(str(info[i].stride) for i in idx if i < len(info))
        raise PluginError(
            f"{where}: no head reads its map{'s' if len(idx) > 1 else ''} {', '.join(map(str, idx))} "
            f"(stride {strides}), so the stage{'s' if len(idx) > 1 else ''} computing "
            f"{'them' if len(idx) > 1 else 'it'} ({'; '.join(s for _, s in stages)}) get no gradient: "
            f"{count}; {_drop_maps_hint(backbone_options, idx[0])}, or use heads that read every map"
        )
    raise PluginError(
        f"model.architecture: {labels.get('architecture', 'the architecture')}: after the first step {count} "
        f"have no gradient ({_shown(names)}) although the combiner backpropagated the tasks' losses: the "
        f"predictions do not depend on them, or the shared representation run() returns is not the one the "
        f"predictions are computed from (gradient-level combiners differentiate through it)"
    )


def task_parameters_without_gradient(model: Architecture) -> dict[str, str]:
    """After the first training step of ``model``: for each task whose trainable parameters
    did not all get a gradient, a short description of them (``"3 of 40 (heads.a.w, ...)"``).

    Parameters given to :func:`mtlzoo.mark_unused` are fine. A missing gradient is not always
    a fault (a deep-supervision head while ``aux_weight`` is 0), so the trainer warns rather than
    stops; a per-task part computed before the shared representation (a task's gate inside a
    mixture the architecture lists as shared) is the fault this catches."""
    names = {id(p): n for n, p in model.named_parameters()}
    out = {}
    for task in model.task_names:
        params = [p for p in model.task_parameters(task) if p.requires_grad]
        missing = _without_gradient([(names.get(id(p), "?"), p) for p in params])
        if missing:
            out[task] = f"{len(missing)} of {len(params)} ({_shown([n for n, _ in missing])})"
    return out


__all__ = [
    "task_parameters_without_gradient",
    "backbone_attributes",
    "feature_maps",
    "head_output",
    "loss_value",
    "derived_target",
    "dry_forward",
    "parameter_groups",
    "shared_gradients",
    "combiner_made_gradients",
    "first_step_gradients",
    "BACKBONE_ATTRIBUTES",
]
