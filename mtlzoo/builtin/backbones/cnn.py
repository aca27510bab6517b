"""The ``cnn`` backbone: a small plain CNN (options in :mod:`mtlzoo.builtin.backbones`)."""

from __future__ import annotations

from torch import Tensor, nn

from ...contract.backbone import Backbone
from ...contract.features import FeatureInfo
from ...contract.layers import make_norm
from . import CNNOptions


class CNNBackbone(Backbone):
    """A small plain CNN for tests, demos and the "small shared CNN" setup.

    Each stage is ``conv3x3 stride 2 -> norm -> ReLU -> conv3x3 -> norm -> ReLU``; stage ``i``
    outputs ``channels[i]`` maps at stride ``2**(i+1)``. Randomly initialised, it expects no
    particular input statistics (``input_mean``/``input_std`` ``None``) and takes any input
    size (``size_divisor`` 1: odd sizes round up at each stride-2 conv).
    """

    def __init__(self, options: CNNOptions):
        super().__init__()
        norm = options.norm
        bias = norm == "none"  # a norm layer right after a conv makes its bias redundant
        stages = []
        cin = 3
        for c in options.channels:
            stages.append(
                nn.Sequential(
                    nn.Conv2d(cin, c, 3, stride=2, padding=1, bias=bias),
                    make_norm(norm, c),
                    nn.ReLU(inplace=True),
                    nn.Conv2d(c, c, 3, padding=1, bias=bias),
                    make_norm(norm, c),
                    nn.ReLU(inplace=True),
                )
            )
            cin = c
        self.stages = nn.ModuleList(stages)
        self.feature_info = [FeatureInfo(c, 2 ** (i + 1)) for i, c in enumerate(options.channels)]

    def staged(self) -> list[nn.Module]:
        """Its stages: stage ``i`` is the block producing map ``i``."""
        return list(self.stages)

    def forward(self, images: Tensor) -> list[Tensor]:
        """One feature map per stage, fine to coarse."""
        out = []
        x = images
        for stage in self.stages:
            x = stage(x)
            out.append(x)
        return out
