"""Every bench spec under ``benchmarks/specs/`` plans and validates each of its cells as
committed (a spec that refers to a renamed option or part fails here, not hours into a
bench), and every committed cell file still matches its cell's config and code (a change to
code a committed result depends on is seen here, not when the next bench refuses it)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from mtlzoo.apps.bench.report import CELLS_MARK
from mtlzoo.apps.bench.run import load, run_bench, status

SPECS = sorted(p.name for p in (Path(__file__).parents[1] / "benchmarks" / "specs").glob("*.yaml"))


@pytest.mark.parametrize("name", SPECS)
def test_every_cell_of_a_bench_spec_validates_and_its_committed_cells_match(root, zoo, name, monkeypatch):
    monkeypatch.chdir(root)  # results_dir and out_dir are relative to the repository
    bench = load(root / "benchmarks" / "specs" / name, zoo=zoo)
    assert bench.cells, name
    for cell in bench.cells:
        bench.cell_cfg(cell)  # raises ConfigError for a cell the zoo refuses
        state, info = status(bench, cell)
        assert state != "refused", f"{cell.id}: {info}"


CELL_TABLES = [
    name
    for name in SPECS
    if (Path(__file__).parents[1] / "benchmarks" / "results" / f"{Path(name).stem}.md").is_file()
    and CELLS_MARK
    in (Path(__file__).parents[1] / "benchmarks" / "results" / f"{Path(name).stem}.md").read_text()
]


@pytest.mark.parametrize("name", CELL_TABLES)
def test_a_committed_table_is_what_its_committed_cells_make(root, zoo, name, tmp_path, monkeypatch):
    # a table the README and docs quote must not drift from its cells: after a change to how
    # tables are written, `mtlzoo bench SPEC --report-only` has to be rerun and committed
    import shutil

    monkeypatch.chdir(root)
    stem = Path(name).stem
    results = root / "benchmarks" / "results"
    shutil.copytree(results / stem / "cells", tmp_path / stem / "cells")
    monkeypatch.setattr("mtlzoo.apps.bench.plots.write_plots", lambda *_: [])  # the figures are not compared
    # the table was written by the command its header names, overrides included (e.g. seeds=[0])
    command = re.search(r"^Command: `(mtlzoo bench (\S+)(.*))`", (results / f"{stem}.md").read_text(), re.M)
    extra = shlex.split(command.group(3))
    run_bench(
        root / command.group(2),
        [*extra, f"results_dir={tmp_path}"],
        log=lambda *_: None,
        zoo=zoo,
        report_only=True,
    )

    def without_command(text: str) -> str:
        return "\n".join(line for line in text.splitlines() if not line.startswith("Command: "))

    for suffix in (".md", ".csv", "_per_class.csv"):
        committed = results / f"{stem}{suffix}"
        if committed.is_file():
            made = (
                (tmp_path / f"{stem}{suffix}").read_text().replace(tmp_path.as_posix(), "benchmarks/results")
            )
            assert without_command(made) == without_command(committed.read_text()), (
                f"{committed.relative_to(root)} is not what its cells make: "
                f"run `{command.group(1)} --report-only` and commit it"
            )
