"""Fuzz the spec validator: N mutations of the quickstart spec, each must be a valid config or
one line, never a traceback or a hang.

    python benchmarks/fuzz_specs.py --n 600 --seed 0

Prints the counts of each outcome (valid, one-line error, traceback, hang) and the first few
tracebacks. Then the huge-integer cases: every number of every config in ``--configs`` (each
validated with all its defaults filled in) replaced by each of ``HUGE_INTS`` (10**30 ... an
integer of 5001 digits) must be refused in one line where an integer was (``valid`` counts
float options that take 1e30), and never give a traceback; and every integer option of the spec's
sections and of every installed part must declare an upper bound. Exits with status 1 when
there is any traceback, hang, accepted huge integer or unbounded integer option. Mutations:
see :mod:`mtlzoo.testing.fuzz`.
"""

from __future__ import annotations

import argparse
import collections
import glob
import random
import signal
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


class Hang(Exception):
    """A case took longer than the time limit."""


def main(argv: list[str] | None = None) -> int:
    """Run the corpus and print the counts."""
    from mtlzoo import Zoo
    from mtlzoo.testing.fuzz import classify, mutate

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=600)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--limit", type=float, default=10.0, help="seconds one case may take")
    p.add_argument(
        "--configs",
        default="configs/**/*.yaml",
        help="glob (from the repository root) of the huge-integer bases",
    )
    args = p.parse_args(argv)
    zoo = Zoo.load(strict=True)
    base = yaml.safe_load((ROOT / "configs" / "quickstart.yaml").read_text())
    rng = random.Random(args.seed)
    counts: collections.Counter = collections.Counter()
    examples: list[str] = []

    def alarm(*_: object) -> None:
        raise Hang()

    signal.signal(signal.SIGALRM, alarm)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.n):
            case = mutate(base, rng)
            if isinstance(case, str):
                path = Path(tmp) / f"case{i}.yaml"
                path.write_text(case)
                case = path
            signal.setitimer(signal.ITIMER_REAL, args.limit)
            try:
                outcome = classify(zoo.spec, case)
            except Hang:
                outcome = "hang"
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
            key = outcome.split(":")[0]
            counts[key] += 1
            if key in ("traceback", "hang") and len(examples) < 5:
                examples.append(f"case {i}: {outcome}")
    seconds = time.perf_counter() - started
    print(
        f"{args.n} mutated specs (seed {args.seed}) in {seconds:.1f} s: "
        + ", ".join(f"{k} {counts[k]}" for k in ("valid", "one-line", "traceback", "hang"))
    )
    for line in examples:
        print(line)
    failed = bool(counts["traceback"] or counts["hang"])
    return 1 if huge_integers(zoo, args.configs) or failed else 0


def huge_integers(zoo: object, pattern: str) -> bool:
    """Run the huge-integer cases and the upper-bound census; print them; True when one fails."""
    from omegaconf import OmegaConf

    from mtlzoo.contract.errors import MtlzooError
    from mtlzoo.testing.fuzz import UNBOUNDED_BY_DESIGN, classify, huge_int_cases, unbounded_int_options
    from mtlzoo.zoo.sections import ExperimentConfig

    started = time.perf_counter()
    counts: collections.Counter = collections.Counter()
    bad: list[str] = []
    seen: set[tuple] = set()
    paths = sorted(glob.glob(str(ROOT / pattern), recursive=True))
    skipped = []
    for path in paths:
        try:
            full = OmegaConf.to_container(zoo.spec(path))  # type: ignore[attr-defined]
        except MtlzooError:  # e.g. a part of a plugin that is not installed
            skipped.append(Path(path).relative_to(ROOT).as_posix())
            continue
        for key, value, is_int, case in huge_int_cases(full):
            node = full
            for part in key.replace("[", ".").replace("]", "").split(".")[:-1]:
                node = node[int(part)] if isinstance(node, list) else node[part]
            part_name = node.get("name") if isinstance(node, dict) else None
            if (key, part_name, value) in seen:  # the same option of the same part: one case
                continue
            seen.add((key, part_name, value))
            outcome = classify(zoo.spec, case)  # type: ignore[attr-defined]
            if outcome == "valid":
                outcome = "accepted" if is_int and key not in UNBOUNDED_BY_DESIGN else "valid"
            kind = outcome.split(":")[0]
            counts[kind] += 1
            if kind in ("accepted", "traceback") and len(bad) < 10:
                bad.append(f"{Path(path).name}: {key} = {value if value < 10**40 else '10**...'}: {outcome}")
    seconds = time.perf_counter() - started
    print(
        f"huge integers: {sum(counts.values())} cases from {len(paths) - len(skipped)} configs in {seconds:.1f} s: "
        + ", ".join(f"{k} {counts[k]}" for k in ("one-line", "accepted", "traceback", "valid"))
        + (f" (not validated here: {', '.join(skipped)})" if skipped else "")
    )
    for line in bad:
        print(line)
    unbounded = unbounded_int_options(ExperimentConfig, "spec")
    for registry in zoo.registries:  # type: ignore[attr-defined]
        for entry in registry:
            if entry.options is not None:
                unbounded += unbounded_int_options(
                    entry.options, f"{entry.kind} {entry.name!r} ({entry.plugin})"
                )
    unbounded = [u for u in unbounded if u.removeprefix("spec.") not in UNBOUNDED_BY_DESIGN]
    print(
        f"integer options without an upper bound: {len(unbounded)}" + "".join(f"\n  {u}" for u in unbounded)
    )
    return bool(counts["accepted"] or counts["traceback"] or unbounded)


if __name__ == "__main__":
    sys.exit(main())
