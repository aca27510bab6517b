"""The feature spec heads consume: channels and stride of each backbone map (torch-free)."""

from __future__ import annotations

from typing import NamedTuple


class FeatureInfo(NamedTuple):
    """Channels and stride (input pixels per feature pixel) of one backbone feature map."""

    channels: int
    stride: int


__all__ = ["FeatureInfo"]
