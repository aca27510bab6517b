"""User-facing errors.

Every error a user can cause (a bad config, an unknown name, a broken file, a broken
plugin) is an :class:`MtlzooError`. The CLI prints it as one line (``error: ...``) and
shows the traceback only with ``--debug``.
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


class DuplicateNameError(MtlzooError):
    """Two plugins registered the same name in the same registry."""


class PluginError(MtlzooError):
    """A plugin failed to import or to register (raised only in strict mode)."""


class DataError(MtlzooError):
    """A dataset file is missing, unreadable or inconsistent."""


class TrainingError(MtlzooError):
    """Training cannot go on (a loss became NaN or infinite, ...)."""


class CheckpointError(MtlzooError):
    """A checkpoint is missing, unreadable, or does not match the model."""


def close_matches(word: str, choices: Iterable[str], n: int = 3) -> list[str]:
    """Return up to ``n`` entries of ``choices`` that look like ``word`` (best first)."""
    choices = list(choices)
    lowered = {c.lower(): c for c in choices}
    hits = difflib.get_close_matches(word.lower(), list(lowered), n=n, cutoff=0.5)
    # substring hits catch abbreviations difflib misses ("res18" vs "resnet18" is not one)
    for c in choices:
        if len(hits) >= n:
            break
        if word.lower() in c.lower() and c.lower() not in hits:
            hits.append(c.lower())
    return [lowered[h] for h in hits]


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """Format a ``did you mean ...?`` suffix, or an empty string if nothing is close."""
    hits = close_matches(word, choices)
    if not hits:
        return ""
    return " (did you mean " + " or ".join(repr(h) for h in hits) + "?)"
