"""What the parts of the GPU check share: paths and settings, the record of a part, a command run
in a session of its own under a time limit, reading what it wrote, markdown helpers."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]  # the repository
RESULTS = ROOT / "benchmarks" / "results"
QUICKSTART = "configs/quickstart.yaml"
LITE0 = "configs/camvid/lite0.yaml"
MULTITASK = "configs/camvid/multitask.yaml"
#: the whole check's time (s): the issue's 8 minutes, less a margin for writing and copying
BUDGET_S = 470
#: issue 20's targets on one H200-class GPU
QUICKSTART_TARGET_S = 20.0
CAMVID_TARGET_S = 60.0
#: a part starts only with at least this much of the budget left (s)
MIN_START_S = 10.0

#: overrides that make each real-data spec tiny in a dry run
#: a CNN of a few thousand parameters instead of ResNet-18 / EfficientNet-Lite0 in a dry run
DRY_BACKBONE = "model.backbone={name: cnn, channels: [8, 16, 32, 64]}"
DRY_QUICKSTART = [
    DRY_BACKBONE,
    "train.device=cpu",
    "data.size=[32,32]",
    "data.train_size=16",
    "data.val_size=8",
    "data.test_size=8",
    "train.epochs=1",
    "train.batch_size=8",
    "train.num_workers=0",
    "train.tensorboard=off",  # no pictures (matplotlib) in a dry run
]
DRY_CAMVID = [
    "train.device=cpu",
    "data.size=[36,48]",
    "augment.crop=[32,48]",
    "train.epochs=1",
    "train.max_steps_per_epoch=1",
    "train.batch_size=2",
    "train.num_workers=0",
    "train.cache=off",
    "train.test_split=null",
    "train.tensorboard=off",
]
BENCH_COMBINERS = ["sum", "uncertainty", "dwa", "pcgrad", "mgda"]
BENCH_SEEDS = [0, 1, 2, 3, 4]
BENCH_JOBS = 8
BENCH_OVERRIDES = ["train.amp=auto", "data.size=[90,120]", "augment.crop=[80,112]", "train.epochs=2"]


# -- records and commands ---------------------------------------------------------------------------
@dataclass
class Record:
    """What one part did: ``status`` is ok, FAIL, timeout, skipped or "not run"."""

    name: str
    title: str
    status: str = "not run"
    seconds: float = 0.0
    summary: str = ""
    lines: list[str] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)


@dataclass
class Ran:
    """A finished (or killed) command: exit status (``None`` when killed at its limit), wall
    seconds from start to exit, its output and the log it went to."""

    rc: int | None
    seconds: float
    stdout: str
    stderr: str
    log: str

    @property
    def ok(self) -> bool:
        return self.rc == 0

    def why(self) -> str:
        """One line: why the command failed (its last error line)."""
        if self.rc is None:
            return f"cut off at its time limit after {self.seconds:.0f} s (log: logs/{Path(self.log).name})"
        lines = [x.strip() for x in (self.stderr + "\n" + self.stdout).splitlines() if x.strip()]
        errors = [x for x in lines if x.startswith(("error:", "Error", "FAILED", "E "))] or lines
        last = errors[-1] if errors else "no output"
        return f"exit {self.rc}: {last[:300]} (log: logs/{Path(self.log).name})"


def run_command(argv: list[str], limit: float, log: Path, env: dict[str, str] | None = None) -> Ran:
    """Run ``argv`` from the repository root in a session of its own; kill the whole session
    (the command and every process it started) after ``limit`` seconds."""
    log.parent.mkdir(parents=True, exist_ok=True)
    out_path, err_path = log.with_suffix(".out"), log.with_suffix(".err")
    started = time.perf_counter()
    with open(out_path, "w") as out, open(err_path, "w") as err:
        proc = subprocess.Popen(
            argv, cwd=ROOT, stdout=out, stderr=err, env=env, start_new_session=True, text=True
        )
        try:
            rc: int | None = proc.wait(timeout=max(1.0, limit))
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            rc = None
    seconds = time.perf_counter() - started
    stdout, stderr = out_path.read_text(errors="replace"), err_path.read_text(errors="replace")
    log.write_text(
        f"$ {' '.join(argv)}\n# exit {rc} after {seconds:.1f} s\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
    )
    out_path.unlink()
    err_path.unlink()
    return Ran(rc, seconds, stdout, stderr, str(log))


def result_line(stdout: str) -> dict[str, Any]:
    """The JSON of a child's last ``RESULT {...}`` line ({} when there is none)."""
    lines = [x for x in stdout.splitlines() if x.startswith("RESULT ")]
    return json.loads(lines[-1][len("RESULT ") :]) if lines else {}


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    try:
        return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
    except (OSError, ValueError):
        return []


def table(header: list[str], rows: list[list[Any]]) -> list[str]:
    """A markdown table."""
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return out + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]


def fmt(value: Any, digits: int = 4) -> str:
    return f"{value:.{digits}f}" if isinstance(value, (int, float)) else "-"


# -- README's CPU table ----------------------------------------------------------------------------
def readme_table(text: str) -> dict[tuple[str, str], float]:
    """``{(task, metric): value}`` of README.md's demo table (between the demo-table markers)."""
    start, end = text.find("<!-- demo-table:start -->"), text.find("<!-- demo-table:end -->")
    values: dict[tuple[str, str], float] = {}
    for line in text[start:end].splitlines() if start >= 0 and end > start else []:
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 3 or cells[0] in ("task", "") or set(cells[0]) <= {"-"}:
            continue
        try:
            values[(cells[0], cells[1].split(" (")[0])] = float(cells[2])
        except ValueError:
            continue
    return values


def later_compute(epochs: list[dict[str, float]]) -> float:
    """Mean compute seconds of the epochs after the first (the first pays cuDNN's autotuning and
    compilation); the first's when there is only one."""
    later = epochs[1:] or epochs
    return sum(e.get("compute", 0.0) for e in later) / max(1, len(later))


def later_total(epochs: list[dict[str, float]]) -> float:
    later = epochs[1:] or epochs
    return sum(e.get("total", 0.0) for e in later) / max(1, len(later))
