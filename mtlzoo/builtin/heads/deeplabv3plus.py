"""The ``deeplabv3plus`` head: smp's DeepLabV3+ decoder (options in :mod:`mtlzoo.builtin.heads`)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from segmentation_models_pytorch.decoders.deeplabv3.decoder import DeepLabV3PlusDecoder
from torch import Tensor, nn

from ...contract.errors import ConfigError
from . import DeepLabV3PlusOptions
from .common import Head, convert_norm, feature_infos, resize


class DeepLabV3PlusHead(Head):
    """DeepLabV3+ decoder from smp's ``DeepLabV3PlusDecoder``: ASPP on the coarsest map,
    upsampled to the high-resolution map (the one at stride 4, or the nearest to it; its
    index is ``high``) and fused with it, then a 1x1 conv upsampled to ``size``: raw scores
    ``[B, out_channels, *size]``.

    Its ASPP image-pooling branch uses batch norm on a 1x1 map, so training with
    ``norm: batch`` needs batches of at least 2 images.
    """

    def __init__(self, feature_info: Sequence, out_channels: int, options: DeepLabV3PlusOptions):
        super().__init__()
        infos = feature_infos(feature_info, out_channels, "deeplabv3plus")
        if len(infos) < 2:
            raise ConfigError("head 'deeplabv3plus' needs at least 2 feature maps (a fine and a coarse one)")
        fine = infos[:-1]
        self.high = min(range(len(fine)), key=lambda i: (abs(fine[i].stride - 4), -fine[i].stride))
        # smp reads channels [-1] (ASPP input) and [2] (high-res skip) of its encoder list
        decoder = DeepLabV3PlusDecoder(
            encoder_channels=[0, 0, infos[self.high].channels, infos[-1].channels],
            encoder_depth=3,
            out_channels=options.channels,
            atrous_rates=options.atrous_rates,
            output_stride=16,
            aspp_separable=True,
            aspp_dropout=options.dropout,
        )
        # its fixed-factor upsampling assumes a dilated encoder: resize to the skip instead
        del decoder.up
        self.decoder = convert_norm(decoder, options.norm)
        self.classifier = nn.Conv2d(options.channels, out_channels, 1)

    def forward(self, features: Sequence[Tensor], size: Sequence[int]) -> Tensor:
        """Scores ``[B, out_channels, *size]``."""
        high = features[self.high]
        x = resize(self.decoder.aspp(features[-1]), high.shape[-2:])
        x = self.decoder.block2(torch.cat([x, self.decoder.block1(high)], dim=1))
        return resize(self.classifier(x), size)
