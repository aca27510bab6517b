"""Plugin manager: loads every entry point of group ``mtlzoo`` into the registries.

The built-in plugins are entry points of the project's own distribution, so they go
through exactly this path. Each entry point is imported and registered in isolation: one
that fails is recorded (plugin, distribution, error) and skipped, unless strict mode is on
(``MTLZOO_STRICT_PLUGINS=1`` or ``mtlzoo --strict-plugins``). Plugins are blocked by name
with ``MTLZOO_BLOCK_PLUGINS=a,b`` or ``plugins.block`` in a spec.
"""

from __future__ import annotations

import importlib.metadata as md
import os
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import pluggy

from . import hookspecs
from .errors import MtlzooError, PluginError
from .registry import KINDS, Registries

STRICT_ENV = "MTLZOO_STRICT_PLUGINS"
BLOCK_ENV = "MTLZOO_BLOCK_PLUGINS"

# hook name -> registry kind
HOOK_KINDS: dict[str, str] = {
    "register_backbones": "backbone",
    "register_heads": "head",
    "register_losses": "loss",
    "register_combiners": "combiner",
    "register_datasets": "dataset",
    "register_metrics": "metric",
    "register_tasks": "task",
}
assert set(HOOK_KINDS.values()) == set(KINDS)


@dataclass
class PluginRecord:
    """What ``mtlzoo plugins`` reports about one entry point."""

    name: str
    distribution: str
    version: str
    module: str
    status: str = "loaded"  # loaded | failed | blocked
    error: str | None = None
    registered: dict[str, list[str]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready view."""
        return {
            "name": self.name,
            "distribution": self.distribution,
            "version": self.version,
            "module": self.module,
            "status": self.status,
            "error": self.error,
            "registered": self.registered,
        }


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


def _one_line(exc: BaseException) -> str:
    msg = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {msg[0] if msg else ''}".rstrip(": ")


class PluginManager:
    """Loads plugins into :class:`~mtlzoo.registry.Registries` and remembers what happened."""

    def __init__(self, strict: bool | None = None, block: Iterable[str] = ()):
        self.strict = env_flag(STRICT_ENV) if strict is None else strict
        self.blocked = set(block) | env_blocked()
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self.registries = Registries()
        self.records: list[PluginRecord] = []

    # -- loading -----------------------------------------------------------------------
    def load_entry_points(self, group: str = hookspecs.ENTRY_POINT_GROUP) -> None:
        """Load every entry point of ``group``, each in isolation, in a stable order."""
        seen: set[str] = set()
        for ep in sorted(md.entry_points(group=group), key=lambda e: e.name):
            if ep.name in seen:  # the same distribution seen twice on sys.path
                continue
            seen.add(ep.name)
            dist, version = _dist_of(ep)
            record = PluginRecord(ep.name, dist, version, ep.value)
            self.records.append(record)
            if ep.name in self.blocked:
                record.status = "blocked"
                continue
            try:
                module = ep.load()
            except Exception as exc:  # noqa: BLE001 - a plugin may raise anything on import
                self._fail(record, f"import failed: {_one_line(exc)}", exc)
                continue
            self._register(module, record)

    def add_plugin(self, plugin: object, name: str, distribution: str = "<in-process>",
                   version: str = "") -> PluginRecord:
        """Register a plugin object directly (tests and embedding), with the same isolation."""
        record = PluginRecord(name, distribution, version, getattr(plugin, "__name__", type(plugin).__name__))
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
            self._fail(record, f"invalid plugin: {_one_line(exc)}", exc)
            return
        try:
            for hook_name, kind in HOOK_KINDS.items():
                for impl in getattr(self.pm.hook, hook_name).get_hookimpls():
                    if impl.plugin_name != name:
                        continue
                    impl.function(register=self._register_callback(kind, name, record))
        except Exception as exc:  # noqa: BLE001
            # undo half a registration so a broken plugin leaves nothing behind
            self.registries.remove_plugin(name)
            record.registered = {}
            self.pm.unregister(name=name)
            self._fail(record, f"registration failed: {_one_line(exc)}", exc)

    def _register_callback(self, kind: str, plugin: str, record: PluginRecord) -> Callable[..., Any]:
        registry = self.registries[kind]

        def register(name: str, factory: Callable[..., Any], schema: type | None = None,
                     help: str = "", *, variants: Callable[[], list[str]] | None = None) -> None:
            registry.register(name, factory, schema, help, plugin=plugin, variants=variants)
            record.registered.setdefault(kind, []).append(name)

        register.__doc__ = f"Register a {kind}: register(name, factory, schema=None, help='')."
        return register

    def _fail(self, record: PluginRecord, message: str, exc: BaseException) -> None:
        record.status = "failed"
        record.error = message
        record.traceback = "".join(traceback.format_exception(exc))  # type: ignore[attr-defined]
        if self.strict:
            raise PluginError(
                f"plugin {record.name!r} (distribution {record.distribution} {record.version}) {message}; "
                f"unset {STRICT_ENV} to skip broken plugins, or block it with {BLOCK_ENV}={record.name}"
            ) from exc

    # -- queries -----------------------------------------------------------------------
    @property
    def failures(self) -> list[PluginRecord]:
        """Records of plugins that failed to import or register."""
        return [r for r in self.records if r.status == "failed"]


_DEFAULT: dict[tuple[bool, frozenset[str]], PluginManager] = {}


def get_plugin_manager(strict: bool | None = None, block: Iterable[str] = ()) -> PluginManager:
    """Return the process-wide plugin manager for these settings, loading entry points once."""
    strict = env_flag(STRICT_ENV) if strict is None else strict
    key = (strict, frozenset(set(block) | env_blocked()))
    if key not in _DEFAULT:
        manager = PluginManager(strict=strict, block=key[1])
        manager.load_entry_points()
        _DEFAULT[key] = manager
    return _DEFAULT[key]


def get_registries(strict: bool | None = None, block: Iterable[str] = ()) -> Registries:
    """Shortcut: the registries of :func:`get_plugin_manager`."""
    return get_plugin_manager(strict, block).registries


def reset() -> None:
    """Forget loaded plugin managers (tests use it after installing a plugin)."""
    _DEFAULT.clear()


__all__ = ["PluginManager", "PluginRecord", "get_plugin_manager", "get_registries", "reset",
           "MtlzooError"]
