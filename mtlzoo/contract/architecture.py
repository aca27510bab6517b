"""The architecture contract: how backbone(s) and task heads become one multi-task model.

An architecture plugin's factory is called as ``factory(parts, options)`` with a
:class:`ArchitectureParts` (the built backbone, a way to build more copies of it, the task
heads and the tasks' infos) and returns an :class:`Architecture`: an ``nn.Module`` that
predicts every task and **declares** its parameters and representation, so that every
combiner works on it through the same :class:`~mtlzoo.Step` machinery:

* :meth:`Architecture.shared_parameters`: the parameters more than one task's loss depends
  on; every combiner reconciles the task gradients on these. :meth:`task_parameters` of each
  task: the parameters only that task uses. Every trainable parameter is in exactly one of
  them (checked when the model is built).
* :meth:`Architecture.run` returns an :class:`ArchitectureOutput`: the predictions, optional
  deep-supervision predictions (:attr:`~ArchitectureOutput.aux`), and the **shared
  representation** — tensors through which every shared parameter reaches every loss (the
  backbone's maps for hard sharing) — or ``None`` when the architecture has none
  (cross-stitch: each task has its own network). Combiners with ``wrt: features`` need a
  shared representation; on an architecture without one they are refused in one line.
* Deep supervision: each tensor of ``aux[task]`` is a prediction of ``task`` shaped like its
  final prediction; the trainer adds ``aux_weight * mean of their losses`` to the task's loss
  (``aux_weight`` is the architecture's option, 0 disables them).
* Regularisers: ``regularizers[task]`` is a scalar tensor (a gate's load-balancing or
  sparsity term, already weighted) that the trainer adds to ``task``'s loss in training, so
  every combiner sees it as part of that task's loss (never a ``.backward()`` of its own).

The model normalises its input itself: the zoo sets :attr:`Architecture.normalize`, and
:meth:`forward` / :meth:`forward_train` apply it before :meth:`run`. ``hps`` (hard parameter
sharing: one backbone, one head per task) is :class:`mtlzoo.MultiTaskModel`.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from .features import FeatureInfo
from .settings import ShowsSettings

if TYPE_CHECKING:
    from .tasks import TaskInfo


@dataclass
class ArchitectureOutput:
    """What one forward pass of an architecture gives.

    Attributes:
        preds: task -> final prediction (the head's output shape).
        aux: task -> intermediate predictions for deep supervision (same shape as ``preds``).
        shared: the shared representation (a list of tensors every shared parameter reaches
            the losses through), or ``None``.
        regularizers: task -> a scalar tensor added to that task's training loss (weighted by
            the architecture itself); empty for most architectures.
    """

    preds: dict[str, Tensor]
    aux: dict[str, list[Tensor]] = field(default_factory=dict)
    shared: list[Tensor] | None = None
    regularizers: dict[str, Tensor] = field(default_factory=dict)


@dataclass
class ArchitectureParts:
    """What an architecture factory builds from.

    Attributes:
        backbone: the built backbone (feature maps, ``feature_info``; ``staged()`` when the
            backbone can run stage by stage).
        heads: task -> its head, built for the backbone's ``feature_info``.
        tasks: task -> its :class:`~mtlzoo.TaskInfo` (target kind, output channels ...).
        make_head: ``make_head(task, feature_info)`` builds another head of ``task`` for
            other feature maps (architectures whose heads read refined maps).
    """

    backbone: nn.Module
    heads: dict[str, nn.Module]
    tasks: dict[str, TaskInfo]
    make_head: Callable[[str, Sequence[FeatureInfo]], nn.Module] | None = None

    def backbone_copy(self) -> nn.Module:
        """An independent copy of the backbone with the same initial weights (one per task
        for cross-stitch-like architectures, as the papers start every task network from the
        same weights)."""
        return copy.deepcopy(self.backbone)

    def stages(self, backbone: nn.Module | None = None, label: str = "this architecture") -> list[nn.Module]:
        """The backbone's stages (``backbone.staged()``), or a one-line error naming the
        backbone when it cannot run stage by stage."""
        from .errors import ConfigError

        b = self.backbone if backbone is None else backbone
        staged = getattr(b, "staged", None)
        stages = staged() if callable(staged) else None
        if not stages:
            raise ConfigError(
                f"{label} runs the backbone stage by stage, but backbone {type(b).__name__} does not "
                f"offer stages (Backbone.staged()); use a timm, cnn or smp resnet backbone"
            )
        return list(stages)


class Architecture(ShowsSettings, nn.Module):
    """Base class of multi-task architectures (see the module docstring).

    Subclasses implement :meth:`run`, :meth:`shared_parameters` and :meth:`task_parameters`,
    set :attr:`task_names`, and say whether they have a shared representation. Attributes:
    ``aux_weight`` (deep supervision weight), ``normalize`` (set by the zoo). ``repr`` shows
    the options it was built with (:class:`~mtlzoo.contract.settings.ShowsSettings`).
    """

    #: True when :meth:`run` returns a shared representation (``wrt: features`` works)
    has_shared_representation: bool = True
    #: weight of the deep-supervision losses in each task's loss
    aux_weight: float = 0.0

    def __init__(self) -> None:
        super().__init__()
        self.normalize: nn.Module = nn.Identity()

    @property
    def task_names(self) -> list[str]:
        """Task names in spec order."""
        raise NotImplementedError

    def run(self, images: Tensor) -> ArchitectureOutput:
        """Predictions (and deep supervision, and the shared representation) of normalised images."""
        raise NotImplementedError

    def shared_parameters(self) -> list[nn.Parameter]:
        """Trainable parameters shared by the tasks."""
        raise NotImplementedError

    def task_parameters(self, task: str) -> list[nn.Parameter]:
        """Trainable parameters of one task only."""
        raise NotImplementedError

    def forward_train(self, images: Tensor) -> ArchitectureOutput:
        """:meth:`run` on normalised ``images [B,3,H,W]`` (raw ``[0, 1]``)."""
        return self.run(self.normalize(images))

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        """Every task's prediction for raw ``[0, 1]`` images ``[B, 3, H, W]``."""
        return self.forward_train(images).preds

    def named_shared_parameters(self) -> list[tuple[str, nn.Parameter]]:
        """:meth:`shared_parameters` with their names."""
        ids = {id(p) for p in self.shared_parameters()}
        return [(n, p) for n, p in self.named_parameters() if id(p) in ids]

    @torch.no_grad()
    def num_parameters(self) -> dict[str, int]:
        """Parameter counts: ``shared``, each task, and ``total``."""
        counts = {"shared": sum(p.numel() for p in self.shared_parameters())}
        for name in self.task_names:
            counts[name] = sum(p.numel() for p in self.task_parameters(name))
        counts["total"] = sum(p.numel() for p in self.parameters())
        return counts


def unique(params: Iterator[nn.Parameter] | Sequence[nn.Parameter]) -> list[nn.Parameter]:
    """Trainable parameters without repeats, in order."""
    seen: set[int] = set()
    out = []
    for p in params:
        if p.requires_grad and id(p) not in seen:
            seen.add(id(p))
            out.append(p)
    return out


__all__ = ["Architecture", "ArchitectureOutput", "ArchitectureParts", "unique"]
