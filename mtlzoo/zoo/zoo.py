"""The :class:`Zoo`: the loaded plugins, and the only way a spec becomes objects.

    zoo = Zoo.load()                           # every installed plugin, once
    cfg = zoo.spec("configs/quickstart.yaml", ["train.epochs=1"])   # validated, complete
    exp = zoo.build(cfg)                       # model, tasks, combiner, datasets

There is no module-level cache and no fallback: whoever needs parts (the CLI, a bench, a
test) makes one zoo and passes it on. A spec's ``plugins`` section (``block``, ``strict``)
is honoured by :meth:`Zoo.for_spec`, which reads it before loading anything.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from ..contract.data import TargetKind
from ..contract.errors import ConfigError, MtlzooError, PluginError, UnknownNameError, one_line
from ..contract.options import constraint
from .loader import STRICT_ENV as _STRICT_ENV
from .loader import Loader, PluginRecord, env_blocked, env_flag
from .registry import Entry, Registries
from .spec import read_spec, resolve, split_node, validate

SpecLike = str | Path | Mapping[str, Any] | DictConfig


class Zoo:
    """Registries filled by plugins, plus the records of how each plugin loaded.

    Make one with :meth:`load` (or :meth:`for_spec`). Attributes: ``registries``,
    ``records`` (one :class:`~mtlzoo.zoo.loader.PluginRecord` per plugin), ``strict``,
    ``blocked`` (plugin names not loaded), ``warnings`` (lines to show a user).
    """

    def __init__(
        self,
        registries: Registries,
        records: list[PluginRecord],
        strict: bool,
        blocked: set[str],
        warnings: list[str],
    ):
        self.registries = registries
        self.records = records
        self.strict = strict
        self.blocked = blocked
        self.warnings = warnings
        self._kinds: dict[str, TargetKind] = {}

    # -- making a zoo ------------------------------------------------------------------------------
    @classmethod
    def load(
        cls,
        *,
        strict: bool | None = None,
        block: Iterable[str] = (),
        plugins: Iterable[tuple[str, object]] = (),
        entry_points: bool = True,
    ) -> Zoo:
        """Load every plugin once.

        Args:
            strict: any failed plugin or refused entry is an error (default: the
                ``MTLZOO_STRICT_PLUGINS`` environment variable).
            block: plugin (entry-point) names not to load, on top of ``MTLZOO_BLOCK_PLUGINS``.
            plugins: extra in-process plugins as ``(name, module or object)`` pairs,
                loaded after the entry points (tests, notebooks).
            entry_points: load the installed entry points (``False``: only ``plugins``).
        """
        strict = env_flag(_STRICT_ENV) if strict is None else bool(strict)
        blocked = set(block) | env_blocked()
        loader = Loader(strict, blocked)
        if entry_points:
            loader.load_entry_points()
        for name, obj in plugins:
            loader.add_plugin(obj, name)
        registries = loader.finish()
        warnings = [
            f"plugin block list names {n!r}, which is no installed plugin (`mtlzoo plugins` lists them)"
            for n in loader.unknown_blocks()
        ]
        for record in loader.records:
            warnings += [f"{p}; `mtlzoo plugins` has details" for p in record.problems()]
        return cls(registries, loader.records, strict, blocked, warnings)

    @classmethod
    def for_spec(
        cls,
        spec: SpecLike,
        overrides: Iterable[str] = (),
        *,
        strict: bool | None = None,
        block: Iterable[str] = (),
        plugins: Iterable[tuple[str, object]] = (),
    ) -> tuple[Zoo, DictConfig]:
        """Read a spec, load the zoo its ``plugins`` section asks for (blocks and strictness
        added to the arguments), and return both: ``zoo, raw`` where ``raw`` is the spec
        as read, for :meth:`spec` or :meth:`build`."""
        raw = read_spec(spec, list(overrides))
        section = raw.get("plugins") or {}
        if not isinstance(section, (Mapping, DictConfig)):
            raise ConfigError(f"plugins: expected {{block: [...], strict: true|false}}, got {section!r}")
        names = section.get("block") or []
        if isinstance(names, str) or not all(isinstance(n, str) for n in names):
            raise ConfigError(f"plugins.block: expected a list of plugin names, got {names!r}")
        spec_strict = section.get("strict")
        if spec_strict not in (None, True, False):
            raise ConfigError(f"plugins.strict: expected true or false, got {spec_strict!r}")
        zoo = cls.load(
            strict=True if (spec_strict or strict) else strict, block=[*block, *names], plugins=plugins
        )
        return zoo, raw

    # -- specs ---------------------------------------------------------------------------------------
    def spec(self, spec: SpecLike, overrides: Iterable[str] = ()) -> DictConfig:
        """Read (a path, mapping or DictConfig), override, resolve and validate a spec against
        this zoo; return the complete spec (every default filled in)."""
        overrides = list(overrides)
        out = validate(resolve(read_spec(spec, overrides)), self.registries)
        if isinstance(spec, (str, Path)):
            self._relative_paths(out, Path(spec).parent, overrides)
        missing = sorted(set(out["plugins"]["block"]) - self.blocked)
        if missing:
            raise ConfigError(
                f"plugins.block: this zoo loaded {', '.join(map(repr, missing))}; make it with "
                f"Zoo.for_spec(spec) or Zoo.load(block=[...]) so the spec's blocks apply"
            )
        if out["plugins"]["strict"] and not self.strict:
            problems = [p for r in self.records for p in r.problems()]
            if problems:
                raise ConfigError(f"plugins.strict: {problems[0]}")
        return OmegaConf.create(out)

    def build(self, spec: SpecLike, overrides: Iterable[str] = (), split: str = "train") -> Any:
        """Validate ``spec`` (validation is idempotent: an already validated spec is accepted)
        and build the experiment: model, tasks, combiner and the ``split`` dataset (others on
        demand). Returns a :class:`mtlzoo.runtime.experiment.Experiment`."""
        from .build import build_experiment

        return build_experiment(self, self.spec(spec, overrides), split)

    def _relative_paths(self, out: dict[str, Any], base: Path, overrides: list[str]) -> None:
        """Options declared ``option(path=True)`` that a spec file gives as relative paths are
        resolved against that file's folder (an override's value stays relative to the current
        directory), so a spec runs from any folder and its run's config.yaml holds absolute paths."""
        import os

        given = {item.lstrip("~").split("=", 1)[0] for item in overrides}
        nodes = [("model.backbone", "backbone", out["model"]["backbone"]), ("data", "dataset", out["data"])]
        for path, kind, node in nodes:
            entry = self.entry(kind, node["name"])
            if entry.options is None:
                continue
            for f in dataclasses.fields(entry.options):
                value = node.get(f.name)
                key = f"{path}.{f.name}"
                if (
                    constraint(f).path
                    and isinstance(value, str)
                    and value
                    and not os.path.isabs(value)
                    and key not in given
                    and path not in given
                ):
                    node[f.name] = os.path.normpath(base.resolve() / value)

    # -- parts ---------------------------------------------------------------------------------------
    def entry(self, kind: str, name: str) -> Entry:
        """The registry entry of a part (``UnknownNameError`` with close names otherwise)."""
        return self.registries[kind].get(name)

    def list(self, kind: str, pattern: str = "*") -> list[Entry]:
        """Entries of one kind whose name matches a shell wildcard."""
        return self.registries[kind].list(pattern)

    def make(self, kind: str, node: Any, *args: Any, path: str) -> Any:
        """Build one part from its spec node (``{name, **options}`` or a name): options
        validated (errors carry ``path``), factory called as its kind's contract says.
        Anything the factory raises that is not an :class:`MtlzooError` is reported as
        ``<path>: building <kind> '<name>' (plugin <p>) failed: ...``."""
        name, values = split_node(
            OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node, path
        )
        try:
            entry = self.entry(kind, name)
        except UnknownNameError as exc:
            raise ConfigError(f"{path}.name: {exc}") from None
        options = entry.build_options(values, path)
        return self.call(entry, *args, options=options, path=path)

    def call(self, entry: Entry, *args: Any, options: Any = None, path: str) -> Any:
        """Call ``entry``'s factory with ``args`` and ``options``; errors name ``path`` and the plugin."""
        try:
            return entry.call(*args, options=options)
        except ConfigError as exc:
            if str(exc).startswith(path):
                raise
            raise ConfigError(f"{path}: {exc}") from exc
        except UnknownNameError as exc:
            raise ConfigError(f"{path}: {exc}") from exc
        except MtlzooError:
            raise
        except Exception as exc:  # noqa: BLE001 - plugin code may raise anything
            raise PluginError(f"{path}: building {entry.label} failed: {one_line(exc)}") from exc

    def target_kind(self, name: str, path: str = "") -> TargetKind:
        """The :class:`TargetKind` registered as ``name`` (built once)."""
        if name not in self._kinds:
            try:
                entry = self.entry("target_kind", name)
            except UnknownNameError as exc:
                raise ConfigError(f"{path + ': ' if path else ''}{exc}") from None
            kind = self.call(entry, path=path or f"target kind {name!r}")
            if not isinstance(kind, TargetKind) or kind.name != name:
                raise PluginError(
                    f"{entry.label} built {kind!r}; a target kind factory returns a TargetKind "
                    f"whose name is its registered name"
                )
            self._kinds[name] = kind
        return self._kinds[name]

    @property
    def problems(self) -> list[str]:
        """One line per failed plugin and refused entry."""
        return [p for r in self.records for p in r.problems()]

    def __repr__(self) -> str:
        counts = ", ".join(f"{len(r)} {r.kind}" for r in self.registries)
        return f"Zoo({len(self.records)} plugins: {counts})"


__all__ = ["Zoo"]
