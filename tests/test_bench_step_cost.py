"""benchmarks/bench_step_cost.py: one row per method of a bench, its cells counted, the first
row as the unit, and with --vs the same rows timed under a config change. No timing is asserted."""

from __future__ import annotations

import re
import subprocess
import sys

import yaml
from conftest import ROOT, tiny_spec


def test_rows_cells_and_a_compared_config_change(tmp_path):
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(tiny_spec()))
    bench = {
        "name": "tiny",
        "base": "base.yaml",
        "grid": {"combiner": ["sum", "dwa"]},
        "seeds": [0, 1],
        "out_dir": str(tmp_path / "runs"),
        "results_dir": str(tmp_path / "results"),
    }
    (tmp_path / "bench.yaml").write_text(yaml.safe_dump(bench))
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_step_cost.py"), "bench.yaml", "--steps", "1"]
        + ["--vs", "train.channels_last=true", "--vs", "train.amp=bf16"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    rows = [line.split(" | ") for line in done.stdout.splitlines() if re.match(r"\| [a-z]", line)]
    header, *rows = rows
    assert (
        header[-1] == "x slower with it |" and "with train.channels_last=true, train.amp=bf16" in header[-2]
    )
    assert [r[0].lstrip("| ") for r in rows] == [
        "sum",
        "dwa",
        *(f"single-task ({t})" for t in sorted(tiny_spec()["tasks"])),  # safe_dump sorts keys
    ]
    assert rows[0][2] == "1.00" and [r[3] for r in rows] == ["2"] * 5  # unit row; two seeds each
    for r in rows:  # the ratio column is the two times' quotient
        cost, other, ratio = float(r[1]), float(r[4]), float(r[5].rstrip(" |"))
        assert abs(other / cost - ratio) <= 0.005 + 0.01 * ratio
    assert "the whole bench: " in done.stdout and "(10 cells)" in done.stdout
    found = re.search(
        r"with train.channels_last=true, train.amp=bf16: ([\d.]+)-([\d.]+)x the CPU time per step; "
        r"the whole bench ([\d.]+)x",
        done.stdout,
    )
    low, high, whole = (float(x) for x in found.groups())
    assert low - 0.01 <= whole <= high + 0.01  # a weighted mean of the rows' ratios
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("*.safetensors"))
