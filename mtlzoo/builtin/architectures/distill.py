"""``padnet`` and ``mti_net``: initial per-task predictions, multi-modal distillation, final
predictions (options in :mod:`mtlzoo.builtin.architectures`)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...contract.architecture import Architecture, ArchitectureOutput, ArchitectureParts, unique
from ...contract.errors import ConfigError
from ...contract.features import FeatureInfo
from . import MTINetOptions, PADNetOptions
from .blocks import (
    BasicBlock,
    Bottleneck,
    SpatialAttention,
    SqueezeExcitation,
    as_prediction,
    is_dense,
    resize,
    select_scales,
)
from .experts import scales_read


def _heads(parts: ArchitectureParts, info: list[FeatureInfo], label: str) -> dict[str, nn.Module]:
    """The tasks' heads for maps shaped ``info``: the spec's heads when that is the
    backbone's ``feature_info``, otherwise new ones of the same kind (``parts.make_head``)."""
    backbone = [FeatureInfo(int(c), int(s)) for c, s in parts.backbone.feature_info]
    if info == backbone:
        return dict(parts.heads)
    if parts.make_head is None:
        raise ConfigError(f"{label} builds its heads for its own maps, but parts.make_head is not given")
    maps = ", ".join(f"{fi.channels} channels at stride {fi.stride}" for fi in info)
    try:
        return {t: parts.make_head(t, info) for t in parts.heads}
    except ConfigError as exc:
        raise ConfigError(
            f"{label} builds each task's head for its maps ({maps}): {exc}; pick a head that reads them"
        ) from None


class Distillation(nn.Module):
    """PAD-Net's multi-modal distillation at one scale: each task's features plus the
    attention-gated messages of every other task's features (:class:`SpatialAttention`).

    ``receivers``: the tasks whose distilled features are used at this scale (default: all);
    every task still sends messages to them."""

    def __init__(self, names: Sequence[str], channels: int, receivers: Sequence[str] | None = None):
        super().__init__()
        self.names = list(names)
        self.receivers = list(names) if receivers is None else [t for t in names if t in receivers]
        self.messages = nn.ModuleDict(
            {
                t: nn.ModuleDict({s: SpatialAttention(channels) for s in names if s != t})
                for t in self.receivers
            }
        )

    def forward(self, feats: dict[str, Tensor]) -> dict[str, Tensor]:
        """The distilled features of every receiving task."""
        out = {}
        for t in self.receivers:
            x = feats[t]
            for s, block in self.messages[t].items():
                x = x + block(feats[s])
            out[t] = x
        return out

    def task_parameters(self, task: str) -> list[nn.Parameter]:
        """The blocks that send messages to ``task`` (only its loss uses them)."""
        return list(self.messages[task].parameters()) if task in self.messages else []


class _Distilling(Architecture):
    """What PAD-Net and MTI-Net share: a backbone, deep supervision, the tasks' heads."""

    def __init__(self, parts: ArchitectureParts):
        super().__init__()
        self.backbone = parts.backbone
        self.names = list(parts.heads)
        self.out_channels = {t: int(parts.tasks[t].out_channels) for t in self.names}

    @property
    def task_names(self) -> list[str]:
        """Task names in spec order."""
        return self.names

    def _finish_heads(self, heads: dict[str, nn.Module], info: list[FeatureInfo]) -> None:
        self.heads = nn.ModuleDict(heads)
        # initial predictions are maps for dense tasks, pooled for image-level ones
        self.dense = {t: is_dense(self.heads[t], info) for t in self.names}


class PADNet(_Distilling):
    """PAD-Net — Xu, Ouyang, Wang & Sebe, "PAD-Net: Multi-Tasks Guided Prediction-and-
    Distillation Network for Simultaneous Depth Estimation and Scene Parsing", CVPR 2018
    (implementation followed: Vandenhende et al.'s Multi-Task-Learning-PyTorch
    ``models/padnet.py``).

    The backbone's maps of stride >= ``min_stride`` are resized to the finest of them and
    concatenated; per task, two bottleneck blocks give the task's intermediate features
    ``F_t`` (``channels`` wide) and a 1x1 conv the initial prediction (deep supervision,
    resized to the image for dense tasks, averaged over the map for image-level ones). The
    multi-modal distillation gives task ``t`` the features ``F_t + sum_{s != t} conv(F_s) *
    sigmoid(conv(F_s))`` (spatial attention on each other task's features), from which the
    task's head makes the final prediction. Loss: ``L_t(final) + aux_weight * L_t(initial)``.

    Parameters: every task's intermediate branch feeds every task's distillation, so the
    backbone and the branches are shared; task ``t`` owns its initial 1x1 conv, the message
    blocks into ``t`` and its head. The shared representation is the tasks' intermediate
    features ``[F_1, ..., F_T]``: the last tensors every shared parameter reaches the losses
    through (``wrt: features`` differentiates there).

    Deviations: every task is both an intermediate (auxiliary) and a final task (the paper
    adds intermediate tasks without final ones, e.g. surface normals and contours for depth
    and scene parsing); the final predictions use the spec's head of each task, built for the
    distilled map, instead of the paper's decoder (Vandenhende et al.: two bottlenecks and a
    1x1 conv); the intermediate features come from the fused multi-scale backbone maps, as in
    Vandenhende et al.'s HRNet version, rather than the paper's single front-end map.
    """

    def __init__(self, parts: ArchitectureParts, options: PADNetOptions):
        super().__init__(parts)
        info = [FeatureInfo(int(c), int(s)) for c, s in parts.backbone.feature_info]
        self.scales = select_scales(info, options.min_stride)
        width, norm = options.channels, options.norm
        cin = sum(info[i].channels for i in self.scales)
        self.branches = nn.ModuleDict(
            {
                t: nn.Sequential(Bottleneck(cin, width, norm), Bottleneck(width, width, norm))
                for t in self.names
            }
        )
        self.initial = nn.ModuleDict({t: nn.Conv2d(width, self.out_channels[t], 1) for t in self.names})
        self.distillation = Distillation(self.names, width)
        head_info = [FeatureInfo(width, info[self.scales[0]].stride)]
        self._finish_heads(_heads(parts, head_info, "architecture 'padnet'"), head_info)
        self.aux_weight = float(options.aux_weight)

    def run(self, images: Tensor) -> ArchitectureOutput:
        """Backbone, intermediate features and initial predictions, distillation, final heads."""
        maps = list(self.backbone(images))
        first = maps[self.scales[0]]
        x = torch.cat([resize(maps[i], first.shape[-2:]) for i in self.scales], 1)
        feats = {t: self.branches[t](x) for t in self.names}
        size = tuple(images.shape[-2:])
        aux = {t: [as_prediction(self.initial[t](feats[t]), size, self.dense[t])] for t in self.names}
        distilled = self.distillation(feats)
        preds = {t: self.heads[t]([distilled[t]], size) for t in self.names}
        return ArchitectureOutput(preds, aux, list(feats.values()))

    def shared_parameters(self) -> list[nn.Parameter]:
        """The backbone and every task's intermediate branch."""
        return unique([*self.backbone.parameters(), *self.branches.parameters()])

    def task_parameters(self, task: str) -> list[nn.Parameter]:
        """The task's initial predictor, the distillation into it and its head."""
        return unique(
            [
                *self.initial[task].parameters(),
                *self.distillation.task_parameters(task),
                *self.heads[task].parameters(),
            ]
        )


class FeaturePropagation(nn.Module):
    """MTI-Net's feature propagation module at one scale: the concatenated task features go
    through a non-linear function whose per-channel softmax over the tasks selects features
    from each task; a residual block reduces the selection to one task's width, and each
    task adds its squeeze-and-excitation of it to its own features."""

    def __init__(self, tasks: int, channels: int, norm: str):
        super().__init__()
        total = tasks * channels
        hidden = max(total // 4, 1)
        self.tasks = tasks
        self.select = nn.Sequential(
            BasicBlock(total, hidden, norm), BasicBlock(hidden, hidden, norm), nn.Conv2d(hidden, total, 1)
        )
        self.reduce = BasicBlock(total, channels, norm)
        self.excite = nn.ModuleList(SqueezeExcitation(channels) for _ in range(tasks))

    def forward(self, feats: list[Tensor]) -> list[Tensor]:
        """Each task's features plus what it takes from the shared selection."""
        cat = torch.cat(feats, 1)
        b, _, h, w = cat.shape
        mask = F.softmax(self.select(cat).view(b, self.tasks, -1, h, w), dim=1)
        shared = self.reduce((mask * cat.view(b, self.tasks, -1, h, w)).view(b, -1, h, w))
        return [se(shared) + f for se, f in zip(self.excite, feats)]


class MTINet(_Distilling):
    """MTI-Net — Vandenhende, Georgoulis & Van Gool, "MTI-Net: Multi-Scale Task Interaction
    Networks for Multi-Task Learning", ECCV 2020 (code: Multi-Task-Learning-PyTorch
    ``models/mti_net.py``).

    The scales are the backbone maps of stride >= ``min_stride``. From the coarsest scale to
    the finest, per task, two basic residual blocks turn the backbone map (concatenated with
    the task's propagated features of the coarser scale, upsampled) into the task's features
    at that scale, and a 1x1 conv into an initial prediction (deep supervision at every
    scale); the feature propagation module (:class:`FeaturePropagation`) passes distilled
    task information from each scale to the next finer one. At every scale PAD-Net's
    multi-modal distillation refines each task's features with the other tasks' (at the scales
    the task's head reads: an image-level head that pools the coarsest map gets no messages at
    the finer ones); each task's head aggregates its distilled features of all scales (feature
    aggregation).
    Loss: ``L_t(final) + aux_weight * mean over scales of L_t(initial)``, ``aux_weight`` the
    number of scales by default (every scale's loss with weight 1, as the reference code).

    Parameters: the per-task features of every scale feed every task (distillation, and the
    propagation to finer scales), so the backbone, the per-scale task blocks and the
    propagation modules are shared; task ``t`` owns its initial 1x1 convs, the distillation
    into ``t`` and its head. The shared representation is every task's features at every
    scale.

    Deviations: the spec's head of each task does the feature aggregation (the reference code
    upsamples and concatenates the scales in an HRNet head); the propagation module's softmax
    runs over the tasks for each channel as the paper describes (the reference code's
    reshape groups consecutive channels of the concatenation instead); widths default to the
    backbone's (``channels`` narrows them; the paper's HRNet-18 widths are 18 to 144).
    """

    def __init__(self, parts: ArchitectureParts, options: MTINetOptions):
        super().__init__(parts)
        info = [FeatureInfo(int(c), int(s)) for c, s in parts.backbone.feature_info]
        self.scales = select_scales(info, options.min_stride)
        widths = (
            list(options.channels)
            if options.channels is not None
            else [info[i].channels for i in self.scales]
        )
        if len(widths) != len(self.scales):
            raise ConfigError(
                f"architecture 'mti_net': channels needs one width per scale, {len(self.scales)} for this "
                f"backbone and min_stride {options.min_stride} (strides "
                f"{[info[i].stride for i in self.scales]}), got {widths}"
            )
        norm, count = options.norm, len(self.scales)
        self.task_blocks = nn.ModuleList()
        for k, i in enumerate(self.scales):
            cin = info[i].channels + (widths[k + 1] if k + 1 < count else 0)
            self.task_blocks.append(
                nn.ModuleDict(
                    {
                        t: nn.Sequential(
                            BasicBlock(cin, widths[k], norm), BasicBlock(widths[k], widths[k], norm)
                        )
                        for t in self.names
                    }
                )
            )
        self.initial = nn.ModuleList(
            nn.ModuleDict({t: nn.Conv2d(w, self.out_channels[t], 1) for t in self.names}) for w in widths
        )
        # propagation from scale k to k - 1, for k = 1 .. count - 1
        self.propagation = nn.ModuleList(FeaturePropagation(len(self.names), w, norm) for w in widths[1:])
        head_info = [FeatureInfo(w, info[i].stride) for w, i in zip(widths, self.scales)]
        heads = _heads(parts, head_info, "architecture 'mti_net'")
        # distil into a task only at the scales its head reads (an image-level head pools the
        # coarsest map only): messages it never reads would be parameters that never train
        reads = {t: scales_read(heads[t], head_info, range(count)) for t in self.names}
        self.distillation = nn.ModuleList(
            Distillation(self.names, w, [t for t in self.names if reads[t][k]]) for k, w in enumerate(widths)
        )
        self._finish_heads(heads, head_info)
        self.aux_weight = float(count if options.aux_weight is None else options.aux_weight)

    def run(self, images: Tensor) -> ArchitectureOutput:
        """Coarse to fine: task features, initial predictions and propagation; then the
        distillation at every scale and the heads."""
        maps = list(self.backbone(images))
        size = tuple(images.shape[-2:])
        feats: list[list[Tensor]] = [[] for _ in self.scales]
        aux: dict[str, list[Tensor]] = {t: [] for t in self.names}
        propagated: list[Tensor] | None = None
        for k in reversed(range(len(self.scales))):
            x = maps[self.scales[k]]
            for n, t in enumerate(self.names):
                inputs = x if propagated is None else torch.cat([x, resize(propagated[n], x.shape[-2:])], 1)
                f = self.task_blocks[k][t](inputs)
                feats[k].append(f)
                aux[t].append(as_prediction(self.initial[k][t](f), size, self.dense[t]))
            propagated = self.propagation[k - 1](feats[k]) if k else None
        distilled = [self.distillation[k](dict(zip(self.names, feats[k]))) for k in range(len(self.scales))]
        # a scale a head does not read gets the task's undistilled features, never used
        preds = {
            t: self.heads[t]([d.get(t, feats[k][n]) for k, d in enumerate(distilled)], size)
            for n, t in enumerate(self.names)
        }
        return ArchitectureOutput(preds, aux, [f for per_scale in feats for f in per_scale])

    def shared_parameters(self) -> list[nn.Parameter]:
        """The backbone, the per-scale task blocks and the propagation modules."""
        return unique(
            [*self.backbone.parameters(), *self.task_blocks.parameters(), *self.propagation.parameters()]
        )

    def task_parameters(self, task: str) -> list[nn.Parameter]:
        """The task's initial predictors, the distillation into it and its head."""
        return unique(
            [
                *(p for per_scale in self.initial for p in per_scale[task].parameters()),
                *(p for d in self.distillation for p in d.task_parameters(task)),
                *self.heads[task].parameters(),
            ]
        )
