"""What every kind's checks share: the :class:`Result` and :class:`Report` rows, the
:class:`Checks` collector, building a part from its example options, and the target kinds,
tasks and batches that heads, losses and metrics are checked on."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...contract.errors import one_line
from ...zoo.registry import Entry

if TYPE_CHECKING:
    from mtlzoo.zoo.zoo import Zoo


@dataclass
class Result:
    """One contract of one part: passed or failed, and why."""

    part: str
    contract: str
    ok: bool
    message: str = ""

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready view."""
        return dataclasses.asdict(self)


@dataclass
class Report:
    """Every result of one plugin's parts."""

    plugin: str
    results: list[Result] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when every contract of every part passed (and there was something to check)."""
        return bool(self.results) and all(r.ok for r in self.results)

    def failures(self) -> list[Result]:
        """The failed results."""
        return [r for r in self.results if not r.ok]

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready view."""
        return {"plugin": self.plugin, "ok": self.ok, "results": [r.as_dict() for r in self.results]}


def format_report(report: Report) -> str:
    """Human-readable report: one line per part and contract."""
    lines = [
        f"{report.plugin}: {'ok' if report.ok else 'FAILED'} ({len(report.results)} checks, "
        f"{len(report.failures())} failed)"
    ]
    for r in report.results:
        lines.append(
            f"  {'ok  ' if r.ok else 'FAIL'} {r.part}: {r.contract}" + (f": {r.message}" if r.message else "")
        )
    return "\n".join(lines)


class Checks:
    """Collects results for one part; ``run(contract, fn)`` records fn's outcome."""

    def __init__(self, label: str):
        self.label = label
        self.results: list[Result] = []

    def run(self, contract: str, fn: Callable[[], Any]) -> Any:
        try:
            value = fn()
        except Exception as exc:  # noqa: BLE001 - every failure becomes a result, never a crash
            self.results.append(Result(self.label, contract, False, one_line(exc)))
            return None
        self.results.append(Result(self.label, contract, True, value if isinstance(value, str) else ""))
        return value

    def fail(self, contract: str, message: str) -> None:
        self.results.append(Result(self.label, contract, False, message))

    def failed(self, contract: str) -> bool:
        return any(r.contract == contract and not r.ok for r in self.results)


def option_sets(entry: Entry, folder: Path) -> list[dict[str, Any]]:
    """The option mappings to build the part with: its registration's ``examples(folder)``, or
    the defaults alone."""
    if entry.examples is None:
        return [{}]
    sets = entry.examples(folder)
    if not isinstance(sets, list) or not sets or not all(isinstance(s, dict) for s in sets):
        raise TypeError(f"examples() must return a non-empty list of option mappings, got {sets!r}")
    return sets


def hermetic(zoo: Zoo, plugin: str) -> Zoo:
    """The zoo as the kit sees it when it checks ``plugin``: that plugin's parts and the
    built-ins only. What else is installed (another plugin's task types, target kinds, a
    broken plugin) then changes no result."""
    from ...zoo.registry import Registries

    registries = Registries()
    for registry in zoo.registries:
        for entry in registry:
            if entry.builtin or entry.plugin == plugin:
                registries[registry.kind].add(entry)
    records = [r for r in zoo.records if r.builtin or r.name == plugin]
    return type(zoo)(registries, records, zoo.strict, set(zoo.blocked), [])


def build_part(zoo: Zoo, entry: Entry, values: dict[str, Any], *args: Any) -> Any:
    """Build ``entry`` from one option mapping and the kind's arguments, as a spec would."""
    return zoo.call(entry, *args, options=entry.build_options(values, entry.name), path=entry.name)


def import_torch() -> Any:
    """torch, imported when a check runs (importing the kit stays light)."""
    import torch

    return torch


def kinds_of(zoo: Zoo, entry: Entry) -> list[Any]:
    """The registered target kinds the part accepts."""
    out = []
    for e in zoo.list("target_kind"):
        try:
            kind = zoo.target_kind(e.name)
        except Exception:  # noqa: BLE001 - a broken kind is reported by its own checks
            continue
        if entry.accepts(kind):
            out.append(kind)
    return out


def dense_targets(zoo: Zoo, entry: Entry) -> set[bool]:
    """Whether the part's target kinds are dense (``{True}``, ``{False}`` or both)."""
    return {k.dense for k in kinds_of(zoo, entry)} or {True, False}


def task_setups(zoo: Zoo, entry: Entry) -> list[tuple[Any, Any, Any]]:
    """(TaskInfo, kind, out_channels) for each target kind the part declares."""
    from ...contract.data import TargetInfo
    from ...contract.tasks import TaskInfo

    setups = []
    for kind in kinds_of(zoo, entry):
        name = kind.name
        classes = ("a", "b", "c", "d")
        tinfo = TargetInfo(name, len(classes), classes, 255 if kind.pad == "ignore" else None)
        channels = None
        for t in zoo.list("task"):
            if t.options is None:
                ttype = zoo.call(t, path=t.name)
            else:
                ttype = zoo.call(t, options=t.build_options({}, t.name), path=t.name)
            if name in ttype.target_kinds:
                channels = int(ttype.out_channels(tinfo))
                break
        if channels is None:
            channels = len(classes) if "C" in kind.shape or kind.dtype == "int64" else 1
        setups.append((TaskInfo("task", "task", "target", channels, tinfo), kind, channels))
    return setups


def target_batch(kind: Any, tinfo: Any, channels: int, n: int, seed: int) -> tuple[Any, Any]:
    """Random predictions ``[n, channels, 12, 16]`` (or ``[n, channels]``) and ``n`` targets
    from the kind's ``example()``."""
    torch = import_torch()
    g = torch.Generator().manual_seed(seed)
    h, w = 12, 16
    if kind.example is None:
        raise AssertionError(
            f"target kind {kind.name!r} has no example(); the kit cannot make targets for it"
        )
    target = torch.stack([kind.example(tinfo, h, w, g) for _ in range(n)])
    shape = (n, channels, h, w) if kind.dense else (n, channels)
    return torch.randn(*shape, generator=g), target
