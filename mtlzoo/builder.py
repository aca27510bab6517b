"""Builder: a validated spec -> model, tasks, combiner and datasets, through the registries."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from .combine import Combiner
from .data import DatasetInfo
from .errors import ConfigError, DataError, MtlzooError, UnknownNameError
from .model import FeatureInfo, MultiTaskModel
from .registry import Registries
from .tasks import TaskInfo


@dataclass
class Task:
    """One task of a built experiment: where its target is, how it is scored and weighted."""

    name: str
    type: str
    target: str
    info: TaskInfo
    loss: nn.Module
    metrics: dict[str, Any]  # log key -> torchmetrics.Metric

    def metric_directions(self) -> dict[str, bool]:
        """Metric key -> ``higher_is_better``."""
        return {k: bool(m.higher_is_better) for k, m in self.metrics.items()}


@dataclass
class Experiment:
    """Everything :func:`build` makes from a spec."""

    cfg: DictConfig
    model: MultiTaskModel
    tasks: dict[str, Task]
    combiner: Combiner
    info: DatasetInfo
    datasets: dict[str, Any] = field(default_factory=dict)
    registries: Registries | None = None

    def dataset(self, split: str) -> Any:
        """The dataset of ``split``, built (with its pipeline) on first use."""
        if split not in self.datasets:
            self.datasets[split] = build_dataset(self.cfg, split, self.registries, self.cfg.tasks)
        return self.datasets[split]


def _registries(registries: Registries | None, cfg: DictConfig) -> Registries:
    if registries is not None:
        return registries
    from .plugins import get_registries

    return get_registries(strict=cfg.plugins.strict or None, block=list(cfg.plugins.block))


def _options(node: DictConfig) -> tuple[str, dict[str, Any]]:
    data = OmegaConf.to_container(node, resolve=True)
    assert isinstance(data, dict)
    name = data.pop("name")
    return name, data


def _call(kind: str, name: str, path: str, factory: Any, *args: Any, **kwargs: Any) -> Any:
    """Call a plugin factory; a non-mtlzoo exception is blamed on the plugin with its path."""
    try:
        return factory(*args, **kwargs)
    except ConfigError as exc:
        # name the spec key the problem sits under, unless the plugin already did
        if str(exc).startswith(path):
            raise
        raise ConfigError(f"{path}: {exc}") from exc
    except UnknownNameError as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    except MtlzooError:
        raise
    except Exception as exc:  # noqa: BLE001 - plugin code may raise anything
        msg = str(exc).strip().splitlines()
        raise ConfigError(
            f"{path}: building {kind} {name!r} failed: {type(exc).__name__}: {msg[0] if msg else ''}"
        ) from exc


def derive_specs(tasks: DictConfig) -> list[Any]:
    """Derived targets asked for by tasks with ``from`` (boundary maps, image labels)."""
    from .pipeline import DeriveSpec

    specs = []
    for name, t in tasks.items():
        if t.source:
            kind = {"boundary": "boundary", "labels": "labels"}.get(t.type)
            if kind is None:
                raise ConfigError(
                    f"tasks.{name}.from: a {t.type!r} target cannot be derived; only boundary and labels tasks "
                    f"take `from` (a segmentation target key)"
                )
            specs.append(DeriveSpec(kind=kind, source=t.source, target=t.target, width=t.width))
    return specs


def build_dataset(cfg: DictConfig, split: str, registries: Registries | None = None,
                  tasks: DictConfig | None = None) -> Any:
    """Build the dataset of ``split`` wrapped in the pipeline (derived targets, augmentation,
    normalisation for the backbone)."""
    from .pipeline import AugmentOptions, build_pipeline, mean_std_for_backbone

    registries = _registries(registries, cfg)
    name, opts = _options(cfg.data)
    entry = registries["dataset"].get(name)
    base = _call("dataset", name, "data", entry.factory, split, **opts)
    if not hasattr(base, "info"):
        raise ConfigError(f"data: dataset {name!r} (plugin {entry.plugin}) has no `info` attribute; "
                          f"datasets must describe their targets with a DatasetInfo")
    augment = AugmentOptions(**OmegaConf.to_container(cfg.augment, resolve=True))
    backbone = OmegaConf.to_container(cfg.model.backbone, resolve=True)
    mean_std = None
    if augment.normalize == "auto":
        from_scratch = not backbone.get("pretrained") and not backbone.get("weights")
        if from_scratch and base.info.mean is not None and base.info.std is not None:
            # random weights expect nothing in particular: the data's own statistics whiten best
            mean_std = (list(base.info.mean), list(base.info.std))
        else:
            mean_std = mean_std_for_backbone(backbone)
    derive = derive_specs(tasks if tasks is not None else cfg.tasks)
    return build_pipeline(base, split, augment, derive, mean_std)


def build_model(cfg: DictConfig, tasks: dict[str, TaskInfo], registries: Registries | None = None) -> MultiTaskModel:
    """Build the shared backbone and one head per task."""
    registries = _registries(registries, cfg)
    name, opts = _options(cfg.model.backbone)
    entry = registries["backbone"].get(name)
    backbone = _call("backbone", name, "model.backbone", entry.factory, **opts)
    feature_info = [FeatureInfo(*fi) for fi in getattr(backbone, "feature_info", [])]
    if not feature_info:
        raise ConfigError(f"model.backbone: backbone {name!r} (plugin {entry.plugin}) exposes no feature_info")
    heads = {}
    for tname, info in tasks.items():
        hname, hopts = _options(cfg.tasks[tname].head)
        hentry = registries["head"].get(hname)
        heads[tname] = _call("head", hname, f"tasks.{tname}.head", hentry.factory, feature_info,
                             info.out_channels, **hopts)
    return MultiTaskModel(backbone, heads)


def task_infos(cfg: DictConfig, info: DatasetInfo, registries: Registries | None = None) -> dict[str, TaskInfo]:
    """Match every task to a target of the dataset and work out its head's output channels."""
    registries = _registries(registries, cfg)
    out = {}
    for tname, t in cfg.tasks.items():
        ttype = registries["task"].get(t.type).factory()
        if t.target not in info.targets:
            have = ", ".join(sorted(info.targets)) or "none"
            raise ConfigError(
                f"tasks.{tname}.target: dataset {info.name!r} has no target {t.target!r} (it has: {have}); "
                f"set tasks.{tname}.target to one of those"
                + ("" if t.type not in ("boundary", "labels") else f", or derive it with tasks.{tname}.from: <mask key>")
            )
        tinfo = info.targets[t.target]
        if ttype.target_kinds and tinfo.kind not in ttype.target_kinds:
            raise ConfigError(
                f"tasks.{tname}: a {t.type!r} task needs a target of kind {'/'.join(ttype.target_kinds)}, "
                f"but {t.target!r} is {tinfo.kind!r}; pick another task type or target"
            )
        out[tname] = TaskInfo(tname, t.type, t.target, int(ttype.out_channels(tinfo)), tinfo)
    return out


def build_tasks(cfg: DictConfig, infos: dict[str, TaskInfo], registries: Registries | None = None) -> dict[str, Task]:
    """Build each task's loss and metrics."""
    registries = _registries(registries, cfg)
    tasks = {}
    for tname, info in infos.items():
        t = cfg.tasks[tname]
        lname, lopts = _options(t.loss)
        loss = _call("loss", lname, f"tasks.{tname}.loss", registries["loss"].get(lname).factory, info, **lopts)
        metrics = {}
        for i, mnode in enumerate(t.metrics):
            mname, mopts = _options(mnode)
            metric = _call("metric", mname, f"tasks.{tname}.metrics[{i}]",
                           registries["metric"].get(mname).factory, info, **mopts)
            if getattr(metric, "higher_is_better", None) is None:
                raise ConfigError(f"tasks.{tname}.metrics[{i}]: metric {mname!r} does not set higher_is_better")
            key = getattr(metric, "key", None) or mname
            if key in metrics:
                raise ConfigError(f"tasks.{tname}.metrics: two metrics report {key!r}; drop one")
            metrics[key] = metric
        tasks[tname] = Task(tname, t.type, t.target, info, loss, metrics)
    return tasks


def build_combiner(cfg: DictConfig, task_names: list[str], registries: Registries | None = None) -> Combiner:
    """Build the loss combiner for these tasks."""
    registries = _registries(registries, cfg)
    name, opts = _options(cfg.combiner)
    combiner = _call("combiner", name, "combiner", registries["combiner"].get(name).factory, list(task_names), **opts)
    if not isinstance(combiner, Combiner):
        raise ConfigError(f"combiner: {name!r} did not build a mtlzoo.combine.Combiner (got {type(combiner).__name__})")
    return combiner


def build(cfg: DictConfig, registries: Registries | None = None, split: str = "train") -> Experiment:
    """Build model, tasks, combiner and the ``split`` dataset from a loaded spec
    (:func:`mtlzoo.config.load`). Other splits are built on demand by
    :meth:`Experiment.dataset`."""
    registries = _registries(registries, cfg)
    dataset = build_dataset(cfg, split, registries)
    info = dataset.info
    if not isinstance(info, DatasetInfo):
        raise DataError(f"data: dataset {cfg.data.name!r} has an info attribute that is not a DatasetInfo")
    infos = task_infos(cfg, info, registries)
    torch.manual_seed(int(cfg.seed))  # model init depends only on the seed
    model = build_model(cfg, infos, registries)
    tasks = build_tasks(cfg, infos, registries)
    combiner = build_combiner(cfg, list(tasks), registries)
    return Experiment(cfg, model, tasks, combiner, info, {split: dataset}, registries)
