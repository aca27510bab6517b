"""How long the commands that load plugins take: ``mtlzoo list``, ``plugins``, ``config show``
and a one-line spec error from ``config show`` and from ``train`` (target: each under 1.5 s on
an idle 2-core machine).

Registration never imports torch, timm or smp (parts are registered as ``"module:attribute"``
strings), so these commands cost Python start-up, pluggy, OmegaConf and the entry-point scan.

    python benchmarks/command_speed.py                # writes benchmarks/results/command_speed.md
    python benchmarks/command_speed.py --repeats 3 --out /tmp/speed.md

Each command runs ``--repeats`` times in a fresh process; the table reports the median and
the slowest wall time, and the 1-minute load average before and after. The script exits with
status 1 when a median exceeds ``--limit`` seconds.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BAD_SPEC = """name: misspelled
model: {backbone: {name: cnn}}
tasks: {semseg: {type: segmentation}}
combiner: {name: sum}
data: {name: shapes}
train: {epohcs: 2}
"""


def commands(bad_spec: Path) -> dict[str, list[str]]:
    """The measured commands (run as ``python -m mtlzoo ...``) and the exit status each must give."""
    return {
        "mtlzoo --help": ["--help"],
        "mtlzoo list combiner": ["list", "combiner"],
        "mtlzoo list": ["list"],
        "mtlzoo plugins": ["plugins"],
        "mtlzoo config show configs/quickstart.yaml": ["config", "show", "configs/quickstart.yaml"],
        "mtlzoo config show <misspelled key> (one-line error)": ["config", "show", str(bad_spec)],
        # train validates the spec before it imports torch: a spec error costs what config show's does
        "mtlzoo train <misspelled key> (one-line error)": ["train", str(bad_spec)],
    }


def time_command(args: list[str], repeats: int) -> tuple[list[float], str]:
    """Wall times of ``repeats`` fresh runs, and the last run's stderr."""
    times, err = [], ""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MTLZOO_")}
    for _ in range(repeats):
        t = time.perf_counter()
        out = subprocess.run(
            [sys.executable, "-m", "mtlzoo", *args], capture_output=True, text=True, cwd=ROOT, env=env
        )
        times.append(time.perf_counter() - t)
        err = out.stderr
    return times, err


def main(argv: list[str] | None = None) -> int:
    """Run every command, write the table, fail when a median is over the limit."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--limit", type=float, default=1.5, help="seconds a median may take (default %(default)s)")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "command_speed.md"))
    args = p.parse_args(argv)
    load_before = os.getloadavg()[0]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        bad = Path(tmp) / "misspelled.yaml"
        bad.write_text(BAD_SPEC)
        for label, cmd in commands(bad).items():
            times, err = time_command(cmd, args.repeats)
            if "misspelled" in label and not err.startswith("error: train.epohcs: unknown option"):
                raise SystemExit(f"{label}: expected a one-line error, got {err!r}")
            rows.append((label, statistics.median(times), max(times)))
    load_after = os.getloadavg()[0]
    over = [r for r in rows if r[1] > args.limit]
    lines = [
        "# Command speed",
        "",
        f"Produced by `python benchmarks/command_speed.py --repeats {args.repeats}` on {time.strftime('%Y-%m-%d')}: "
        f"{os.cpu_count()} cores, 1-minute load average {load_before:.2f} before and {load_after:.2f} after; "
        f"Python {sys.version.split()[0]}. Each command is a fresh `python -m mtlzoo` process.",
        "",
        f"| command | median (s) | slowest (s) | under {args.limit:g} s |",
        "|---|---:|---:|---|",
    ]
    lines += [
        f"| `{label}` | {med:.2f} | {worst:.2f} | {'yes' if med <= args.limit else 'NO'} |"
        for label, med, worst in rows
    ]
    text = "\n".join(lines) + "\n"
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)
    print(text)
    if over:
        print(f"over the {args.limit:g} s limit: {', '.join(r[0] for r in over)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
