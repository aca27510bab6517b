"""What a training run reports after each epoch, guarded so that reporting never stops training.

:class:`Reporter` appends the epoch's line to ``metrics.jsonl``, rewrites ``metrics.csv``, hands
the record to the :class:`~mtlzoo.runtime.monitor.Monitor` (console line, TensorBoard) and writes
pictures of predictions. The trainer calls it only after the epoch's checkpoint is saved; a
report that fails (pictures without matplotlib, a full disk for the event files) becomes one
``warning:`` line, is listed in the summary, and is not tried again where retrying is pointless.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..contract.errors import one_line
from .evaluate import headline
from .files import json_safe
from .monitor import Monitor, data_bound, write_csv


class Reporter:
    """Reports of one run (see the module docstring).

    Args:
        run_dir: the run folder, or ``None`` (nothing is written).
        monitor: the console line and TensorBoard.
        main: whether this process reports at all (rank 0).
    """

    def __init__(self, run_dir: Path | None, monitor: Monitor, main: bool):
        self.run_dir = run_dir
        self.monitor = monitor
        self.main = main
        self.warnings: list[str] = []
        self._warned: set[str] = set()
        self._disabled: set[str] = set()  # reports that failed once and are not tried again

    def warn(self, message: str, once: str | None = None) -> None:
        """A ``warning:`` line on stderr (main rank), kept for the summary; ``once``: a key that
        is shown only the first time."""
        key = once or message
        if key in self._warned:
            return
        self._warned.add(key)
        self.warnings.append(message)
        if self.main:
            print(f"warning: {message}", file=sys.stderr, flush=True)

    def guarded(self, what: str, fn: Callable[..., Any], *args: Any) -> bool:
        """Run one report; a failure becomes one warning (once per ``what``). Returns whether it worked."""
        try:
            fn(*args)
            return True
        except Exception as exc:  # reporting must never stop training: the epoch is already saved
            self.warn(f"{what} failed ({one_line(exc)}); training goes on without it", once=what)
            return False

    def pictures(self, record: dict[str, Any], make: Callable[[], dict[str, Any]]) -> None:
        """Pictures of predictions for TensorBoard (``make()`` draws them); after one failure, no more tries."""
        if not (self.main and self.monitor.wants_images) or "pictures" in self._disabled:
            return
        what = "pictures of predictions for TensorBoard"
        if not self.guarded(what, lambda: self.monitor.images(record["epoch"], record["step"], make())):
            self._disabled.add("pictures")

    def epoch(
        self,
        record: dict[str, Any],
        history: list[dict[str, Any]],
        epochs: int,
        eval_split: str,
        eta: float,
        hint: str,
    ) -> None:
        """The epoch's line in metrics.jsonl, metrics.csv, TensorBoard scalars and the console line."""
        if not self.main:
            return
        if self.run_dir is not None:
            self.guarded("appending to metrics.jsonl", self._append, record)
            self.guarded("writing metrics.csv", write_csv, self.run_dir / "metrics.csv", history)
        self.guarded("the epoch's report", self.monitor.epoch, record, epochs, eval_split, eta, hint)

    def _append(self, record: dict[str, Any]) -> None:
        assert self.run_dir is not None
        with open(self.run_dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps(json_safe(record)) + "\n")

    def close(self) -> None:
        """Flush and close the event files."""
        self.guarded("closing the TensorBoard event file", self.monitor.close)


def data_hint(waited: float, computed: float, workers: int, cached: bool, cacheable: bool) -> str:
    """What to change when an epoch's steps waited for data (empty when they did not)."""
    if not data_bound(waited, computed):
        return ""
    hint = f"raise train.num_workers (now {workers})"
    if not cached and cacheable:
        hint += " or keep samples in memory (train.cache: on)"
    return hint


@torch.no_grad()
def prediction_pictures(
    model: nn.Module, dataset: Any, tasks: dict[str, Any], split: str, device: torch.device, count: int = 2
) -> dict[str, Any]:
    """Pictures (``{tag: uint8 [H, W, 3]}``) of the predictions for the first ``count`` samples
    of ``dataset``, for each task whose target kind can ``render``."""
    samples = [dataset[i] for i in range(min(count, len(dataset)))]
    if not samples:
        return {}
    model.eval()
    images = torch.stack([s["image"] for s in samples]).to(device)
    preds = model(images)
    out = {}
    for name, task in tasks.items():
        kind, info = task.kind, task.info.target_info
        if kind.render is None:
            continue
        for i in range(len(samples)):
            value = preds[name][i].float().cpu()
            value = kind.decode(value, info) if kind.decode else value
            out[f"{split}/{name}/{i}"] = np.asarray(kind.render(value, info))
    return out


def format_table(
    results: dict[str, dict[str, float]], directions: dict[str, dict[str, bool]] | None = None
) -> str:
    """A per-task metrics table (markdown-compatible) for the terminal; per-class details
    (keys with a ``/``) are left out (``eval --json`` shows them)."""
    rows = [("task", "metric", "value")]
    for task, metrics in headline(results).items():
        for key, value in metrics.items():
            arrow = ""
            if directions and key in directions.get(task, {}):
                arrow = " (higher is better)" if directions[task][key] else " (lower is better)"
            rows.append((task, key + arrow, f"{value:.4f}"))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |" for r in rows]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


__all__ = ["Reporter", "data_hint", "prediction_pictures", "format_table"]
