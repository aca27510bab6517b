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
    assert header[4] == "wall s / step"
    for r in rows:  # the ratio column is the two times' quotient
        cost, wall, other, ratio = float(r[1]), float(r[4]), float(r[5]), float(r[6].rstrip(" |"))
        assert wall > 0
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


def test_the_written_table_is_checked_against_a_new_measurement(tmp_path):
    """--out writes the table with machine and load; --check passes on the same file and fails,
    naming the row, when a row's committed time is far from what is measured now."""
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(tiny_spec()))
    bench = {
        "name": "tiny",
        "base": "base.yaml",
        "grid": {"combiner": ["sum"]},
        "seeds": [0],
        "baselines": False,
        "out_dir": str(tmp_path / "runs"),
        "results_dir": str(tmp_path / "results"),
    }
    (tmp_path / "bench.yaml").write_text(yaml.safe_dump(bench))
    script = [sys.executable, str(ROOT / "benchmarks" / "bench_step_cost.py"), "bench.yaml", "--steps", "2"]

    def run(*extra):
        return subprocess.run(script + list(extra), cwd=tmp_path, capture_output=True, text=True, timeout=600)

    done = run("--out", "cost.md")
    assert done.returncode == 0, done.stderr[-2000:]
    text = (tmp_path / "cost.md").read_text()
    assert text.startswith("# Step cost of `tiny`")
    assert "Command: `python benchmarks/bench_step_cost.py bench.yaml --steps 2 --out cost.md`" in text
    assert re.search(r"1-min load average [\d.]+ before, [\d.]+ after", text)
    (row,) = [line for line in text.splitlines() if line.startswith("| sum |")]
    measured = float(row.split(" | ")[1])

    done = run("--check", "cost.md", "--tolerance", "100")  # any machine holds within 100x
    assert done.returncode == 0 and "every row of cost.md holds" in done.stdout, done.stdout + done.stderr
    (tmp_path / "cost.md").write_text(
        text.replace(row, row.replace(f"| {row.split(' | ')[1]} |", "| 1000 |", 1))
    )
    done = run("--check", "cost.md")
    assert done.returncode == 1, done.stdout + done.stderr
    assert (
        "sum: " in done.stdout
        and "1e+03 in cost.md" in done.stdout
        and "rewrite cost.md with --out" in done.stdout
    )
    assert measured < 1000
    # checked and rewritten in one call: the check reads the file before --out writes it
    done = run("--check", "cost.md", "--out", "cost.md")
    assert done.returncode == 1 and "1e+03 in cost.md" in done.stdout, done.stdout + done.stderr
    assert "| 1000 |" not in (tmp_path / "cost.md").read_text()
    done = run("--check", "cost.md", "--threads", "2")
    assert done.returncode == 2
    assert "--check cost.md: measured with 1 thread(s); check it with --threads 1" in done.stderr
    done = run("--check", "missing.md")
    assert (
        done.returncode == 2 and "--check missing.md: no such file (write it first with --out)" in done.stderr
    )
