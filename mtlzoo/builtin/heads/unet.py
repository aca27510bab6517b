"""The ``unet`` head: smp's U-Net decoder (options in :mod:`mtlzoo.builtin.heads`)."""

from __future__ import annotations

from collections.abc import Sequence

from segmentation_models_pytorch.decoders.unet.decoder import UnetDecoder
from torch import Tensor, nn

from ...contract.errors import ConfigError
from . import UnetOptions
from .common import Head, as_size, convert_norm, feature_infos


class UnetHead(Head):
    """U-Net decoder (smp's ``UnetDecoder``) + a 3x3 conv to ``out_channels``.

    Block ``i`` upsamples to the next finer map and concatenates it (skip connection); the
    last block upsamples straight to ``size`` without a skip, so the output has exactly the
    input's size whatever the finest stride (2 for resnet, 4 for convnext). Returns raw
    scores ``[B, out_channels, *size]``.
    """

    def __init__(self, feature_info: Sequence, out_channels: int, options: UnetOptions):
        super().__init__()
        infos = feature_infos(feature_info, out_channels, "unet")
        channels = list(options.decoder_channels)
        if len(channels) < len(infos):
            raise ConfigError(
                f"head 'unet': decoder_channels needs {len(infos)} positive widths (one per "
                f"feature map), got {channels}"
            )
        channels = channels[: len(infos)]
        # smp's decoder drops the first of its encoder maps (the stride-1 input) and only
        # reads its size: a 0-channel placeholder of the output size plays that part
        self.decoder = convert_norm(
            UnetDecoder(
                encoder_channels=[0] + [fi.channels for fi in infos],
                decoder_channels=channels,
                n_blocks=len(channels),
                use_norm="batchnorm",
                attention_type=options.attention,
            ),
            options.norm,
        )
        self.classifier = nn.Conv2d(channels[-1], out_channels, 3, padding=1)

    def forward(self, features: Sequence[Tensor], size: Sequence[int]) -> Tensor:
        """Scores ``[B, out_channels, *size]``."""
        first = features[0]
        placeholder = first.new_empty((first.shape[0], 0, *as_size(size)))
        return self.classifier(self.decoder([placeholder, *features]))
