"""Spec fuzzing: mutate a valid spec and check that every outcome is a valid config or one line.

Used by ``benchmarks/fuzz_specs.py`` (a seeded corpus, with counts) and by mtlzoo's
hypothesis test. A mutation changes one or a few places of a spec: unknown keys, values of
the wrong type or container, NaN / infinite / negative / huge numbers, bad names, YAML-level
duplicate keys, interpolations (allowed and forbidden resolvers, loops), deep nesting and
alias expansion.
"""

from __future__ import annotations

import copy
import math
import random
from collections.abc import Callable
from typing import Any

import yaml

from ..contract.errors import MtlzooError

WEIRD_VALUES: list[Any] = [
    None,
    True,
    False,
    0,
    -1,
    7,
    10**30,
    -(10**30),
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


def _text_mutation(spec: Any, rng: random.Random) -> str:
    text = yaml.safe_dump(spec, sort_keys=False) if isinstance(spec, dict) else str(spec)
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


__all__ = ["mutate", "classify", "WEIRD_VALUES"]
