"""What each test costs, and what the quick loop ``pytest -m "not slow"`` costs, in CPU seconds.

    python benchmarks/test_cost.py                     # every tests/test_*.py -> benchmarks/results/test_cost.md
    python benchmarks/test_cost.py tests/test_cli.py   # some files only
    python benchmarks/test_cost.py --keep /tmp/cost    # per-file JSON kept there; a rerun skips files done

Each test file runs in its own ``pytest`` process (``-m "not slow"`` unless ``--all``) with torch
on one thread, as each pytest-xdist worker of ``make test`` on 2 cores has it, and a small plugin
that records per test the CPU seconds of the process and of the processes it waited for
(subprocess tests, torchrun) and the wall seconds. CPU time, unlike wall time, hardly depends on
what else the machine runs, so figures measured on a busy machine hold for an idle one. The
estimate for ``pytest -n N -m "not slow"`` is that CPU time divided by N workers; collecting the
tests in every worker and the uneven split add to it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

PLUGIN = """
import json, os, resource, time
import pytest

_rec = {}


def _cpu():
    s = resource.getrusage(resource.RUSAGE_SELF)
    c = resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    t0, w0 = _cpu(), time.perf_counter()
    yield
    _rec[item.nodeid] = [round(_cpu() - t0, 2), round(time.perf_counter() - w0, 2)]


def pytest_sessionfinish(session):
    with open(os.environ["TEST_COST_OUT"], "w") as f:
        json.dump(_rec, f, indent=0)
"""


def measure(files: list[Path], keep: Path, marker: str | None) -> None:
    """Run each file with the recording plugin; its costs go to ``keep/<file>.json``."""
    plugin_dir = keep / "plugin"
    plugin_dir.mkdir(parents=True, exist_ok=True)
    (plugin_dir / "test_cost_plugin.py").write_text(PLUGIN)
    for path in files:
        out = keep / f"{path.stem}.json"
        if out.is_file():
            continue
        env = {**os.environ, "OMP_NUM_THREADS": "1", "TEST_COST_OUT": str(out)}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(plugin_dir), env.get("PYTHONPATH")]))
        cmd = [sys.executable, "-m", "pytest", str(path), "-p", "test_cost_plugin", "-p", "no:cacheprovider"]
        cmd += ["-q", "-o", "addopts="] + (["-m", marker] if marker else [])
        t = time.perf_counter()
        done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
        last = (done.stdout.strip().splitlines() or ["?"])[-1]
        print(f"{path.name}: {time.perf_counter() - t:.0f} s wall, {last}", flush=True)


def slow_ids() -> set[str]:
    """The node ids of the tests marked ``slow``."""
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-m", "slow", "-p", "no:cacheprovider"]
        + ["-o", "addopts=", "tests"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    return {line.strip() for line in out.stdout.splitlines() if "::" in line}


def report(keep: Path, workers: int, top: int) -> str:
    """The markdown table of the costs recorded in ``keep``."""
    slow = slow_ids()
    rows = []
    for f in sorted(keep.glob("*.json")):
        rows += [(k, cpu, wall) for k, (cpu, wall) in json.loads(f.read_text()).items()]
    quick = [r for r in rows if r[0] not in slow]
    by_file: dict[str, list[float]] = {}
    for k, cpu, _ in quick:
        entry = by_file.setdefault(k.split("::")[0], [0.0, 0])
        entry[0] += cpu
        entry[1] += 1
    total = sum(r[1] for r in quick)
    load = os.getloadavg()[0]
    lines = [
        "# Test cost",
        "",
        f"Produced by `python benchmarks/test_cost.py` on {time.strftime('%Y-%m-%d')} ({os.cpu_count()} cores, "
        f"1-minute load average {load:.1f} when the table was written): CPU seconds per test, torch on one "
        f"thread. {len(quick)} tests not marked `slow` were measured ({len(slow)} are marked `slow`).",
        "",
        f'`pytest -n {workers} -m "not slow"`: {total:.0f} CPU-s in all, about {total / workers / 60:.1f} min '
        f"on {workers} workers (plus collecting the tests in each worker).",
        "",
        "| test file (not slow) | tests | CPU s |",
        "|---|---:|---:|",
    ]
    lines += [f"| {f} | {n} | {cpu:.1f} |" for f, (cpu, n) in sorted(by_file.items(), key=lambda x: -x[1][0])]
    lines += [
        "",
        f"The {top} costliest tests not marked `slow`:",
        "",
        "| test | CPU s | wall s |",
        "|---|---:|---:|",
    ]
    lines += [
        f"| `{k}` | {cpu:.1f} | {wall:.1f} |" for k, cpu, wall in sorted(quick, key=lambda r: -r[1])[:top]
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Measure the files (unless their costs are kept already), then write the table."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("files", nargs="*", type=Path, help="test files (default: tests/test_*.py)")
    p.add_argument("--keep", type=Path, help="folder for the per-file costs (default: a temporary one)")
    p.add_argument("--all", action="store_true", help="measure the slow tests too")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--top", type=int, default=15)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "test_cost.md")
    args = p.parse_args(argv)
    files = args.files or sorted((ROOT / "tests").glob("test_*.py"))
    with tempfile.TemporaryDirectory() as tmp:
        keep = args.keep or Path(tmp)
        keep.mkdir(parents=True, exist_ok=True)
        measure(files, keep, None if args.all else "not slow")
        text = report(keep, args.workers, args.top)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
