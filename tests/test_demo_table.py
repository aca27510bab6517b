"""benchmarks/demo_table.py: what its --check holds (the README's demo table, exactly on the CPU
it was recorded on, within measured tolerances elsewhere), --check-time, and the README's record
of the machine. The slow end-to-end check (a real quickstart run) is in tests/test_cli.py."""

from __future__ import annotations

import importlib.util
import re

import pytest


@pytest.fixture(scope="module")
def demo(root_dir):
    spec = importlib.util.spec_from_file_location("demo_table", root_dir / "benchmarks" / "demo_table.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def root_dir():
    from pathlib import Path

    return Path(__file__).resolve().parents[1]


TABLE = """val metrics:
| task     | metric                          | value   |
|----------|---------------------------------|---------|
| semseg   | miou (higher is better)         | 0.6892  |
| depth    | abs_err (lower is better)       | 0.6871  |
| normals  | mean_angle (lower is better)    | 12.6149 |
| labels   | accuracy (higher is better)     | 0.3398  |"""


def _with(table: str, metric: str, value: str) -> str:
    return re.sub(rf"(\| {metric} .*?\| )\S+", rf"\g<1>{value}", table)


def test_parse_table_reads_task_metric_values(demo):
    assert demo.parse_table(TABLE) == {
        "semseg/miou": 0.6892,
        "depth/abs_err": 0.6871,
        "normals/mean_angle": 12.6149,
        "labels/accuracy": 0.3398,
    }


def test_check_is_exact_on_the_recorded_cpu_and_within_tolerance_elsewhere(demo, monkeypatch):
    tol = {"semseg/miou": 0.01, "depth/abs_err": 0.05, "normals/mean_angle": 0.2, "labels/accuracy": 0.05}
    monkeypatch.setattr(demo, "TOLERANCE", tol)
    # the other CPU: depth 0.7061, labels accuracy 0.3242, normals 12.5581
    other = _with(_with(_with(TABLE, "abs_err", "0.7061"), "accuracy", "0.3242"), "mean_angle", "12.5581")
    ok, line = demo.check_table(TABLE, "cpu A", TABLE, "cpu A")
    assert ok and "digit for digit" in line
    ok, line = demo.check_table(TABLE, "cpu A", other, "cpu A")  # the recorded CPU: exact digits only
    assert not ok and "recorded on this CPU and is stale" in line
    ok, line = demo.check_table(TABLE, "cpu A", other, "cpu B")
    assert ok and "within the measured CPU tolerances (recorded on cpu A; this is cpu B)" in line
    off = _with(other, "abs_err", "0.7400")
    ok, line = demo.check_table(TABLE, "cpu A", off, "cpu B")
    assert not ok and "depth/abs_err: 0.74 against README.md's 0.6871 (off by 0.0529, tolerance 0.05)" in line
    assert "semseg/miou" not in line.split("`make demo` prints")[0]  # only the metric that moved too far
    ok, line = demo.check_table(TABLE, None, _with(TABLE, "miou", "0.5"), "cpu B")
    assert not ok and "recorded on an unstated machine" in line
    missing = "\n".join(x for x in TABLE.splitlines() if "labels" not in x)
    ok, line = demo.check_table(TABLE, "cpu A", missing, "cpu B")
    assert not ok and "metrics differ" in line


def test_every_readme_metric_has_a_tolerance_that_covers_its_measured_spread(demo, root_dir):
    readme = (root_dir / "README.md").read_text()
    keys = list(demo.parse_table(demo.readme_table(readme)))
    assert keys and set(keys) <= set(demo.TOLERANCE)
    spread_md = (root_dir / "benchmarks" / "results" / "demo_spread.md").read_text()
    rows = [r for r in spread_md.splitlines() if r.startswith("| ") and not r.startswith("| metric")]
    measured = {r.split("|")[1].strip(): float(r.split("|")[-2]) for r in rows}
    assert set(keys) <= set(measured), "demo_spread.md lacks a metric of the README's table"
    for key in keys:
        assert demo.TOLERANCE[key] >= measured[key], (key, demo.TOLERANCE[key], measured[key])


def test_the_readme_records_the_machine_of_its_table_and_of_its_time(demo, root_dir):
    readme = (root_dir / "README.md").read_text()
    recorded = demo.readme_machine(readme)
    assert recorded and " torch " in recorded and "flags " in recorded
    minutes, cpu = demo.readme_minutes(readme)
    assert minutes >= 1 and cpu


def test_with_table_writes_the_table_and_the_machine(demo, root_dir):
    readme = (root_dir / "README.md").read_text()
    new = demo.with_table(readme, TABLE, "cpu Z (family 1 model 2, flags 0), torch 9 AVX")
    assert demo.readme_table(new) == TABLE
    assert demo.readme_machine(new) == "cpu Z (family 1 model 2, flags 0), torch 9 AVX"
    assert new.count("The table was recorded on: ") == 1
    assert demo.readme_machine(demo.with_table(new, TABLE, "cpu Y")) == "cpu Y"  # replaced, not added


def test_check_time_holds_on_the_named_cpu_only(demo):
    line = "make demo   # trains it (about 3 min on 2 idle cores of an Intel Xeon; 2 on an AMD EPYC)"
    assert demo.readme_minutes(line) == (3, "Intel Xeon")
    xeon = "Intel(R) Xeon(R) Platinum 8480+ (family 6 model 143, flags 0), torch 2.14.1 AVX512"
    assert demo.check_time(line, 190, xeon, 0.1)[0]
    ok, msg = demo.check_time(line, 300, xeon, 0.1)
    assert not ok and "this run took 5.0 min" in msg
    ok, msg = demo.check_time(line, 300, "AMD EPYC (family 26 model 2, flags 0), torch 2.14.1 AVX512", 0.1)
    assert ok and "not checked here" in msg
    with pytest.raises(SystemExit, match="no 'about N min"):
        demo.readme_minutes("make demo   # trains the quickstart")


@pytest.mark.parametrize(("off_by", "table_moved", "rc"), [(0, False, 0), (120, False, 1), (0, True, 1)])
def test_check_with_check_time_checks_both(demo, root_dir, monkeypatch, capsys, off_by, table_moved, rc):
    readme = (root_dir / "README.md").read_text()
    written = demo.readme_table(readme)
    minutes, cpu = demo.readme_minutes(readme)
    seconds = 60 * minutes + off_by  # the README's time, or two minutes off it
    here = demo.readme_machine(readme)
    now = _with(written, "miou", "0.0001") if table_moved else written
    monkeypatch.setattr(demo, "demo_table", lambda extra_env=None: (now, float(seconds)))
    # the machine the table was recorded on, named as the CPU the time is stated for
    monkeypatch.setattr(demo, "machine", lambda: f"{cpu} {here}")
    monkeypatch.setattr(demo, "readme_machine", lambda text: f"{cpu} {here}")
    assert demo.main(["--check", "--check-time"]) == rc
    out = capsys.readouterr().out
    assert "README.md's 'about" in out or "this run took" in out  # the time was checked
    assert "demo table" in out  # and the table too
