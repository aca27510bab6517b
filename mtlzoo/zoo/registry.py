"""Registries: one per kind of part (backbone, head, loss, combiner, ...).

An :class:`Entry` records a registered part: its name, its factory (a callable or a lazy
``"module:attribute"`` reference), its options dataclass, a one-line help, the plugin that
registered it and whether that plugin is one of mtlzoo's own. Registries never import
torch: listing and spec validation stay fast.
"""

from __future__ import annotations

import fnmatch
import importlib
import inspect
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from ..contract.errors import (
    ConfigError,
    MtlzooError,
    PluginError,
    UnknownNameError,
    close_matches,
    one_line,
)
from ..contract.hooks import KINDS
from ..contract.options import build_options, check_schema, describe_fields

_LAZY = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*")
_NAME = re.compile(r"[A-Za-z0-9_][\w.+-]*")


def check_factory_signature(factory: Callable[..., Any], kind: str, has_options: bool) -> str | None:
    """Why ``factory`` cannot be called the way the zoo calls a ``kind`` factory (its kind's
    arguments, then the options instance when the part has options), or ``None``.

    The kind's arguments must land on parameters without a default: a loss factory whose
    first parameter is an option with a default would silently receive the TaskInfo."""
    args = list(KINDS[kind].args) + (["options"] if has_options else [])
    call = f"factory({', '.join(args)})"
    try:
        sig = inspect.signature(factory)
    except (TypeError, ValueError):  # builtins without a signature: trust them
        return None
    try:
        bound = sig.bind(*args)
    except TypeError as exc:
        return f"its signature {sig} cannot be called as {call} ({exc})"
    params = sig.parameters
    for name, value in bound.arguments.items():
        p = params[name]
        if p.kind is p.VAR_POSITIONAL:
            continue
        if p.default is not p.empty and value in KINDS[kind].args:
            return (
                f"its parameter {name!r} has a default but receives the {value!r} argument: a {kind} "
                f"factory is called as {call}"
            )
    return None


def _import(ref: str) -> Any:
    """The object a ``"package.module:attribute"`` reference names."""
    module_name, _, attr = ref.partition(":")
    obj: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def product_problem(kind: str, name: str, product: Any) -> str | None:
    """Why ``product`` is not what a ``kind`` factory must return (its kind's
    :class:`~mtlzoo.contract.hooks.Returns`), or ``None``. ``name`` is the registered name."""
    returns = KINDS[kind].returns
    got = type(product).__name__
    if returns.type is not None and not isinstance(product, _import(returns.type)):
        return f"built {got}, not {returns.words}"
    if returns.callable and not callable(product):
        return f"built {got}, which is not callable; a {kind} factory returns {returns.words}"
    for attr, cls in returns.attributes:
        value = getattr(product, attr, None)
        if value is None or (cls is not None and not isinstance(value, _import(cls))):
            shown = type(value).__name__ if cls is not None and value is not None else repr(value)
            return f"built {got} whose {attr} is {shown}, not {returns.words}"
    if returns.named and getattr(product, "name", None) != name:
        return f"built {product!r}, not {returns.words} ({name!r})"
    return None


@dataclass(frozen=True)
class Entry:
    """One registered part.

    Attributes:
        kind: registry kind, one of :data:`mtlzoo.contract.hooks.KINDS`.
        name: the name used in specs (``model.backbone.name: timm``).
        factory: callable building the part, or ``"module:attribute"`` imported on first
            use; called with the kind's arguments then the options instance (see
            :mod:`mtlzoo.contract.hooks`).
        options: the options dataclass, or ``None`` when the part takes none.
        help: one line shown by ``mtlzoo list``.
        plugin: name of the plugin (entry point) that registered it.
        builtin: registered by one of mtlzoo's own plugins.
        targets: target kinds the part works with (heads, losses, metrics); ``None``: any.
        examples: ``examples(folder) -> list[dict]`` option sets for the conformance kit.
        variants: ``variants() -> list[str]`` sub-names searched by ``mtlzoo list``.
    """

    kind: str
    name: str
    factory: Callable[..., Any] | str
    options: type | None = None
    help: str = ""
    plugin: str = "<unknown>"
    builtin: bool = False
    targets: tuple[str, ...] | None = None
    examples: Callable[..., list[dict]] | None = field(default=None, compare=False)
    variants: Callable[[], list[str]] | None = field(default=None, compare=False)
    _resolved: list = field(default_factory=list, compare=False, repr=False)

    @property
    def label(self) -> str:
        """``combiner 'sum' (plugin builtin_combiners)``: how errors name the part."""
        return f"{self.kind} {self.name!r} (plugin {self.plugin})"

    def validate(self) -> None:
        """Check what can be checked without importing the factory's module: the options
        schema (field types, defaults) and, for a callable factory, its signature. Raises
        :class:`PluginError` naming the plugin and the part."""
        if self.options is not None:
            try:
                check_schema(
                    self.options, self.options.__name__ if isinstance(self.options, type) else "options"
                )
            except TypeError as exc:
                raise PluginError(f"{self.label}: options {exc}") from None
        if isinstance(self.factory, str):
            if not _LAZY.fullmatch(self.factory):
                raise PluginError(f"{self.label}: factory {self.factory!r} is not 'package.module:attribute'")
            return
        if not callable(self.factory):
            raise PluginError(
                f"{self.label}: factory must be callable or 'module:attribute', "
                f"got {type(self.factory).__name__}"
            )
        problem = check_factory_signature(self.factory, self.kind, self.options is not None)
        if problem:
            raise PluginError(
                f"{self.label}: factory {getattr(self.factory, '__qualname__', self.factory)}: {problem}"
            )

    def load(self) -> Callable[..., Any]:
        """The factory, importing it on first use for a lazy reference (whose signature is
        checked then). Raises :class:`PluginError` naming the plugin and the part."""
        if self._resolved:
            return self._resolved[0]
        factory = self.factory
        if isinstance(factory, str):
            try:
                obj = _import(factory)
            except Exception as exc:  # noqa: BLE001 - a plugin module may raise anything on import
                raise PluginError(
                    f"{self.label}: cannot import its factory {factory!r}: {one_line(exc)}"
                ) from exc
            if not callable(obj):
                raise PluginError(f"{self.label}: {factory!r} is not callable")
            problem = check_factory_signature(obj, self.kind, self.options is not None)
            if problem:
                raise PluginError(f"{self.label}: factory {factory}: {problem}")
            factory = obj
        self._resolved.append(factory)
        return factory

    def build_options(self, values: Any, path: str) -> Any:
        """Validate a spec's option values (a mapping) against :attr:`options`; return the
        options instance (``None`` for a part without options). Errors carry ``path``."""
        return build_options(self.options, values, path, f"{self.kind} {self.name!r}")

    def call(self, *args: Any, options: Any = None) -> Any:
        """Call the factory as the contract says: the kind's arguments, then ``options``."""
        factory = self.load()
        return factory(*args, options) if self.options is not None else factory(*args)

    def build(self, *args: Any, options: Any = None, path: str) -> Any:
        """:meth:`call`, with every error one line naming ``path`` (the spec key) and the part:
        a :class:`ConfigError` or :class:`UnknownNameError` the factory raises is reported at
        ``path``; anything else that is not an :class:`MtlzooError` becomes
        ``<path>: building <kind> '<name>' (plugin <p>) failed: ...``."""
        try:
            return self.call(*args, options=options)
        except ConfigError as exc:
            if str(exc).startswith(path):
                raise
            raise ConfigError(f"{path}: {exc}") from exc
        except UnknownNameError as exc:
            raise ConfigError(f"{path}: {exc}") from exc
        except MtlzooError:
            raise
        except Exception as exc:  # noqa: BLE001 - plugin code may raise anything
            raise PluginError(f"{path}: building {self.label} failed: {one_line(exc)}") from exc

    def check(self, product: Any, path: str) -> Any:
        """``product`` if it is what this kind's factory must return
        (:data:`~mtlzoo.contract.hooks.KINDS`), else :class:`PluginError`
        ``<path>: <kind> '<name>' (plugin <p>) built X, not ...``."""
        problem = product_problem(self.kind, self.name, product)
        if problem:
            raise PluginError(f"{path}: {self.label} {problem}")
        return product

    def accepts(self, kind: Any) -> bool:
        """Whether the part works on targets of ``kind`` (a :class:`TargetKind`): named in
        :attr:`targets`, or covered by ``"dense"`` (any dense kind) / ``"image"`` (any
        image-level kind); ``targets=None`` accepts every kind."""
        if self.targets is None:
            return True
        return kind.name in self.targets or ("dense" if kind.dense else "image") in self.targets

    def describe_options(self) -> list[dict[str, Any]]:
        """Name, type, default and bounds of each option (``mtlzoo list --json``)."""
        return describe_fields(self.options)


class Registry:
    """Name -> :class:`Entry` map for one kind, with wildcard listing and helpful errors."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Entry] = {}
        #: name -> why the loader refused it (a collision, an invalid registration)
        self.refused: dict[str, str] = {}
        #: said after an unknown name: which plugins were not loaded (blocked, failed)
        self.not_loaded = ""

    def add(self, entry: Entry) -> Entry:
        """Add an entry whose name is free (the loader resolves conflicts before this)."""
        if entry.name in self._entries:
            raise ValueError(
                f"{self.kind} {entry.name!r} is already registered by {self._entries[entry.name].plugin}"
            )
        self._entries[entry.name] = entry
        return entry

    def get(self, name: str) -> Entry:
        """Return the entry called ``name`` or raise :class:`UnknownNameError` with close names."""
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            pass
        if isinstance(name, str) and name in self.refused:
            raise UnknownNameError(
                f"{self.kind} {name!r} is not available: it was refused when plugins loaded ("
                f"{self.refused[name]}); `mtlzoo plugins` shows why"
            )
        hits = close_matches(str(name), self._entries)
        hint = f"; did you mean {' or '.join(repr(h) for h in hits)}?" if hits else ""
        raise UnknownNameError(
            f"unknown {self.kind} {name!r}{hint} (`mtlzoo list {self.kind}` shows all {len(self)})"
            f"{self.not_loaded}"
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
    """The set of registries, one per kind of :data:`~mtlzoo.contract.hooks.KINDS`."""

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

    def note_not_loaded(self, plugins: dict[str, str]) -> None:
        """Say after every unknown name which plugins were not loaded (name -> why: ``blocked``,
        ``failed to load``): a part of one of them is unknown for that reason."""
        if plugins:
            shown = ", ".join(f"{name!r} ({why})" for name, why in sorted(plugins.items()))
            for registry in self:
                registry.not_loaded = f"; not loaded: plugin {shown}"


def valid_name(name: Any) -> bool:
    """True for a usable part name (no spaces, no path separators)."""
    return isinstance(name, str) and bool(_NAME.fullmatch(name))


__all__ = ["Entry", "Registry", "Registries", "check_factory_signature", "product_problem", "valid_name"]
