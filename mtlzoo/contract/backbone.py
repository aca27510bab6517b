"""The backbone contract: feature maps plus what the backbone expects of its input.

A backbone is any ``nn.Module`` with the attributes below; :class:`Backbone` gives their
defaults, so a plugin may subclass it or set them itself.
"""

from __future__ import annotations

from collections.abc import Iterable

from torch import Tensor, nn

from .features import FeatureInfo

_UNUSED = "_mtlzoo_unused"


class Backbone(nn.Module):
    """Base class of backbones (optional: the attributes are the contract, not the class).

    Attributes:
        feature_info: channels and stride of each map ``forward`` returns, fine to coarse.
        input_mean, input_std: per-channel statistics (``[0, 1]`` units) the weights expect,
            e.g. ImageNet's for pretrained weights; ``None``: no expectation (random init),
            the model normalises with the dataset's statistics instead.
        size_divisor: input height and width must be multiples of it (1: any size).

    A backbone that can run stage by stage says so with :meth:`staged`.
    """

    feature_info: list[FeatureInfo] = []
    input_mean: tuple[float, float, float] | None = None
    input_std: tuple[float, float, float] | None = None
    size_divisor: int = 1

    def staged(self) -> list[nn.Module] | None:
        """The backbone as stages, or ``None`` when it cannot run stage by stage.

        Stage ``i`` maps feature map ``i - 1`` (the normalised images for ``i = 0``) to
        feature map ``i``, so running the stages in turn gives exactly ``forward``'s maps.
        Architectures that act between stages (MTAN, cross-stitch ...) need them; the
        modules are the backbone's own (no copies)."""
        return None


def mark_unused(params: nn.Parameter | Iterable[nn.Parameter]) -> None:
    """Mark shared parameters that receive no gradient by design (e.g. a stage whose output
    no head reads), so the first-step gradient check does not report them."""
    for p in [params] if isinstance(params, nn.Parameter) else params:
        setattr(p, _UNUSED, True)


def is_marked_unused(param: Tensor) -> bool:
    """True for a parameter given to :func:`mark_unused`."""
    return bool(getattr(param, _UNUSED, False))


__all__ = ["Backbone", "FeatureInfo", "mark_unused", "is_marked_unused"]
