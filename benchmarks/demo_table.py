"""The README's demo table, from what `make demo` prints.

    python benchmarks/demo_table.py            # train the quickstart, rewrite the README's table
    python benchmarks/demo_table.py --check    # train it, exit 1 if the README's table differs
    python benchmarks/demo_table.py --check-time   # exit 1 if the run's wall time is not the
                                                   # README's "about N min" (run it on an idle machine)

Runs `mtlzoo train configs/quickstart.yaml` as `make demo` does (into a temporary folder) with
torch on 2 threads (``OMP_NUM_THREADS=2``: the thread count changes the order of float sums
and so the last digits; the README states the 2-thread table), takes the `val metrics:` table
it prints, and writes it between the README's ``<!-- demo-table -->`` markers (or compares
it with them). It also prints the run's wall time and the load average before it; the README's
`make demo` line states that time as "about N min on 2 idle CPU cores", which ``--check-time``
holds to N +- 0.5 min (the tests run ``--check`` only: a timed assertion would fail on a busy
machine).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
START, END = "<!-- demo-table:start -->", "<!-- demo-table:end -->"


def demo_table() -> tuple[str, float]:
    """The `val metrics:` block of a fresh quickstart run, and the run's wall time in seconds."""
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "mtlzoo",
                "train",
                "configs/quickstart.yaml",
                f"train.out_dir={tmp}",
                "train.progress=false",
            ],
            capture_output=True,
            text=True,
            cwd=ROOT,
            env={
                **{k: v for k, v in os.environ.items() if not k.startswith("MTLZOO_")},
                "OMP_NUM_THREADS": "2",
            },
        )
        seconds = time.perf_counter() - start
    if out.returncode != 0:
        raise SystemExit(f"the quickstart failed: {out.stderr[-2000:]}")
    lines = out.stdout.splitlines()
    start = lines.index("val metrics:")
    table = [lines[start]]
    for line in lines[start + 1 :]:
        if not line.startswith("|"):
            break
        table.append(line)
    return "\n".join(table), seconds


def readme_table(text: str) -> str:
    """The table between the README's markers."""
    m = re.search(re.escape(START) + r"\n```\n(.*?)\n```\n" + re.escape(END), text, flags=re.S)
    if not m:
        raise SystemExit(f"README.md has no {START} ... {END} block")
    return m.group(1)


def readme_minutes(text: str) -> int:
    """N of the README's ``make demo ... (about N min on 2 idle CPU cores)``."""
    m = re.search(r"^make demo .*\(about (\d+) min on 2 idle CPU cores\)", text, flags=re.M)
    if not m:
        raise SystemExit("README.md's `make demo` line states no 'about N min on 2 idle CPU cores'")
    return int(m.group(1))


def main(argv: list[str] | None = None) -> int:
    """Rewrite (or check) the README's demo table; report (or check) the run's time."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="compare instead of writing")
    p.add_argument("--check-time", action="store_true", help="check the README's stated run time")
    args = p.parse_args(argv)
    readme = ROOT / "README.md"
    text = readme.read_text()
    written = readme_table(text)  # before the run: a README without the markers fails at once
    load = os.getloadavg()
    now, seconds = demo_table()
    print(
        f"the quickstart ran in {seconds:.0f} s ({seconds / 60:.1f} min) on {os.cpu_count()} CPU cores, "
        f"load average before {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f}"
    )
    if args.check_time:
        minutes = readme_minutes(text)
        if load[0] > 0.5:
            print(f"note: load {load[0]:.2f} before the run: the machine was not idle")
        if abs(seconds / 60 - minutes) > 0.5:
            print(f"README.md says about {minutes} min; this run took {seconds / 60:.1f} min")
            return 1
        print(f"README.md's 'about {minutes} min' holds")
        return 0
    if args.check:
        if now != written:
            print(f"README.md's demo table is stale; `make demo` prints:\n{now}")
            return 1
        print("README.md's demo table matches `make demo`")
        return 0
    readme.write_text(text.replace(written, now))
    print(f"wrote the demo table into {readme}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
