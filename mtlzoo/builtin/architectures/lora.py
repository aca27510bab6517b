"""``lora``: per-task low-rank adaptation of a frozen shared encoder (options in
:mod:`mtlzoo.builtin.architectures`)."""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence

from torch import Tensor, nn

from ...contract.architecture import Architecture, ArchitectureOutput, ArchitectureParts, unique
from ...contract.errors import ConfigError
from . import LoRAOptions


def _adaptable(module: nn.Module) -> bool:
    """A linear layer, or a conv whose forward is the plain 2-d convolution (a delta computed
    with its kernel, stride, padding and dilation then has the output's shape)."""
    if isinstance(module, nn.Linear):
        return True
    return isinstance(module, nn.Conv2d) and type(module).forward is nn.Conv2d.forward and module.groups == 1


class LowRank(nn.Module):
    """``scale * up(down(x))``: ``down`` maps the layer's input to ``rank`` channels as the layer
    does (a linear map, or a conv with the layer's kernel, stride, padding and dilation),
    ``up`` maps them to the layer's outputs (linear, or 1x1 conv) and starts at zero, so the
    adapted layer starts as the frozen one (Hu et al.'s initialisation)."""

    def __init__(self, layer: nn.Module, rank: int, scale: float):
        super().__init__()
        self.scale = float(scale)
        if isinstance(layer, nn.Linear):
            self.down: nn.Module = nn.Linear(layer.in_features, rank, bias=False)
            self.up: nn.Module = nn.Linear(rank, layer.out_features, bias=False)
        else:
            self.down = nn.Conv2d(
                layer.in_channels,
                rank,
                layer.kernel_size,
                layer.stride,
                layer.padding,
                layer.dilation,
                bias=False,
                padding_mode=layer.padding_mode,
            )
            self.up = nn.Conv2d(rank, layer.out_channels, 1, bias=False)
        nn.init.zeros_(self.up.weight)

    def forward(self, x: Tensor) -> Tensor:
        """The low-rank update of the layer's output for its input ``x``."""
        return self.up(self.down(x)) * self.scale


class LoRA(Architecture):
    """Per-task LoRA on a frozen shared encoder — Hu, Shen, Wallis, Allen-Zhu, Li, Wang, Wang &
    Chen, "LoRA: Low-Rank Adaptation of Large Language Models", ICLR 2022, applied per task as
    in multi-task adaptation of vision encoders (e.g. Agiza, Neseem & Reda, "MTLoRA:
    Low-Rank Adaptation Approach for Efficient Multi-Task Learning", CVPR 2024, whose
    task-agnostic low-rank modules are ``shared_rank`` here).

    The backbone's weights are frozen (``requires_grad`` off), except the parameters named by
    ``trainable`` (shell patterns of the backbone's parameter names; by default a ViT's new
    feature pyramid). Every linear layer and plain conv of the backbone whose module name
    matches ``targets`` gets, per task ``t``, a low-rank update ``W x + (alpha / rank) B_t A_t
    x`` (``A_t`` as the layer maps its input, to ``rank`` channels; ``B_t`` to the outputs,
    starting at zero), added to the layer's output by a forward hook (the backbone's modules
    and parameter names stay as they are). Each task runs the encoder with its own update and
    its head reads the resulting maps: a forward pass runs the encoder once per task, in
    training and at evaluation. With ``shared_rank > 0`` a low-rank update shared by all
    tasks is added to every adapted layer too (the task-agnostic module of MTLoRA). Frozen
    BatchNorm layers keep their running statistics (``freeze_norm``), as the frozen weights
    were trained with them.

    Parameters: each task's updates and its head are that task's; the shared updates and the
    ``trainable`` backbone parameters are shared (none with the defaults on a CNN: then every
    combiner reduces to each task training its own parameters). There is no shared
    representation: the tasks' encoder passes differ from the first layer on, so ``wrt:
    features`` combiners are refused in one line.

    Deviations: LoRA adapts attention projections of a pretrained transformer; here any
    backbone's linear and conv layers can be adapted (``targets``), and convs get a conv
    ``A_t`` with the layer's own geometry and a 1x1 ``B_t``. Without weights the frozen encoder
    is a random one (fine for tests, not for results): use ``pretrained: true`` or ``weights``.
    """

    has_shared_representation = False

    def __init__(self, parts: ArchitectureParts, options: LoRAOptions):
        super().__init__()
        self.backbone = parts.backbone
        self.names = list(parts.heads)
        self.heads = nn.ModuleDict(parts.heads)
        self.freeze_norm = options.freeze_norm
        for name, p in self.backbone.named_parameters():
            p.requires_grad_(any(fnmatch.fnmatchcase(name, pat) for pat in options.trainable))
        layers = [
            (name, m)
            for name, m in self.backbone.named_modules()
            if name
            and _adaptable(m)
            and not any(p.requires_grad for p in m.parameters(recurse=False))
            and any(fnmatch.fnmatchcase(name, pat) for pat in options.targets)
        ]
        if not layers:
            raise ConfigError(
                f"architecture 'lora': targets {list(options.targets)} match no frozen linear or conv layer of "
                f"backbone {type(self.backbone).__name__}; `mtlzoo summary SPEC --names` lists its parameter names"
            )
        self.layer_names = [name for name, _ in layers]
        alpha = float(options.alpha) if options.alpha is not None else None
        scale = (alpha or options.rank) / options.rank
        self.lora = nn.ModuleDict(
            {t: nn.ModuleList(LowRank(m, options.rank, scale) for _, m in layers) for t in self.names}
        )
        self.shared_lora: nn.ModuleList | None = None
        if options.shared_rank:
            shared_scale = (alpha or options.shared_rank) / options.shared_rank
            self.shared_lora = nn.ModuleList(LowRank(m, options.shared_rank, shared_scale) for _, m in layers)
        self._active: str | None = None
        self._hooks = [m.register_forward_hook(self._hook(i)) for i, (_, m) in enumerate(layers)]

    def _hook(self, i: int):
        def add_update(module: nn.Module, args: Sequence[Tensor], output: Tensor) -> Tensor:
            if self._active is None:
                return output
            out = output + self.lora[self._active][i](args[0])
            if self.shared_lora is not None:
                out = out + self.shared_lora[i](args[0])
            return out

        return add_update

    @property
    def task_names(self) -> list[str]:
        """Task names in spec order."""
        return self.names

    def train(self, mode: bool = True) -> LoRA:
        """Train mode, with the frozen BatchNorm layers of the backbone kept in eval mode
        (``freeze_norm``)."""
        super().train(mode)
        if mode and self.freeze_norm:
            for m in self.backbone.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm) and not any(
                    p.requires_grad for p in m.parameters(recurse=False)
                ):
                    m.eval()
        return self

    def run(self, images: Tensor) -> ArchitectureOutput:
        """The encoder once per task with that task's low-rank updates, then its head."""
        size = tuple(images.shape[-2:])
        preds = {}
        try:
            for t in self.names:
                self._active = t
                preds[t] = self.heads[t](list(self.backbone(images)), size)
        finally:
            self._active = None
        return ArchitectureOutput(preds)

    def shared_parameters(self) -> list[nn.Parameter]:
        """The shared low-rank updates and the trainable backbone parameters."""
        shared = [] if self.shared_lora is None else list(self.shared_lora.parameters())
        return unique([*self.backbone.parameters(), *shared])

    def task_parameters(self, task: str) -> list[nn.Parameter]:
        """The task's low-rank updates and head."""
        return unique([*self.lora[task].parameters(), *self.heads[task].parameters()])


__all__ = ["LoRA", "LowRank"]
