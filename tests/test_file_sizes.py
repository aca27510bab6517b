"""No Python file of mtlzoo/ or benchmarks/ is above 600 lines (issue 22: a file that large mixes
jobs; split it by job, as benchmarks/performance.py was into benchmarks/perf_harness/)."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MAX_LINES = 600
FOLDERS = ("mtlzoo", "benchmarks")


def oversized(root: Path, folders=FOLDERS, limit: int = MAX_LINES) -> list[str]:
    """``"path: N lines"`` for every ``.py`` file under ``root/<folder>`` above ``limit`` lines."""
    found = []
    for folder in folders:
        for path in sorted((root / folder).rglob("*.py")):
            n = len(path.read_text(encoding="utf-8").splitlines())
            if n > limit:
                found.append(f"{path.relative_to(root).as_posix()}: {n} lines")
    return found


def test_no_python_file_of_the_package_or_the_benchmarks_is_above_600_lines():
    too_long = oversized(ROOT)
    assert not too_long, f"above {MAX_LINES} lines (split by job): " + "; ".join(too_long)


def test_the_check_names_each_long_file_and_its_length(tmp_path):
    (tmp_path / "mtlzoo" / "sub").mkdir(parents=True)
    (tmp_path / "benchmarks").mkdir()
    (tmp_path / "mtlzoo" / "sub" / "big.py").write_text("x = 1\n" * 601)
    (tmp_path / "mtlzoo" / "edge.py").write_text("x = 1\n" * 600)  # at the limit: allowed
    (tmp_path / "benchmarks" / "long.py").write_text("\n" * 700)
    (tmp_path / "benchmarks" / "notes.md").write_text("\n" * 900)  # not Python
    assert oversized(tmp_path) == ["mtlzoo/sub/big.py: 601 lines", "benchmarks/long.py: 700 lines"]
