"""The README's demo table, from what `make demo` prints.

    python benchmarks/demo_table.py            # train the quickstart, rewrite the README's table
                                               # and the machine it came from
    python benchmarks/demo_table.py --check    # train it, exit 1 if the README's table does not hold
    python benchmarks/demo_table.py --check-time   # exit 1 if the run's wall time is not the
                                                   # README's "about N min" (run it on an idle machine)
    python benchmarks/demo_table.py --spread   # train it once per CPU-kernel choice, write
                                               # benchmarks/results/demo_spread.md

Runs `mtlzoo train configs/quickstart.yaml` as `make demo` does (into a temporary folder) with
torch on 2 threads (``OMP_NUM_THREADS=2``: the thread count changes the order of float sums
and so the last digits; the README states the 2-thread table), takes the `val metrics:` table
it prints, and writes it between the README's ``<!-- demo-table -->`` markers (or compares
it with them), with the machine it came from in a ``The table was recorded on: ...`` line.

What ``--check`` holds. The same seed on the same 2 threads gives the same digits on the same
CPU, but not across CPUs: torch (``ATEN_CPU_CAPABILITY``), oneDNN (``ONEDNN_MAX_CPU_ISA``) and
MKL (``MKL_ENABLE_INSTRUCTIONS``) choose their kernels from the CPU's instruction sets, each
choice sums floats in another order, and four epochs of training carry that first-ulp
difference into the second digit of the metrics. So ``--check`` asks for the exact digits on the
machine the README's table was recorded on (same CPU model, instruction-set flags, torch version,
build and kernel level) and, on any other, for every metric within ``TOLERANCE`` of the README's
value. The tolerances come from ``--spread``: the quickstart trained once per kernel choice on
one machine (the instruction sets of an AVX-512 CPU, an AVX2 one or a plain SSE one, emulated
with the variables above) next to the table another CPU printed; each tolerance is three times
the widest spread measured for its metric (or in the figures issue 21 reports from another AMD
EPYC), rounded up at its first digit (benchmarks/results/demo_spread.md has the runs).

``--check-time`` holds the README's ``make demo`` line, "about N min on 2 idle cores of <CPU>",
to N +- 0.5 min (the tests run ``--check`` only: a timed assertion fails on a busy machine); it
prints the run's wall time, the machine and the load average before it. With both flags it
checks both.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
START, END = "<!-- demo-table:start -->", "<!-- demo-table:end -->"
MACHINE = re.compile(r"^The table was recorded on: (.*)$", flags=re.M)
SPREAD = ROOT / "benchmarks" / "results" / "demo_spread.md"

# The kernel choices ``--spread`` trains under: what torch, oneDNN and MKL pick by themselves on
# CPUs with these instruction sets (each variable only lowers the level; it never raises it).
KERNELS: dict[str, dict[str, str]] = {
    "native": {},
    "avx2-cpu": {
        "ATEN_CPU_CAPABILITY": "avx2",
        "ONEDNN_MAX_CPU_ISA": "AVX2",
        "MKL_ENABLE_INSTRUCTIONS": "AVX2",
    },
    "sse-cpu": {
        "ATEN_CPU_CAPABILITY": "default",
        "ONEDNN_MAX_CPU_ISA": "SSE41",
        "MKL_ENABLE_INSTRUCTIONS": "SSE4_2",
    },
}

# How far each metric of the demo table may move on another CPU (absolute): three times the widest
# spread measured by ``--spread`` (benchmarks/results/demo_spread.md) or in issue 21's figures from
# another AMD EPYC (depth abs_err 0.7061, labels accuracy 0.3242, normals mean angle 12.5581),
# rounded up at its first digit.
TOLERANCE: dict[str, float] = {
    "semseg/miou": 0.03,
    "semseg/pixel_acc": 0.008,
    "semseg/loss": 0.02,
    "depth/abs_err": 0.08,
    "depth/rel_err": 0.009,
    "depth/loss": 0.08,
    "normals/mean_angle": 0.4,
    "normals/median_angle": 0.2,
    "normals/within_11.25": 2.0,
    "normals/within_22.5": 0.6,
    "normals/within_30": 0.4,
    "normals/loss": 0.002,
    "boundary/boundary_f1": 0.006,
    "boundary/loss": 0.002,
    "labels/map": 0.03,
    "labels/accuracy": 0.2,
    "labels/loss": 0.03,
}


def machine() -> str:
    """This CPU as far as the table's digits depend on it: model, instruction-set flags, torch's
    version, build and kernel level.

    Two machines that give the same string run the same kernels, so the same digits.
    """
    import torch

    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    field = {}
    for line in info.splitlines():
        key, _, value = line.partition(":")
        field.setdefault(key.strip(), value.strip())
    model = field.get("model name") or platform.processor() or platform.machine()
    flags = hashlib.sha256(" ".join(sorted(field.get("flags", "").split())).encode()).hexdigest()[:8]
    family = f"family {field['cpu family']} model {field['model']}" if "cpu family" in field else "?"
    # the build (MKL, oneDNN versions; CUDA or CPU-only wheel) chooses kernels too
    build = hashlib.sha256(torch.__config__.show().encode()).hexdigest()[:8]
    return (
        f"{model} ({family}, flags {flags}), torch {torch.__version__} (build {build}) "
        f"{torch.backends.cpu.get_cpu_capability()}"
    )


def demo_table(extra_env: dict[str, str] | None = None) -> tuple[str, float]:
    """The `val metrics:` block of a fresh quickstart run, and the run's wall time in seconds.

    ``extra_env`` is added to the child's environment (the kernel choices of ``--spread``).
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("MTLZOO_")}
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
            env={**env, "OMP_NUM_THREADS": "2", **(extra_env or {})},
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


def parse_table(table: str) -> dict[str, float]:
    """``{"task/metric": value}`` of a printed `val metrics:` table."""
    values = {}
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 3 or cells[0] == "task" or set(cells[0]) <= {"-"}:
            continue
        values[f"{cells[0]}/{cells[1].split(' (')[0]}"] = float(cells[2])
    return values


def compare(written: str, now: str, tolerance: dict[str, float]) -> list[str]:
    """One line per metric of ``now`` that is missing from ``written`` or off by more than its tolerance."""
    old, new = parse_table(written), parse_table(now)
    problems = []
    if set(old) != set(new):
        problems.append(f"metrics differ: README.md has {sorted(old)}, the run printed {sorted(new)}")
    for key in sorted(set(old) & set(new)):
        if key not in tolerance:
            problems.append(f"{key}: no tolerance measured (run `--spread`, then set TOLERANCE)")
        elif abs(new[key] - old[key]) > tolerance[key]:
            problems.append(
                f"{key}: {new[key]} against README.md's {old[key]} "
                f"(off by {abs(new[key] - old[key]):.4g}, tolerance {tolerance[key]})"
            )
    return problems


def readme_table(text: str) -> str:
    """The table between the README's markers."""
    m = re.search(re.escape(START) + r"\n```\n(.*?)\n```\n" + re.escape(END), text, flags=re.S)
    if not m:
        raise SystemExit(f"README.md has no {START} ... {END} block")
    return m.group(1)


def readme_machine(text: str) -> str | None:
    """The machine the README's table was recorded on (None when the README does not say)."""
    m = MACHINE.search(text)
    return m.group(1) if m else None


def readme_minutes(text: str) -> tuple[int, str]:
    """``(N, CPU)`` of the README's ``make demo ... (about N min on 2 idle cores of <CPU>; ...)``."""
    m = re.search(r"^make demo .*\(about (\d+) min on 2 idle cores of (?:an? )?([^;)]+)", text, flags=re.M)
    if not m:
        raise SystemExit("README.md's `make demo` line states no 'about N min on 2 idle cores of <CPU>'")
    return int(m.group(1)), m.group(2).strip()


def same_cpu(stated: str, here: str) -> bool:
    """Whether this machine (:func:`machine`) is a CPU of the kind the README names ("Intel Xeon")."""
    words = re.sub(r"\((R|TM|tm|r)\)", " ", here).lower().split()
    return all(w in words for w in stated.lower().split())


def check_table(written: str, recorded: str | None, now: str, here: str) -> tuple[bool, str]:
    """Whether the README's table holds against a fresh run's, and the line that says so: digit
    for digit on the machine it was recorded on, within :data:`TOLERANCE` on any other."""
    if recorded == here:
        if now != written:
            return (
                False,
                f"README.md's demo table was recorded on this CPU and is stale; `make demo` prints:\n{now}",
            )
        return True, "README.md's demo table matches `make demo` digit for digit (recorded on this CPU)"
    problems = compare(written, now, TOLERANCE)
    if problems:
        return False, (
            f"README.md's demo table (recorded on {recorded or 'an unstated machine'}) does not hold here "
            f"({here}) within the measured tolerances:\n  "
            + "\n  ".join(problems)
            + f"\n`make demo` prints:\n{now}"
        )
    return True, (
        f"README.md's demo table holds within the measured CPU tolerances (recorded on "
        f"{recorded or 'an unstated machine'}; this is {here})"
    )


def check_time(text: str, seconds: float, here: str, load: float) -> tuple[bool, str]:
    """Whether the run's wall time is the README's "about N min" (+- 0.5) on the CPU it names,
    and the line that says so; on another CPU the time is not the README's to hold."""
    minutes, cpu = readme_minutes(text)
    if not same_cpu(cpu, here):
        return True, f"README.md states the time on 2 idle cores of {cpu}; this is {here}: not checked here"
    note = f" (load {load:.2f} before the run: the machine was not idle)" if load > 0.5 else ""
    if abs(seconds / 60 - minutes) > 0.5:
        return (
            False,
            f"README.md says about {minutes} min on {cpu}; this run took {seconds / 60:.1f} min{note}",
        )
    return True, f"README.md's 'about {minutes} min' on {cpu} holds ({seconds / 60:.1f} min){note}"


def with_table(text: str, now: str, here: str) -> str:
    """The README's text with ``now`` as its demo table, recorded on ``here``."""
    new = text.replace(readme_table(text), now)
    line = f"The table was recorded on: {here}"
    return (
        MACHINE.sub(lambda _: line, new) if MACHINE.search(new) else new.replace(START, f"{line}\n\n{START}")
    )


def spread(readme_text: str, only: list[str] | None = None, cache: Path | None = None) -> str:
    """Train the quickstart once per ``KERNELS`` entry (or those in ``only``); the markdown table
    of the metrics and their spread. With ``cache``, each run's table is kept there as
    ``<kernel>.txt`` and a table already there is read instead of trained again (so runs can
    go one at a time, or side by side in several processes)."""
    columns = {"README.md": parse_table(readme_table(readme_text))}
    seconds: dict[str, float] = {}
    names = only or list(KERNELS)
    for name in names:
        kept = cache / f"{name}.txt" if cache is not None else None
        if kept is not None and kept.is_file():
            table = kept.read_text().strip()
        else:
            table, seconds[name] = demo_table(KERNELS[name])
            if kept is not None:
                kept.parent.mkdir(parents=True, exist_ok=True)
                kept.write_text(table + "\n")
            print(f"{name}: {seconds[name]:.0f} s\n{table}", flush=True)
        columns[name] = parse_table(table)
    keys = list(columns["README.md"])
    head = ["metric", *columns, "spread"]
    lines = [
        "# The quickstart's metrics across CPU kernels",
        "",
        "Written by `python benchmarks/demo_table.py --spread` on "
        f"{machine()}, {os.cpu_count()} cores, torch on 2 threads. Column README.md: the table the "
        f"README held then (recorded on: {readme_machine(readme_text) or 'not stated'}); the others: "
        "this machine with the kernel choices below; spread: largest minus smallest value.",
        "",
        *(
            f"- {name}: {' '.join(f'{k}={v}' for k, v in KERNELS[name].items()) or '(as detected)'}"
            for name in names
        ),
        "",
        "| " + " | ".join(head) + " |",
        "|" + "|".join("---" for _ in head) + "|",
    ]
    for key in keys:
        row = [columns[c].get(key, float("nan")) for c in columns]
        lines.append(f"| {key} | " + " | ".join(f"{v:g}" for v in row) + f" | {max(row) - min(row):.4g} |")
    if seconds:
        lines += [
            "",
            "Wall time per run (s, the machine shared with other work): "
            + ", ".join(f"{k} {v:.0f}" for k, v in seconds.items()),
        ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Rewrite (or check) the README's demo table; report (or check) the run's time."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="compare instead of writing")
    p.add_argument("--check-time", action="store_true", help="check the README's stated run time")
    p.add_argument(
        "--spread", action="store_true", help=f"measure the metrics across CPU kernels into {SPREAD}"
    )
    p.add_argument("--kernels", help="with --spread: only these kernel choices (comma-separated)")
    p.add_argument("--cache", help="with --spread: keep each run's table in this folder, reuse those there")
    args = p.parse_args(argv)
    readme = ROOT / "README.md"
    text = readme.read_text()
    written = readme_table(text)  # before the run: a README without the markers fails at once
    if args.spread:
        only = args.kernels.split(",") if args.kernels else None
        unknown = sorted(set(only or []) - set(KERNELS))
        if unknown:
            raise SystemExit(f"--kernels: unknown {', '.join(unknown)}; known: {', '.join(KERNELS)}")
        SPREAD.write_text(spread(text, only, Path(args.cache) if args.cache else None))
        print(f"wrote {SPREAD}")
        return 0
    here = machine()
    load = os.getloadavg()
    now, seconds = demo_table()
    print(
        f"the quickstart ran in {seconds:.0f} s ({seconds / 60:.1f} min) on {os.cpu_count()} CPU cores "
        f"of {here}, load average before {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f}"
    )
    checks = []  # with both flags, both are checked
    if args.check_time:
        checks.append(check_time(text, seconds, here, load[0]))
    if args.check:
        checks.append(check_table(written, readme_machine(text), now, here))
    for _, line in checks:
        print(line)
    if checks:
        return 0 if all(held for held, _ in checks) else 1
    readme.write_text(with_table(text, now, here))
    print(f"wrote the demo table into {readme} (recorded on {here})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
