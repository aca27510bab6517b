"""Plugin loading: every entry point of group ``mtlzoo`` into one set of registries.

mtlzoo's own plugins are entry points of its own distribution and go through exactly this
path; they are loaded first and their names always win. Each plugin is imported and
registered in isolation:

* one that fails to import, implements a hook that does not exist, or raises inside a hook
  is recorded (plugin, distribution, the full reason) and its entries are dropped;
* one entry that is invalid (a bad name, an options dataclass with an unsupported type or an
  invalid default, a factory with the wrong signature), reuses a built-in name, or takes a
  name another third-party plugin also registers is **refused** and recorded; the rest of
  its plugin loads. When two third-party plugins register one name, both entries are
  refused: which one wins never depends on the order plugins happen to load in.

Strict mode turns every failure and refusal into one :class:`PluginError` listing all of
them. Blocked plugins (by entry-point name) are not imported.
"""

from __future__ import annotations

import importlib.metadata as md
import os
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import pluggy

from ..contract import hooks
from ..contract.errors import PluginError, one_line
from .registry import Entry, Registries, valid_name

STRICT_ENV = "MTLZOO_STRICT_PLUGINS"
BLOCK_ENV = "MTLZOO_BLOCK_PLUGINS"
OWN_DISTRIBUTION = "mtlzoo"
HOOK_KINDS: dict[str, str] = {spec.hook: kind for kind, spec in hooks.KINDS.items()}


@dataclass
class PluginRecord:
    """What ``mtlzoo plugins`` reports about one plugin (entry point)."""

    name: str
    distribution: str
    version: str
    module: str
    builtin: bool = False
    status: str = "loaded"  # loaded | failed | blocked
    error: str | None = None
    registered: dict[str, list[str]] = field(default_factory=dict)
    refused: list[str] = field(default_factory=list)
    traceback: str | None = field(default=None, repr=False)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready view."""
        return {
            "name": self.name,
            "distribution": self.distribution,
            "version": self.version,
            "module": self.module,
            "builtin": self.builtin,
            "status": self.status,
            "error": self.error,
            "registered": self.registered,
            "refused": self.refused,
        }

    def problems(self) -> list[str]:
        """One line per failure or refused entry of this plugin."""
        out = (
            [f"plugin {self.name!r} ({self.distribution} {self.version}) {self.error}"] if self.error else []
        )
        out += [f"plugin {self.name!r}: {r}" for r in self.refused]
        return out


def env_flag(name: str) -> bool:
    """True when the environment variable is set to a truthy value (1, true, yes, on)."""
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


def env_blocked() -> set[str]:
    """Plugin names blocked through ``MTLZOO_BLOCK_PLUGINS`` (comma or space separated)."""
    raw = os.environ.get(BLOCK_ENV, "")
    return {p for p in raw.replace(",", " ").split() if p}


def _dist_of(ep: md.EntryPoint) -> tuple[str, str]:
    dist = getattr(ep, "dist", None)
    if dist is None:
        return "<unknown>", "?"
    return dist.metadata["Name"] or "<unknown>", dist.version or "?"


class Loader:
    """Loads plugins, stages what each registers, then resolves names (see the module docstring)."""

    def __init__(self, strict: bool = False, block: Iterable[str] = ()):
        self.strict = strict
        self.blocked = set(block)
        self.pm = pluggy.PluginManager(hooks.PROJECT)
        self.pm.add_hookspecs(hooks)
        self.records: list[PluginRecord] = []
        self._staged: list[tuple[PluginRecord, Entry]] = []
        #: (kind, name) -> why an entry of that name was refused (said when a spec names it)
        self._refused: dict[tuple[str, str], str] = {}

    # -- loading -----------------------------------------------------------------------------------
    def load_entry_points(self, group: str = hooks.ENTRY_POINT_GROUP) -> None:
        """Import and register every entry point of ``group``: mtlzoo's own first, then the
        others, each sorted by name."""
        seen: set[str] = set()
        eps = []
        for ep in md.entry_points(group=group):
            if ep.name in seen:  # the same distribution seen twice on sys.path
                continue
            seen.add(ep.name)
            dist, version = _dist_of(ep)
            eps.append((dist != OWN_DISTRIBUTION, ep.name, ep, dist, version))
        for third_party, _, ep, dist, version in sorted(eps, key=lambda t: (t[0], t[1])):
            record = PluginRecord(ep.name, dist, version, ep.value, builtin=not third_party)
            self.records.append(record)
            if ep.name in self.blocked:
                record.status = "blocked"
                continue
            try:
                module = ep.load()
            except Exception as exc:  # noqa: BLE001 - a plugin may raise anything on import
                self._fail(record, f"import failed: {one_line(exc)}", exc)
                continue
            self._register(module, record)

    def add_plugin(
        self,
        plugin: object,
        name: str,
        distribution: str = "<in-process>",
        version: str = "",
        builtin: bool = False,
    ) -> PluginRecord:
        """Register a plugin object directly (tests and embedding), with the same isolation."""
        record = PluginRecord(
            name, distribution, version, getattr(plugin, "__name__", type(plugin).__name__), builtin=builtin
        )
        self.records.append(record)
        if name in self.blocked:
            record.status = "blocked"
            return record
        self._register(plugin, record)
        return record

    def _register(self, plugin: object, record: PluginRecord) -> None:
        name = record.name
        try:
            self.pm.register(plugin, name=name)
            self.pm.check_pending()  # a hookimpl with no matching hookspec is a plugin bug
        except Exception as exc:  # noqa: BLE001
            if self.pm.get_plugin(name) is not None:
                self.pm.unregister(name=name)
            self._fail(record, f"invalid plugin: {one_line(exc)}", exc)
            return
        staged: list[Entry] = []
        try:
            for hook_name, kind in HOOK_KINDS.items():
                for impl in getattr(self.pm.hook, hook_name).get_hookimpls():
                    if impl.plugin_name == name:
                        impl.function(register=self._register_callback(kind, record, staged))
        except Exception as exc:  # noqa: BLE001 - a broken plugin leaves nothing behind
            self.pm.unregister(name=name)
            self._fail(record, f"registration failed: {one_line(exc)}", exc)
            return
        self._staged.extend((record, e) for e in staged)

    def _register_callback(self, kind: str, record: PluginRecord, staged: list[Entry]) -> Callable[..., None]:
        def register(
            name: str,
            factory: Callable[..., Any] | str,
            options: type | None = None,
            help: str = "",
            *,
            targets: Iterable[str] | None = None,
            examples: Callable[..., list] | None = None,
            variants: Callable[[], list[str]] | None = None,
        ) -> None:
            label = f"{kind} {name!r}"
            if not valid_name(name):
                record.refused.append(
                    f"{label}: a name is letters, digits and _ . + - (no spaces or slashes)"
                )
                return
            if any(e.kind == kind and e.name == name for e in staged):
                record.refused.append(f"{label}: registered twice by this plugin")
                return
            text = help.strip().splitlines()[0] if isinstance(help, str) and help.strip() else ""
            entry = Entry(
                kind,
                name,
                factory,
                options,
                text,
                record.name,
                record.builtin,
                tuple(targets) if targets is not None else None,
                examples,
                variants,
            )
            try:
                entry.validate()
            except PluginError as exc:
                record.refused.append(str(exc))
                self._refused.setdefault((kind, name), str(exc))
                return
            staged.append(entry)

        register.__doc__ = (
            f"Register a {kind}: register(name, factory, options=None, help='', *, targets=None, "
            f"examples=None, variants=None)."
        )
        return register

    def _fail(self, record: PluginRecord, message: str, exc: BaseException) -> None:
        record.status = "failed"
        record.error = message
        record.traceback = "".join(traceback.format_exception(exc))

    # -- resolving ---------------------------------------------------------------------------------
    def finish(self) -> Registries:
        """Resolve names and fill the registries; in strict mode raise one :class:`PluginError`
        naming every failed plugin and refused entry."""
        registries = Registries()
        by_name: dict[tuple[str, str], list[tuple[PluginRecord, Entry]]] = {}
        for record, entry in self._staged:
            by_name.setdefault((entry.kind, entry.name), []).append((record, entry))
        for (kind, name), claims in by_name.items():
            builtins = [c for c in claims if c[0].builtin]
            if len(builtins) == 1:
                winner = builtins[0]
                for record, _ in claims:
                    if record is not winner[0]:
                        record.refused.append(
                            f"{kind} {name!r} is a built-in name (plugin {winner[0].name}); register yours under "
                            f"another name"
                        )
            elif len(claims) == 1:
                winner = claims[0]
            else:
                winner = None
                owners = " and ".join(repr(r.name) for r, _ in claims)
                for record, _ in claims:
                    others = ",".join(r.name for r, _ in claims if r is not record)
                    record.refused.append(
                        f"{kind} {name!r} is registered by plugins {owners}: both entries refused; block one "
                        f"of them ({BLOCK_ENV}={others} or plugins.block in the spec) to use the other"
                    )
                self._refused[(kind, name)] = (
                    f"it collides: plugins {owners} both register it; block one of them "
                    f"({BLOCK_ENV} or plugins.block in the spec) to use the other"
                )
            if winner is not None:
                record, entry = winner
                registries[kind].add(entry)
                record.registered.setdefault(kind, []).append(name)
        for (kind, name), why in self._refused.items():
            if name not in registries[kind]:
                registries[kind].refused[name] = why
        registries.note_not_loaded(
            {
                r.name: "blocked" if r.status == "blocked" else "failed to load"
                for r in self.records
                if r.status != "loaded"
            }
        )
        if self.strict:
            problems = [p for r in self.records for p in r.problems()]
            if problems:
                raise PluginError(
                    f"{len(problems)} plugin problem(s), one per line below; unset {STRICT_ENV} to skip broken "
                    f"plugins, or block them with {BLOCK_ENV}=name (`--debug` shows where each import failed):\n"
                    + "\n".join(f"  {p}" for p in problems),
                    tracebacks=[r.traceback for r in self.records if r.traceback],
                )
        return registries

    def unknown_blocks(self) -> list[str]:
        """Blocked names that match no plugin (probably misspelled)."""
        known = {r.name for r in self.records}
        return sorted(self.blocked - known)


__all__ = ["Loader", "PluginRecord", "HOOK_KINDS", "STRICT_ENV", "BLOCK_ENV", "env_flag", "env_blocked"]
