"""The plugin module named by this package's ``mtlzoo`` entry point.

It only imports mtlzoo's public API: ``hookimpl``, ``FeatureInfo``, ``Combiner``,
``DatasetInfo``/``TargetInfo`` and the errors.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from mtlzoo import hookimpl
from mtlzoo.combine import Combiner
from mtlzoo.data import DatasetInfo, TargetInfo
from mtlzoo.errors import DataError
from mtlzoo.model import FeatureInfo


@dataclass
class TinyConvNetOptions:
    """Options of ``tiny_convnet``."""

    width: int = 8


class TinyConvNet(nn.Module):
    """Three stride-2 conv stages; feature maps at strides 2, 4, 8."""

    def __init__(self, width: int = 8):
        super().__init__()
        chans = [width, 2 * width, 4 * width]
        layers, cin = [], 3
        for c in chans:
            layers.append(nn.Sequential(nn.Conv2d(cin, c, 3, stride=2, padding=1), nn.ReLU()))
            cin = c
        self.stages = nn.ModuleList(layers)
        self.feature_info = [FeatureInfo(c, 2 ** (i + 1)) for i, c in enumerate(chans)]

    def forward(self, x):
        feats = []
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        return feats


@dataclass
class TinyHeadOptions:
    """Options of ``tiny_head``."""

    hidden: int = 16


class TinyHead(nn.Module):
    """1x1 convs on the finest feature map, upsampled to the input size."""

    def __init__(self, feature_info, out_channels: int, hidden: int = 16):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(feature_info[0].channels, hidden, 1), nn.ReLU(),
                                 nn.Conv2d(hidden, out_channels, 1))

    def forward(self, features, size):
        return F.interpolate(self.net(features[0]), size=size, mode="bilinear", align_corners=False)


class MaxWeighted(Combiner):
    """Weights each loss by its (detached) share of the total: larger losses count more."""

    def backward(self, losses, step):
        stacked = self.stack(losses)
        weights = (stacked / stacked.sum()).detach() * len(self.task_names)
        step.backward((weights * stacked).sum())
        return {f"w/{t}": float(w) for t, w in zip(self.task_names, weights)}


@dataclass
class StripesOptions:
    """Options of ``stripes``."""

    size: list[int] = field(default_factory=lambda: [32, 32])
    length: int = 64
    seed: int = 0


class Stripes(torch.utils.data.Dataset):
    """Images of vertical stripes of 3 colours; the mask gives the colour class per pixel."""

    classes = ("red", "green", "blue")

    def __init__(self, split: str, size=(32, 32), length: int = 64, seed: int = 0):
        if split not in ("train", "val", "test"):
            raise DataError(f"stripes has no split {split!r}; use train, val or test")
        self.size, self.length = tuple(size), length
        self.seed = seed + {"train": 0, "val": 1, "test": 2}[split] * 100_000
        self.info = DatasetInfo("stripes", {
            "semseg": TargetInfo("segmentation", 3, self.classes, 255),
        })

    def __len__(self):
        return self.length

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(self.seed + i)
        h, w = self.size
        cuts = sorted(torch.randint(1, w, (2,), generator=g).tolist())
        mask = torch.zeros(h, w, dtype=torch.long)
        mask[:, cuts[0]:cuts[1]] = 1
        mask[:, cuts[1]:] = 2
        image = F.one_hot(mask, 3).permute(2, 0, 1).float() * 0.8 + 0.1 * torch.rand(3, h, w, generator=g)
        return {"image": image, "semseg": mask}


@hookimpl
def register_backbones(register):
    """Register ``tiny_convnet``."""
    register("tiny_convnet", TinyConvNet, TinyConvNetOptions, "Three-stage CNN from mtlzoo-example")


@hookimpl
def register_heads(register):
    """Register ``tiny_head``."""
    register("tiny_head", TinyHead, TinyHeadOptions, "1x1-conv head from mtlzoo-example")


@hookimpl
def register_combiners(register):
    """Register ``max_weighted``."""
    register("max_weighted", MaxWeighted, None, "Loss-share weighting from mtlzoo-example")


@hookimpl
def register_datasets(register):
    """Register ``stripes``."""
    register("stripes", Stripes, StripesOptions, "Coloured stripes (segmentation) from mtlzoo-example")
