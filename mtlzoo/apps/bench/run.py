"""Running a bench: cells whose result is committed are skipped, the others run (here or in
parallel jobs) and are committed as cell files, and the tables are built from the cell files.

A cell is, in order of preference:

1. **committed**: ``<results_dir>/<name>/cells/<id>.json`` exists, made from the same config
   and model code (else it is refused and reported as failed, never reused);
2. **collected**: its run folder finished before cell files existed (or the cell file was not
   written): the result is taken from ``summary.json`` and ``metrics.jsonl`` into a cell file
   (the run folder's config is checked as before);
3. **run**: trained in its run folder (resumed from its last checkpoint when interrupted),
   then committed — when it is in the slice asked for (``--seeds``, ``--cells``) and the time
   budget (``--budget``) has not run out.
"""

from __future__ import annotations

import fnmatch
import json
import os
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...contract.errors import MtlzooError, one_line
from ...runtime.files import spec_yaml
from ...zoo.zoo import Zoo
from ..words import count, span
from . import cells as C
from .plan import Cell, cell_overrides, plan
from .report import CELLS_MARK, budget_text, cell_cost, last_k_metrics, summarise, write_tables
from .spec import BenchSpec, load_bench


def _flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for key, value in node.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): node}


def _check_same_config(cfg: Any, run_dir: Path) -> None:
    """Refuse to reuse (or resume) a cell whose run folder was made from a different config:
    an edited bench spec must never mix old results into new tables."""
    import yaml

    saved_file = run_dir / "config.yaml"
    if not saved_file.is_file():
        return
    try:
        saved = yaml.safe_load(saved_file.read_text()) or {}
    except yaml.YAMLError as exc:
        raise MtlzooError(
            f"{saved_file}: unreadable ({str(exc).splitlines()[0]}); delete {run_dir} to run this cell again"
        ) from None
    now = yaml.safe_load(spec_yaml(cfg))
    for key in C.LOCATION_KEYS:  # where and how it ran: not a change of what it computes
        for tree in (saved, now):
            node = tree
            *parents, last = key.split(".")
            for p in parents:
                node = node.get(p) if isinstance(node, dict) else None
            if isinstance(node, dict):
                node.pop(last, None)
    saved, now = _flatten(saved), _flatten(now)
    for key, value in saved.items():
        # config.yaml keeps a relative path option (a data root) relative to the run folder
        # (mtlzoo.runtime.files.spec_yaml); the validated spec holds it resolved
        current = now.get(key)
        if isinstance(value, str) and value and not os.path.isabs(value) and isinstance(current, str):
            if os.path.isabs(current) and os.path.normpath(run_dir.resolve() / value) == os.path.normpath(
                current
            ):
                saved[key] = current
    changed = sorted(k for k in saved.keys() | now.keys() if saved.get(k, "<unset>") != now.get(k, "<unset>"))
    if changed:
        shown = "; ".join(
            f"{k}: {saved.get(k, '<unset>')!r} in the run, {now.get(k, '<unset>')!r} now" for k in changed[:3]
        )
        more = f" (+{len(changed) - 3} more)" if len(changed) > 3 else ""
        raise MtlzooError(
            f"cell {run_dir.name}: its run folder was made with a different config ({shown}{more}); "
            f"delete {run_dir} to run it again with the current spec, or restore the spec"
        )


def run_cell(
    zoo: Zoo,
    spec: BenchSpec,
    base: Path,
    cell: Cell,
    out_dir: Path,
    extra: list[str] | tuple[str, ...] = (),
    code: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run one cell in its run folder (or resume it from its last checkpoint); return its
    summary. ``extra``: overrides that change how it runs, not what it computes (loader
    workers of a parallel job). ``code``: the cell's code version (:meth:`Bench.expected`):
    a new run folder records it, and a folder started under other model code is refused
    rather than resumed or reused."""
    from ...runtime.train import Trainer

    run_dir = out_dir / cell.id
    validated = zoo.validate(base, [*cell_overrides(spec, cell, run_dir), *extra])
    cfg = validated.cfg
    _check_same_config(cfg, run_dir)
    if code is not None and (error := C.run_folder_code_error(cell.id, run_dir, code)) is not None:
        raise error
    summary_file = run_dir / "summary.json"
    if summary_file.is_file():
        return json.loads(summary_file.read_text())
    resume = None
    if (run_dir / "checkpoints" / "last" / "weights.safetensors").is_file():
        resume = run_dir / "checkpoints" / "last"
    else:
        run_dir.mkdir(parents=True, exist_ok=True)
        stale = run_dir / "metrics.jsonl"
        if stale.exists():  # an interrupted first epoch: keep its log aside, start again
            stale.rename(run_dir / f"metrics.interrupted-{int(time.time())}.jsonl")
        if code is not None:
            C.stamp_code(run_dir, code)
    trainer = Trainer(zoo.build(validated), run_dir, resume=resume)  # built as validated, not validated again
    return trainer.fit()


@dataclass
class Bench:
    """A loaded bench: its spec, base spec, zoo, validated base config, cells and folders."""

    spec: BenchSpec
    base: Path
    zoo: Zoo
    base_cfg: Any
    cells: list[Cell]
    out_dir: Path
    cells_dir: Path

    def cell_cfg(self, cell: Cell) -> Any:
        """The cell's validated config (as it runs, location keys included)."""
        return self.zoo.spec(self.base, cell_overrides(self.spec, cell, self.out_dir / cell.id))

    def expected(self, cell: Cell) -> tuple[dict[str, Any], dict[str, Any]]:
        """``(config, code version)`` a committed result of the cell must match."""
        cfg = self.cell_cfg(cell)
        return C.comparable_config(cfg), C.code_version(self.zoo, cfg)

    def cell_file(self, cell: Cell) -> Path:
        """Where the cell's result is committed."""
        return self.cells_dir / f"{cell.id}.json"

    def record(
        self,
        cell: Cell,
        summary: dict[str, Any],
        *,
        load_before: float | None,
        jobs: int = 1,
        threads: int | None = None,
        migrated: bool = False,
        expected: tuple[dict[str, Any], dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        """Commit a finished cell: write its cell file, return the record. ``expected``: the
        cell's :meth:`expected` as it was when the cell started (the code it ran with; the
        files may change while it trains)."""
        config, code = expected if expected is not None else self.expected(cell)
        history = C.history_of(self.out_dir / cell.id, str(summary.get("eval_split", "val")))
        import torch

        from ...runtime.evaluate import wants_channels_last

        device = torch.device(str(summary.get("device", "cpu")))
        channels_last = wants_channels_last(self.cell_cfg(cell).train.get("channels_last"), device)
        record = C.make_record(
            cell,
            config,
            code,
            summary,
            history,
            load_before=load_before,
            jobs=jobs,
            threads=threads,
            channels_last=channels_last,
            migrated=migrated,
        )
        C.write_record(self.cell_file(cell), record)
        return record


def load(path: str | Path, extra: list[str] | tuple[str, ...] = (), zoo: Zoo | None = None) -> Bench:
    """Read a bench spec, validate its base spec once and plan its cells.

    ``zoo``: the plugins to build with (default: the zoo the base spec's ``plugins`` section
    asks for)."""
    spec, base = load_bench(path, extra)
    if zoo is None:
        zoo, _ = Zoo.for_spec(base, spec.overrides)
    base_cfg = zoo.spec(base, spec.overrides)  # validates the base spec once, before any cell runs
    cells = plan(spec, base_cfg)
    return Bench(
        spec,
        base,
        zoo,
        base_cfg,
        cells,
        Path(spec.out_dir) / spec.name,
        C.cells_dir(spec.results_dir, spec.name),
    )


def status(bench: Bench, cell: Cell) -> tuple[str, dict[str, Any] | str | None]:
    """``("committed", record)``, ``("refused", reason)``, ``("collectable", summary)`` (a
    finished run folder without a cell file) or ``("todo", None)``."""
    path = bench.cell_file(cell)
    if path.is_file():
        try:
            record = C.read_record(path)
            config, code = bench.expected(cell)
            C.check_record(path, record, config, code, bench.out_dir / cell.id)
        except MtlzooError as exc:
            return "refused", one_line(exc)
        return "committed", record
    run_dir = bench.out_dir / cell.id
    if C.has_results(run_dir):  # finished or interrupted: --plan says now what running it would
        try:
            _check_same_config(bench.cell_cfg(cell), run_dir)
            error = C.run_folder_code_error(cell.id, run_dir, bench.expected(cell)[1])
            if error is not None:
                raise error
        except MtlzooError as exc:
            return "refused", one_line(exc)
    summary_file = run_dir / "summary.json"
    if summary_file.is_file():
        return "collectable", json.loads(summary_file.read_text())
    return "todo", None


def selected(cell: Cell, seeds: list[int] | None, patterns: list[str] | None) -> bool:
    """Whether a cell is in the slice asked for: one of ``seeds`` (all when ``None``) and
    matching one of the shell ``patterns`` on its id (all when ``None``)."""
    if seeds is not None and cell.seed not in seeds:
        return False
    return not patterns or any(fnmatch.fnmatchcase(cell.id, p) for p in patterns)


def run_bench(
    path: str | Path,
    extra: list[str] | tuple[str, ...] = (),
    log: Any = print,
    only_plan: bool = False,
    zoo: Zoo | None = None,
    *,
    seeds: list[int] | None = None,
    patterns: list[str] | None = None,
    budget_seconds: float | None = None,
    jobs: int = 1,
    threads: int | None = None,
    report_only: bool = False,
) -> dict[str, Any]:
    """Run (or resume) the cells of a bench spec that are not committed, commit each as a
    cell file, and write the tables from the committed cells; return the summary.

    ``seeds``, ``patterns``: run only the cells of these seeds / whose id matches one of these
    shell patterns (the tables still cover every committed cell). ``budget_seconds``: start no
    cell after this many seconds (running ones finish). ``jobs``: cells run at once, each in a
    subprocess with ``threads`` torch threads (default: cores // jobs) on the same device.
    ``report_only``: run nothing, build the tables from the committed cells alone.
    ``zoo``: the plugins to build with (default: what the base spec's ``plugins`` asks for)."""
    bench = load(path, extra, zoo)
    spec, cells = bench.spec, bench.cells
    states = {c.id: status(bench, c) for c in cells}
    if only_plan:
        for c in cells:
            state, info = states[c.id]
            note = f" ({info})" if state == "refused" else ""
            log(f"{c.id} [{state}{note}]: {' '.join(c.overrides)}")
        return {"cells": [c.id for c in cells], "status": {k: v[0] for k, v in states.items()}}
    records: dict[str, dict[str, Any]] = {}
    failures: dict[str, str] = {}
    todo: list[Cell] = []
    for c in cells:
        state, info = states[c.id]
        if state == "committed":
            records[c.id] = info  # type: ignore[assignment]
        elif state == "refused":
            failures[c.id] = str(info)
            log(f"{c.id}: REFUSED ({info})")
        elif state == "collectable" and not report_only:
            records[c.id] = bench.record(c, info, load_before=None, migrated=True)  # type: ignore[arg-type]
            log(f"{c.id}: collected from its finished run folder into {bench.cell_file(c)}")
        elif state in ("todo", "collectable") and selected(c, seeds, patterns):
            todo.append(c)
    if not report_only and todo:
        if jobs > 1:
            from .jobs import run_parallel

            done, failed = run_parallel(bench, path, list(extra), todo, jobs, threads, budget_seconds, log)
        else:
            done, failed = _run_here(bench, todo, threads, budget_seconds, log)
        records.update(done)
        failures.update(failed)
        # another bench process (a second worker, another session on a shared checkout) may have
        # committed cells while this one ran: the tables cover every cell committed by now
        for c in cells:
            if c.id not in records and c.id not in failures and bench.cell_file(c).is_file():
                state, info = status(bench, c)
                if state == "committed":
                    records[c.id] = info  # type: ignore[assignment]
    summary = summarise(spec, cells, records, failures)
    last_k = None
    if spec.report == "last_k_mean" and records:
        last_k = summarise(spec, cells, records, failures, lambda r: last_k_metrics(r, spec.last_k))
        last_k["eval_split"] = "/".join(
            sorted({r["summary"].get("eval_split", "val") for r in records.values()})
        )
    command = "mtlzoo bench " + str(path) + ("" if not extra else " " + " ".join(extra))
    paths: list[Path] = []
    md_path = Path(spec.results_dir) / f"{spec.name}.md"
    legacy = md_path.is_file() and CELLS_MARK not in md_path.read_text() and len(records) < len(cells)
    if not records:  # never replace an existing table by an empty one
        log(f"no cell committed: {spec.results_dir}/{spec.name}.* left as they were")
    elif legacy:
        log(
            f"{md_path} predates cell files and only {len(records)} of {len(cells)} cells are committed: "
            "it is left as it is until every cell is"
        )
    else:
        paths = write_tables(spec, summary, Path(spec.results_dir), _header(bench, command, records), last_k)
    summary["failures"] = failures
    summary["files"] = [str(p) for p in paths]
    summary["committed"] = sorted(records)
    summary["not_run"] = [c.id for c in cells if c.id not in records and c.id not in failures]
    if not report_only:
        bench.out_dir.mkdir(parents=True, exist_ok=True)
        (bench.out_dir / "bench_summary.json").write_text(json.dumps(summary, indent=1, default=str))
    return summary


def _run_here(
    bench: Bench, todo: list[Cell], threads: int | None, budget_seconds: float | None, log: Any
) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """Run cells one after the other in this process."""
    import torch

    records: dict[str, dict[str, Any]] = {}
    failures: dict[str, str] = {}
    started = time.time()
    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        for i, cell in enumerate(todo, 1):
            if budget_seconds is not None and time.time() - started >= budget_seconds:
                left = len(todo) - i + 1
                log(
                    f"time budget of {budget_seconds / 60:.1f} min reached: {left} cell(s) left for a later run"
                )
                break
            t0 = time.time()
            load_before = C.load_average()
            try:
                expected = bench.expected(cell)  # the code this cell runs with, read before it trains
                summary = run_cell(bench.zoo, bench.spec, bench.base, cell, bench.out_dir, code=expected[1])
                records[cell.id] = bench.record(
                    cell, summary, load_before=load_before, threads=torch.get_num_threads(), expected=expected
                )
                took = time.time() - t0
                log(f"[{i}/{len(todo)}] {cell.id}: done in {took:.0f}s, committed to {bench.cell_file(cell)}")
            except Exception as exc:  # noqa: BLE001 - a failed cell must not stop the others
                failures[cell.id] = one_line(exc)
                (bench.out_dir / cell.id).mkdir(parents=True, exist_ok=True)
                (bench.out_dir / cell.id / "error.txt").write_text(traceback.format_exc())
                log(f"[{i}/{len(todo)}] {cell.id}: FAILED ({failures[cell.id]}); continuing")
    finally:
        torch.set_num_threads(previous)
    return records, failures


def _header(bench: Bench, command: str, records: dict[str, dict[str, Any]]) -> list[str]:
    """The lines under a table's title: command, split, budget, machines, cells, time."""
    spec = bench.spec
    summaries = [r["summary"] for r in records.values()]
    devices = sorted({f"{s.get('device', '?')} x{s.get('world_size', 1)}" for s in summaries})
    machines: dict[str, int] = {}
    for r in records.values():
        label = C.describe_machine(r) + f", {r.get('jobs', 1)} job(s) per device"
        if r.get("threads"):
            label += f", {r['threads']} thread(s) each"
        if r.get("channels_last"):
            label += ", channels-last"
        machines[label] = machines.get(label, 0) + 1
    loads = [r["load"]["before"] for r in records.values() if (r.get("load") or {}).get("before") is not None]
    seconds = [cell_cost(s)["seconds"] for s in summaries if "seconds" in s]
    total = sum(seconds)
    migrated = sum(bool(r.get("migrated_from_run_folder")) for r in records.values())
    return [
        f"Command: `{command}`  ",
        f"Reported split: **{spec.split}** (epoch/checkpoint chosen on val).  ",
        f"Budget: {budget_text(bench.base_cfg, summaries)}; ran on {', '.join(devices)}  ",
        f"Seeds: {spec.seeds}; {len(records)} of {len(bench.cells)} {CELLS_MARK} "
        f"`{bench.cells_dir.as_posix()}/` (the tables are built from them alone"
        + (f"; {migrated} collected from run folders" if migrated else "")
        + ").  ",
        "Machines: "
        + "; ".join(f"{k} ({count(v, 'cell')})" for k, v in machines.items())
        + (f"; 1-min load average at cell start {span(min(loads), max(loads))}" if loads else "")
        + ".  ",
        f"Time per cell {span(min(seconds) / 60, max(seconds) / 60)} min; training time of all "
        f"committed cells together {total / 60:.1f} min.",
    ]


def threads_per_job(jobs: int, threads: int | None = None) -> int:
    """Torch threads of each of ``jobs`` parallel cells: ``threads``, else cores // jobs (the
    cores this process may use)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return threads or max(1, cores // jobs)


__all__ = ["run_cell", "run_bench", "load", "status", "selected", "Bench", "threads_per_job"]
