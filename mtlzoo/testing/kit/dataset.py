"""The dataset contract: each split's ``info`` and samples agree."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...contract.errors import ConfigError, SplitNotFound, one_line
from ...zoo.registry import Entry
from .common import (
    Checks,
    Result,
    build_part,
    option_sets,
)

if TYPE_CHECKING:
    from mtlzoo.zoo.zoo import Zoo


def check_dataset(zoo: Zoo, entry: Entry, folder: Path) -> list[Result]:
    """The dataset contract (see the module docstring)."""
    from ...contract.data import DatasetInfo, sample_problems

    c = Checks(entry.label)
    for values in c.run("examples", lambda: option_sets(entry, folder)) or []:
        found = 0
        for split in ("train", "val", "test"):
            try:
                dataset = build_part(zoo, entry, values, split)
            except SplitNotFound:
                continue
            except ConfigError as exc:
                if "needs a value" in str(exc) and entry.examples is None:
                    c.fail(
                        "examples",
                        f"{exc}; register the dataset with examples= (a function writing a tiny "
                        f"copy of its layout) so it can be checked",
                    )
                    break
                c.fail(f"factory[{split}]", str(exc))
                continue
            except Exception as exc:  # noqa: BLE001
                c.fail(f"factory[{split}]", one_line(exc))
                continue
            found += 1

            def samples(ds: Any = dataset, s: str = split) -> None:
                info = getattr(ds, "info", None)
                if not isinstance(info, DatasetInfo):
                    raise AssertionError(f"info is {type(info).__name__}, not a DatasetInfo")
                kinds = {t.kind: zoo.target_kind(t.kind) for t in info.targets.values()}
                n = len(ds)
                if n == 0:
                    raise AssertionError("the split is empty")
                problems = []
                for i in sorted({0, 1, 2, n - 1} & set(range(n))):
                    problems += sample_problems(ds[i], info, kinds, f"{s}[{i}]")
                if problems:
                    raise AssertionError("; ".join(problems[:3]) + (" ..." if len(problems) > 3 else ""))

            c.run(f"dataset.samples[{split}]", samples)
        if not found and not c.failed("examples"):
            c.fail("dataset.splits", "no split (train, val, test) could be built")
    return c.results
