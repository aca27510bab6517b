"""Small building blocks shared by plugins (public API for plugin authors too)."""

from __future__ import annotations

import math

from torch import nn

from .errors import ConfigError

NORMS = ("batch", "group", "none")


def make_norm(kind: str, channels: int) -> nn.Module:
    """Normalisation layer for ``channels`` maps: ``batch`` (BatchNorm2d), ``group``
    (GroupNorm with ``gcd(channels, 8)`` groups, so any width works) or ``none``.

    ``group`` and ``none`` keep no batch statistics: a model built with them gives the same
    result whatever the batch split (needed for exact distributed equivalence)."""
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "group":
        return nn.GroupNorm(math.gcd(channels, 8), channels)
    if kind == "none":
        return nn.Identity()
    raise ConfigError(f"norm must be one of {', '.join(NORMS)}, got {kind!r}")


def check_norm(kind: str, where: str) -> None:
    """Raise :class:`ConfigError` unless ``kind`` is one of :data:`NORMS`."""
    if kind not in NORMS:
        raise ConfigError(f"{where}: norm must be one of {', '.join(NORMS)}, got {kind!r}")
