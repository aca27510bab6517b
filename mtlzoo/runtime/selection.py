"""Primary tasks and the metric that chooses the best checkpoint.

``tasks.<name>.primary: true`` marks the tasks a run is for; the others are auxiliary (they
are trained to help the primary ones). Primary tasks change three things:

* the best checkpoint: with ``train.select`` unset it is chosen on the **first primary
  task's first metric** (without primary tasks: the first task's first metric; a task
  without metrics: its loss);
* bilevel combiners (``auto_lambda``, ``moml``, ``forum``) choose the task weights for the
  primary tasks' held-out losses (:class:`~mtlzoo.contract.heldout.HeldOut`);
* bench tables report delta-m over the primary tasks beside delta-m over all tasks
  (``summary.json`` lists them under ``primary``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from ..contract.errors import ConfigError


def primary_tasks(cfg: Any) -> list[str]:
    """The tasks marked ``primary: true`` in a validated spec, in spec order."""
    return [name for name, node in cfg.tasks.items() if node.get("primary", False)]


def selection(select: str | None, tasks: Mapping[str, Any], primary: list[str]) -> tuple[str, str]:
    """``(task, metric)`` choosing the best checkpoint: ``train.select`` when given (checked),
    else the first primary task's (or the first task's) first metric, ``loss`` without one."""
    if select is None:
        first = tasks[primary[0]] if primary else next(iter(tasks.values()))
        return first.name, next(iter(first.metrics), "loss")
    task, _, key = select.partition(".")
    if task not in tasks or (key not in tasks[task].metrics and key != "loss"):
        options = [f"{n}.{k}" for n, tk in tasks.items() for k in [*tk.metrics, "loss"]]
        raise ConfigError(
            f"train.select: {select!r} is not a task metric; choose one of {', '.join(options)}"
        )
    return task, key


def better(value: float, best: Mapping[str, Any], higher: bool) -> bool:
    """Whether ``value`` beats the best so far (``best["value"]``; any finite value beats none)."""
    if not math.isfinite(value):
        return False
    return not best or (value > best["value"] if higher else value < best["value"])


__all__ = ["primary_tasks", "selection", "better"]
