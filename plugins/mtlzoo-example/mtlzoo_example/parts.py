"""The parts of mtlzoo-example (imported when one is first built). Public API only."""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import Metric

from mtlzoo import (
    Architecture,
    ArchitectureOutput,
    ArchitectureParts,
    Backbone,
    Combiner,
    DataError,
    DatasetInfo,
    Derivation,
    FeatureInfo,
    TargetInfo,
    TargetKind,
    TaskInfo,
    TaskType,
)

from .plugin import (
    SaliencyTaskOptions,
    SoftDiceOptions,
    StripesOptions,
    TaskAdaptersOptions,
    TinyConvNetOptions,
    TinyHeadOptions,
)


class TinyConvNet(Backbone):
    """Three stride-2 conv stages; feature maps at strides 2, 4, 8. Random init: it expects
    no particular input statistics (the model uses the dataset's)."""

    def __init__(self, options: TinyConvNetOptions):
        super().__init__()
        chans = [options.width, 2 * options.width, 4 * options.width]
        layers, cin = [], 3
        for c in chans:
            layers.append(nn.Sequential(nn.Conv2d(cin, c, 3, stride=2, padding=1), nn.ReLU()))
            cin = c
        self.stages = nn.ModuleList(layers)
        self.feature_info = [FeatureInfo(c, 2 ** (i + 1)) for i, c in enumerate(chans)]

    def forward(self, x):
        """One map per stage, fine to coarse."""
        feats = []
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        return feats


class TinyHead(nn.Module):
    """1x1 convs on every map resized to the finest one, upsampled to the input size."""

    def __init__(self, feature_info, out_channels: int, options: TinyHeadOptions):
        super().__init__()
        cin = sum(fi.channels for fi in feature_info)
        self.net = nn.Sequential(
            nn.Conv2d(cin, options.hidden, 1), nn.ReLU(), nn.Conv2d(options.hidden, out_channels, 1)
        )

    def forward(self, features, size):
        """Scores ``[B, out_channels, *size]``."""
        target = features[0].shape[-2:]
        x = torch.cat([F.interpolate(f, size=target, mode="nearest") for f in features], dim=1)
        return F.interpolate(self.net(x), size=size, mode="bilinear", align_corners=False)


class SoftDiceLoss(nn.Module):
    """``1 - (2 sum(p t) + s) / (sum(p) + sum(t) + s)`` with ``p = sigmoid(pred)``."""

    def __init__(self, task: TaskInfo, options: SoftDiceOptions):
        super().__init__()
        self.smooth = options.smooth

    def forward(self, pred, target):
        """A scalar in [0, 1)."""
        p = torch.sigmoid(pred.float())
        t = target.float()
        return 1 - (2 * (p * t).sum() + self.smooth) / (p.sum() + t.sum() + self.smooth)


class SaliencyMAE(Metric):
    """Mean ``|sigmoid(pred) - target|`` over every pixel of the split (exact sums)."""

    higher_is_better = False
    full_state_update = False

    def __init__(self, task: TaskInfo):
        super().__init__()
        self.key = "mae"
        self.add_state("total", default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, pred, target):
        """Add a batch of logits and targets ``[B,1,H,W]``."""
        self.total += (torch.sigmoid(pred.float()) - target.float()).abs().sum().double()
        self.count += target.numel()

    def compute(self):
        """The split's mean absolute error."""
        return (self.total / self.count.clamp_min(1)).float()


class MaxWeighted(Combiner):
    """Weights each loss by its (detached) share of the total: larger losses count more."""

    def backward(self, losses, step):
        """Backpropagate the share-weighted sum of the losses."""
        stacked = self.stack(losses)
        weights = (stacked / stacked.sum()).detach() * len(self.task_names)
        step.backward((weights * stacked).sum())
        return {f"w/{t}": float(w) for t, w in zip(self.task_names, weights)}


class Stripes(torch.utils.data.Dataset):
    """Images of vertical stripes of 3 colours; the mask gives the colour class per pixel."""

    classes = ("red", "green", "blue")

    def __init__(self, split: str, options: StripesOptions):
        if split not in ("train", "val", "test"):
            raise DataError(f"stripes has no split {split!r}; use train, val or test")
        self.size, self.length = tuple(options.size), options.length
        self.seed = options.seed + {"train": 0, "val": 1, "test": 2}[split] * 100_000
        self.info = DatasetInfo("stripes", {"semseg": TargetInfo("segmentation", 3, self.classes, 255)})

    def __len__(self):
        return self.length

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(self.seed + i)
        h, w = self.size
        cuts = sorted(torch.randint(1, w, (2,), generator=g).tolist())
        mask = torch.zeros(h, w, dtype=torch.long)
        mask[:, cuts[0] : cuts[1]] = 1
        mask[:, cuts[1] :] = 2
        image = F.one_hot(mask, 3).permute(2, 0, 1).float() * 0.8 + 0.1 * torch.rand(3, h, w, generator=g)
        return {"image": image, "semseg": mask}


# -- the saliency target kind and task type -----------------------------------------------------------
def _check_saliency(t, info):
    bad = (t != 0) & (t != 1)
    return f"values must be 0 or 1, got {t[bad].unique()[:5].tolist()}" if bool(bad.any()) else None


def _example_saliency(info, h, w, g):
    return (torch.rand(1, h, w, generator=g) < 0.3).float()


def saliency_kind() -> TargetKind:
    """float32 [1,H,W], 1 on salient (foreground) pixels; padded with 0, resized nearest."""
    return TargetKind("saliency", (1, "H", "W"), "float32", check=_check_saliency, example=_example_saliency)


def foreground(mask, background: int, ignore_index):
    """Saliency map of a segmentation mask: 1 where the class is not ``background`` (nor void)."""
    out = mask != background
    if ignore_index is not None:
        out &= mask != ignore_index
    return out.float()[None]


def saliency_task(options: SaliencyTaskOptions) -> TaskType:
    """Saliency: one logit per pixel, soft Dice, MAE; ``from: <mask>`` derives it."""

    def derive(source: TargetInfo) -> Derivation:
        fn = functools.partial(foreground, background=options.background, ignore_index=source.ignore_index)
        return Derivation(TargetInfo("saliency"), fn)

    return TaskType(
        name="saliency",
        target_kinds=("saliency",),
        target="saliency",
        head={"name": "tiny_head"},
        loss={"name": "soft_dice"},
        metrics=[{"name": "saliency_mae"}],
        out_channels=lambda info: 1,
        derive=derive,
        derive_from=("segmentation",),
    )


class LowRankAdapter(nn.Module):
    """``x + up(down(x))`` with 1x1 convs through ``rank`` channels; ``up`` starts at zero, so
    a new adapter is the identity and training starts from the shared model."""

    def __init__(self, channels: int, rank: int):
        super().__init__()
        self.down = nn.Conv2d(channels, rank, 1, bias=False)
        self.up = nn.Conv2d(rank, channels, 1, bias=False)
        nn.init.zeros_(self.up.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.up(self.down(x))


class TaskAdapters(Architecture):
    """One shared backbone; each task passes every feature map through its own low-rank
    residual adapter before its head. The backbone is shared (its maps are the shared
    representation, so ``wrt: features`` combiners work); adapters and heads belong to their
    task. Written against mtlzoo's public architecture contract only."""

    def __init__(self, parts: ArchitectureParts, options: TaskAdaptersOptions):
        super().__init__()
        self.backbone = parts.backbone
        self.heads = nn.ModuleDict(parts.heads)
        channels = [int(c) for c, _ in parts.backbone.feature_info]
        self.adapters = nn.ModuleDict(
            {t: nn.ModuleList(LowRankAdapter(c, options.rank) for c in channels) for t in parts.heads}
        )

    @property
    def task_names(self) -> list[str]:
        """Task names in spec order."""
        return list(self.heads)

    def run(self, images: torch.Tensor) -> ArchitectureOutput:
        """Shared maps, then per task: adapters, head."""
        feats = list(self.backbone(images))
        size = tuple(images.shape[-2:])
        preds = {t: self.heads[t]([a(f) for a, f in zip(self.adapters[t], feats)], size) for t in self.heads}
        return ArchitectureOutput(preds, shared=feats)

    def shared_parameters(self) -> list[nn.Parameter]:
        """The backbone's."""
        return [p for p in self.backbone.parameters() if p.requires_grad]

    def task_parameters(self, task: str) -> list[nn.Parameter]:
        """The task's adapters and head."""
        params = [*self.adapters[task].parameters(), *self.heads[task].parameters()]
        return [p for p in params if p.requires_grad]
