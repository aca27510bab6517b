"""Every bench spec under ``benchmarks/specs/`` plans and validates each of its cells as
committed (a spec that refers to a renamed option or part fails here, not hours into a
bench), and every committed cell file still matches its cell's config and code (a change to
code a committed result depends on is seen here, not when the next bench refuses it)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mtlzoo.apps.bench.run import load, status

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
