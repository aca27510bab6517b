"""Following training: one console line per epoch, ``metrics.csv`` beside ``metrics.jsonl``,
and TensorBoard event files.

The console line stays on screen (the step progress bar does not, and ``train.progress:
false`` turns off only the bar): epoch, mean training loss per task, the validation metrics,
the epoch's time and where it went (waiting for data, computing, evaluating, writing
checkpoints and pictures, as mmengine logs ``data_time`` and ``time``; a data-bound epoch says
so) and the ETA of the whole run. The CSV has one row per epoch and one column per value
(``train.loss.<task>``, ``val.<task>.<metric>``, ``train.combiner.<key>``, ``lr``,
``timing.data`` ...), rewritten whole each epoch so it is always complete.
TensorBoard (``train.tensorboard``; the ``tensorboard`` package is an optional extra) gets the
same scalars plus, every ``train.tensorboard_images_every`` epochs, pictures of the first
validation images' predictions (each target kind's ``render``).
"""

from __future__ import annotations

import csv
import io
import sys
from pathlib import Path
from typing import Any

from ..contract.errors import ConfigError
from .files import write_atomic


def flatten(record: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"val": {"semseg": {"miou": 0.5}}}`` -> ``{"val.semseg.miou": 0.5}``."""
    out: dict[str, Any] = {}
    for key, value in record.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def epoch_line(record: dict[str, Any], epochs: int, eval_split: str, eta: float, hint: str = "") -> str:
    """The console line of one finished epoch: losses, the evaluation's headline metrics (no
    per-class details), the epoch's time and where it went, the ETA of the run. ``hint``: what
    to change when the epoch waited for data (see :func:`data_bound`)."""
    losses = " ".join(f"{t} {v:.3f}" for t, v in record["train"]["loss"].items())
    metrics = record.get(eval_split) or {}
    shown = " ".join(
        f"{t}.{k} {v:.4f}"
        for t, vals in metrics.items()
        for k, v in vals.items()
        if k != "loss" and "/" not in k
    )
    skipped = f"  skipped {record['skipped_steps']}" if record.get("skipped_steps") else ""
    return (
        f"epoch {record['epoch']}/{epochs}  loss {losses}"
        + (f"  {eval_split} {shown}" if shown else "")
        + f"  {time_split(record.get('timing') or {}, hint)}  eta {_clock(eta)}{skipped}"
    )


#: waiting for data above this share of the training time marks an epoch data-bound
DATA_BOUND = 0.3


def data_bound(waited: float, computed: float) -> bool:
    """True when the steps waited for data more than :data:`DATA_BOUND` of the training time."""
    return waited + computed > 0 and waited / (waited + computed) > DATA_BOUND


def time_split(timing: dict[str, float], hint: str = "") -> str:
    """``1m05s (data 40% compute 52% eval 6% write 2%; data-bound: <hint>)``: an epoch's time
    and its parts, with ``hint`` when there is one."""
    total = timing.get("total", 0.0)
    if total <= 0:
        return _clock(total)
    parts = " ".join(
        f"{k} {100 * timing.get(k, 0.0) / total:.0f}%" for k in ("data", "compute", "eval", "write")
    )
    return f"{_clock(total)} ({parts}{f'; data-bound: {hint}' if hint else ''})"


def _clock(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def write_csv(path: Path, history: list[dict[str, Any]]) -> None:
    """``metrics.csv``: one row per epoch of ``history``, one column per value seen."""
    rows = [flatten({k: v for k, v in r.items() if k != "time"} | {"time": r.get("time")}) for r in history]
    keys: list[str] = []
    for row in rows:
        keys += [k for k in row if k not in keys]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=keys)
    writer.writeheader()
    writer.writerows(rows)
    write_atomic(path, buf.getvalue())


class Monitor:
    """What a trainer reports after each epoch (see the module docstring)."""

    def __init__(self, run_dir: Path | None, mode: str, images_every: int, main: bool, console: bool):
        self.run_dir = run_dir
        self.console = console and main
        self.images_every = images_every
        self.writer = None
        if run_dir is None or not main or mode == "off":
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            if mode == "on":
                raise ConfigError(
                    "train.tensorboard: on, but the tensorboard package is not installed; pip install "
                    "'mtlzoo[tensorboard]' (or set train.tensorboard: auto)"
                ) from None
            return
        self.writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"))

    def epoch(self, record: dict[str, Any], epochs: int, eval_split: str, eta: float, hint: str = "") -> None:
        """Report one finished epoch: the console line, TensorBoard scalars (``timing.*``: seconds
        spent waiting for data, computing, evaluating and writing)."""
        if self.console:
            print(epoch_line(record, epochs, eval_split, eta, hint), file=sys.stderr, flush=True)
        if self.writer is not None:
            for key, value in flatten(
                {k: v for k, v in record.items() if k not in ("epoch", "time")}
            ).items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    self.writer.add_scalar(key, value, record["step"])
            self.writer.flush()

    def images(self, epoch: int, step: int, pictures: dict[str, Any]) -> None:
        """Pictures of predictions (``{tag: uint8 [H, W, 3]}``) every ``images_every`` epochs."""
        if self.writer is None or epoch % self.images_every:
            return
        for tag, picture in pictures.items():
            self.writer.add_image(tag, picture, step, dataformats="HWC")
        self.writer.flush()

    @property
    def wants_images(self) -> bool:
        """True when pictures of predictions would be written."""
        return self.writer is not None

    def close(self) -> None:
        """Flush and close the event file."""
        if self.writer is not None:
            self.writer.close()
            self.writer = None


__all__ = ["Monitor", "epoch_line", "time_split", "data_bound", "write_csv", "flatten"]
