"""Registries: one per kind of plugin part (backbone, head, loss, combiner, ...).

An :class:`Entry` records a name, the factory that builds the part, the dataclass schema
its options are validated against, a one-line help and the plugin that registered it.
Registries know nothing about torch; they only map names to entries.
"""

from __future__ import annotations

import dataclasses
import fnmatch
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from .errors import DuplicateNameError, UnknownNameError, close_matches

KINDS: tuple[str, ...] = ("backbone", "head", "loss", "combiner", "dataset", "metric", "task")


@dataclass(frozen=True)
class Entry:
    """One registered part.

    Attributes:
        kind: registry kind, one of :data:`KINDS`.
        name: the name used in configs (``model.backbone.name: timm``).
        factory: callable building the part; its signature depends on the kind (see
            :mod:`mtlzoo.hookspecs`). Validated options are passed as keyword arguments.
        schema: a dataclass whose fields are the options the part accepts, or ``None``
            when it takes none. Configs are validated against it before anything is built.
        help: one line shown by ``mtlzoo list``.
        plugin: name of the plugin (entry point) that registered it.
        variants: optional callable listing sub-names (e.g. the architectures a ``timm``
            backbone accepts), searched by ``mtlzoo list``.
    """

    kind: str
    name: str
    factory: Callable[..., Any]
    schema: type | None = None
    help: str = ""
    plugin: str = "<unknown>"
    variants: Callable[[], list[str]] | None = field(default=None, compare=False)

    def options(self) -> list[dataclasses.Field]:
        """Return the dataclass fields of the option schema (empty if none)."""
        return list(dataclasses.fields(self.schema)) if self.schema is not None else []


class Registry:
    """Name -> :class:`Entry` map for one kind, with wildcard listing and helpful errors."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Entry] = {}

    def register(
        self,
        name: str,
        factory: Callable[..., Any],
        schema: type | None = None,
        help: str = "",
        *,
        plugin: str = "<unknown>",
        variants: Callable[[], list[str]] | None = None,
    ) -> Entry:
        """Add an entry. A name already taken raises :class:`DuplicateNameError` naming both plugins."""
        if not isinstance(name, str) or not name or any(c.isspace() for c in name):
            raise ValueError(f"{self.kind} name must be a non-empty string without spaces, got {name!r}")
        if not callable(factory):
            raise TypeError(f"{self.kind} {name!r}: factory must be callable, got {type(factory).__name__}")
        if schema is not None and not dataclasses.is_dataclass(schema):
            raise TypeError(f"{self.kind} {name!r}: schema must be a dataclass, got {schema!r}")
        if name in self._entries:
            other = self._entries[name].plugin
            raise DuplicateNameError(
                f"{self.kind} {name!r} is registered twice: by plugin {other!r} and by plugin {plugin!r}; "
                f"block one of them (MTLZOO_BLOCK_PLUGINS={plugin} or plugins.block in the spec)"
            )
        entry = Entry(self.kind, name, factory, schema, help.strip().splitlines()[0] if help.strip() else "",
                      plugin, variants)
        self._entries[name] = entry
        return entry

    def remove_plugin(self, plugin: str) -> None:
        """Drop every entry registered by ``plugin`` (used to undo a half-failed registration)."""
        self._entries = {k: e for k, e in self._entries.items() if e.plugin != plugin}

    def get(self, name: str) -> Entry:
        """Return the entry called ``name`` or raise :class:`UnknownNameError` with close names."""
        try:
            return self._entries[name]
        except KeyError:
            pass
        hits = close_matches(str(name), self._entries)
        hint = f"; did you mean {' or '.join(repr(h) for h in hits)}?" if hits else ""
        raise UnknownNameError(
            f"unknown {self.kind} {name!r}{hint} (`mtlzoo list {self.kind}` shows all {len(self)})"
        )

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[Entry]:
        return iter(sorted(self._entries.values(), key=lambda e: e.name))

    def names(self, pattern: str = "*") -> list[str]:
        """Sorted names matching a shell wildcard (``*``, ``?``, ``[ab]``), case-insensitive."""
        return [e.name for e in self.list(pattern)]

    def list(self, pattern: str = "*") -> list[Entry]:
        """Sorted entries whose name matches the shell wildcard ``pattern``."""
        pat = pattern.lower()
        return [e for e in self if fnmatch.fnmatchcase(e.name.lower(), pat)]


class Registries:
    """The set of registries, one per kind in :data:`KINDS`, filled by plugins."""

    def __init__(self) -> None:
        self._by_kind = {kind: Registry(kind) for kind in KINDS}

    def __getitem__(self, kind: str) -> Registry:
        try:
            return self._by_kind[kind]
        except KeyError:
            hits = close_matches(kind, KINDS)
            hint = f"; did you mean {hits[0]!r}?" if hits else ""
            raise UnknownNameError(f"unknown kind {kind!r}{hint} (kinds: {', '.join(KINDS)})") from None

    def __iter__(self) -> Iterator[Registry]:
        return iter(self._by_kind.values())

    def remove_plugin(self, plugin: str) -> None:
        """Drop every entry of ``plugin`` from every registry."""
        for reg in self:
            reg.remove_plugin(plugin)
