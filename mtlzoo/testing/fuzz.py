"""Spec fuzzing: mutate a valid spec and check that every outcome is a valid config or one line.

Used by ``benchmarks/fuzz_specs.py`` (a seeded corpus, with counts) and by mtlzoo's
hypothesis test. A mutation changes one or a few places of a spec: unknown keys, values of
the wrong type or container, NaN / infinite / negative / huge numbers, bad names, YAML-level
duplicate keys, interpolations (allowed and forbidden resolvers, loops), deep nesting and
alias expansion.

Huge integers get their own, exhaustive cases (:func:`huge_int_cases`): every integer of a
complete spec (every option filled in) replaced by each of :data:`HUGE_INTS` must be refused
in one line, never accepted (a batch of 10**30 samples fails deep inside torch) and never a
traceback (Python refuses to print an integer of more than 4300 digits). :func:`unbounded_int_options`
lists the integer options declared without an upper bound.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import random
import typing
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import yaml

from ..contract.errors import MtlzooError
from ..contract.options import constraint

#: integers no option takes: beyond every bound, beyond 64 bits, beyond a float, beyond printing
HUGE_INTS: tuple[int, ...] = (10**30, -(10**30), 2**63, 10**400, 10**5000)
#: integer options whose upper bound is still to come (refusing them is not required yet)
UNBOUNDED_BY_DESIGN: frozenset[str] = frozenset()

WEIRD_VALUES: list[Any] = [
    None,
    True,
    False,
    0,
    -1,
    7,
    # beyond the bounds, 64 bits, the float range and Python's 4300-digit printing limit
    *HUGE_INTS,
    0.5,
    -0.5,
    1e308,
    float("nan"),
    float("inf"),
    float("-inf"),
    "",
    "x",
    "../../etc",
    "/abs/path",
    "a b",
    "${oc.env:HOME}",
    "${oc.create:{a: 1}}",
    "${oc.decode:'${oc.create:{a: 1}}'}",
    "${missing.key}",
    "${name}",
    [],
    [1],
    [1, 2],
    [1, 2, 3],
    ["a", "b"],
    {},
    {"name": "sum"},
    {"x": 1},
    {"name": "no_such_part"},
    [[[]]],
    {"a": {"b": {"c": {}}}},
]


def _paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix]
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, (*prefix, i))
    return out


def _set(spec: Any, path: tuple, value: Any) -> Any:
    if not path:
        return value
    node = spec
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return spec


def mutate(spec: dict[str, Any], rng: random.Random, max_changes: int = 3) -> Any:
    """One mutated copy of ``spec`` (a dict, or YAML text for text-level mutations)."""
    out: Any = copy.deepcopy(spec)
    for _ in range(rng.randint(1, max_changes)):
        paths = _paths(out) if isinstance(out, dict) else [()]
        path = rng.choice(paths)
        kind = rng.random()
        target = out
        for key in path:
            target = target[key]
        if kind < 0.45:
            out = _set(out, path, copy.deepcopy(rng.choice(WEIRD_VALUES)))
        elif kind < 0.6 and isinstance(target, dict):
            target[rng.choice(["nmae", "extra", "epochz", "from", "source", "width", "1", "name"])] = (
                rng.choice(WEIRD_VALUES)
            )
        elif kind < 0.7 and isinstance(target, (int, float)) and not isinstance(target, bool):
            out = _set(
                out, path, rng.choice([-target, target * 10 ** rng.randint(3, 40), math.nan, -math.inf])
            )
        elif kind < 0.8 and isinstance(target, dict) and target:
            target.pop(rng.choice(list(target)))
        elif kind < 0.9:
            depth = rng.randint(10, 200)
            nest: Any = 1
            for _ in range(depth):
                nest = [nest] if rng.random() < 0.5 else {"k": nest}
            out = _set(out, path, nest)
        else:
            return _text_mutation(out, rng)
    return out


def _text_mutation(spec: Any, rng: random.Random) -> Any:
    try:
        text = yaml.safe_dump(spec, sort_keys=False) if isinstance(spec, dict) else str(spec)
    except ValueError:  # an integer too long to print: the mapping is the case
        return spec
    lines = text.splitlines()
    choice = rng.random()
    if choice < 0.35 and lines:  # duplicate a top-level line
        tops = [i for i, line in enumerate(lines) if line and not line.startswith(" ")]
        if tops:
            i = rng.choice(tops)
            lines.insert(rng.randint(0, len(lines)), lines[i])
    elif choice < 0.6:  # an alias bomb
        lines = (
            ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
            + [
                f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]"
                for p, c in zip("abcdefg", "bcdefgh")
            ]
            + lines
        )
    elif choice < 0.8:  # a YAML tag
        lines.append("evil: !!python/object/apply:os.system ['true']")
    else:  # broken syntax
        lines.insert(rng.randint(0, len(lines)), rng.choice(["{", "- [", "key: [1, 2", "\t: x", ": :"]))
    return "\n".join(lines) + "\n"


def classify(validate: Callable[[Any], Any], spec: Any) -> str:
    """``valid``, ``one-line`` (an MtlzooError of one line) or ``traceback: <type>`` for
    anything else a user would see as a crash."""
    try:
        validate(spec)
    except MtlzooError as exc:
        return (
            "one-line" if "\n" not in str(exc) and str(exc).strip() else "traceback: multi-line MtlzooError"
        )
    except RecursionError:
        return "traceback: RecursionError"
    except Exception as exc:  # noqa: BLE001 - exactly what the fuzzer looks for
        return f"traceback: {type(exc).__name__}: {exc}"
    return "valid"


def _number_leaves(node: Any, prefix: tuple = ()) -> Iterator[tuple[tuple, bool]]:
    if isinstance(node, Mapping):
        for k, v in node.items():
            yield from _number_leaves(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _number_leaves(v, (*prefix, i))
    elif isinstance(node, (int, float)) and not isinstance(node, bool):
        yield prefix, isinstance(node, int)


def dotted(path: tuple) -> str:
    """``("data", "size", 0)`` as ``data.size[0]``."""
    out = ""
    for key in path:
        out += f"[{key}]" if isinstance(key, int) else (f".{key}" if out else str(key))
    return out


def huge_int_cases(
    full: dict[str, Any], values: tuple[int, ...] = HUGE_INTS
) -> Iterator[tuple[str, int, bool, Any]]:
    """``(dotted path, value, is_int, spec)`` for every number of ``full`` (a complete, valid
    spec as a plain dict, e.g. ``OmegaConf.to_container(zoo.spec(path))``) replaced by each of
    ``values``. Validating each must give one line (:func:`classify` ``"one-line"``) where the
    number was an integer (``is_int``), and never a traceback where it was a float (a float
    option without an upper bound takes ``1e30``)."""
    for path, is_int in _number_leaves(full):
        for value in values:
            yield dotted(path), value, is_int, _set(copy.deepcopy(full), path, value)


def _has_int(tp: Any) -> bool:
    return tp is int or any(_has_int(a) for a in typing.get_args(tp) if a is not Ellipsis)


def _dataclasses_in(tp: Any) -> list[type]:
    found = [tp] if dataclasses.is_dataclass(tp) and isinstance(tp, type) else []
    for a in typing.get_args(tp):
        if a is not Ellipsis:
            found += _dataclasses_in(a)
    return found


def unbounded_int_options(schema: type, where: str) -> list[str]:
    """Integer options of the options dataclass ``schema`` (nested ones included) declared
    without an upper bound (``le`` or ``lt`` of :func:`~mtlzoo.option`), as ``where.field``."""
    hints = typing.get_type_hints(schema)
    out = []
    for f in dataclasses.fields(schema):
        key = f"{where}.{f.name}"
        for nested in _dataclasses_in(hints[f.name]):
            out += unbounded_int_options(nested, key)
        con = constraint(f)
        if _has_int(hints[f.name]) and con.le is None and con.lt is None:
            out.append(key)
    return out


__all__ = [
    "mutate",
    "classify",
    "huge_int_cases",
    "unbounded_int_options",
    "dotted",
    "WEIRD_VALUES",
    "HUGE_INTS",
    "UNBOUNDED_BY_DESIGN",
]
