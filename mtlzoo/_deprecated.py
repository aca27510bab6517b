"""The import paths mtlzoo 0.1 had and 0.2 moved, kept for one minor version.

``mtlzoo.errors``, ``mtlzoo.data``, ``mtlzoo.model``, ``mtlzoo.tasks`` and ``mtlzoo.combine``
were mtlzoo 0.1's public modules. In 0.2 their names live in :mod:`mtlzoo` (the public API)
and :mod:`mtlzoo.contract`; the old modules stay as shims until 0.3: every name still
imports, and each use warns with a :class:`DeprecationWarning` naming its new import.
Nothing in mtlzoo imports the shims.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from importlib import import_module
from typing import Any, NamedTuple

#: the version that deprecated the old paths, and the one that removes them
DEPRECATED_IN, REMOVED_IN = "0.2", "0.3"


class Moved(NamedTuple):
    """Where one old name went: ``from <module> import <name>``, and what else changed. A name
    with no new place (``module`` empty) keeps its old ``value``, and ``note`` says why."""

    module: str
    name: str
    note: str = ""
    value: Any = None


def shim(old: str, moved: dict[str, Moved]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` of the old module ``old``: each name of ``moved`` resolves to
    its new place with a :class:`DeprecationWarning` naming the new import."""

    def __getattr__(name: str) -> Any:
        if name not in moved:
            raise AttributeError(f"module {old!r} has no attribute {name!r}")
        to = moved[name]
        warnings.warn(message(old, name, to), DeprecationWarning, stacklevel=2)
        return getattr(import_module(to.module), to.name) if to.module else to.value

    def __dir__() -> list[str]:
        return sorted(moved)

    return __getattr__, __dir__


def message(old: str, name: str, to: Moved) -> str:
    """The deprecation message of ``old.name`` (one line)."""
    head = f"{old}.{name} is deprecated since mtlzoo {DEPRECATED_IN} and removed in {REMOVED_IN}"
    if not to.module:
        return f"{head}: {to.note}"
    note = f" ({to.note})" if to.note else ""
    return f"{head}: use `from {to.module} import {to.name}`{note}"


__all__ = ["Moved", "shim", "message", "DEPRECATED_IN", "REMOVED_IN"]
