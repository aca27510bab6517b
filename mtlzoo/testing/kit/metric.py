"""The metric contract: a direction, a finite value (a scalar or one per class), exact states
(batching does not change the value) and merged states (two instances reduce to the value of
one)."""

from __future__ import annotations

import math
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


def _values(value: Any) -> Any:
    """``compute()``'s result as a flat float64 tensor (a scalar, or one value per class)."""
    torch = import_torch()
    return torch.as_tensor(value).detach().double().flatten().cpu()


def _same(a: Any, b: Any) -> bool:
    torch = import_torch()
    return a.shape == b.shape and bool(torch.allclose(a, b, rtol=1e-5, atol=1e-6, equal_nan=True))


def _text(value: Any) -> str:
    return f"{value.item()}" if value.numel() == 1 else str([round(v, 6) for v in value.tolist()])


def check_metric(zoo: Zoo, entry: Entry, folder: Path) -> list[Result]:
    """The metric contract (see the module docstring)."""
    c = Checks(entry.label)
    setups = c.run("targets", lambda: task_setups(zoo, entry)) or []
    for values in c.run("examples", lambda: option_sets(entry, folder)) or []:
        for tinfo, kind, channels in setups:

            def make(v=values, t=tinfo):
                return build_part(zoo, entry, v, t)

            metric = c.run("factory", make)
            if metric is None:
                continue

            def direction(m: Any = metric) -> None:
                if getattr(m, "higher_is_better", None) is None:
                    raise AssertionError("higher_is_better is not set")

            c.run("metric.higher_is_better", direction)
            pred, target = target_batch(kind, tinfo.target_info, channels, 6, 1)

            def finite(mk: Any = make, p: Any = pred, t: Any = target) -> None:
                whole = mk()
                whole.update(p, t)
                value = _values(whole.compute())
                bad = [i for i, v in enumerate(value.tolist()) if not math.isfinite(v)]
                if bad:
                    where = (
                        ""
                        if value.numel() == 1
                        else f" at {len(bad)} of {value.numel()} entries (e.g. {bad[0]})"
                    )
                    raise AssertionError(
                        f"compute() returned {value[bad[0]].item()}{where} over 6 samples of valid targets "
                        f"and random predictions; a metric's value is finite"
                    )

            def exact(mk: Any = make, p: Any = pred, t: Any = target) -> None:
                whole, split = mk(), mk()
                whole.update(p, t)
                for lo, hi in ((0, 1), (1, 3), (3, 6)):  # uneven batches: averages of averages differ
                    split.update(p[lo:hi], t[lo:hi])
                a, b = _values(whole.compute()), _values(split.compute())
                if not _same(a, b):
                    raise AssertionError(
                        f"{_text(a)} over one batch of 6 but {_text(b)} over batches of 1, 2 and 3: states "
                        f"must be exact sums, not averages of batch averages"
                    )

            def merged(mk: Any = make, p: Any = pred, t: Any = target) -> None:
                whole, left, right = mk(), mk(), mk()
                whole.update(p, t)
                left.update(p[:3], t[:3])
                right.update(p[3:], t[3:])
                left.merge_state(right)
                a, b = _values(whole.compute()), _values(left.compute())
                if not _same(a, b):
                    raise AssertionError(
                        f"{_text(a)} from one instance but {_text(b)} from two merged instances"
                    )

            c.run(f"metric.finite[{kind.name}]", finite)
            if c.failed(f"metric.finite[{kind.name}]"):
                continue  # a NaN fails every comparison below: report it once, as what it is
            c.run(f"metric.exact[{kind.name}]", exact)
            c.run(f"metric.merge[{kind.name}]", merged)
    return c.results
