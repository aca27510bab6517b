"""Experiment specs: load YAML, apply dot-list overrides, validate, fill defaults.

A spec is data. Loading one never imports or runs anything named in it: YAML is parsed
with OmegaConf's safe loader, the ``oc.coerce`` resolver (which imports modules in
OmegaConf 2.4) is replaced by one that refuses, and only the resolvers in
:data:`ALLOWED_RESOLVERS` may appear in interpolations.

Validation is layered: the fixed sections (``train``, ``plugins`` ...) are checked
against the dataclasses below; every plugin node (``{name: ..., <options>}``) is checked
against the options dataclass its plugin registered. Errors are one line naming the full
key path (``tasks.semseg.head.chanels``) and the fix.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import (
    ConfigKeyError,
    GrammarParseError,
    InterpolationResolutionError,
    MissingMandatoryValue,
    OmegaConfBaseException,
    ValidationError,
)

from .errors import ConfigError, did_you_mean
from .registry import Entry, Registries

ALLOWED_RESOLVERS = frozenset({"oc.env", "oc.select", "oc.dict.keys", "oc.dict.values", "oc.decode"})


def _refuse_coerce(*args: Any, **kwargs: Any) -> Any:
    raise ConfigError("the oc.coerce resolver is disabled: mtlzoo configs are data and never import modules")


# OmegaConf 2.4's oc.coerce imports arbitrary modules by name: configs must not do that.
OmegaConf.register_resolver("oc.coerce", _refuse_coerce, replace=True)


DEFAULT_BACKBONE = {"name": "timm", "arch": "resnet18"}

# -- schemas of the fixed sections ----------------------------------------------------------
@dataclass
class OptimizerConfig:
    """``train.optimizer``: ``adamw`` or ``sgd``."""

    name: str = "adamw"
    lr: float = 1e-3
    weight_decay: float = 1e-4
    momentum: float = 0.9  # sgd only
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])  # adamw only
    nesterov: bool = False


@dataclass
class SchedulerConfig:
    """``train.scheduler``: ``cosine``, ``step``, ``poly`` or ``none``, with optional linear warm-up."""

    name: str = "cosine"
    warmup_epochs: float = 0.0
    min_lr: float = 0.0  # cosine
    step_epochs: int = 30  # step
    gamma: float = 0.1  # step
    power: float = 0.9  # poly


@dataclass
class TrainConfig:
    """``train``: the optimisation loop, evaluation, checkpoints and run directory."""

    epochs: int = 10
    batch_size: int = 16
    eval_batch_size: Optional[int] = None
    num_workers: int = 0
    pin_memory: Optional[bool] = None  # None: on when training on CUDA
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    device: str = "auto"
    # off | bf16 | fp16 | auto (bf16 where supported, else fp16, on CUDA; off on CPU). fp16 runs without
    # loss scaling (combiners own the backward pass), so prefer bf16.
    amp: str = "off"
    channels_last: bool = False
    compile: bool = False
    grad_clip: Optional[float] = None
    eval_every: int = 1
    eval_split: str = "val"
    test_split: Optional[str] = None
    checkpoint_every: int = 1
    max_steps_per_epoch: Optional[int] = None
    select: Optional[str] = None  # "task.metric" choosing the best checkpoint on eval_split
    out_dir: str = "runs"
    run_name: Optional[str] = None
    progress: bool = True
    deterministic: bool = True


@dataclass
class PluginsConfig:
    """``plugins``: plugin names to block (like ``MTLZOO_BLOCK_PLUGINS``) and strict loading."""

    block: list[str] = field(default_factory=list)
    strict: bool = False


@dataclass
class TaskConfig:
    """One entry of ``tasks``. ``from`` (spelled ``from`` in YAML) derives the target from
    another target key (a boundary map or image labels from a segmentation mask)."""

    type: str = "???"
    target: Optional[str] = None
    source: Optional[str] = None
    width: int = 2
    head: dict[str, Any] = field(default_factory=dict)
    loss: dict[str, Any] = field(default_factory=dict)
    metrics: list[Any] = field(default_factory=list)


@dataclass
class ModelConfig:
    """``model``: the shared backbone (a plugin node)."""

    backbone: dict[str, Any] = field(default_factory=dict)  # empty: DEFAULT_BACKBONE


@dataclass
class ExperimentConfig:
    """The whole spec."""

    name: str = "experiment"
    seed: int = 0
    model: ModelConfig = field(default_factory=ModelConfig)
    tasks: dict[str, Any] = field(default_factory=dict)
    combiner: dict[str, Any] = field(default_factory=lambda: {"name": "sum"})
    data: dict[str, Any] = field(default_factory=dict)
    augment: dict[str, Any] = field(default_factory=dict)
    train: TrainConfig = field(default_factory=TrainConfig)
    plugins: PluginsConfig = field(default_factory=PluginsConfig)


# -- helpers --------------------------------------------------------------------------------
def _join(path: str, key: Any) -> str:
    if key is None or key == "":
        return path
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else str(key)


def _field_names(schema: type) -> list[str]:
    return [f.name for f in dataclasses.fields(schema)]


def _type_name(tp: Any) -> str:
    if isinstance(tp, type):
        return tp.__name__
    return str(tp).replace("typing.", "")


def validate_options(options: Any, schema: type | None, path: str, what: str) -> dict[str, Any]:
    """Validate ``options`` (a mapping) against the dataclass ``schema`` and return a plain
    dict with defaults filled in. ``path`` is the key path used in errors, ``what`` names the
    plugin part (``"backbone 'timm'"``)."""
    if options is None:
        options = {}
    if isinstance(options, DictConfig):
        options = OmegaConf.to_container(options, resolve=True)
    if not isinstance(options, dict):
        raise ConfigError(f"{path}: expected a mapping of options, got {type(options).__name__} {options!r}")
    if schema is None:
        if options:
            key = sorted(options)[0]
            raise ConfigError(f"{_join(path, key)}: {what} takes no options; remove {sorted(options)}")
        return {}
    try:
        base = OmegaConf.structured(schema)
    except OmegaConfBaseException as exc:
        raise ConfigError(
            f"{path}: the option schema of {what} ({schema.__name__}) is not a valid OmegaConf "
            f"structured config: {str(exc).splitlines()[0]}; this is a bug in that plugin"
        ) from None
    try:
        merged = OmegaConf.merge(base, OmegaConf.create(options))
    except ConfigKeyError as exc:
        key = str(exc.full_key or exc.key)
        parts = re.findall(r"[^.\[\]]+", key)
        owner = _schema_at(schema, parts[:-1])
        if owner is not None:
            fields = _field_names(owner)
            where = what if owner is schema else f"{_join(path, '.'.join(parts[:-1]))}"
            raise ConfigError(
                f"{_join(path, key)}: unknown option of {where}{did_you_mean(parts[-1], fields)}; "
                f"valid options: {', '.join(fields)}"
            ) from None
        raise ConfigError(f"{_join(path, key)}: {exc.msg.splitlines()[0]}") from None
    except ValidationError as exc:
        key = str(exc.full_key or exc.key)
        expected = _expected_type(schema, key)
        raise ConfigError(
            f"{_join(path, key)}: {exc.msg.splitlines()[0]}" + (f" (expected {expected})" if expected else "")
        ) from None
    except OmegaConfBaseException as exc:
        raise ConfigError(f"{path}: {exc.msg.splitlines()[0] if getattr(exc, 'msg', None) else exc}") from None
    missing = sorted(OmegaConf.missing_keys(merged))
    if missing:
        raise ConfigError(f"{_join(path, missing[0])}: {what} needs a value for this option")
    return OmegaConf.to_container(merged, resolve=True)  # type: ignore[return-value]


def _schema_at(schema: type, parts: list[str]) -> type | None:
    """The nested dataclass reached by following field names ``parts`` from ``schema``."""
    import typing

    tp: Any = schema
    for part in parts:
        if not dataclasses.is_dataclass(tp):
            return None
        tp = typing.get_type_hints(tp).get(part)
    return tp if dataclasses.is_dataclass(tp) else None


def _expected_type(schema: type, key: str) -> str:
    """The declared type at a key path (``train.epochs``, ``channels[1]``) of a schema."""
    import typing

    tp: Any = schema
    for part in re.findall(r"[^.\[\]]+", key):
        if dataclasses.is_dataclass(tp):
            hints = typing.get_type_hints(tp)
            if part not in hints:
                return ""
            tp = hints[part]
        else:
            args = [a for a in typing.get_args(tp) if a is not type(None)]
            if not args:
                return ""
            tp = args[-1]  # element type of list[X] / value type of dict[str, X] / Optional[X]
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if typing.get_origin(tp) is typing.Union and len(args) == 1:
        tp = args[0]
    return _type_name(tp)


def split_node(node: Any, path: str) -> tuple[str, dict[str, Any]]:
    """Split a plugin node ``{name: x, **options}`` (or the bare string ``x``) into name and options."""
    if isinstance(node, str):
        return node, {}
    if isinstance(node, DictConfig):
        node = OmegaConf.to_container(node, resolve=True)
    if not isinstance(node, dict):
        raise ConfigError(f"{path}: expected {{name: ..., <options>}}, got {node!r}")
    node = dict(node)
    name = node.pop("name", None)
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{path}.name: missing; say which plugin to use, e.g. {path}: {{name: ...}}")
    return name, node


def resolve_node(node: Any, registries: Registries, kind: str, path: str) -> dict[str, Any]:
    """Validate one plugin node against its registry entry; return ``{name, **options}`` with defaults."""
    name, options = split_node(node, path)
    entry = lookup(registries, kind, name, f"{path}.name")
    opts = validate_options(options, entry.schema, path, f"{kind} {name!r}")
    return {"name": name, **opts}


def lookup(registries: Registries, kind: str, name: str, path: str) -> Entry:
    """Registry lookup whose error is prefixed with the config path."""
    try:
        return registries[kind].get(name)
    except ConfigError:
        raise
    except Exception as exc:  # UnknownNameError
        raise ConfigError(f"{path}: {exc}") from None


def _check_interpolations(node: Any, path: str = "") -> None:
    """Refuse interpolations that call resolvers outside :data:`ALLOWED_RESOLVERS`."""
    if isinstance(node, dict):
        for k, v in node.items():
            _check_interpolations(v, _join(path, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            _check_interpolations(v, _join(path, i))
    elif isinstance(node, str) and "${" in node:
        for name in re.findall(r"\$\{\s*([A-Za-z_][\w.]*)\s*:", node):
            if name not in ALLOWED_RESOLVERS:
                raise ConfigError(
                    f"{path}: resolver {name!r} is not allowed in mtlzoo configs (configs are data); "
                    f"allowed: {', '.join(sorted(ALLOWED_RESOLVERS))}"
                )


# -- loading --------------------------------------------------------------------------------
def read_spec(spec: str | Path | dict | DictConfig, overrides: list[str] | tuple[str, ...] = ()) -> DictConfig:
    """Read a YAML spec (path, dict or DictConfig) and apply dot-list overrides, unvalidated."""
    if isinstance(spec, (str, Path)):
        path = Path(spec)
        if not path.is_file():
            raise ConfigError(f"spec file {str(path)!r} not found (give the path of a YAML spec, e.g. configs/quickstart.yaml)")
        try:
            raw = yaml.safe_load(path.read_text())
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            raise ConfigError(f"{path}:{where}: invalid YAML: {problem}") from None
        except UnicodeDecodeError:
            raise ConfigError(f"{path}: not a text file; a spec is YAML") from None
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: a spec must be a YAML mapping at the top level, got {type(raw).__name__}")
    elif isinstance(spec, DictConfig):
        raw = OmegaConf.to_container(spec, resolve=False)
    elif isinstance(spec, dict):
        raw = spec
    else:
        raise ConfigError(f"cannot read a spec from {type(spec).__name__}")
    _check_interpolations(raw)
    try:
        cfg = OmegaConf.create(raw)
    except OmegaConfBaseException as exc:
        raise ConfigError(f"invalid spec: {str(exc).splitlines()[0]}") from None
    for item in overrides:
        cfg = apply_override(cfg, item)
    return cfg


def apply_override(cfg: DictConfig, item: str) -> DictConfig:
    """Apply one ``key.path=value`` override (value parsed as YAML; ``~key`` deletes a key)."""
    if item.startswith("~"):
        key = item[1:]
        parent, _, leaf = key.rpartition(".")
        node = OmegaConf.select(cfg, parent) if parent else cfg
        if not isinstance(node, DictConfig) or leaf not in node:
            raise ConfigError(f"override {item!r}: no key {key!r} to delete")
        del node[leaf]
        return cfg
    if "=" not in item:
        raise ConfigError(f"override {item!r} is not of the form key.path=value (e.g. train.epochs=3)")
    key, value = item.split("=", 1)
    key = key.strip()
    if not re.fullmatch(r"[A-Za-z_][\w-]*(\.[\w-]+)*", key):
        raise ConfigError(f"override {item!r}: {key!r} is not a dotted key path")
    try:
        parsed = yaml.safe_load(value) if value.strip() else ""
    except yaml.YAMLError:
        parsed = value
    _check_interpolations(parsed, key)
    try:
        OmegaConf.update(cfg, key, parsed, merge=False, force_add=True)
    except OmegaConfBaseException as exc:
        raise ConfigError(f"override {item!r}: {str(exc).splitlines()[0]}") from None
    return cfg


def load(
    spec: str | Path | dict | DictConfig,
    overrides: list[str] | tuple[str, ...] = (),
    registries: Registries | None = None,
) -> DictConfig:
    """Load, override, validate and complete a spec. Returns a plain, resolved DictConfig in
    which every plugin node holds all of its options (defaults filled in).

    Raises :class:`~mtlzoo.errors.ConfigError` with the key path on any problem.
    """
    cfg = read_spec(spec, overrides)
    try:
        container = OmegaConf.to_container(cfg, resolve=True)
    except (InterpolationResolutionError, GrammarParseError, MissingMandatoryValue) as exc:
        raise ConfigError(f"{getattr(exc, 'full_key', '') or 'spec'}: {str(exc).splitlines()[0]}") from None
    except ConfigError:
        raise
    except OmegaConfBaseException as exc:
        raise ConfigError(f"spec: {str(exc).splitlines()[0]}") from None

    # `from` is a Python keyword: tasks spell it in YAML, the schema calls it `source`
    for tname, tnode in (container.get("tasks") or {}).items():
        if isinstance(tnode, dict) and "from" in tnode:
            if "source" in tnode:
                raise ConfigError(f"tasks.{tname}: give either 'from' or 'source', not both")
            tnode["source"] = tnode.pop("from")

    top = validate_options(container, ExperimentConfig, "", "the spec")
    if registries is None:
        from .plugins import get_registries

        registries = get_registries(strict=top["plugins"]["strict"] or None, block=top["plugins"]["block"])

    out: dict[str, Any] = dict(top)
    backbone = top["model"]["backbone"] or DEFAULT_BACKBONE
    out["model"] = {"backbone": resolve_node(backbone, registries, "backbone", "model.backbone")}
    out["data"] = resolve_node(top["data"] or None, registries, "dataset", "data") if top["data"] else _no_data()
    out["combiner"] = resolve_node(top["combiner"], registries, "combiner", "combiner")
    out["augment"] = _resolve_augment(top["augment"])
    if not top["tasks"]:
        raise ConfigError("tasks: no tasks given; add at least one, e.g. tasks: {semseg: {type: segmentation}}")
    out["tasks"] = {name: resolve_task(name, node, registries) for name, node in top["tasks"].items()}
    _check_train(out["train"])
    return OmegaConf.create(out)


def _no_data() -> dict[str, Any]:
    raise ConfigError("data: no dataset given; add e.g. data: {name: shapes} (`mtlzoo list dataset` shows all)")


def _resolve_augment(node: dict[str, Any]) -> dict[str, Any]:
    from .pipeline import AugmentOptions

    return validate_options(node, AugmentOptions, "augment", "augment")


def resolve_task(name: str, node: Any, registries: Registries) -> dict[str, Any]:
    """Validate one task and fill its head, loss and metrics from the task type's defaults."""
    path = f"tasks.{name}"
    if not re.fullmatch(r"[A-Za-z_][\w-]*", str(name)):
        raise ConfigError(f"{path}: task names are identifiers (letters, digits, _ and -)")
    if isinstance(node, str):
        node = {"type": node}
    if node is None:
        raise ConfigError(f"{path}: empty task; give at least its type, e.g. {path}: {{type: segmentation}}")
    task = validate_options(node, TaskConfig, path, "a task")
    entry = lookup(registries, "task", task["type"], f"{path}.type")
    ttype = entry.factory()
    task["target"] = task["target"] or ttype.target
    task["head"] = resolve_node(_with_default(task["head"], ttype.head), registries, "head", f"{path}.head")
    task["loss"] = resolve_node(_with_default(task["loss"], ttype.loss), registries, "loss", f"{path}.loss")
    metrics = task["metrics"] or ttype.metrics
    task["metrics"] = [resolve_node(m, registries, "metric", f"{path}.metrics[{i}]") for i, m in enumerate(metrics)]
    if task["width"] < 1:
        raise ConfigError(f"{path}.width: boundary width must be >= 1 pixel, got {task['width']}")
    return task


def _with_default(given: dict[str, Any], default: dict[str, Any]) -> dict[str, Any]:
    """A task's head/loss node: options without a ``name`` refine the task type's default
    (``head: {channels: 32}`` keeps the default head); a ``name`` replaces it."""
    if not given:
        return dict(default)
    if "name" not in given:
        return {**default, **given}
    return given


def _check_train(train: dict[str, Any]) -> None:
    if train["amp"] in ("False", "false"):  # YAML reads a bare `off` (train.amp=off) as false
        train["amp"] = "off"
    positive = ["epochs", "batch_size", "eval_every", "checkpoint_every"]
    for key in positive:
        if train[key] < 1:
            raise ConfigError(f"train.{key}: must be >= 1, got {train[key]}")
    if train["num_workers"] < 0:
        raise ConfigError(f"train.num_workers: must be >= 0, got {train['num_workers']}")
    choices = {
        "optimizer.name": ("adamw", "sgd"),
        "scheduler.name": ("cosine", "step", "poly", "none"),
        "amp": ("off", "bf16", "fp16", "auto"),
    }
    for key, allowed in choices.items():
        value = OmegaConf.select(OmegaConf.create(train), key)
        if value not in allowed:
            raise ConfigError(f"train.{key}: {value!r} is not one of {', '.join(allowed)}{did_you_mean(str(value), allowed)}")
    dev = train["device"]
    if not (dev in ("auto", "cpu", "cuda") or re.fullmatch(r"cuda:\d+", dev)):
        raise ConfigError(f"train.device: {dev!r} is not auto, cpu, cuda or cuda:N")
    if train["optimizer"]["lr"] <= 0:
        raise ConfigError(f"train.optimizer.lr: must be > 0, got {train['optimizer']['lr']}")


def to_yaml(cfg: DictConfig) -> str:
    """The config as YAML, with ``source`` written back as ``from``."""
    data = OmegaConf.to_container(cfg, resolve=True)
    for tnode in (data.get("tasks") or {}).values():
        if isinstance(tnode, dict) and "source" in tnode:
            tnode["from"] = tnode.pop("source")
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=None, width=100)


__all__ = ["load", "read_spec", "apply_override", "validate_options", "resolve_node", "to_yaml",
           "ExperimentConfig", "TrainConfig", "TaskConfig", "ListConfig"]
