"""Small building blocks shared by plugins (public API for plugin authors too).

Importing this module does not import torch (option dataclasses use :data:`Norm`); the
builders import it when they run.
"""

from __future__ import annotations

import math
import typing
from typing import TYPE_CHECKING, Literal

from .errors import ConfigError

if TYPE_CHECKING:
    from torch import nn

#: the ``norm`` option of built-in backbones and heads
Norm = Literal["batch", "group", "none"]
NORMS: tuple[str, ...] = typing.get_args(Norm)


def make_norm(kind: str, channels: int) -> nn.Module:
    """Normalisation layer for ``channels`` maps: ``batch`` (BatchNorm2d), ``group``
    (GroupNorm with ``gcd(channels, 8)`` groups, so any width works) or ``none``.

    ``group`` and ``none`` keep no batch statistics: a model built with them gives the same
    result whatever the batch split (needed for exact distributed equivalence)."""
    from torch import nn

    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "group":
        return nn.GroupNorm(math.gcd(channels, 8), channels)
    if kind == "none":
        return nn.Identity()
    raise ConfigError(f"norm must be one of {', '.join(NORMS)}, got {kind!r}")
