"""kill -9 at chosen moments of a run, then ``--resume``: is the result bit-identical?

    python benchmarks/crash_resume.py                   # 10 points x num_workers 0 and 2
    python benchmarks/crash_resume.py --points mid_epoch,between_last_renames --workers 0

Each point runs a small shapes spec (3 epochs, random crops and flips) in a child process that
SIGKILLs itself at that moment (the kill comes from inside, so it lands exactly there), then
resumes the run with ``mtlzoo train --resume`` until it finishes (again and again if a point
kills a resumed process too), and compares the final weights, the summary and metrics.jsonl with
an uninterrupted run of the same spec. Prints one line per case and ``N/M bit-identical``; the
exit status is 1 unless every case is.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]

SPEC = {
    "name": "crash",
    "seed": 3,
    "model": {"backbone": {"name": "cnn", "channels": [8, 16, 32]}},
    "tasks": {
        "semseg": {"type": "segmentation"},
        "depth": {"type": "depth"},
        "edges": {"type": "boundary", "from": "semseg"},
    },
    "combiner": {"name": "dwa"},
    "data": {"name": "shapes", "size": [40, 40], "train_size": 48, "val_size": 8, "test_size": 8},
    "augment": {"hflip": 0.5, "crop": [32, 32], "scale": [0.9, 1.2], "color_jitter": 0.2},
    "train": {"epochs": 3, "batch_size": 8, "progress": False, "test_split": "test"},
}
STEPS_PER_EPOCH = 6

#: point -> (what the child counts, at which count it dies, before or after the counted call,
#  which process: "first" run or the first "resume"). ``replace:SUFFIX`` counts the os.replace
#  calls whose destination ends with SUFFIX, so a new file written atomically shifts no point.
POINTS = {
    "mid_epoch": ("step", STEPS_PER_EPOCH + 3, "before", "first"),
    "after_log_before_checkpoint": ("log", 2, "after", "first"),
    "writing_best_state": ("replace:.best.tmp/state.json", 2, "before", "first"),
    "between_best_renames": ("replace:.best.old", 1, "after", "first"),
    "tmp_last_complete": ("replace:.last.old", 1, "before", "first"),
    "between_last_renames": ("replace:.last.old", 1, "after", "first"),
    "after_last_checkpoint": ("replace:checkpoints/last", 3, "after", "first"),
    "writing_summary": ("replace:summary.json", 1, "before", "first"),
    "writing_config_at_resume": ("replace:config.yaml", 1, "before", "resume"),
    "mid_epoch_after_resume": ("step", 2, "before", "resume"),
}

CHILD = r"""
import os, signal, sys
from mtlzoo.runtime import train as T, files as F
counter, limit, when = sys.argv[1], int(sys.argv[2]), sys.argv[3]
count = [0]
def die():
    os.kill(os.getpid(), signal.SIGKILL)
def wrap(obj, name, suffix=None):
    real = getattr(obj, name)
    def counted(*args, **kwargs):
        if suffix is not None and not str(args[1]).endswith(suffix):
            return real(*args, **kwargs)
        count[0] += 1
        if when == "before" and count[0] == limit:
            die()
        out = real(*args, **kwargs)
        if when == "after" and count[0] == limit:
            die()
        return out
    setattr(obj, name, counted)
if counter.startswith("replace:"):
    wrap(os, "replace", counter.split(":", 1)[1])
elif counter == "step":
    wrap(T.Trainer, "train_step")
elif counter == "log":
    wrap(T.Trainer, "_log")
from mtlzoo.apps.cli import main
sys.exit(main(sys.argv[4:]))
"""


LAST_ERROR = [""]


def run(args: list[str], env: dict[str, str], kill: tuple[str, int, str] | None = None) -> int:
    """``mtlzoo ARGS`` in a child process (dying at ``kill``); its exit status."""
    cmd = [sys.executable, "-c", CHILD, *(map(str, kill) if kill else ("none", "0", "never")), *args]
    out = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True)
    LAST_ERROR[0] = out.stderr.strip().splitlines()[-1] if out.stderr.strip() else ""
    return out.returncode


def fingerprint(run_dir: Path) -> dict:
    """Everything that must be identical: final weights and optimizer, summary metrics, the log."""
    from safetensors.torch import load_file

    last = run_dir / "checkpoints" / "last"
    tensors = {
        **load_file(str(last / "weights.safetensors")),
        **load_file(str(last / "optimizer.safetensors")),
    }
    summary = json.loads((run_dir / "summary.json").read_text())
    log = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    for record in log:
        record.pop("time", None)
        record.pop("timing", None)  # wall-clock seconds differ from run to run
    return {"tensors": tensors, "metrics": (summary["final"], summary["test"], summary["best"]), "log": log}


def same(a: dict, b: dict) -> str:
    """Empty when identical, else what differs."""
    import torch

    if a["tensors"].keys() != b["tensors"].keys():
        return "different tensors"
    bad = [k for k in a["tensors"] if not torch.equal(a["tensors"][k], b["tensors"][k])]
    if bad:
        return f"{len(bad)} of {len(a['tensors'])} tensors differ (e.g. {bad[0]})"
    if a["metrics"] != b["metrics"]:
        return "metrics differ"
    if a["log"] != b["log"]:
        return f"metrics.jsonl differs ({len(a['log'])} vs {len(b['log'])} lines)"
    return ""


def case(point: str, workers: int, reference: dict, tmp: Path, env: dict[str, str]) -> str:
    """One crash-and-resume case; empty string when bit-identical."""
    counter, limit, when, process = POINTS[point]
    spec_path = tmp / f"{point}-{workers}.yaml"
    spec_path.write_text(yaml.safe_dump(SPEC))
    out = tmp / f"{point}-{workers}"
    common = [f"train.out_dir={out}", "train.run_name=run", f"train.num_workers={workers}"]
    run_dir = out / "run"
    first_kill = (counter, limit, when) if process == "first" else None
    if process == "resume":  # the first run dies after its first checkpoint, the point is in the resume
        first_kill = ("replace:checkpoints/last", 1, "after")
    code = run(["train", str(spec_path), *common], env, first_kill)
    if code != -signal.SIGKILL:
        return f"the first run was not killed (exit {code})"
    kill = (counter, limit, when) if process == "resume" else None
    for attempt in range(5):
        code = run(["train", "--resume", str(run_dir)], env, kill)
        kill = None
        if code == 0:
            break
        if code != -signal.SIGKILL:
            return f"resume {attempt + 1} failed with exit {code}: {LAST_ERROR[0]}"
    else:
        return "never finished"
    return same(reference, fingerprint(run_dir))


def main(argv: list[str] | None = None) -> int:
    """Run the cases, print one line each and the count."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--points", default=",".join(POINTS), help="comma-separated points (default: all)")
    p.add_argument("--workers", default="0,2", help="comma-separated train.num_workers values")
    args = p.parse_args(argv)
    points = [x for x in args.points.split(",") if x]
    unknown = sorted(set(points) - set(POINTS))
    if unknown:
        raise SystemExit(f"unknown point(s) {unknown}; known: {', '.join(POINTS)}")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MTLZOO_")}
    env["OMP_NUM_THREADS"] = "1"
    ok = total = 0
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        for workers in [int(w) for w in args.workers.split(",")]:
            ref_spec = tmp / f"reference-{workers}.yaml"
            ref_spec.write_text(yaml.safe_dump(SPEC))
            ref_out = tmp / f"reference-{workers}"
            code = run(
                [
                    "train",
                    str(ref_spec),
                    f"train.out_dir={ref_out}",
                    "train.run_name=run",
                    f"train.num_workers={workers}",
                ],
                env,
            )
            if code != 0:
                raise SystemExit(f"the uninterrupted run failed (exit {code})")
            reference = fingerprint(ref_out / "run")
            for point in points:
                total += 1
                problem = case(point, workers, reference, tmp, env)
                ok += not problem
                print(
                    f"num_workers={workers} {point}: {'bit-identical' if not problem else problem}",
                    flush=True,
                )
    print(f"{ok}/{total} bit-identical")
    return 0 if ok == total else 1


if __name__ == "__main__":
    raise SystemExit(main())
