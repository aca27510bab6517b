"""Where an epoch's time went, across a resume: a checkpoint's epoch history with each epoch's
timing as the run's ``metrics.jsonl`` logged it, and an epoch's wall time from its record."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def with_logged_timing(history: list[dict[str, Any]], log: Path) -> list[dict[str, Any]]:
    """A checkpoint's history with each epoch's timing taken from the run's ``metrics.jsonl``
    where its line is there (same epoch and step): the checkpoint is written before the last
    epoch's ``write`` and ``total`` times are known, the log line after."""
    try:
        logged = {}
        for line in log.read_text().splitlines():
            r = json.loads(line)
            logged[(r.get("epoch"), r.get("step"))] = r.get("timing")
    except (OSError, ValueError):
        return history
    out = []
    for r in history:
        timing = logged.get((r.get("epoch"), r.get("step")))
        out.append({**r, "timing": timing} if isinstance(timing, dict) and "total" in timing else r)
    return out


def epoch_seconds(record: dict[str, Any]) -> float:
    """An epoch's wall time from its record: ``total``, else the phases it has."""
    timing = record.get("timing") or {}
    if "total" in timing:
        return float(timing["total"])
    return float(sum(v for k, v in timing.items() if k != "total"))


__all__ = ["with_logged_timing", "epoch_seconds"]
