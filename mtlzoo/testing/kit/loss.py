"""The loss contract: a finite scalar with finite gradients for each declared target kind."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...zoo.registry import Entry
from .common import (
    Checks,
    Result,
    build_part,
    import_torch,
    option_sets,
    target_batch,
    task_setups,
)

if TYPE_CHECKING:
    from mtlzoo.zoo.zoo import Zoo


def check_loss(zoo: Zoo, entry: Entry, folder: Path) -> list[Result]:
    """The loss contract (see the module docstring)."""
    from ...contract import checks

    torch = import_torch()
    c = Checks(entry.label)
    setups = c.run("targets", lambda: task_setups(zoo, entry)) or []
    for values in c.run("examples", lambda: option_sets(entry, folder)) or []:
        for tinfo, kind, channels in setups:
            loss = c.run("factory", partial(build_part, zoo, entry, values, tinfo))
            if loss is None:
                continue

            def scalar(fn: Any = loss, t: Any = tinfo, k: Any = kind, ch: int = channels) -> None:
                pred, target = target_batch(k, t.target_info, ch, 4, 0)
                pred.requires_grad_(True)
                value = fn(pred, target)
                checks.loss_value(value, entry.label)
                if not bool(torch.isfinite(value)):
                    raise AssertionError(f"value {float(value)} is not finite")
                value.backward()
                if pred.grad is None or not bool(torch.isfinite(pred.grad).all()):
                    raise AssertionError("no finite gradient reaches the prediction")

            c.run(f"loss.scalar[{kind.name}]", scalar)
    return c.results
