"""The :class:`Zoo`: the loaded plugins, and the only way a spec becomes objects.

    zoo = Zoo.load()                           # every installed plugin, once
    spec = zoo.validate("configs/quickstart.yaml", ["train.epochs=1"])   # validated once
    exp = zoo.build(spec)                      # model, tasks, combiner, datasets

or, honouring the spec's ``plugins`` section and reading the file once::

    zoo, spec = Zoo.open("configs/quickstart.yaml", ["train.epochs=1"])

There is no module-level cache and no fallback: whoever needs parts (the CLI, a bench, a
test) makes one zoo and passes it on. Validation happens once per spec: the
:class:`~mtlzoo.zoo.parts.Spec` it returns carries every part's validated options, which
:meth:`Zoo.build` and :meth:`Zoo.make` use as they are. A spec's ``plugins`` section
(``block``, ``strict``) is honoured by :meth:`Zoo.open` and :meth:`Zoo.for_spec`, which read
it before loading anything.
"""

from __future__ import annotations

import builtins
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig, OmegaConf

from ..contract.data import TargetKind
from ..contract.errors import ConfigError, UnknownNameError
from .loader import STRICT_ENV as _STRICT_ENV
from .loader import Loader, PluginRecord, env_blocked, env_flag
from .parts import Part, Spec
from .registry import Entry, Registries
from .spec import read_spec, resolve, split_node, validate_parts

if TYPE_CHECKING:
    from ..runtime.experiment import Experiment

SpecLike = str | Path | Mapping[str, Any] | DictConfig


def _plugins_section(raw: DictConfig) -> tuple[list[str], bool | None]:
    """The ``plugins`` section of a spec as read: ``(block, strict)``, checked before any
    plugin loads."""
    section = raw.get("plugins") or {}
    if not isinstance(section, (Mapping, DictConfig)):
        raise ConfigError(f"plugins: expected {{block: [...], strict: true|false}}, got {section!r}")
    names = section.get("block") or []
    if isinstance(names, str) or not all(isinstance(n, str) for n in names):
        raise ConfigError(f"plugins.block: expected a list of plugin names, got {names!r}")
    spec_strict = section.get("strict")
    if spec_strict not in (None, True, False):
        raise ConfigError(f"plugins.strict: expected true or false, got {spec_strict!r}")
    return list(names), spec_strict


def _override_keys(overrides: Iterable[str]) -> set[str]:
    """The key paths that overrides set (their values stay relative to the current directory)."""
    return {item.lstrip("~").split("=", 1)[0] for item in overrides if isinstance(item, str)}


class Zoo:
    """Registries filled by plugins, plus the records of how each plugin loaded.

    Make one with :meth:`load` (or :meth:`open` / :meth:`for_spec`). Attributes:
    ``registries``, ``records`` (one :class:`~mtlzoo.zoo.loader.PluginRecord` per plugin),
    ``strict``, ``blocked`` (plugin names not loaded), ``warnings`` (lines to show a user).
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
        as read, for :meth:`validate` or :meth:`build` (:meth:`open` also validates it)."""
        raw = read_spec(spec, list(overrides))
        return cls._for_raw(raw, strict, block, plugins), raw

    @classmethod
    def open(
        cls,
        spec: SpecLike,
        overrides: Iterable[str] = (),
        *,
        strict: bool | None = None,
        block: Iterable[str] = (),
        plugins: Iterable[tuple[str, object]] = (),
    ) -> tuple[Zoo, Spec]:
        """:meth:`for_spec` and :meth:`validate` in one: the spec is read once, the zoo its
        ``plugins`` section asks for is loaded, and the spec is validated against it once.
        Relative paths in a spec file resolve against its folder."""
        overrides = list(overrides)
        raw = read_spec(spec, overrides)
        zoo = cls._for_raw(raw, strict, block, plugins)
        return zoo, zoo._validate(raw, _source(spec), _override_keys(overrides))

    @classmethod
    def _for_raw(
        cls,
        raw: DictConfig,
        strict: bool | None,
        block: Iterable[str],
        plugins: Iterable[tuple[str, object]],
    ) -> Zoo:
        names, spec_strict = _plugins_section(raw)
        return cls.load(
            strict=True if (spec_strict or strict) else strict, block=[*block, *names], plugins=plugins
        )

    # -- specs ---------------------------------------------------------------------------------------
    def validate(self, spec: SpecLike | Spec, overrides: Iterable[str] = ()) -> Spec:
        """Read (a path, mapping or DictConfig), override, resolve and validate a spec against
        this zoo, once: the :class:`~mtlzoo.zoo.parts.Spec` holds the complete tree (every
        default filled in) and every part's validated options. A :class:`Spec` without
        overrides is returned as it is."""
        overrides = list(overrides)
        if isinstance(spec, Spec):
            if not overrides:
                return spec
            spec = spec.cfg
        return self._validate(read_spec(spec, overrides), _source(spec), _override_keys(overrides))

    def _validate(self, raw: DictConfig, source: Path | None, given: set[str]) -> Spec:
        base = source.parent if source is not None else None
        out, parts = validate_parts(resolve(raw), self.registries, base=base, given=given)
        missing = sorted(set(out["plugins"]["block"]) - self.blocked)
        if missing:
            raise ConfigError(
                f"plugins.block: this zoo loaded {', '.join(map(repr, missing))}; make it with "
                f"Zoo.open(spec) or Zoo.load(block=[...]) so the spec's blocks apply"
            )
        if out["plugins"]["strict"] and not self.strict:
            problems = self.problems
            if problems:
                raise ConfigError(f"plugins.strict: {problems[0]}")
        return Spec(OmegaConf.create(out), source=source, **parts)

    def spec(self, spec: SpecLike | Spec, overrides: Iterable[str] = ()) -> DictConfig:
        """The complete tree of :meth:`validate` (a DictConfig with every default filled in)."""
        return self.validate(spec, overrides).cfg

    def build(self, spec: SpecLike | Spec, overrides: Iterable[str] = (), split: str = "train") -> Experiment:
        """Build the experiment of a spec: model, tasks, combiner and the ``split`` dataset
        (others on demand). A :class:`~mtlzoo.zoo.parts.Spec` from :meth:`validate` is built
        as it is; anything else is validated first (an already validated tree is accepted).
        Returns a :class:`mtlzoo.runtime.experiment.Experiment`."""
        from .build import build_experiment

        return build_experiment(self, self.validate(spec, overrides), split)

    # -- parts ---------------------------------------------------------------------------------------
    def entry(self, kind: str, name: str) -> Entry:
        """The registry entry of a part (``UnknownNameError`` with close names otherwise)."""
        return self.registries[kind].get(name)

    def list(self, kind: str, pattern: str = "*") -> builtins.list[Entry]:
        """Entries of one kind whose name matches a shell wildcard."""
        return self.registries[kind].list(pattern)

    def make(self, kind: str, node: Part | Any, *args: Any, path: str | None = None) -> Any:
        """Build one part and check that it is what its kind's factory must return
        (:data:`~mtlzoo.contract.hooks.KINDS`), once, in one line naming the part and its plugin.

        ``node`` is a validated :class:`~mtlzoo.zoo.parts.Part` (built with its options as they
        are; ``path`` defaults to the part's) or a spec node (``{name, **options}`` or a name),
        whose options are validated here (errors carry ``path``). The factory is called as its
        kind's contract says; errors: see :meth:`Entry.build`."""
        if isinstance(node, Part):
            if node.entry.kind != kind:
                raise ValueError(f"make({kind!r}, ...) got the {node.entry.kind} part {node.path}")
            where = path or node.path
            return node.entry.check(self.call(node.entry, *args, options=node.options, path=where), where)
        if path is None:
            raise TypeError("make: give path= (the spec key of the node) for a node that is not a Part")
        name, values = split_node(
            OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node, path
        )
        try:
            entry = self.entry(kind, name)
        except UnknownNameError as exc:
            raise ConfigError(f"{path}.name: {exc}") from None
        options = entry.build_options(values, path)
        return entry.check(self.call(entry, *args, options=options, path=path), path)

    def call(self, entry: Entry, *args: Any, options: Any = None, path: str) -> Any:
        """Call ``entry``'s factory with ``args`` and ``options``, without checking what it
        returns (the conformance kit checks that itself); errors name ``path`` and the plugin
        (:meth:`Entry.build`)."""
        return entry.build(*args, options=options, path=path)

    def target_kind(self, name: str, path: str = "") -> TargetKind:
        """The :class:`TargetKind` registered as ``name`` (built once)."""
        if name not in self._kinds:
            try:
                entry = self.entry("target_kind", name)
            except UnknownNameError as exc:
                raise ConfigError(f"{path + ': ' if path else ''}{exc}") from None
            self._kinds[name] = self.make("target_kind", Part(path or f"target kind {name!r}", entry, None))
        return self._kinds[name]

    @property
    def problems(self) -> builtins.list[str]:
        """One line per failed plugin and refused entry."""
        return [p for r in self.records for p in r.problems()]

    def __repr__(self) -> str:
        counts = ", ".join(f"{len(r)} {r.kind}" for r in self.registries)
        return f"Zoo({len(self.records)} plugins: {counts})"


def _source(spec: Any) -> Path | None:
    """The spec file a spec was read from (relative paths in it resolve against its folder)."""
    return Path(spec) if isinstance(spec, (str, Path)) else None


__all__ = ["Zoo"]
