"""``mtlzoo data check SPEC``: scan every file of every split of a dataset, report every bad one.

Two levels of checking, shared by all dataset plugins:

* **at construction** (cheap: directory listings, file headers) a dataset raises
  :class:`~mtlzoo.errors.DataError` for a missing root, split file or folder, an empty
  split, files listed but absent. Where several files are at fault it raises
  :class:`DataProblems`, whose ``problems`` list names each one;
* **``dataset.check() -> list[str]``** (optional, full decode of every file): one message per
  bad file, ``"<path>: <problem>"`` (unreadable or truncated image, mask size differing from
  its image, label outside the class range other than the ignore value ...).

:func:`check_dataset` runs both for each split. A dataset whose layout simply has no such
split (NYUv2 has no ``test``) raises :class:`SplitNotFound`, which is skipped rather than
reported. A dataset without ``check`` is checked by loading every sample.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from .errors import DataError

DEFAULT_SPLITS = ("train", "val", "test")


class SplitNotFound(DataError):
    """The dataset's layout has no such split (by design, not a bad file); ``data check``
    skips it, training with it fails with this message."""


class DataProblems(DataError):
    """Several files are bad; the message summarises, ``problems`` names each file
    (``"<path>: <problem>"``). ``dataset``, when set, is the dataset as far as it was built
    (its file list complete): ``data check`` then runs its full ``check()``, which reports
    these problems and every other bad file."""

    def __init__(self, message: str, problems: Iterable[str] = (), dataset: Any = None):
        super().__init__(message)
        self.problems = list(problems) or [message]
        self.dataset = dataset


def raise_problems(what: str, problems: list[str], dataset: Any = None, limit: int = 2) -> None:
    """Raise :class:`DataProblems` for ``problems`` (no-op when empty); the one-line message
    names the first ``limit`` files and says how to list all of them."""
    if not problems:
        return
    shown = "; ".join(problems[:limit]) + ("; ..." if len(problems) > limit else "")
    raise DataProblems(f"{what}: {len(problems)} bad file(s): {shown} (`mtlzoo data check SPEC` lists all)",
                       problems, dataset)


def _check_by_loading(dataset: Any, where: str) -> list[str]:
    problems = []
    for i in range(len(dataset)):
        try:
            dataset[i]
        except Exception as exc:  # noqa: BLE001 - report whatever the plugin raises, per sample
            msg = str(exc).strip().splitlines()
            problems.append(f"{where}[{i}]: {type(exc).__name__}: {msg[0] if msg else ''}")
    return problems


def check_dataset(dataset_factory: Callable[..., Any], options: dict[str, Any],
                  splits: Iterable[str] = DEFAULT_SPLITS) -> list[str]:
    """Scan every file of every split of a dataset and return one message per problem
    (empty: all good).

    ``dataset_factory(split, **options)`` is the registered factory. A split the layout
    does not have (:class:`SplitNotFound`) is skipped; if no split at all could be found
    that is reported. Construction errors are reported (each file of a
    :class:`DataProblems`), then ``dataset.check()`` when the dataset has it, else every
    sample is loaded.
    """
    problems: list[str] = []
    missing: list[str] = []
    found = 0
    for split in splits:
        try:
            dataset = dataset_factory(split, **options)
        except SplitNotFound as exc:
            missing.append(f"{split} ({exc})")
            continue
        except DataProblems as exc:
            found += 1
            check = getattr(exc.dataset, "check", None)
            problems.extend(check() if callable(check) else exc.problems)
            continue
        except DataError as exc:
            found += 1
            problems.append(str(exc))
            continue
        found += 1
        check = getattr(dataset, "check", None)
        if callable(check):
            problems.extend(check())
        else:
            name = getattr(getattr(dataset, "info", None), "name", type(dataset).__name__)
            problems.extend(_check_by_loading(dataset, f"{name} {split}"))
    if not found:
        problems.append("no split found: " + "; ".join(missing))
    return problems


__all__ = ["check_dataset", "SplitNotFound", "DataProblems", "raise_problems", "DEFAULT_SPLITS"]
