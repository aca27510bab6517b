"""User-facing errors, and the one helper that turns any exception into one line.

Every error a user can cause (a bad config, an unknown name, a broken file, a broken
plugin) is an :class:`MtlzooError`. The CLI prints it as one line (``error: ...``) and
shows the traceback only with ``--debug``. Plugin code raises :class:`ConfigError` for bad
options and :class:`DataError` for bad files; anything else a factory raises is reported
by the zoo as ``<key path>: building <kind> '<name>' (plugin <p>) failed: ...``.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class MtlzooError(Exception):
    """Base class of every error meant to be read by a user, not a developer."""


class ConfigError(MtlzooError):
    """A spec is malformed: unknown key, wrong type, missing value, bad override."""


class UnknownNameError(MtlzooError, KeyError):
    """A name was looked up in a registry (or a list of choices) that does not hold it."""

    def __str__(self) -> str:  # KeyError would wrap the message in quotes
        return str(self.args[0]) if self.args else ""


class PluginError(MtlzooError):
    """A plugin failed to import or to register (raised only in strict mode), or a part
    broke its contract (wrong output shape, a factory with the wrong signature ...).

    ``tracebacks``: the plugins' own tracebacks behind the error (the frame inside a plugin
    where its import failed), which ``--debug`` prints."""

    def __init__(self, message: str = "", *, tracebacks: Iterable[str] = ()):
        super().__init__(message)
        self.tracebacks = list(tracebacks)


class DataError(MtlzooError):
    """A dataset file is missing, unreadable or inconsistent."""


class TrainingError(MtlzooError):
    """Training cannot go on (a loss became NaN or infinite, ...)."""


class CheckpointError(MtlzooError):
    """A checkpoint is missing, unreadable, or does not match the model."""


def one_line(exc: BaseException) -> str:
    """``TypeName: message`` on one line: the lines of the message joined with ``; ``.

    Multi-line messages (pluggy's validation errors, OmegaConf's full-key reports) keep
    every line, so the reason is never cut away."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    return f"{type(exc).__name__}: {'; '.join(lines)}".rstrip(": ")


def close_matches(word: str, choices: Iterable[str], n: int = 3) -> list[str]:
    """Return up to ``n`` entries of ``choices`` that look like ``word`` (best first)."""
    choices = [str(c) for c in choices]
    lowered = {c.lower(): c for c in choices}
    hits = difflib.get_close_matches(str(word).lower(), list(lowered), n=n, cutoff=0.5)
    # substring hits catch abbreviations difflib misses ("res18" vs "resnet18" is not one)
    for c in choices:
        if len(hits) >= n:
            break
        if str(word).lower() in c.lower() and c.lower() not in hits:
            hits.append(c.lower())
    return [lowered[h] for h in hits]


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """Format a `` (did you mean ...?)`` suffix, or an empty string if nothing is close."""
    hits = close_matches(word, choices)
    if not hits:
        return ""
    return " (did you mean " + " or ".join(repr(h) for h in hits) + "?)"


class SplitNotFound(DataError):
    """The dataset's layout has no such split (by design, not a bad file); ``data check``
    skips it, training with it fails with this message."""


class DataProblems(DataError):
    """Several files are bad; the message summarises, ``problems`` names each file
    (``"<path>: <problem>"``). ``dataset``, when set, is the dataset as far as it was built
    (its file list complete): ``data check`` then runs its full ``check()``, which reports
    these problems and every other bad file."""

    def __init__(self, message: str, problems: Iterable[str] = (), dataset: object = None):
        super().__init__(message)
        self.problems = list(problems) or [message]
        self.dataset = dataset


def raise_problems(what: str, problems: list[str], dataset: object = None, limit: int = 2) -> None:
    """Raise :class:`DataProblems` for ``problems`` (no-op when empty); the one-line message
    names the first ``limit`` files and says how to list all of them."""
    if not problems:
        return
    shown = "; ".join(problems[:limit]) + ("; ..." if len(problems) > limit else "")
    raise DataProblems(
        f"{what}: {len(problems)} bad file(s): {shown} (`mtlzoo data check SPEC` lists all)",
        problems,
        dataset,
    )
