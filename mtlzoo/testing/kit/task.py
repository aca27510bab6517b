"""The task-type contract: defaults name registered parts that accept its kinds; derivations
produce targets its kinds accept."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...zoo.registry import Entry
from .common import (
    Checks,
    Result,
    build_part,
    option_sets,
)

if TYPE_CHECKING:
    from mtlzoo.zoo.zoo import Zoo


def check_task(zoo: Zoo, entry: Entry, folder: Path) -> list[Result]:
    """The task-type contract (see the module docstring)."""
    from ...contract.data import TargetInfo
    from ...contract.tasks import Derivation, TaskType
    from ...zoo.spec import resolve_node

    c = Checks(entry.label)
    for values in c.run("examples", lambda: option_sets(entry, folder)) or []:

        def make(v: dict[str, Any] = values) -> Any:
            ttype = build_part(zoo, entry, v)
            if not isinstance(ttype, TaskType):
                raise AssertionError(f"built {type(ttype).__name__}, not a TaskType")
            return ttype

        ttype = c.run("factory", make)
        if ttype is None:
            continue

        def defaults(t: Any = ttype) -> None:
            for kind in t.target_kinds:
                zoo.target_kind(kind)
            nodes = [("head", t.head), ("loss", t.loss)] + [("metric", m) for m in t.metrics]
            for part, node in nodes:
                resolved = resolve_node(node, zoo.registries, part, f"default {part}")
                e = zoo.entry(part, resolved["name"])
                if not any(e.accepts(zoo.target_kind(k)) for k in t.target_kinds):
                    raise AssertionError(
                        f"default {part} {e.name!r} works on {e.targets}, not on the type's {t.target_kinds}"
                    )

        c.run("task.defaults", defaults)
        if ttype.derive is None:
            continue

        def derive(t: Any = ttype) -> None:
            from ...contract import checks

            for source_kind in t.derive_from or [e.name for e in zoo.list("target_kind")]:
                kind = zoo.target_kind(source_kind)
                src = TargetInfo(source_kind, 4, ("a", "b", "c", "d"), 255 if kind.pad == "ignore" else None)
                d = t.derive(src)
                if not isinstance(d, Derivation):
                    raise AssertionError(f"derive() returned {type(d).__name__}, not a Derivation")
                if d.info.kind not in t.target_kinds:
                    raise AssertionError(f"derives a {d.info.kind!r} target, which the type does not learn")
                checks.derived_target(d, src, kind, zoo.target_kind(d.info.kind), entry.label)

        c.run("task.derive", derive)
    return c.results
