"""The README's demo table, from what `make demo` prints.

    python benchmarks/demo_table.py            # train the quickstart, rewrite the README's table
    python benchmarks/demo_table.py --check    # train it, exit 1 if the README's table differs

Runs `mtlzoo train configs/quickstart.yaml` as `make demo` does (into a temporary folder) with
torch on 2 threads (``OMP_NUM_THREADS=2``: the thread count changes the order of float sums
and so the last digits; the README states the 2-thread table), takes the `val metrics:` table
it prints, and writes it between the README's ``<!-- demo-table -->`` markers (or compares
it with them).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
START, END = "<!-- demo-table:start -->", "<!-- demo-table:end -->"


def demo_table() -> str:
    """The `val metrics:` block of a fresh quickstart run."""
    with tempfile.TemporaryDirectory() as tmp:
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
    if out.returncode != 0:
        raise SystemExit(f"the quickstart failed: {out.stderr[-2000:]}")
    lines = out.stdout.splitlines()
    start = lines.index("val metrics:")
    table = [lines[start]]
    for line in lines[start + 1 :]:
        if not line.startswith("|"):
            break
        table.append(line)
    return "\n".join(table)


def readme_table(text: str) -> str:
    """The table between the README's markers."""
    m = re.search(re.escape(START) + r"\n```\n(.*?)\n```\n" + re.escape(END), text, flags=re.S)
    if not m:
        raise SystemExit(f"README.md has no {START} ... {END} block")
    return m.group(1)


def main(argv: list[str] | None = None) -> int:
    """Rewrite (or check) the README's demo table."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="compare instead of writing")
    args = p.parse_args(argv)
    readme = ROOT / "README.md"
    text = readme.read_text()
    now, written = demo_table(), readme_table(text)
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
