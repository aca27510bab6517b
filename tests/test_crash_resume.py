"""kill -9 in the middle of training and while checkpoints are written, then --resume: the
result is bit-identical to an uninterrupted run, also with data-loader workers and random
augmentation (benchmarks/crash_resume.py runs every point with 0 and 2 workers)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


@pytest.mark.slow
def test_kill_and_resume_is_bit_identical_with_workers(root):
    out = subprocess.run(
        [
            sys.executable,
            "benchmarks/crash_resume.py",
            "--workers",
            "2",
            "--points",
            "between_last_renames,writing_config_at_resume",
        ],
        capture_output=True,
        text=True,
        cwd=root,
        timeout=900,
        # bit-identical is a CPU promise (train.device auto would take a GPU where there is one, and
        # CUDA's default is speed, not determinism); tests/test_cuda.py resumes on CUDA
        env={**os.environ, "CUDA_VISIBLE_DEVICES": ""},
    )
    assert out.returncode == 0, out.stdout + out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "2/2 bit-identical"
