"""Property: whatever a spec is mutated into, validating it gives a valid config or one line,
never a traceback (benchmarks/fuzz_specs.py runs a larger seeded corpus and counts)."""

from __future__ import annotations

import re

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mtlzoo.testing.fuzz import classify, mutate


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rng=st.randoms(use_true_random=False))
def test_every_mutated_spec_is_valid_or_one_line(zoo, root, tmp_path, rng):
    base = yaml.safe_load((root / "configs" / "quickstart.yaml").read_text())
    case = mutate(base, rng)
    if isinstance(case, str):
        path = tmp_path / "case.yaml"
        path.write_text(case)
        case = path
    outcome = classify(zoo.spec, case)
    assert not outcome.startswith("traceback"), outcome


def test_the_fuzz_script_reports_its_counts(root):
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "benchmarks/fuzz_specs.py", "--n", "50", "--configs", "configs/quickstart.yaml"],
        capture_output=True,
        text=True,
        cwd=root,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "50 mutated specs" in out.stdout and "traceback 0, hang 0" in out.stdout
    # every number of the quickstart, each replaced by each huge integer: refused, never a traceback
    assert re.search(
        r"huge integers: \d+ cases from 1 configs .*: one-line \d+, accepted 0, traceback 0", out.stdout
    )
    assert "integer options without an upper bound: 0" in out.stdout
