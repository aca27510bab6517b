"""``mtan``: the Multi-Task Attention Network (options in :mod:`mtlzoo.builtin.architectures`)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...contract.architecture import Architecture, ArchitectureOutput, ArchitectureParts, unique
from ...contract.layers import make_norm
from . import MTANOptions
from .blocks import Bottleneck, SplitStage, conv, probe, probe_size


def _attention(cin: int, mid: int, cout: int, norm: str) -> nn.Sequential:
    """The attention module ``g``/``h``: ``1x1 -> norm -> ReLU -> 1x1 -> norm -> sigmoid``."""
    return nn.Sequential(
        conv(cin, mid, 1, norm),
        make_norm(norm, mid),
        nn.ReLU(),
        conv(mid, cout, 1, norm),
        make_norm(norm, cout),
        nn.Sigmoid(),
    )


def _extractor(cin: int, cout: int, design: str, norm: str) -> nn.Module:
    """The feature extractor ``f`` between two attention modules."""
    if design == "conv":
        return nn.Sequential(conv(cin, cout, 3, norm), make_norm(norm, cout), nn.ReLU())
    return Bottleneck(cin, cout, norm)


class MTAN(Architecture):
    """MTAN — Liu, Johns & Davison, "End-to-End Multi-Task Learning with Attention", CVPR 2019
    (code: github.com/lorenmt/mtan, SegNet-MTAN and MTAN-DeepLabv3).

    The backbone is the shared network, run stage by stage. Every stage ``j`` is split into
    ``u_j`` (the output of all but its last unit: all residual blocks but the last for
    ResNets) and ``p_j`` (its output); task ``t``'s attention mask at stage ``j`` is computed
    from ``u_j`` and, from the second stage on, the task's previous attended map passed
    through a feature extractor ``f`` and max-pooled to the new resolution:

        a_t^j = g_t^j([u_j ; pool(f_j(â_t^(j-1)))]),   â_t^j = a_t^j * p_j

    ``g`` is ``1x1 conv -> norm -> ReLU -> 1x1 conv -> norm -> sigmoid`` (one mask value per
    channel and position). Each task's head reads its attended maps ``[â_t^1, ...]``, which
    have the backbone's ``feature_info``, so the spec's heads are used as built. Shared
    parameters: the backbone (and the extractors with ``share_extractors``); task ``t``'s:
    its attention modules, its extractors and its head. The shared representation is every
    ``u_j`` and ``p_j`` (``wrt: features`` works), unless the extractors are shared.

    Deviations: the heads are the spec's task heads over the attended encoder maps, not
    MTAN's attention-guided SegNet decoder (the backbones here are encoders), and no
    extractor follows the last stage (as in the authors' MTAN-DeepLabv3); by default each
    task has its own extractors where the reference code shares one per stage across the
    tasks (``share_extractors: true`` restores that, at the price of the shared
    representation, since shared weights then sit between task-specific ones); a stage
    made of a single unit (the ResNet stem) computes its masks from its output (``u = p``);
    convs followed by a norm have no bias (redundant there).
    """

    def __init__(self, parts: ArchitectureParts, options: MTANOptions):
        super().__init__()
        self.backbone = parts.backbone
        # plain list: the modules stay the backbone's (registered there, saved once)
        self._stages = [SplitStage(s) for s in parts.stages(label="architecture 'mtan'")]
        self.names = list(parts.heads)
        self.share_extractors = options.share_extractors
        self.has_shared_representation = not options.share_extractors
        out = [int(fi.channels) for fi in parts.backbone.feature_info]
        mid = out if options.design == "conv" else [max(c // 4, 1) for c in out]
        u = self._u_channels()
        norm = options.norm

        def attention_modules() -> nn.ModuleList:
            return nn.ModuleList(
                _attention(u[j] + (out[j] if j else 0), mid[j], out[j], norm) for j in range(len(out))
            )

        def extractors() -> nn.ModuleList:
            return nn.ModuleList(
                _extractor(out[j - 1], out[j], options.design, norm) for j in range(1, len(out))
            )

        self.attention = nn.ModuleDict({t: attention_modules() for t in self.names})
        self.extractors: nn.Module = (
            extractors() if self.share_extractors else nn.ModuleDict({t: extractors() for t in self.names})
        )
        self.heads = nn.ModuleDict(parts.heads)

    def _u_channels(self) -> list[int]:
        """Channels of each ``u_j``, from one forward pass of the stages on zeros."""

        def run() -> list[int]:
            x = torch.zeros(1, 3, *probe_size(self.backbone))
            widths = []
            for stage in self._stages:
                u, x = stage(x)
                widths.append(int(u.shape[1]))
            return widths

        return probe(self.backbone, run)

    @property
    def task_names(self) -> list[str]:
        """Task names in spec order."""
        return self.names

    def _extractor(self, task: str, j: int) -> nn.Module:
        chain = self.extractors if self.share_extractors else self.extractors[task]
        return chain[j - 1]

    def run(self, images: Tensor) -> ArchitectureOutput:
        """Shared stages, the tasks' attention at each, then every head on its attended maps."""
        x = images
        shared: list[Tensor] = []
        attended: dict[str, list[Tensor]] = {t: [] for t in self.names}
        for j, stage in enumerate(self._stages):
            u, p = stage(x)
            shared += [u, p] if u is not p else [p]
            for t in self.names:
                inputs = u
                if j:
                    prev = self._extractor(t, j)(attended[t][-1])
                    if prev.shape[-2:] != u.shape[-2:]:
                        prev = F.adaptive_max_pool2d(prev, tuple(u.shape[-2:]))
                    inputs = torch.cat([u, prev], 1)
                attended[t].append(self.attention[t][j](inputs) * p)
            x = p
        size = tuple(images.shape[-2:])
        preds = {t: self.heads[t](attended[t], size) for t in self.names}
        return ArchitectureOutput(preds, {}, shared if self.has_shared_representation else None)

    def shared_parameters(self) -> list[nn.Parameter]:
        """The backbone's parameters (and the shared extractors')."""
        return unique(
            [*self.backbone.parameters(), *(self.extractors.parameters() if self.share_extractors else [])]
        )

    def task_parameters(self, task: str) -> list[nn.Parameter]:
        """The task's attention modules, extractors and head."""
        own = [] if self.share_extractors else list(self.extractors[task].parameters())
        return unique([*self.attention[task].parameters(), *own, *self.heads[task].parameters()])
