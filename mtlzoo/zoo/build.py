"""Building: a validated spec -> the experiment (dataset pipeline, model, tasks, combiner).

Order: the dataset (its info says which targets exist) -> each task's target (or its
derivation) -> the backbone (checked against its contract) -> the heads -> one dry forward
pass (maps vs ``feature_info``, head outputs vs their tasks) -> losses, metrics, combiner.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
from omegaconf import DictConfig, OmegaConf

from ..contract import checks
from ..contract.architecture import Architecture, ArchitectureParts
from ..contract.combine import Combiner
from ..contract.data import DatasetInfo, TargetInfo, TargetKind
from ..contract.errors import ConfigError, PluginError
from ..contract.features import FeatureInfo
from ..contract.model import MultiTaskModel, Normalize
from ..contract.tasks import Derivation, TaskInfo
from ..runtime.experiment import Experiment, Task
from ..runtime.pipeline import Derived, build_pipeline
from .parts import Spec
from .registry import Entry

if TYPE_CHECKING:
    from .zoo import Zoo

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: an input normalisation: ``(mean, std)`` per channel
Stats = tuple[list[float], list[float]]


def _plain(node: Any) -> Any:
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node


def _validated(zoo: Zoo, spec: Spec | DictConfig) -> Spec:
    """``spec`` as a :class:`Spec` (a tree that :meth:`Zoo.spec` returned is validated again)."""
    return spec if isinstance(spec, Spec) else zoo.validate(spec)


def base_dataset(zoo: Zoo, spec: Spec | DictConfig, split: str) -> Any:
    """The dataset plugin's ``split`` (no pipeline), its ``info`` checked."""
    spec = _validated(zoo, spec)
    dataset = zoo.make("dataset", spec.data, split)
    label = spec.data.label
    for key, tinfo in dataset.info.targets.items():
        if not isinstance(tinfo, TargetInfo):
            raise PluginError(f"data: {label}: info.targets[{key!r}] is not a TargetInfo")
        zoo.target_kind(tinfo.kind, f"data: {label}: target {key!r}")
    return dataset


def resolve_targets(
    zoo: Zoo, spec: Spec | DictConfig, info: DatasetInfo
) -> tuple[dict[str, TaskInfo], list[Derived]]:
    """Match every task to a target of the dataset (or derive it); work out its head's channels."""
    spec = _validated(zoo, spec)
    infos: dict[str, TaskInfo] = {}
    derived: list[Derived] = []
    deriving: dict[str, str] = {}  # task -> the target key it derives
    for name, task in spec.tasks.items():
        path = f"tasks.{name}"
        entry, ttype = task.type.entry, task.task_type
        target, source = task.target, task.source
        if source is not None:
            src = info.targets.get(source)
            if src is None:
                have = ", ".join(sorted(info.targets)) or "none"
                raise ConfigError(
                    f"{path}.from: dataset {info.name!r} has no target {source!r} (it has: {have})"
                )
            if ttype.derive_from and src.kind not in ttype.derive_from:
                raise ConfigError(
                    f"{path}.from: a {entry.name!r} target is derived from a "
                    f"{'/'.join(ttype.derive_from)} target, but {source!r} is {src.kind!r}"
                )
            derivation = ttype.derive(src)  # type: ignore[misc]
            if not isinstance(derivation, Derivation):
                raise PluginError(
                    f"{path}: {entry.label}: derive() returned {type(derivation).__name__}, not a Derivation"
                )
            tinfo = derivation.info
            zoo.target_kind(tinfo.kind, f"{path}: {entry.label} derives")
            # the conformance kit makes the same check (one contract for both)
            checks.derived_target(
                derivation,
                src,
                zoo.target_kind(src.kind),
                zoo.target_kind(tinfo.kind),
                f"{path}: {entry.label}",
            )
            derived.append(Derived(target, source, derivation.fn, tinfo))
            deriving[name] = target
        else:
            if target not in info.targets:
                have = ", ".join(sorted(info.targets)) or "none"
                hint = f", or derive it with {path}.from: <key>" if ttype.derive is not None else ""
                raise ConfigError(
                    f"{path}.target: dataset {info.name!r} has no target {target!r} (it has: {have}); "
                    f"set {path}.target to one of those{hint}"
                )
            tinfo = info.targets[target]
        if ttype.target_kinds and tinfo.kind not in ttype.target_kinds:
            raise ConfigError(
                f"{path}: a {entry.name!r} task needs a target of kind {'/'.join(ttype.target_kinds)}, "
                f"but {target!r} is {tinfo.kind!r}; pick another task type or target"
            )
        kind = zoo.target_kind(tinfo.kind)
        for part in (task.head, task.loss, *task.metrics):
            _check_kind(part.entry, kind, part.path)
        try:
            channels = int(ttype.out_channels(tinfo))
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from None
        infos[name] = TaskInfo(name, entry.name, target, channels, tinfo)
    _refuse_shadowing(info, infos, deriving)
    return infos, derived


def _refuse_shadowing(info: DatasetInfo, infos: dict[str, TaskInfo], deriving: dict[str, str]) -> None:
    """A derived target replaces the dataset's target of that key in every sample: refused when
    another task reads the dataset's one (it would silently train on the derived values)."""
    for reader, task in infos.items():
        if reader in deriving:
            continue
        for name, key in deriving.items():
            if key == task.target:
                other = name if name != key else f"{name}_derived"
                raise ConfigError(
                    f"tasks.{name}: derives target {key!r}, but dataset {info.name!r} yields {key!r} too and task "
                    f"{reader!r} reads it (it would train on the derived values); give tasks.{name} another "
                    f"`target` (e.g. target: {other})"
                )


def _check_kind(entry: Entry, kind: TargetKind, path: str) -> None:
    if not entry.accepts(kind):
        raise ConfigError(
            f"{path}: {entry.kind} {entry.name!r} works on {', '.join(entry.targets or ())} targets, not "
            f"{kind.name!r}; pick another {entry.kind} (`mtlzoo list {entry.kind}`)"
        )


def normalization(cfg: DictConfig, backbone: Any, info: DatasetInfo, label: str) -> Stats | None:
    """The model's input statistics from ``model.normalize`` (see :class:`~mtlzoo.zoo.sections.ModelConfig`)."""
    mode = cfg.model.normalize
    own: tuple[Any, Any] = (getattr(backbone, "input_mean", None), getattr(backbone, "input_std", None))
    data: tuple[Any, Any] = (info.mean, info.std)
    chosen: tuple[Any, Any]
    if mode == "none":
        return None
    if mode == "imagenet":
        chosen = (IMAGENET_MEAN, IMAGENET_STD)
    elif mode == "backbone":
        if own[0] is None:
            raise ConfigError(
                f"model.normalize: {label} declares no input statistics (random init); use auto, "
                f"dataset or imagenet"
            )
        chosen = own
    elif mode == "dataset":
        if data[0] is None:
            raise ConfigError(
                f"model.normalize: dataset {info.name!r} declares no image mean/std; use auto or imagenet"
            )
        chosen = data
    else:  # auto
        chosen = own if own[0] is not None else data if data[0] is not None else (IMAGENET_MEAN, IMAGENET_STD)
    return [float(m) for m in chosen[0]], [float(s) for s in chosen[1]]


def build_pipeline_for(zoo: Zoo, spec: Spec | DictConfig, split: str, base: Any) -> Any:
    """The pipeline of one split of a spec's dataset (``base`` from :func:`base_dataset`), with
    the spec's derived targets and augmentation: what training reads, without a model."""
    spec = _validated(zoo, spec)
    _, derived = resolve_targets(zoo, spec, base.info)
    return _pipeline(zoo, spec, split, derived, base)


def _pipeline(zoo: Zoo, spec: Spec, split: str, derived: list[Derived], base: Any = None) -> Any:
    base = base if base is not None else base_dataset(zoo, spec, split)
    kinds = {t.kind: zoo.target_kind(t.kind) for t in base.info.targets.values()}
    kinds.update({d.info.kind: zoo.target_kind(d.info.kind) for d in derived})
    return build_pipeline(base, split, _plain(spec.cfg.augment), derived, kinds, seed=int(spec.cfg.seed))


def _probe_size(dataset: Any, divisor: int) -> tuple[int, int]:
    """The input size of the dry forward pass: the first sample's, as training and evaluation
    will feed it (they do not pad), so a backbone that refuses it says so at build, not at the
    first step; 64x64 rounded up to ``divisor`` for an empty split."""
    if len(dataset) == 0:
        return -(-64 // divisor) * divisor, -(-64 // divisor) * divisor
    h, w = (int(s) for s in dataset[0]["image"].shape[-2:])
    return h, w


def build_experiment(zoo: Zoo, spec: Spec, split: str = "train") -> Experiment:
    """Build everything from a validated spec (see the module docstring); no option is
    validated again."""
    cfg = spec.cfg
    base = base_dataset(zoo, spec, split)
    infos, derived = resolve_targets(zoo, spec, base.info)
    dataset = _pipeline(zoo, spec, split, derived, base)
    labels = {"backbone": spec.backbone.label, "combiner": spec.combiner.label, "dataset": spec.data.label}
    tasks = build_tasks(zoo, spec, infos)
    model, backbone, norm = build_model(zoo, spec, infos, base.info, labels)
    checks.dry_forward(model, backbone, tasks, _probe_size(dataset, int(backbone.size_divisor)), labels)
    combiner = build_combiner(zoo, spec, list(tasks))
    if cfg.combiner.get("wrt") == "features" and not model.has_shared_representation:
        raise ConfigError(
            f"combiner.wrt: {labels['architecture']} has no shared representation, so 'features' has nothing to "
            f"differentiate; use wrt: params"
        )
    return Experiment(
        cfg,
        model,
        tasks,
        combiner,
        dataset.info,
        {split: dataset},
        lambda s: _pipeline(zoo, spec, s, derived),
        labels,
        norm,
        int(backbone.size_divisor),
        spec.relative_paths(),
    )


def build_model(
    zoo: Zoo, spec: Spec | DictConfig, infos: dict[str, TaskInfo], info: DatasetInfo, labels: dict[str, str]
) -> tuple[Architecture, Any, Stats | None]:
    """The backbone (contract attributes checked), one head per task, the architecture
    (hard parameter sharing without one) and its input normalisation: ``(model, backbone,
    normalisation)``. Fills ``labels``."""
    spec = _validated(zoo, spec)
    torch.manual_seed(int(spec.cfg.seed))  # model init depends only on the seed
    backbone = zoo.make("backbone", spec.backbone)
    feature_info = checks.backbone_attributes(backbone, f"model.backbone: {labels['backbone']}")

    def make_head(name: str, fi: Sequence[FeatureInfo]) -> torch.nn.Module:
        part = spec.tasks[name].head
        labels[name] = part.label
        return zoo.make("head", part, list(fi), infos[name].out_channels)

    heads = {name: make_head(name, feature_info) for name in infos}
    norm = normalization(spec.cfg, backbone, info, labels["backbone"])
    model: Architecture
    if spec.architecture is None:
        labels["architecture"] = "hard parameter sharing (no model.architecture)"
        model = MultiTaskModel(backbone, heads)
    else:
        labels["architecture"] = spec.architecture.label
        parts = ArchitectureParts(backbone, heads, dict(infos), make_head)
        model = zoo.make("architecture", spec.architecture, parts)
        if list(model.task_names) != list(infos):
            raise PluginError(
                f"model.architecture: {labels['architecture']} predicts tasks {list(model.task_names)}, the spec has "
                f"{list(infos)}"
            )
    if norm is not None:
        model.normalize = Normalize(*norm)
    checks.parameter_groups(model, f"model.architecture: {labels['architecture']}")
    return model, backbone, norm


def build_tasks(zoo: Zoo, spec: Spec | DictConfig, infos: dict[str, TaskInfo]) -> dict[str, Task]:
    """Each task's loss and metrics."""
    spec = _validated(zoo, spec)
    tasks = {}
    for name, info in infos.items():
        t = spec.tasks[name]
        labels = {"loss": t.loss.label}
        loss = zoo.make("loss", t.loss, info)
        metrics = {}
        for part in t.metrics:
            metric = zoo.make("metric", part, info)
            key = getattr(metric, "key", None) or part.name
            if key in metrics:
                raise ConfigError(f"tasks.{name}.metrics: two metrics report {key!r}; drop one")
            metrics[key] = metric
            labels[key] = part.label
        kind = zoo.target_kind(info.kind)
        tasks[name] = Task(name, info.type, info.target, info, kind, loss, metrics, labels)
    return tasks


def build_combiner(zoo: Zoo, spec: Spec | DictConfig, task_names: list[str]) -> Combiner:
    """The loss combiner for these tasks."""
    return zoo.make("combiner", _validated(zoo, spec).combiner, list(task_names))


__all__ = [
    "build_experiment",
    "base_dataset",
    "build_pipeline_for",
    "resolve_targets",
    "normalization",
    "build_tasks",
    "build_combiner",
]
