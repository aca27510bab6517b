"""The GPU acceptance check: one command, under 8 minutes on one GPU, writes
``benchmarks/results/gpu.md``.

    source .gpu/setup.sh && python benchmarks/gpu_check.py --copy-to "$OUT"
    python benchmarks/gpu_check.py --dry-run --out /tmp/gpu.md      # the same plan on CPU, tiny

Parts, each in its own process with its own time limit (a part that fails, times out or is
cut by the budget is reported in gpu.md and in the exit status; it never hides the others):

``env``          the machine: GPUs, torch, CUDA, cuDNN, package versions
``tests``        the suite's CUDA tests (``pytest -m cuda``, tests/test_cuda.py; the compiled
                 tiny run is left to ``quickstart-compiled``)
``quickstart-*`` ``mtlzoo train configs/quickstart.yaml`` in fp32, bf16 (``train.amp=bf16``) and
                 compiled (``train.compile=true``): wall time from command to table, where each
                 epoch's time went (metrics.jsonl ``timing``), and the metrics next to README.md's
                 CPU table
``determinism``  the quickstart again with ``train.deterministic=true``: its compute time per
                 epoch against the default's (CUDA's default is off; docs/gpu.md)
``camvid``       ``mtlzoo train configs/camvid/lite0.yaml`` as committed (10 epochs at 180x240):
                 seconds and epochs per second
``performance``  ``benchmarks/performance.py --quick`` (framework overhead against a hand-written
                 CUDA loop, batch 32 at 256x256) -> benchmarks/results/performance_cuda.md
``combiner``     ``benchmarks/combiner_cost.py --device cuda`` at T=3 and T=8 (batch 32 at
                 256x320; sum, the hand-written step, torchjd autojac, params-mode mgda, upgrad,
                 pcgrad) -> benchmarks/results/combiner_cost_cuda.md
``export``       ``mtlzoo predict --device cuda``, ``mtlzoo.load(run, device="cuda")`` against the
                 CPU, ``mtlzoo export`` (pt2, ONNX) of the quickstart's GPU run
``bench``        ``mtlzoo bench --jobs 8``: CamVid, 5 seeds x 5 combiners + single-task baselines,
                 on one GPU (2 epochs at 90x120)
``ddp``          a 2-process NCCL run against one process (tests/test_cuda.py), with two GPUs

The parts run in order of importance; the whole check has a budget (``--budget``, 470 s by
default): a part starts only with time left and never runs past it. After every part gpu.md
(and ``gpu_check.json``, the logs and the tables) are written again, and copied to
``--copy-to`` (the device tool's ``$OUT``), so a cut-off run still reports what it did.
Exit status: 0 when every part that was to run passed, 1 otherwise, 2 for a usage error.

``--dry-run`` runs the same plan on the CPU with tiny settings (tiny specs, one epoch, a few
steps, a tiny CamVid written for the occasion); the parts that need CUDA are reported as
"skipped: no CUDA". It writes only to ``--out`` (required), its folder and ``--workdir``; the
test suite runs it (tests/test_gpu_check.py). Its figures measure nothing.

The code lives in ``benchmarks/gpu_harness/`` (``common``: settings, records, running a command;
``parts``: tests, trainings, bench and the list of parts; ``measures``: performance, combiner cost,
export; ``report``: gpu.md); this file is the driver and the command line. docs/gpu.md says what
each number means.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

# the harness's modules sit beside this script (also when a test loads it by file path)
if str(Path(__file__).resolve().parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parent))

from gpu_harness.common import (  # noqa: E402
    BUDGET_S,
    MIN_START_S,
    RESULTS,
    Ran,
    Record,
    later_compute,
    later_total,
    readme_table,
    run_command,
)
from gpu_harness.measures import combiner_rows, export_child, export_diffs  # noqa: E402
from gpu_harness.parts import PARTS, RUN_ORDER, junit_cases, tiny_camvid  # noqa: E402
from gpu_harness.report import render  # noqa: E402

__all__ = [
    "Check",
    "PARTS",
    "RUN_ORDER",
    "combiner_rows",
    "export_diffs",
    "junit_cases",
    "later_compute",
    "later_total",
    "main",
    "readme_table",
    "render",
]


class Check:
    """Runs the parts within the budget and writes the report after each."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.dry = bool(args.dry_run)
        self.out = Path(args.out).resolve()
        self.results = Path(args.results).resolve()
        self.work = Path(args.workdir).resolve() / time.strftime("check-%Y%m%d-%H%M%S")
        self.copy_to = Path(args.copy_to).resolve() if args.copy_to else None
        self.budget = float(args.budget)
        self.started = time.perf_counter()
        self.date = time.strftime("%Y-%m-%d %H:%M")
        self.cuda = False
        self.written: list[Path] = []  # tables the parts wrote (copied with the report)
        self.parts = PARTS  # (name, title, report position, function, limit, needs CUDA) of each part
        self.records = {name: Record(name, title) for name, title, *_ in self.parts}
        self.camvid_root = "../shared/data/camvid"

    def left(self) -> float:
        return self.budget - (time.perf_counter() - self.started)

    def run(self, tag: str, argv: list[str], limit: float, env: dict[str, str] | None = None) -> Ran:
        """A command of a part, cut at ``limit`` or at the end of the budget."""
        if self.dry:  # tiny workloads: one thread each is faster than threads waiting for each other
            env = {**(env or os.environ), "OMP_NUM_THREADS": "1"}
        return run_command(argv, min(limit, max(1.0, self.left())), self.work / "logs" / f"{tag}.log", env)

    def mtlzoo(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "mtlzoo", *args]

    # -- driving ---------------------------------------------------------------------------------
    def execute(self, chosen: list[str]) -> int:
        """Run the ``chosen`` parts in order of importance; the exit status."""
        self.work.parent.mkdir(parents=True, exist_ok=True)
        self.work.mkdir()  # a fresh folder: run names are never taken
        self.results.mkdir(parents=True, exist_ok=True)
        if self.dry:
            self.camvid_root = str(tiny_camvid(self.work / "camvid"))
        runnable = {name: (fn, limit, needs_cuda) for name, _, _, fn, limit, needs_cuda in self.parts}
        order = sorted(chosen, key=lambda n: RUN_ORDER.index(n))
        for name in order:
            fn, limit, needs_cuda = runnable[name]
            record = self.records[name]
            if name == "ddp" and record.summary:  # the tests part ran the NCCL test and said how it went
                self.write(chosen)
                continue
            if name != "env" and not self.dry and not self.cuda:
                record.status, record.summary = "not run", "not run: no CUDA device here"
            elif needs_cuda and (self.dry or not self.cuda):
                record.status = "skipped"
                record.summary = (
                    "skipped: no CUDA" if not self.cuda else "skipped: a dry run stays on the CPU"
                )
            elif self.left() < MIN_START_S:
                record.status = "not run"
                record.summary = f"not run: the {self.budget:.0f} s budget was spent before it could start"
            else:
                print(f"[gpu_check] {name} (at most {min(limit, self.left()):.0f} s)", flush=True)
                started = time.perf_counter()
                try:
                    fn(self, record, limit)
                except Exception as exc:  # a broken part is reported; the others still run
                    record.status, record.summary = "FAIL", f"{type(exc).__name__}: {exc}"[:400]
                record.seconds = time.perf_counter() - started
                print(
                    f"[gpu_check] {name}: {record.status} ({record.seconds:.0f} s) {record.summary}",
                    flush=True,
                )
                if name == "env" and not self.dry and not self.cuda and record.status == "ok":
                    record.status, record.summary = (
                        "FAIL",
                        "no CUDA device here: use --dry-run on a CPU machine",
                    )
            self.write(chosen)
        failed = [n for n in chosen if self.records[n].status not in ("ok", "skipped")]
        return 1 if failed else 0

    def write(self, chosen: list[str]) -> None:
        """gpu.md and gpu_check.json now; copies to --copy-to."""
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.out.write_text(render(self, chosen))
        state = {
            "dry_run": self.dry,
            "date": self.date,
            "seconds": round(time.perf_counter() - self.started, 1),
            "budget_s": self.budget,
            "parts": {n: asdict(self.records[n]) for n in chosen},
        }
        summary = self.out.with_name(self.out.stem + "_check.json")
        summary.write_text(json.dumps(state, indent=1, default=str))
        if self.copy_to is not None:
            self.copy_to.mkdir(parents=True, exist_ok=True)
            for path in [self.out, summary, *self.written]:
                if path.is_file() and path.parent != self.copy_to:
                    shutil.copy2(path, self.copy_to / path.name)
            logs = self.work / "logs"
            if logs.is_dir():
                shutil.copytree(logs, self.copy_to / "logs", dirs_exist_ok=True)


# -- command line ---------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    """Run the check; the exit status."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--export-child"]:
        export_child(*argv[1:5])
        return 0
    names = [name for name, *_ in PARTS]
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawTextHelpFormatter
    )
    p.add_argument("--dry-run", action="store_true", help="the same plan on the CPU with tiny settings")
    p.add_argument(
        "--out", default=None, help="the report (default benchmarks/results/gpu.md; required with --dry-run)"
    )
    p.add_argument(
        "--results",
        default=None,
        help="folder of the parts' tables (default: benchmarks/results; with --dry-run the report's folder)",
    )
    p.add_argument("--workdir", default=None, help="runs and logs (default: a fresh temporary folder)")
    p.add_argument(
        "--copy-to", default=None, help="copy the report, tables and logs here after every part ($OUT)"
    )
    p.add_argument(
        "--budget", type=float, default=BUDGET_S, help="seconds for the whole check (default %(default)s)"
    )
    p.add_argument(
        "--parts", default=None, help=f"comma-separated parts to run (default: all): {', '.join(names)}"
    )
    args = p.parse_args(argv)
    if args.dry_run and not args.out:
        p.error("--dry-run needs --out PATH (a dry run never overwrites benchmarks/results/gpu.md)")
    args.out = args.out or str(RESULTS / "gpu.md")
    args.results = args.results or str(Path(args.out).parent if args.dry_run else RESULTS)
    args.workdir = args.workdir or tempfile.mkdtemp(prefix="mtlzoo-gpu-check-")
    chosen = names if not args.parts else [n.strip() for n in args.parts.split(",") if n.strip()]
    unknown = [n for n in chosen if n not in names]
    if unknown:
        p.error(f"--parts: unknown part(s) {', '.join(unknown)}; choose from {', '.join(names)}")
    if "env" not in chosen:
        chosen.insert(0, "env")  # the others need to know the device
    if "ddp" in chosen and "tests" not in chosen:
        chosen.remove("ddp")  # the NCCL run is one of the CUDA tests
    check = Check(args)
    code = check.execute(chosen)
    print(f"[gpu_check] wrote {check.out} ({'all parts passed' if code == 0 else 'some parts did not pass'})")
    return code


if __name__ == "__main__":
    raise SystemExit(main())
