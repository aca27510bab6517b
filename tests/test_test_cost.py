"""benchmarks/test_cost.py: per-test CPU seconds and the estimate of the quick loop."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.slow  # runs pytest twice in fresh processes (one file, then the collection of all)
def test_the_test_cost_script_measures_a_file_and_writes_its_table(tmp_path, root):
    out = tmp_path / "cost.md"
    done = subprocess.run(
        [sys.executable, "benchmarks/test_cost.py", "tests/test_registry.py", "--keep", str(tmp_path / "k")]
        + ["--out", str(out)],
        capture_output=True,
        text=True,
        cwd=root,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    table = out.read_text()
    assert "| tests/test_registry.py | 7 |" in table
    assert '`pytest -n 2 -m "not slow"`:' in table and "are marked `slow`" in table
    costs = (tmp_path / "k" / "test_registry.json").read_text()
    assert "tests/test_registry.py::" in costs
