"""``mtlzoo bench --jobs N``: N cells at once on one device, each in its own process.

Every job is ``python -m mtlzoo.apps.bench.jobs SPEC CELL_ID ...``: it loads the bench spec
again, runs exactly the code of a sequential run (:func:`.run.run_cell`) and commits the cell
file itself, so a job's result does not depend on how many ran beside it. What is split
between the jobs is how they run, not what they compute:

* torch threads: each job gets ``threads`` (default ``cores // N``; ``OMP_NUM_THREADS`` and
  ``MKL_NUM_THREADS`` are set for the job too);
* data-loader workers: each job gets ``train.num_workers // N`` of the spec's (a loader
  key, not part of the cell's config, see :data:`.cells.LOCATION_KEYS`); with
  ``num_workers: null`` (auto) the job's own share, as ``MTLZOO_CORES`` (set to the job's
  threads) caps the cores a job counts as its own.

All jobs use the device the spec names: with ``train.device: auto`` on a machine with a GPU
that is ``cuda`` (device 0) for every job; set ``CUDA_VISIBLE_DEVICES`` to pick another.
The thread count can change the last digits of a result (float sums in another order), so
give the same ``--threads`` to compare a parallel run with a sequential one digit for digit.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from ...contract.errors import MtlzooError, one_line


def _job_command(spec_path: str | Path, extra: list[str], cell_id: str, jobs: int, threads: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "mtlzoo.apps.bench.jobs",
        str(spec_path),
        cell_id,
        "--jobs",
        str(jobs),
        "--threads",
        str(threads),
        "--extra",
        json.dumps(list(extra)),
    ]


def run_parallel(
    bench: Any,
    spec_path: str | Path,
    extra: list[str],
    todo: list[Any],
    jobs: int,
    threads: int | None,
    budget_seconds: float | None,
    log: Any,
) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """Run ``todo`` (cells) ``jobs`` at a time in subprocesses; return ``(records, failures)``
    of the cells that finished or failed (cells never started for the time budget are in
    neither)."""
    from . import cells as C
    from .run import threads_per_job

    per_job = threads_per_job(jobs, threads)
    cores = str(per_job)
    env = dict(os.environ, OMP_NUM_THREADS=cores, MKL_NUM_THREADS=cores, MTLZOO_CORES=cores)
    records: dict[str, dict[str, Any]] = {}
    failures: dict[str, str] = {}
    queue = list(todo)
    running: dict[str, tuple[subprocess.Popen, float, Any]] = {}
    started = time.time()
    budget_hit = False
    finished = 0
    log(f"{len(todo)} cell(s) to run, {jobs} at a time, {per_job} torch thread(s) each")
    try:
        while queue or running:
            while queue and len(running) < jobs and not budget_hit:
                if budget_seconds is not None and time.time() - started >= budget_seconds:
                    budget_hit = True
                    log(
                        f"time budget of {budget_seconds / 60:.1f} min reached: {len(queue)} cell(s) left "
                        "for a later run; waiting for the running ones"
                    )
                    break
                cell = queue.pop(0)
                folder = bench.out_dir / cell.id
                folder.mkdir(parents=True, exist_ok=True)
                out = open(folder / "job.log", "a")  # noqa: SIM115 - closed when the job ends
                proc = subprocess.Popen(
                    _job_command(spec_path, extra, cell.id, jobs, per_job),
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env=env,
                )
                running[cell.id] = (proc, time.time(), out)
            if budget_hit:
                queue.clear()
            time.sleep(0.2)
            for cid, (proc, t0, out) in list(running.items()):
                if proc.poll() is None:
                    continue
                out.close()
                del running[cid]
                finished += 1
                path = bench.cells_dir / f"{cid}.json"
                if proc.returncode == 0 and path.is_file():
                    records[cid] = C.read_record(path)
                    log(
                        f"[{finished}/{len(todo)}] {cid}: done in {time.time() - t0:.0f}s, committed to {path}"
                    )
                else:
                    failures[cid] = (
                        _last_line(bench.out_dir / cid / "job.log") or f"job exited with {proc.returncode}"
                    )
                    log(f"[{finished}/{len(todo)}] {cid}: FAILED ({failures[cid]}); continuing")
    finally:
        for proc, _, out in running.values():  # interrupted: stop the jobs this bench started
            proc.terminate()
            proc.wait()
            out.close()
    return records, failures


def _last_line(path: Path) -> str:
    """The job's one-line error: the last line it printed starting with ``error:``."""
    try:
        lines = [ln for ln in path.read_text().splitlines() if ln.startswith("error: ")]
    except OSError:
        return ""
    return lines[-1][len("error: ") :] if lines else ""


def main(argv: list[str] | None = None) -> int:
    """One job: run one cell of a bench spec and commit its cell file."""
    import traceback

    p = argparse.ArgumentParser(prog="python -m mtlzoo.apps.bench.jobs", description=main.__doc__)
    p.add_argument("spec")
    p.add_argument("cell")
    p.add_argument("--jobs", type=int, default=1)
    p.add_argument("--threads", type=int, required=True)
    p.add_argument("--extra", default="[]", help="the bench spec's dot-list overrides, as JSON")
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    from . import cells as C
    from .run import load, run_cell

    try:
        bench = load(args.spec, json.loads(args.extra))
        matches = [c for c in bench.cells if c.id == args.cell]
        if not matches:
            raise MtlzooError(f"{args.spec}: no cell {args.cell!r} in the plan")
        (cell,) = matches
        configured = bench.cell_cfg(cell).train.num_workers
        # auto (null) already takes the job's share of the cores through MTLZOO_CORES
        extra = [] if configured is None else [f"train.num_workers={int(configured) // args.jobs}"]
        load_before = C.load_average()
        expected = bench.expected(cell)  # the code this cell runs with, read before it trains
        summary = run_cell(bench.zoo, bench.spec, bench.base, cell, bench.out_dir, extra, code=expected[1])
        bench.record(
            cell, summary, load_before=load_before, jobs=args.jobs, threads=args.threads, expected=expected
        )
    except Exception as exc:  # noqa: BLE001 - reported to the parent in one line
        traceback.print_exc()  # into the cell's job.log
        print(f"error: {one_line(exc)}", flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
