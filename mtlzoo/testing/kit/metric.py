"""The metric contract: a direction, exact states (batching does not change the value) and
merged states (two instances reduce to the value of one)."""

from __future__ import annotations

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


def check_metric(zoo: Zoo, entry: Entry, folder: Path) -> list[Result]:
    """The metric contract (see the module docstring)."""
    torch = import_torch()
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

            def exact(mk: Any = make, p: Any = pred, t: Any = target) -> None:
                whole, split = mk(), mk()
                whole.update(p, t)
                for lo, hi in ((0, 1), (1, 3), (3, 6)):  # uneven batches: averages of averages differ
                    split.update(p[lo:hi], t[lo:hi])
                a, b = float(whole.compute()), float(split.compute())
                if not torch.isclose(torch.tensor(a), torch.tensor(b), rtol=1e-5, atol=1e-6):
                    raise AssertionError(
                        f"{a} over one batch of 6 but {b} over batches of 1, 2 and 3: states must be "
                        f"exact sums, not averages of batch averages"
                    )

            def merged(mk: Any = make, p: Any = pred, t: Any = target) -> None:
                whole, left, right = mk(), mk(), mk()
                whole.update(p, t)
                left.update(p[:3], t[:3])
                right.update(p[3:], t[3:])
                left.merge_state(right)
                a, b = float(whole.compute()), float(left.compute())
                if not torch.isclose(torch.tensor(a), torch.tensor(b), rtol=1e-5, atol=1e-6):
                    raise AssertionError(f"{a} from one instance but {b} from two merged instances")

            c.run(f"metric.exact[{kind.name}]", exact)
            c.run(f"metric.merge[{kind.name}]", merged)
    return c.results
