"""Experiment specs: read YAML, apply dot-list overrides, validate against the zoo's parts.

A spec is data. Reading one never imports or runs anything named in it: YAML is parsed
with a safe loader (tags refused, duplicate keys refused with both line numbers, alias
expansion and nesting depth bounded), and only the resolvers in :data:`ALLOWED_RESOLVERS`
may appear in interpolations (OmegaConf's importing ``oc.coerce`` is disabled; ``oc.decode``
checks what it decodes).

Validation is layered: the fixed sections (``train``, ``augment`` ...) are checked against
the dataclasses of :mod:`mtlzoo.zoo.sections`; every plugin node (``{name: ..., <options>}``,
or the bare name) against the options dataclass its plugin registered; every task against
its task type. Errors are one line naming the full key path (``tasks.semseg.head.chanels``)
and the fix. The result is a plain, resolved tree in which every node holds all of its
options.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any, cast

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from ..contract.errors import ConfigError, did_you_mean, one_line
from ..contract.options import build_options, constraint, plain, to_dict
from ..contract.tasks import TaskType
from .parts import Part, TaskSpec
from .registry import Entry, Registries
from .sections import MOVED, ExperimentConfig

ALLOWED_RESOLVERS = frozenset({"oc.env", "oc.select", "oc.dict.keys", "oc.dict.values", "oc.decode"})
#: keys of a task node besides its task type's own options
TASK_KEYS = ("type", "target", "from", "primary", "head", "loss", "metrics")
MAX_VALUES = 100_000
MAX_DEPTH = 64
_INTERPOLATION = re.compile(r"\$\{\s*([A-Za-z_][\w.]*)\s*:")


def _refuse_coerce(*args: Any, **kwargs: Any) -> Any:
    raise ConfigError("the oc.coerce resolver is disabled: mtlzoo configs are data and never import modules")


def _checked_decode(expr: Any, _parent_: Any, _node_: Any) -> Any:
    """``oc.decode`` that refuses disallowed resolvers inside the string it decodes."""
    if isinstance(expr, str):
        check_interpolations(expr, "oc.decode")
    from omegaconf.resolvers.oc import decode

    return decode(expr, _parent_=_parent_, _node_=_node_)


# OmegaConf 2.4's oc.coerce imports arbitrary modules by name: configs must not do that.
OmegaConf.register_resolver("oc.coerce", _refuse_coerce, replace=True)
OmegaConf.register_resolver("oc.decode", _checked_decode, replace=True)


# -- reading -------------------------------------------------------------------------------------
class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing duplicate keys."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            line = key_node.start_mark.line + 1
            if isinstance(key, (str, int, float, bool)) and key in seen:
                raise ConfigError(
                    f"line {line}: duplicate key {key!r} (first at line {seen[key]}); YAML keeps only "
                    f"the last one, so remove or rename one of them"
                )
            if isinstance(key, (str, int, float, bool)):
                seen[key] = line
        return super().construct_mapping(node, deep=deep)


#: integers longer than this (about 4000 digits) are refused while reading: Python cannot print
#: one of more than 4300 digits, and every message would fail on it
MAX_INT_BITS = 13_000


def _bounded(value: Any, where: str) -> None:
    """Refuse trees that YAML aliases expand beyond :data:`MAX_VALUES`, or deeper than :data:`MAX_DEPTH`."""
    count = 0
    stack = [(value, 0)]
    while stack:
        node, depth = stack.pop()
        count += 1
        if count > MAX_VALUES:
            raise ConfigError(
                f"{where}: more than {MAX_VALUES} values once YAML aliases are expanded; a spec is "
                f"small (an alias bomb?)"
            )
        if depth > MAX_DEPTH:
            raise ConfigError(f"{where}: nested more than {MAX_DEPTH} levels deep; a spec is shallow")
        if isinstance(node, int) and not isinstance(node, bool) and node.bit_length() > MAX_INT_BITS:
            raise ConfigError(f"{where}: an integer of more than 4000 digits; no option takes one")
        if isinstance(node, Mapping):
            stack.extend((k, depth + 1) for k in node)  # keys too: a key is printed in messages
            stack.extend((v, depth + 1) for v in node.values())
        elif isinstance(node, (list, tuple)):
            stack.extend((v, depth + 1) for v in node)


def parse_yaml(text: str, where: str) -> Any:
    """Parse YAML text safely (see the module docstring); errors name ``where`` and the line."""
    try:
        value = yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" line {mark.line + 1}, column {mark.column + 1}:" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{where}:{at} invalid YAML: {problem}") from None
    except RecursionError:
        raise ConfigError(f"{where}: nested too deeply to read") from None
    except ValueError as exc:  # an integer literal beyond Python's digit limit for conversions
        raise ConfigError(f"{where}: invalid value ({str(exc).splitlines()[0]})") from None
    _bounded(value, where)
    return value


def check_interpolations(node: Any, path: str = "") -> None:
    """Refuse interpolations that call resolvers outside :data:`ALLOWED_RESOLVERS`."""
    if isinstance(node, Mapping):
        for k, v in node.items():
            check_interpolations(v, _join(path, k))
    elif isinstance(node, (list, tuple)):
        for i, v in enumerate(node):
            check_interpolations(v, _join(path, i))
    elif isinstance(node, str) and "${" in node:
        for name in _INTERPOLATION.findall(node):
            if name not in ALLOWED_RESOLVERS:
                raise ConfigError(
                    f"{path}: resolver {name!r} is not allowed in mtlzoo configs (configs are data); "
                    f"allowed: {', '.join(sorted(ALLOWED_RESOLVERS))}"
                )


def _join(path: str, key: Any) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else str(key)


def read_spec(
    spec: str | Path | Mapping | DictConfig, overrides: list[str] | tuple[str, ...] = ()
) -> DictConfig:
    """Read a YAML spec (a path, a mapping or a DictConfig) and apply dot-list overrides,
    without validating it."""
    if isinstance(spec, (str, Path)):
        path = Path(spec)
        if not path.is_file():
            raise ConfigError(
                f"spec file {str(path)!r} not found (give the path of a YAML spec, "
                f"e.g. configs/quickstart.yaml)"
            )
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise ConfigError(f"{path}: not a text file; a spec is YAML") from None
        raw = parse_yaml(text, str(path))
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            raise ConfigError(
                f"{path}: a spec must be a YAML mapping at the top level, got {type(raw).__name__}"
            )
    elif isinstance(spec, DictConfig):
        raw = OmegaConf.to_container(spec, resolve=False)
    elif isinstance(spec, Mapping):
        _bounded(spec, "spec")
        raw = dict(spec)
    else:
        raise ConfigError(f"cannot read a spec from {type(spec).__name__}; give a YAML path or a mapping")
    check_interpolations(raw)
    try:
        cfg = OmegaConf.create(raw)
    except OmegaConfBaseException as exc:
        raise ConfigError(f"invalid spec: {one_line(exc)}") from None
    for item in overrides:
        cfg = apply_override(cfg, item)
    return cfg


def apply_override(cfg: DictConfig, item: str) -> DictConfig:
    """Apply one ``key.path=value`` override (the value parsed as YAML; ``~key`` deletes a key)."""
    if not isinstance(item, str):
        raise ConfigError(f"override {item!r} is not a string of the form key.path=value")
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
        parsed = parse_yaml(value, f"override {item!r}") if value.strip() else ""
    except ConfigError:
        parsed = value  # not YAML: the plain string
    check_interpolations(parsed, key)
    try:
        OmegaConf.update(cfg, key, parsed, merge=False, force_add=True)
    except OmegaConfBaseException as exc:
        raise ConfigError(f"override {item!r}: {one_line(exc)}") from None
    return cfg


def resolve(cfg: DictConfig) -> dict[str, Any]:
    """Resolve interpolations into a plain dict; one-line errors naming the key."""
    try:
        out = OmegaConf.to_container(cfg, resolve=True)
    except ConfigError:
        raise
    except RecursionError:
        raise ConfigError("spec: interpolations refer to each other in a loop") from None
    except OmegaConfBaseException as exc:
        key = getattr(exc, "full_key", "") or "spec"
        msg = getattr(exc, "msg", None) or str(exc)
        raise ConfigError(f"{key}: {msg.splitlines()[0]}") from None
    assert isinstance(out, dict)
    return cast(dict[str, Any], out)  # keys as written; validation refuses any that is not a name


# -- validating ----------------------------------------------------------------------------------
def lookup(registries: Registries, kind: str, name: Any, path: str) -> Entry:
    """Registry lookup whose error is prefixed with the spec path."""
    try:
        return registries[kind].get(name)
    except KeyError as exc:  # UnknownNameError
        raise ConfigError(f"{path}: {exc}") from None


def split_node(node: Any, path: str) -> tuple[str, dict[str, Any]]:
    """Split a plugin node ``{name: x, **options}`` (or the bare name ``x``) into name and options."""
    if isinstance(node, str):
        return node, {}
    if not isinstance(node, Mapping):
        raise ConfigError(f"{path}: expected a name or {{name: ..., <options>}}, got {node!r}")
    node = dict(node)
    name = node.pop("name", None)
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{path}.name: missing; say which part to use, e.g. {path}: {{name: ...}}")
    return name, node


def _relative_paths(
    options: Any, path: str, base: Path, given: Collection[str]
) -> tuple[Any, dict[str, str]]:
    """``options`` with every ``option(path=True)`` field that holds a relative path resolved
    against ``base`` (the spec file's folder), and the resolved fields; a value set by an
    override (its key or its node's key in ``given``) stays relative to the current directory."""
    changes = {}
    for f in dataclasses.fields(options):
        value = getattr(options, f.name)
        key = f"{path}.{f.name}"
        if (
            constraint(f).path
            and isinstance(value, str)
            and value
            and not os.path.isabs(value)
            and key not in given
            and path not in given
        ):
            changes[f.name] = os.path.normpath(base.resolve() / value)
    return (dataclasses.replace(options, **changes) if changes else options), changes


def resolve_part(
    node: Any,
    registries: Registries,
    kind: str,
    path: str,
    *,
    base: Path | None = None,
    given: Collection[str] = (),
) -> Part:
    """Validate one plugin node against its entry: the :class:`Part` (entry and options
    instance, defaults filled in). With ``base`` (the spec file's folder), relative
    ``option(path=True)`` values are resolved against it (see :func:`_relative_paths`)."""
    name, values = split_node(node, path)
    entry = lookup(registries, kind, name, f"{path}.name" if isinstance(node, Mapping) else path)
    options = entry.build_options(values, path)
    relative: dict[str, str] = {}
    if base is not None and options is not None:
        options, relative = _relative_paths(options, path, base, given)
    return Part(path, entry, options, relative)


def node_of(part: Part) -> dict[str, Any]:
    """A part as the spec tree records it: ``{name, **options}``."""
    return {"name": part.name, **to_dict(part.options)}


def resolve_node(node: Any, registries: Registries, kind: str, path: str) -> dict[str, Any]:
    """Validate one plugin node against its entry; return ``{name, **options}`` with defaults."""
    return node_of(resolve_part(node, registries, kind, path))


def _with_default(given: Any, default: Mapping[str, Any]) -> Any:
    """A task's head/loss node: options without a ``name`` refine the task type's default
    (``head: {channels: 32}`` keeps the default head); a ``name`` replaces it."""
    if not given:
        return dict(default)
    if isinstance(given, Mapping) and "name" not in given:
        return {**default, **given}
    return given


def task_type(registries: Registries, node: Mapping[str, Any], path: str) -> tuple[Entry, Any, TaskType]:
    """The task type of a task node: its entry, its options instance and the built
    :class:`TaskType` (task types are torch-free data, so building one is cheap)."""
    entry = lookup(registries, "task", node.get("type"), f"{path}.type")
    option_names = [f.name for f in dataclasses.fields(entry.options)] if entry.options is not None else []
    for key in node:
        if key not in TASK_KEYS and key not in option_names:
            valid = [*TASK_KEYS, *option_names]
            raise ConfigError(
                f"{_join(path, key)}: unknown key of a {entry.name!r} task{did_you_mean(str(key), valid)}; "
                f"valid keys: {', '.join(valid)}"
            )
    options = entry.build_options({k: v for k, v in node.items() if k in option_names}, path)
    ttype = entry.check(entry.build(options=options, path=path), path)
    return entry, options, ttype


def _check_targets(entry: Entry, kinds: list[Any], path: str, task: str) -> None:
    if not kinds or any(entry.accepts(k) for k in kinds):
        return
    raise ConfigError(
        f"{path}: {entry.kind} {entry.name!r} works on {', '.join(entry.targets or ())} targets, but a "
        f"{task!r} task learns {', '.join(k.name for k in kinds)}; pick a {entry.kind} for that kind "
        f"(`mtlzoo list {entry.kind}`)"
    )


def target_kinds(registries: Registries, names: tuple[str, ...], path: str) -> list[Any]:
    """The :class:`TargetKind` objects of ``names`` (target kinds are torch-free data)."""
    out = []
    for name in names:
        entry = lookup(registries, "target_kind", name, path)
        out.append(entry.check(entry.build(path=path), path))
    return out


def resolve_task(name: Any, node: Any, registries: Registries) -> dict[str, Any]:
    """Validate one task and fill its head, loss and metrics from its task type's defaults;
    return its complete node."""
    return resolve_task_spec(name, node, registries)[0]


def resolve_task_spec(
    name: Any, node: Any, registries: Registries, *, base: Path | None = None, given: Collection[str] = ()
) -> tuple[dict[str, Any], TaskSpec]:
    """:func:`resolve_task`, also returning the validated :class:`TaskSpec`."""
    path = f"tasks.{name}"
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z_][\w-]*", name):
        raise ConfigError(f"{path}: task names are identifiers (letters, digits, _ and -)")
    if isinstance(node, str):
        node = {"type": node}
    if node is None:
        raise ConfigError(f"{path}: empty task; give at least its type, e.g. {path}: {{type: segmentation}}")
    if not isinstance(node, Mapping):
        raise ConfigError(f"{path}: expected a mapping such as {{type: segmentation}}, got {node!r}")
    if "type" not in node:
        raise ConfigError(
            f"{path}.type: missing; give the task type, e.g. {{type: segmentation}} (`mtlzoo list task`)"
        )
    entry, options, ttype = task_type(registries, node, path)
    out: dict[str, Any] = {"type": entry.name}
    target = node.get("target") or ttype.target
    if not isinstance(target, str) or not re.fullmatch(r"[A-Za-z_][\w-]*", target):
        raise ConfigError(f"{path}.target: a target key is an identifier, got {target!r}")
    out["target"] = target
    source = node.get("from")
    if source is not None:
        if not isinstance(source, str):
            raise ConfigError(f"{path}.from: give the key of the target to derive from, got {source!r}")
        if ttype.derive is None:
            raise ConfigError(
                f"{path}.from: a {entry.name!r} target cannot be derived (its task type has no "
                f"derivation); remove `from` and let the dataset provide {target!r}"
            )
    out["from"] = source
    primary = node.get("primary", False)
    if not isinstance(primary, bool):
        raise ConfigError(
            f"{path}.primary: true marks a primary task (the others are auxiliary), got {primary!r}"
        )
    out["primary"] = primary
    out.update(plain(options) if options is not None else {})
    head = resolve_part(
        _with_default(node.get("head"), ttype.head),
        registries,
        "head",
        f"{path}.head",
        base=base,
        given=given,
    )
    loss = resolve_part(
        _with_default(node.get("loss"), ttype.loss),
        registries,
        "loss",
        f"{path}.loss",
        base=base,
        given=given,
    )
    metric_nodes = node.get("metrics") or ttype.metrics
    if not isinstance(metric_nodes, (list, tuple)):
        raise ConfigError(f"{path}.metrics: expected a list of metrics, got {metric_nodes!r}")
    metrics = tuple(
        resolve_part(m, registries, "metric", f"{path}.metrics[{i}]", base=base, given=given)
        for i, m in enumerate(metric_nodes)
    )
    out["head"], out["loss"] = node_of(head), node_of(loss)
    out["metrics"] = [node_of(m) for m in metrics]
    kinds = target_kinds(registries, tuple(ttype.target_kinds), f"{path}.type")
    for part in (head, loss, *metrics):
        _check_targets(part.entry, kinds, part.path, entry.name)
    task = TaskSpec(str(name), Part(path, entry, options), ttype, target, source, head, loss, metrics)
    return out, task


def _moved(container: Mapping[str, Any]) -> None:
    for key, where in MOVED.items():
        section, _, leaf = key.partition(".")
        node = container.get(section)
        if isinstance(node, Mapping) and leaf in node:
            raise ConfigError(f"{key}: moved to {where}")


def validate(container: Mapping[str, Any], registries: Registries) -> dict[str, Any]:
    """Validate a resolved spec (a plain mapping) against the fixed sections and the zoo's
    parts; return the complete tree."""
    return validate_parts(container, registries)[0]


def validate_parts(
    container: Mapping[str, Any],
    registries: Registries,
    *,
    base: Path | None = None,
    given: Collection[str] = (),
) -> tuple[dict[str, Any], dict[str, Any]]:
    """:func:`validate`, also returning the validated parts: ``(tree, parts)`` where ``parts``
    holds ``backbone``, ``architecture``, ``combiner``, ``data`` (:class:`Part`) and ``tasks``
    (name -> :class:`TaskSpec`), the fields of a :class:`~mtlzoo.zoo.parts.Spec`. ``base`` and
    ``given``: see :func:`resolve_part`."""
    _moved(container)
    top = build_options(ExperimentConfig, container, "", "the spec")
    out: dict[str, Any] = {"name": top.name, "seed": top.seed}
    model = plain(top.model)
    if not model["backbone"]:
        raise ConfigError(
            "model.backbone: missing; name the shared backbone, e.g. model: {backbone: {name: ...}} "
            "(`mtlzoo list backbone` shows them)"
        )
    backbone = resolve_part(
        model["backbone"], registries, "backbone", "model.backbone", base=base, given=given
    )
    architecture = (
        resolve_part(
            model["architecture"], registries, "architecture", "model.architecture", base=base, given=given
        )
        if model["architecture"]
        else None
    )
    out["model"] = {
        "backbone": node_of(backbone),
        "normalize": model["normalize"],
        "architecture": node_of(architecture) if architecture else None,
    }
    if not top.tasks:
        raise ConfigError(
            "tasks: no tasks given; add at least one, e.g. tasks: {semseg: {type: segmentation}}"
        )
    tasks: dict[str, TaskSpec] = {}
    out["tasks"] = {}
    for name, node in top.tasks.items():
        out["tasks"][name], tasks[name] = resolve_task_spec(name, node, registries, base=base, given=given)
    if not top.combiner:
        raise ConfigError(
            "combiner: missing; say how the task losses become one update, e.g. combiner: "
            "{name: ...} (`mtlzoo list combiner` shows them)"
        )
    combiner = resolve_part(top.combiner, registries, "combiner", "combiner", base=base, given=given)
    out["combiner"] = node_of(combiner)
    if not top.data:
        raise ConfigError(
            "data: no dataset given; add e.g. data: {name: shapes} (`mtlzoo list dataset` shows all)"
        )
    data = resolve_part(top.data, registries, "dataset", "data", base=base, given=given)
    out["data"] = node_of(data)
    out["augment"] = plain(top.augment)
    out["train"] = plain(top.train)
    out["plugins"] = plain(top.plugins)
    parts = {
        "backbone": backbone,
        "architecture": architecture,
        "combiner": combiner,
        "data": data,
        "tasks": tasks,
    }
    return out, parts


__all__ = [
    "read_spec",
    "apply_override",
    "resolve",
    "validate",
    "validate_parts",
    "resolve_node",
    "resolve_part",
    "node_of",
    "resolve_task",
    "resolve_task_spec",
    "split_node",
    "lookup",
    "parse_yaml",
    "check_interpolations",
    "TASK_KEYS",
    "ALLOWED_RESOLVERS",
]
