"""``ltb``: Learning to Branch over the backbone's feature maps (options in
:mod:`mtlzoo.builtin.architectures`, blocks in :mod:`.experts`)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...contract.architecture import ArchitectureOutput, ArchitectureParts, unique
from . import LTBOptions
from .experts import Expert, ExpertArchitecture


class LTB(ExpertArchitecture):
    """Learning to Branch — Guo, Lee & Ulbricht, "Learning to Branch for Multi-Task
    Learning", ICML 2020 (LibMTL: ``architecture/LTB.py``).

    After the shared backbone, ``layers`` layers of blocks (a block: a residual bottleneck per
    chosen scale, :class:`~.experts.Expert`); the inner layers have ``branches`` blocks each
    (default: one per task) and the last layer one block per task, whose output task ``t``'s
    head reads. Every block of layer ``l >= 1`` picks its parent among the blocks of layer
    ``l - 1`` with learned logits ``alpha``: in training through a straight-through
    Gumbel-softmax sample (``hard``: the forward pass uses one parent, the gradient reaches
    ``alpha`` through the soft sample) at temperature ``tau``, optionally decayed as
    ``tau / sqrt(1 + step / tau_decay_steps)`` (LibMTL's ``1/sqrt(epoch)`` schedule counted in
    training steps); at evaluation each block takes its most likely parent (argmax), so test
    metrics are deterministic and only the blocks on the tasks' paths are computed. The
    blocks of layer 0 read the backbone's maps.

    Parameters: the last layer's block of task ``t`` and its parent logits are ``t``'s; every
    other block and logit can lie on any task's path, so they are shared. The shared
    representation (``wrt: features``) is the backbone's maps and the outputs of every block
    of layer ``layers - 2`` (what the last layer's blocks choose from).

    Deviations: LibMTL's blocks are the stages of one whole ResNet per task and its path is
    sampled with Gumbel-softmax at evaluation too (random test metrics); here the blocks act
    on the shared backbone's maps and evaluation takes the argmax path. LibMTL's warm-up
    (while ``epoch < epochs / 100``) feeds every block the *sum* of all parents; here
    ``warmup_steps`` training steps feed it their mean. The step counter (a buffer, saved with
    the model) counts training forward passes with gradients.
    """

    label = "ltb"

    def __init__(self, parts: ArchitectureParts, options: LTBOptions):
        super().__init__(parts, options.min_stride)
        inner = options.branches or len(self.names)
        ch, red, norm = self.channels, options.reduction, options.norm
        self.blocks = nn.ModuleList(
            nn.ModuleList(Expert(ch, red, norm) for _ in range(inner)) for _ in range(options.layers - 1)
        )
        self.task_blocks = nn.ModuleDict({t: Expert(ch, red, norm) for t in self.names})
        # alpha[l - 1][k]: logits of block k of inner layer l >= 1 over the blocks of layer l - 1
        self.alpha = nn.ModuleList(
            nn.ParameterList(nn.Parameter(torch.zeros(inner)) for _ in range(inner))
            for _ in range(1, options.layers - 1)
        )
        self.task_alpha = nn.ParameterDict(
            {t: nn.Parameter(torch.zeros(inner)) for t in self.names} if options.layers > 1 else {}
        )
        self.tau, self.tau_decay_steps = float(options.tau), options.tau_decay_steps
        self.warmup_steps = int(options.warmup_steps)
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))

    def temperature(self) -> float:
        """The Gumbel-softmax temperature at the current step."""
        if not self.tau_decay_steps:
            return self.tau
        return self.tau / math.sqrt(1.0 + float(self.steps) / self.tau_decay_steps)

    def _logits(self, layer: int, k: int, last: bool) -> Tensor:
        """Parent logits of block ``k`` (task ``k``'s block when ``last``) of ``layer``."""
        return self.task_alpha[self.names[k]] if last else self.alpha[layer - 1][k]

    def _choice(self, logits: Tensor, warm: bool) -> Tensor:
        """Training weights over the parents: their mean in warm-up, else a hard
        straight-through Gumbel-softmax sample (one-hot forward, soft gradient)."""
        if warm:
            return torch.full_like(logits, 1.0 / logits.numel()) + 0 * logits
        return F.gumbel_softmax(logits, tau=self.temperature(), hard=True)

    def paths(self) -> dict[str, list[int]]:
        """Each task's path at evaluation: the index of its block in every layer (the last
        layer's block is the task's own)."""
        layers = len(self.blocks) + 1
        out = {}
        for k, t in enumerate(self.names):
            path = [k]
            for layer in range(layers - 1, 0, -1):
                path.append(int(self._logits(layer, path[-1], layer == layers - 1).argmax()))
            out[t] = path[::-1]
        return out

    def run(self, images: Tensor) -> ArchitectureOutput:
        """Backbone, the branching layers (sampled paths in training, argmax paths at
        evaluation), the heads."""
        maps = list(self.backbone(images))
        x = self.chosen(maps)
        layers = len(self.blocks) + 1
        training = self.training and torch.is_grad_enabled()
        warm = training and int(self.steps) < self.warmup_steps
        if training:
            self.steps += 1
        size = tuple(images.shape[-2:])
        if not training:
            return self._evaluate(maps, x, size)
        shared = list(maps)
        prev: list[list[Tensor]] = []
        for layer in range(layers):
            last = layer == layers - 1
            blocks = list(self.task_blocks.values()) if last else list(self.blocks[layer])
            outs = []
            for k, block in enumerate(blocks):
                if layer == 0:
                    inputs = x
                else:
                    w = self._choice(self._logits(layer, k, last), warm)
                    inputs = [sum(w[j] * prev[j][s] for j in range(len(prev))) for s in range(len(x))]
                outs.append(block(inputs))
            if layer == layers - 2:
                shared += [o for out in outs for o in out]
            prev = outs
        mixed = dict(zip(self.names, prev))
        return ArchitectureOutput(self.predict(maps, mixed, size), shared=shared)

    def _evaluate(self, maps: list[Tensor], x: list[Tensor], size: tuple[int, int]) -> ArchitectureOutput:
        """The argmax paths, computing each block they use once."""
        layers = len(self.blocks) + 1
        cache: dict[tuple[int, int], list[Tensor]] = {}

        def output(layer: int, k: int) -> list[Tensor]:
            if (layer, k) not in cache:
                last = layer == layers - 1
                block = self.task_blocks[self.names[k]] if last else self.blocks[layer][k]
                inputs = x if layer == 0 else output(layer - 1, int(self._logits(layer, k, last).argmax()))
                cache[(layer, k)] = block(inputs)
            return cache[(layer, k)]

        mixed = {t: output(layers - 1, k) for k, t in enumerate(self.names)}
        chosen = [o for (layer, _), out in sorted(cache.items()) if layer == layers - 2 for o in out]
        return ArchitectureOutput(self.predict(maps, mixed, size), shared=list(maps) + chosen)

    def shared_parameters(self) -> list[nn.Parameter]:
        """The backbone, the inner layers' blocks and their parent logits."""
        return unique([*self.backbone.parameters(), *self.blocks.parameters(), *self.alpha.parameters()])

    def task_parameters(self, task: str) -> list[nn.Parameter]:
        """The task's last-layer block, its parent logits and its head."""
        own = [self.task_alpha[task]] if task in self.task_alpha else []
        return unique([*self.task_blocks[task].parameters(), *own, *self.heads[task].parameters()])
