"""``cross_stitch`` and ``nddr``: one backbone per task, the task networks' maps fused after
every stage (options in :mod:`mtlzoo.builtin.architectures`)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ...contract.architecture import Architecture, ArchitectureOutput, ArchitectureParts, unique
from ...contract.layers import make_norm
from . import CrossStitchOptions, NDDROptions


def _other_weight(given: float | None, own: float, tasks: int) -> float:
    """The initial weight of each other task's map: ``given``, or what makes the combination
    convex (``(1 - own) / (T - 1)``)."""
    if given is not None:
        return float(given)
    return (1.0 - own) / (tasks - 1) if tasks > 1 else 0.0


class _TaskNetworks(Architecture):
    """One copy of the backbone per task (the first is the built backbone, the others start
    from the same weights), run stage by stage; after each stage ``mixers[j]`` turns the
    tasks' maps into the maps the next stage and the heads read. Each task's head reads the
    fused maps of its network (the backbone's ``feature_info``, so the spec's heads are used
    as built). No shared representation: every network reaches every loss through the
    mixers, so all networks and mixers are shared parameters; a task owns its head."""

    has_shared_representation = False
    name: str = ""

    def __init__(self, parts: ArchitectureParts):
        super().__init__()
        label = f"architecture {self.name!r}"
        parts.stages(label=label)  # refuse a backbone without stages before copying it
        self.names = list(parts.heads)
        self.backbones = nn.ModuleList([parts.backbone, *(parts.backbone_copy() for _ in self.names[1:])])
        # plain lists: the modules stay the backbones' (registered there, saved once)
        self._stages = [parts.stages(b, label=label) for b in self.backbones]
        self.heads = nn.ModuleDict(parts.heads)

    @property
    def task_names(self) -> list[str]:
        """Task names in spec order."""
        return self.names

    def mix(self, j: int, maps: list[Tensor]) -> list[Tensor]:
        """The tasks' maps after stage ``j`` fused (one per task, same shapes)."""
        raise NotImplementedError

    def run(self, images: Tensor) -> ArchitectureOutput:
        """Every network stage by stage, fused after each stage, then each task's head."""
        xs = [images] * len(self.names)
        maps: list[list[Tensor]] = [[] for _ in self.names]
        for j in range(len(self._stages[0])):
            xs = self.mix(j, [stages[j](x) for stages, x in zip(self._stages, xs)])
            for per_task, x in zip(maps, xs):
                per_task.append(x)
        size = tuple(images.shape[-2:])
        preds = {t: self.heads[t](maps[i], size) for i, t in enumerate(self.names)}
        return ArchitectureOutput(preds, {}, None)

    def shared_parameters(self) -> list[nn.Parameter]:
        """Every task network and every fusion layer."""
        heads = {id(p) for p in self.heads.parameters()}
        return unique(p for p in self.parameters() if id(p) not in heads)

    def task_parameters(self, task: str) -> list[nn.Parameter]:
        """The task's head."""
        return unique(self.heads[task].parameters())


class CrossStitchUnit(nn.Module):
    """``x~_t = sum_s alpha[t, s] * x_s`` over the tasks' maps: ``alpha`` is ``[T, T, C]``
    (per channel) or ``[T, T, 1]`` (one scalar per pair of tasks)."""

    def __init__(self, tasks: int, channels: int, per_channel: bool, own: float, other: float):
        super().__init__()
        alpha = torch.full((tasks, tasks, channels if per_channel else 1), other)
        alpha[torch.arange(tasks), torch.arange(tasks)] = own
        self.alpha = nn.Parameter(alpha)

    def forward(self, maps: list[Tensor]) -> list[Tensor]:
        """The stitched maps, one per task."""
        stacked = torch.stack(maps)  # [T, B, C, H, W]
        alpha = self.alpha.expand(-1, -1, stacked.shape[2]).to(stacked.dtype)
        return list(torch.einsum("tsc,sbchw->tbchw", alpha, stacked).unbind(0))


class CrossStitch(_TaskNetworks):
    """Cross-stitch networks — Misra, Shrivastava, Gupta & Hebert, "Cross-stitch Networks for
    Multi-task Learning", CVPR 2016 (implementations followed: Vandenhende et al.'s
    Multi-Task-Learning-PyTorch ``models/cross_stitch.py``, LibMTL's ``Cross_stitch``).

    One network per task; after every backbone stage a cross-stitch unit replaces each
    task's map by a learned linear combination of all tasks' maps, ``x~_t = sum_s
    alpha[t, s] x_s``, initialised near the identity (``alpha_self`` 0.9 on the diagonal,
    ``alpha_other`` off it), and the next stage and the head read ``x~_t``.

    Deviations: the paper stitches AlexNet's pooling and fully connected layers (two tasks);
    here the units follow each stage of any staged backbone, for any number of tasks (the
    default off-diagonal weight keeps the paper's convex initialisation, ``(1 - 0.9) /
    (T - 1)``), and each head reads its network's stitched maps of every stage. The units
    learn at the optimizer's learning rate (Vandenhende et al. give them 100 times the
    backbone's with SGD; the trainer here has one learning rate for all parameters).
    """

    name = "cross_stitch"

    def __init__(self, parts: ArchitectureParts, options: CrossStitchOptions):
        super().__init__(parts)
        tasks = len(self.names)
        other = _other_weight(options.alpha_other, options.alpha_self, tasks)
        self.units = nn.ModuleList(
            CrossStitchUnit(tasks, int(fi.channels), options.alphas == "channel", options.alpha_self, other)
            for fi in parts.backbone.feature_info
        )

    def mix(self, j: int, maps: list[Tensor]) -> list[Tensor]:
        """The cross-stitch unit of stage ``j``."""
        return self.units[j](maps)


class NDDRLayer(nn.Module):
    """Per task: ``ReLU(norm(conv1x1(concat of all tasks' maps)))`` back to ``C`` channels,
    the conv initialised as ``[beta I, ..., alpha I (own block), ..., beta I]``."""

    def __init__(self, tasks: int, channels: int, alpha: float, beta: float, norm: str):
        super().__init__()
        layers = []
        eye = torch.eye(channels)
        for t in range(tasks):
            conv = nn.Conv2d(tasks * channels, channels, 1, bias=False)
            blocks = [(alpha if s == t else beta) * eye for s in range(tasks)]
            with torch.no_grad():
                conv.weight.copy_(torch.cat(blocks, 1)[:, :, None, None])
            bn = make_norm(norm, channels)
            if isinstance(bn, nn.BatchNorm2d):
                bn.momentum = 0.05  # as the NDDR-CNN code
            layers.append(nn.Sequential(conv, bn, nn.ReLU()))
        self.layers = nn.ModuleList(layers)

    def forward(self, maps: list[Tensor]) -> list[Tensor]:
        """The fused maps, one per task."""
        cat = torch.cat(maps, 1)
        return [layer(cat) for layer in self.layers]


class NDDR(_TaskNetworks):
    """NDDR-CNN — Gao, Ma, Zhao, Liu & Yuille, "NDDR-CNN: Layerwise Feature Fusing in
    Multi-Task CNNs by Neural Discriminative Dimensionality Reduction", CVPR 2019
    (implementation followed: Vandenhende et al.'s ``models/nddr_cnn.py``).

    One network per task; after every backbone stage an NDDR layer concatenates the tasks'
    maps and, per task, reduces them back to ``C`` channels with a 1x1 conv, batch norm and
    ReLU. The conv starts from the paper's diagonal initialisation: ``alpha`` times the
    identity on the task's own channels, ``beta`` times the identity on each other task's.

    Deviations: the paper fuses VGG/ResNet layers for two tasks; here an NDDR layer follows
    every stage of any staged backbone, for any number of tasks (the default ``beta`` keeps
    the two-task ``alpha + beta = 1``); each head reads its network's fused maps of every
    stage (no NDDR-CNN-Shortcut variant); the NDDR layers learn at the optimizer's
    learning rate (Vandenhende et al. give them 100 times the backbone's with SGD).
    """

    name = "nddr"

    def __init__(self, parts: ArchitectureParts, options: NDDROptions):
        super().__init__(parts)
        tasks = len(self.names)
        beta = _other_weight(options.beta, options.alpha, tasks)
        self.fusion = nn.ModuleList(
            NDDRLayer(tasks, int(fi.channels), options.alpha, beta, options.norm)
            for fi in parts.backbone.feature_info
        )

    def mix(self, j: int, maps: list[Tensor]) -> list[Tensor]:
        """The NDDR layer of stage ``j``."""
        return self.fusion[j](maps)
