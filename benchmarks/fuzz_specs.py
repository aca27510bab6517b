"""Fuzz the spec validator: N mutations of the quickstart spec, each must be a valid config or
one line, never a traceback or a hang.

    python benchmarks/fuzz_specs.py --n 600 --seed 0

Prints the counts of each outcome (valid, one-line error, traceback, hang) and the first few
tracebacks; exits with status 1 when there is any traceback or hang. Mutations: see
:mod:`mtlzoo.testing.fuzz`.
"""

from __future__ import annotations

import argparse
import collections
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
    return 1 if counts["traceback"] or counts["hang"] else 0


if __name__ == "__main__":
    sys.exit(main())
