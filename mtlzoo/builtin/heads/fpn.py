"""The ``fpn`` head: smp's FPN decoder (options in :mod:`mtlzoo.builtin.heads`)."""

from __future__ import annotations

from collections.abc import Sequence

from segmentation_models_pytorch.decoders.fpn.decoder import FPNDecoder
from torch import Tensor, nn

from ...contract.errors import ConfigError
from . import FPNOptions
from .common import Head, feature_infos, resize


class FPNHead(Head):
    """FPN decoder (smp's ``FPNDecoder``) on the four coarsest maps + a 1x1 conv, upsampled to
    ``size``: raw scores ``[B, out_channels, *size]``. The four maps must have strides ``s,
    2s, 4s, 8s``; at sizes that are not a multiple of the coarsest stride the finer maps are
    resized to exact doublings first (smp's top-down path upsamples by exactly 2)."""

    def __init__(self, feature_info: Sequence, out_channels: int, options: FPNOptions):
        super().__init__()
        infos = feature_infos(feature_info, out_channels, "fpn")
        if len(infos) < 4:
            raise ConfigError(
                f"head 'fpn' needs at least 4 feature maps, the backbone gives {len(infos)}; "
                f"use head 'unet' or 'fcn', or a deeper backbone"
            )
        last4 = infos[-4:]
        if any(b.stride != 2 * a.stride for a, b in zip(last4, last4[1:])):
            raise ConfigError(
                f"head 'fpn' needs its 4 coarsest maps at strides s, 2s, 4s, 8s; got "
                f"{[fi.stride for fi in last4]}"
            )
        self.decoder = FPNDecoder(
            encoder_channels=[fi.channels for fi in last4],
            encoder_depth=3,  # only the 4 maps above are read
            pyramid_channels=options.pyramid_channels,
            segmentation_channels=options.segmentation_channels,
            dropout=options.dropout,
        )
        self.classifier = nn.Conv2d(self.decoder.out_channels, out_channels, 1)

    def forward(self, features: Sequence[Tensor], size: Sequence[int]) -> Tensor:
        """Scores ``[B, out_channels, *size]``."""
        maps = list(features[-4:])
        h, w = maps[-1].shape[-2:]
        maps = [resize(m, (h * 2 ** (3 - i), w * 2 ** (3 - i))) for i, m in enumerate(maps)]
        return resize(self.classifier(self.decoder(maps)), size)
