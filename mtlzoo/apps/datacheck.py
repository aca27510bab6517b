"""``mtlzoo data check SPEC``: scan every file and every sample of a dataset, report every problem.

Three levels of checking, for any dataset plugin:

* **at construction** (cheap: directory listings, file headers) a dataset raises
  :class:`~mtlzoo.DataError` for a missing root, split file or folder, an empty split, files
  listed but absent; where several files are at fault it raises
  :class:`~mtlzoo.DataProblems`, whose ``problems`` name each one;
* **``dataset.check() -> list[str]``** (optional, full decode of every file): one message per
  bad file (unreadable or truncated image, mask size differing from its image ...);
* **every sample against the dataset's info**: each declared target present, with the dtype
  and shape of its target kind and values its kind accepts (classes in range, 0/1 boundary
  maps, finite depth, unit normals ...), the image float32 ``[3,H,W]`` in [0, 1]
  (:func:`mtlzoo.contract.data.sample_problems`).

A split the layout simply does not have (:class:`~mtlzoo.SplitNotFound`) is skipped.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from ..contract.data import DatasetInfo, sample_problems
from ..contract.errors import DataError, DataProblems, SplitNotFound, one_line
from ..zoo.parts import Part
from ..zoo.spec import resolve_part

if TYPE_CHECKING:
    from ..zoo.zoo import Zoo

DEFAULT_SPLITS = ("train", "val", "test")


def _samples(
    dataset: Any, info: DatasetInfo, kinds: dict[str, Any], where: str, files_checked: bool
) -> list[str]:
    problems = []
    for i in range(len(dataset)):
        try:
            sample = dataset[i]
        except Exception as exc:  # noqa: BLE001 - report whatever the plugin raises, per sample
            if not files_checked:  # else its check() already named the bad file
                problems.append(f"{where}[{i}]: {one_line(exc)}")
            continue
        problems.extend(sample_problems(sample, info, kinds, f"{where}[{i}]"))
    return problems


def check_dataset(zoo: Zoo, node: Part | Any, splits: Iterable[str] = DEFAULT_SPLITS) -> list[str]:
    """Every problem of every split of the dataset of a spec's ``data`` node (a validated
    :class:`~mtlzoo.zoo.parts.Part`, or a node ``{name, **options}`` validated here), one
    message each (empty: all good). A dataset without ``info`` is one more problem here, not
    an error."""
    problems: list[str] = []
    missing: list[str] = []
    found = 0
    part = node if isinstance(node, Part) else resolve_part(node, zoo.registries, "dataset", "data")
    name = part.name
    for split in splits:
        try:
            dataset = zoo.call(part.entry, split, options=part.options, path="data")
        except SplitNotFound as exc:
            missing.append(f"{split} ({exc})")
            continue
        except DataProblems as exc:
            found += 1
            if exc.dataset is None:
                problems.extend(exc.problems)
                continue
            dataset = exc.dataset  # built as far as it could be: its check() reports these problems too
            if not callable(getattr(dataset, "check", None)):
                problems.extend(exc.problems)
        except DataError as exc:
            found += 1
            problems.append(str(exc))
            continue
        else:
            found += 1
        check = getattr(dataset, "check", None)
        if callable(check):
            problems.extend(check())
        info = getattr(dataset, "info", None)
        if not isinstance(info, DatasetInfo):
            problems.append(f"{name} {split}: the dataset has no `info: DatasetInfo` attribute")
            continue
        kinds = {}
        for key, t in info.targets.items():
            try:
                kinds[t.kind] = zoo.target_kind(t.kind)
            except Exception as exc:  # noqa: BLE001 - an unknown kind is one more problem to report
                problems.append(f"{name} {split}: target {key!r}: {exc}")
        problems.extend(_samples(dataset, info, kinds, f"{info.name} {split}", callable(check)))
    if not found:
        problems.append("no split found: " + "; ".join(missing))
    return problems


__all__ = ["check_dataset", "DEFAULT_SPLITS"]
