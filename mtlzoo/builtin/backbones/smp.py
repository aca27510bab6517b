"""The ``smp`` backbone: any segmentation-models-pytorch encoder.

Options in :mod:`mtlzoo.builtin.backbones`.
"""

from __future__ import annotations

import warnings

import timm
from segmentation_models_pytorch.encoders import get_encoder
from torch import Tensor, nn

from ...contract.backbone import Backbone
from ...contract.errors import CheckpointError, ConfigError, UnknownNameError, close_matches, one_line
from ...contract.features import FeatureInfo
from ...contract.weights import fit_prefix, load_strict, read_state_dict
from . import GIVE_FILE, SmpOptions, smp_names
from .pretrained import timm_overlay
from .timm import feature_list_stages, pretrained_stats

#: the statistics smp's own encoders' published (ImageNet) weights expect
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# keys a classifier checkpoint carries that a feature extractor has no use for
_CLASSIFIER_PREFIXES = ("fc.", "classifier.", "last_linear.", "head.", "heads.")


class SmpBackbone(Backbone):
    """Any segmentation-models-pytorch encoder (``get_encoder(arch, depth=depth, weights=None)``).

    smp encoders return ``depth + 1`` maps where map ``i`` has stride ``2**i``. Map 0, at
    stride 1, is the input image itself for most encoders and smp's own decoders never use
    it; transformer-style encoders put an empty 0-channel placeholder at stride 2. Both are
    dropped here, so ``forward`` returns only learned maps (strides 2 or 4 .. ``2**depth``)
    and ``feature_info`` matches it. A ``tu-`` encoder with ``pretrained: true`` (and no
    ``weights``) gets timm's published weights as the ``timm`` backbone does
    (:func:`.pretrained.timm_overlay`). With weights, ``input_mean``/``input_std`` are
    ImageNet's (timm's ``pretrained_cfg`` ones for a ``tu-`` encoder), else ``None``;
    ``size_divisor`` is the largest stride. The encoder is ``self.encoder``.
    """

    def __init__(self, options: SmpOptions):
        super().__init__()
        arch, depth, weights = options.arch, options.depth, options.weights
        self._check_name(arch)
        self.arch = arch
        # only tu- encoders get here with it (SmpOptions.check); smp passes the overlay to timm
        timm_pretrained = options.pretrained and not weights
        extra = {"pretrained_cfg_overlay": timm_overlay(arch[3:]) or None} if timm_pretrained else {}
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)  # smp's timm- names
                self.encoder = get_encoder(
                    arch, in_channels=3, depth=depth, weights=True if timm_pretrained else None, **extra
                )
        except Exception as exc:  # noqa: BLE001
            if timm_pretrained:
                raise CheckpointError(
                    f"smp cannot build encoder {arch!r} with depth {depth} and timm's pretrained "
                    f"weights: {one_line(exc)}; {GIVE_FILE}"
                ) from exc
            raise ConfigError(
                f"smp cannot build encoder {arch!r} with depth {depth}: {one_line(exc)}"
            ) from exc
        channels = list(self.encoder.out_channels)
        self._keep = [i for i in range(1, len(channels)) if channels[i] > 0]
        self.feature_info = [FeatureInfo(int(channels[i]), 2**i) for i in self._keep]
        self.size_divisor = max(fi.stride for fi in self.feature_info)
        if weights:
            own = self.encoder.state_dict()
            sd = read_state_dict(weights)
            sd = {k: v for k, v in sd.items() if k in own or not k.startswith(_CLASSIFIER_PREFIXES)}
            load_strict(self.encoder, fit_prefix(own, sd, ("encoder.",)), weights, f"smp encoder {arch!r}")
        if weights or timm_pretrained:
            if arch.startswith("tu-"):
                self.input_mean, self.input_std = pretrained_stats(self.encoder.model)
            else:
                self.input_mean, self.input_std = IMAGENET_MEAN, IMAGENET_STD

    @staticmethod
    def _check_name(arch: str) -> None:
        if arch.startswith("tu-"):
            if timm.is_model(arch[3:]):
                return
            choices = ["tu-" + n for n in timm.list_models()]
        else:
            choices = smp_names()
            if arch in choices:
                return
        hits = close_matches(arch, choices)
        hint = f"; closest: {', '.join(repr(h) for h in hits)}" if hits else ""
        raise UnknownNameError(
            f"unknown smp encoder {arch!r}{hint} (search them with `mtlzoo list backbone 'smp:*pattern*'`)"
        )

    def staged(self) -> list[nn.Module] | None:
        """Stages of ``tu-`` encoders (timm's feature modules) and of smp's ResNet-family
        encoders (stem; max-pool + layer1; layer2 ...); ``None`` for other encoders."""
        enc = self.encoder
        if self.arch.startswith("tu-"):
            if getattr(enc, "_is_channel_last", False) or getattr(enc, "_is_transformer_style", False):
                return None
            stages = feature_list_stages(enc.model)
            return stages if stages is not None and len(stages) == len(self.feature_info) else None
        if type(enc).__name__ == "ResNetEncoder":
            blocks = [
                nn.Sequential(enc.conv1, enc.bn1, enc.relu),
                nn.Sequential(enc.maxpool, enc.layer1),
                enc.layer2,
                enc.layer3,
                enc.layer4,
            ]
            return blocks[: len(self.feature_info)]
        return None

    def forward(self, images: Tensor) -> list[Tensor]:
        """Learned feature maps of ``images [B,3,H,W]``, fine to coarse."""
        features = self.encoder(images)
        return [features[i] for i in self._keep]
