"""Building blocks the built-in heads share: their base class, feature checks, resizing, conv blocks."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...contract.errors import ConfigError
from ...contract.features import FeatureInfo
from ...contract.layers import make_norm
from ...contract.settings import ShowsSettings


class Head(ShowsSettings, nn.Module):
    """Base of the built-in heads: ``repr(head)`` shows the options it was built with (the
    third argument of ``factory(feature_info, out_channels, options)``), or the plain keyword
    arguments of a head class that several factories build (``FusionHead``)."""

    options_position = 2


def feature_infos(feature_info: Sequence, out_channels: int, head: str) -> list[FeatureInfo]:
    """``feature_info`` as :class:`FeatureInfo`; :class:`ConfigError` naming ``head`` when
    the backbone gives no map or ``out_channels`` is below 1 (both come from the build,
    not from the head's options)."""
    infos = [FeatureInfo(int(c), int(s)) for c, s in feature_info]
    if not infos:
        raise ConfigError(f"head {head!r}: the backbone gives no feature maps")
    if int(out_channels) < 1:
        raise ConfigError(f"head {head!r}: out_channels must be >= 1, got {out_channels}")
    return infos


def as_size(size: Sequence[int]) -> tuple[int, int]:
    """``(h, w)`` as ints (``size`` may be a ``torch.Size`` or a list). Symbolic sizes stay
    symbolic: ``int()`` of one would fix the image size in a ``torch.export`` graph."""
    h, w = size
    return _dim(h), _dim(w)


def _dim(v: int | torch.SymInt) -> int | torch.SymInt:
    return v if isinstance(v, (int, torch.SymInt)) else int(v)


def resize(x: Tensor, size: Sequence[int]) -> Tensor:
    """Bilinearly resize ``x [B,C,h,w]`` to ``size`` (no-op when already that size)."""
    size = as_size(size)
    if tuple(x.shape[-2:]) == size:
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def conv_norm_relu(cin: int, cout: int, norm: str, kernel: int = 3) -> nn.Sequential:
    """``conv kxk -> norm -> ReLU`` (conv bias only when there is no norm)."""
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, padding=kernel // 2, bias=norm == "none"),
        make_norm(norm, cout),
        nn.ReLU(inplace=True),
    )


def convert_norm(module: nn.Module, norm: str) -> nn.Module:
    """Replace every ``BatchNorm2d`` inside ``module`` by the ``norm`` layer (for smp decoders,
    which are built with batch norm)."""
    if norm == "batch":
        return module
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            setattr(module, name, make_norm(norm, child.num_features))
        else:
            convert_norm(child, norm)
    return module
