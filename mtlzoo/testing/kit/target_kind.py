"""The target-kind contract: its example passes its own checks, also after the pipeline's
transforms."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...zoo.registry import Entry
from .common import (
    Checks,
    Result,
    import_torch,
)

if TYPE_CHECKING:
    from mtlzoo.zoo.zoo import Zoo


def check_target_kind(zoo: Zoo, entry: Entry, folder: Path) -> list[Result]:
    """The target-kind contract (see the module docstring)."""
    from ...contract.data import DatasetInfo, TargetInfo, sample_problems
    from ...runtime.pipeline import build_pipeline

    c = Checks(entry.label)
    kind = c.run("factory", lambda: zoo.target_kind(entry.name))
    if kind is None:
        return c.results
    info = TargetInfo(kind.name, 4, ("a", "b", "c", "d"), 255 if kind.pad == "ignore" else None)

    def example() -> None:
        torch = import_torch()
        if kind.example is None:
            raise AssertionError("no example(): losses and metrics for it cannot be checked")
        sample = {
            "image": torch.rand(3, 12, 16),
            "t": kind.example(info, 12, 16, torch.Generator().manual_seed(0)),
        }
        problems = sample_problems(sample, DatasetInfo("kit", {"t": info}), {kind.name: kind}, "example")
        if problems:
            raise AssertionError("; ".join(problems))

    c.run("target_kind.example", example)

    def transforms() -> None:
        from torch.utils.data import Dataset

        torch = import_torch()

        dataset_info = DatasetInfo("kit", {"t": info})

        class _One(Dataset[dict[str, Any]]):
            def __init__(self) -> None:
                self.info = dataset_info

            def __len__(self) -> int:
                return 4

            def __getitem__(self, i: int) -> dict[str, Any]:
                g = torch.Generator().manual_seed(i)
                return {"image": torch.rand(3, 12, 16, generator=g), "t": kind.example(info, 12, 16, g)}

        augment = {"resize": (10, 14), "scale": (0.8, 1.5), "crop": (12, 12), "hflip": 1.0}
        ds = build_pipeline(_One(), "train", augment, [], {kind.name: kind})
        for i in range(len(ds)):
            problems = sample_problems(ds[(0, i)], ds.info, {kind.name: kind}, f"augmented[{i}]")
            if problems:
                raise AssertionError("; ".join(problems))

    c.run("target_kind.transforms", transforms)
    return c.results
