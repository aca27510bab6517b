"""Building: a validated spec -> the experiment (dataset pipeline, model, tasks, combiner).

Order: the dataset (its info says which targets exist) -> each task's target (or its
derivation) -> the backbone (checked against its contract) -> the heads -> one dry forward
pass (maps vs ``feature_info``, head outputs vs their tasks) -> losses, metrics, combiner.
"""

from __future__ import annotations

from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from ..contract import checks
from ..contract.architecture import Architecture, ArchitectureParts
from ..contract.combine import Combiner
from ..contract.data import DatasetInfo, TargetInfo
from ..contract.errors import ConfigError, PluginError
from ..contract.tasks import Derivation, TaskInfo
from ..runtime.experiment import Experiment, Task
from ..runtime.model import MultiTaskModel, Normalize
from ..runtime.pipeline import Derived, build_pipeline
from .spec import task_type

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _plain(node: Any) -> Any:
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node


def base_dataset(zoo: Any, cfg: DictConfig, split: str) -> Any:
    """The dataset plugin's ``split`` (no pipeline), its ``info`` checked."""
    dataset = zoo.make("dataset", cfg.data, split, path="data")
    entry = zoo.entry("dataset", cfg.data.name)
    info = getattr(dataset, "info", None)
    if not isinstance(info, DatasetInfo):
        raise PluginError(
            f"data: {entry.label} has no `info: DatasetInfo` attribute (got {type(info).__name__}); "
            f"datasets describe their targets with a DatasetInfo"
        )
    for key, tinfo in info.targets.items():
        if not isinstance(tinfo, TargetInfo):
            raise PluginError(f"data: {entry.label}: info.targets[{key!r}] is not a TargetInfo")
        zoo.target_kind(tinfo.kind, f"data: {entry.label}: target {key!r}")
    return dataset


def resolve_targets(
    zoo: Any, cfg: DictConfig, info: DatasetInfo
) -> tuple[dict[str, TaskInfo], list[Derived]]:
    """Match every task to a target of the dataset (or derive it); work out its head's channels."""
    infos: dict[str, TaskInfo] = {}
    derived: list[Derived] = []
    deriving: dict[str, str] = {}  # task -> the target key it derives
    for name, node in cfg.tasks.items():
        path = f"tasks.{name}"
        t = _plain(node)
        entry, _, ttype = task_type(zoo.registries, t, path)
        target, source = t["target"], t.get("from")
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
        for part, pnode in (("head", t["head"]), ("loss", t["loss"])):
            _check_kind(zoo.entry(part, pnode["name"]), kind, f"{path}.{part}")
        for i, m in enumerate(t["metrics"]):
            _check_kind(zoo.entry("metric", m["name"]), kind, f"{path}.metrics[{i}]")
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


def _check_kind(entry: Any, kind: Any, path: str) -> None:
    if not entry.accepts(kind):
        raise ConfigError(
            f"{path}: {entry.kind} {entry.name!r} works on {', '.join(entry.targets)} targets, not "
            f"{kind.name!r}; pick another {entry.kind} (`mtlzoo list {entry.kind}`)"
        )


def normalization(cfg: DictConfig, backbone: Any, info: DatasetInfo, label: str) -> tuple[list, list] | None:
    """The model's input statistics from ``model.normalize`` (see :class:`~mtlzoo.zoo.sections.ModelConfig`)."""
    mode = cfg.model.normalize
    own = (getattr(backbone, "input_mean", None), getattr(backbone, "input_std", None))
    data = (info.mean, info.std)
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


def build_pipeline_for(zoo: Any, cfg: DictConfig, split: str, base: Any) -> Any:
    """The pipeline of one split of a spec's dataset (``base`` from :func:`base_dataset`), with
    the spec's derived targets and augmentation: what training reads, without a model."""
    _, derived = resolve_targets(zoo, cfg, base.info)
    return _pipeline(zoo, cfg, split, derived, base)


def _pipeline(zoo: Any, cfg: DictConfig, split: str, derived: list[Derived], base: Any = None) -> Any:
    base = base if base is not None else base_dataset(zoo, cfg, split)
    kinds = {t.kind: zoo.target_kind(t.kind) for t in base.info.targets.values()}
    kinds.update({d.info.kind: zoo.target_kind(d.info.kind) for d in derived})
    return build_pipeline(base, split, _plain(cfg.augment), derived, kinds, seed=int(cfg.seed))


def _probe_size(dataset: Any, divisor: int) -> tuple[int, int]:
    """The input size of the dry forward pass: the first sample's, rounded up to ``divisor``."""
    if len(dataset) == 0:
        h, w = 64, 64
    else:
        h, w = (int(s) for s in dataset[0]["image"].shape[-2:])
    return -(-h // divisor) * divisor, -(-w // divisor) * divisor


def build_experiment(zoo: Any, cfg: DictConfig, split: str = "train") -> Experiment:
    """Build everything from a validated spec (see the module docstring)."""
    base = base_dataset(zoo, cfg, split)
    infos, derived = resolve_targets(zoo, cfg, base.info)
    dataset = _pipeline(zoo, cfg, split, derived, base)
    labels = {
        "backbone": zoo.entry("backbone", cfg.model.backbone.name).label,
        "combiner": zoo.entry("combiner", cfg.combiner.name).label,
        "dataset": zoo.entry("dataset", cfg.data.name).label,
    }
    tasks = build_tasks(zoo, cfg, infos)
    model, backbone, norm = build_model(zoo, cfg, infos, base.info, labels)
    checks.dry_forward(model, backbone, tasks, _probe_size(dataset, int(backbone.size_divisor)), labels)
    combiner = build_combiner(zoo, cfg, list(tasks))
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
        lambda s: _pipeline(zoo, cfg, s, derived),
        labels,
        norm,
        int(backbone.size_divisor),
    )


def build_model(
    zoo: Any, cfg: DictConfig, infos: dict[str, TaskInfo], info: DatasetInfo, labels: dict[str, str]
) -> tuple[Architecture, Any, tuple[list, list] | None]:
    """The backbone (contract attributes checked), one head per task, the architecture
    (hard parameter sharing without one) and its input normalisation: ``(model, backbone,
    normalisation)``. Fills ``labels``."""
    torch.manual_seed(int(cfg.seed))  # model init depends only on the seed
    backbone = zoo.make("backbone", cfg.model.backbone, path="model.backbone")
    feature_info = checks.backbone_attributes(backbone, f"model.backbone: {labels['backbone']}")

    def make_head(name: str, fi: Any) -> torch.nn.Module:
        hnode = cfg.tasks[name].head
        labels[name] = zoo.entry("head", hnode.name).label
        head = zoo.make("head", hnode, list(fi), infos[name].out_channels, path=f"tasks.{name}.head")
        if not isinstance(head, torch.nn.Module):
            raise PluginError(
                f"tasks.{name}.head: {labels[name]} built {type(head).__name__}, not an nn.Module"
            )
        return head

    heads = {name: make_head(name, feature_info) for name in infos}
    norm = normalization(cfg, backbone, info, labels["backbone"])
    node = cfg.model.get("architecture")
    if node is None:
        labels["architecture"] = "hard parameter sharing (no model.architecture)"
        model: Architecture = MultiTaskModel(backbone, heads)
    else:
        labels["architecture"] = zoo.entry("architecture", node.name).label
        parts = ArchitectureParts(backbone, heads, dict(infos), make_head)
        model = zoo.make("architecture", node, parts, path="model.architecture")
        if not isinstance(model, Architecture):
            raise PluginError(
                f"model.architecture: {labels['architecture']} built {type(model).__name__}, not a mtlzoo Architecture"
            )
        if list(model.task_names) != list(infos):
            raise PluginError(
                f"model.architecture: {labels['architecture']} predicts tasks {list(model.task_names)}, the spec has "
                f"{list(infos)}"
            )
    if norm is not None:
        model.normalize = Normalize(*norm)
    checks.parameter_groups(model, f"model.architecture: {labels['architecture']}")
    return model, backbone, norm


def build_tasks(zoo: Any, cfg: DictConfig, infos: dict[str, TaskInfo]) -> dict[str, Task]:
    """Each task's loss and metrics."""
    tasks = {}
    for name, info in infos.items():
        t = cfg.tasks[name]
        labels = {"loss": zoo.entry("loss", t.loss.name).label}
        loss = zoo.make("loss", t.loss, info, path=f"tasks.{name}.loss")
        if not callable(loss):
            raise PluginError(
                f"tasks.{name}.loss: {labels['loss']} built {type(loss).__name__}, which is not callable"
            )
        metrics = {}
        for i, mnode in enumerate(t.metrics):
            path = f"tasks.{name}.metrics[{i}]"
            entry = zoo.entry("metric", mnode.name)
            metric = zoo.make("metric", mnode, info, path=path)
            if getattr(metric, "higher_is_better", None) is None:
                raise PluginError(f"{path}: {entry.label} does not set higher_is_better")
            key = getattr(metric, "key", None) or mnode.name
            if key in metrics:
                raise ConfigError(f"tasks.{name}.metrics: two metrics report {key!r}; drop one")
            metrics[key] = metric
            labels[key] = entry.label
        kind = zoo.target_kind(info.kind)
        tasks[name] = Task(name, info.type, info.target, info, kind, loss, metrics, labels)
    return tasks


def build_combiner(zoo: Any, cfg: DictConfig, task_names: list[str]) -> Combiner:
    """The loss combiner for these tasks."""
    combiner = zoo.make("combiner", cfg.combiner, list(task_names), path="combiner")
    if not isinstance(combiner, Combiner):
        label = zoo.entry("combiner", cfg.combiner.name).label
        raise PluginError(f"combiner: {label} built {type(combiner).__name__}, not a mtlzoo Combiner")
    return combiner


__all__ = [
    "build_experiment",
    "base_dataset",
    "build_pipeline_for",
    "resolve_targets",
    "normalization",
    "build_tasks",
    "build_combiner",
]
