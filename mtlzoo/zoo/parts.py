"""A validated spec as objects: :class:`Spec` carries each part's registry entry and its
validated options instance, so building never validates an option again.

:meth:`mtlzoo.Zoo.validate` makes a :class:`Spec` (validation happens there, once);
:meth:`mtlzoo.Zoo.build` builds from it. ``Spec.cfg`` is the complete tree (every default
filled in) that a run folder's ``config.yaml`` records. Torch-free, like the rest of
validation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from ..contract.tasks import TaskType
from .registry import Entry


@dataclass(frozen=True)
class Part:
    """One validated plugin node of a spec (``model.backbone``, ``tasks.semseg.head`` ...).

    Attributes:
        path: its key path in the spec, used in every error about it.
        entry: the registry entry its ``name`` selects.
        options: the validated options instance (``None`` for a part without options).
        relative: option name -> the resolved value, for each path option the spec gave as a
            relative path (resolved against the spec file's folder).
    """

    path: str
    entry: Entry
    options: Any
    relative: dict[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """The part's registered name."""
        return self.entry.name

    @property
    def label(self) -> str:
        """``combiner 'sum' (plugin builtin_combiners)``."""
        return self.entry.label


@dataclass(frozen=True)
class TaskSpec:
    """One validated task.

    Attributes:
        name: the task's name in the spec. type: its task type (entry and options).
        task_type: the built :class:`~mtlzoo.TaskType` (task types are torch-free data).
        target: the batch key of its target. source: the key it is derived from (``from``),
        or ``None``. head, loss, metrics: its parts, defaults of the task type filled in.
    """

    name: str
    type: Part
    task_type: TaskType
    target: str
    source: str | None
    head: Part
    loss: Part
    metrics: tuple[Part, ...]


@dataclass(frozen=True)
class Spec:
    """A spec validated against one zoo's parts (see the module docstring).

    Attributes:
        cfg: the complete, resolved tree (``cfg.train.epochs`` ...), as ``config.yaml`` saves it.
        backbone, architecture (``None``: hard parameter sharing), combiner, data: the parts.
        tasks: task name -> :class:`TaskSpec`, in spec order.
        source: the spec file it was read from, if any.
    """

    cfg: DictConfig
    backbone: Part
    architecture: Part | None
    combiner: Part
    data: Part
    tasks: dict[str, TaskSpec]
    source: Path | None = None

    @property
    def name(self) -> str:
        """The spec's ``name``."""
        return str(self.cfg.name)

    def relative_paths(self) -> dict[str, str]:
        """Dotted key -> resolved value of every path option the spec gave as a relative path
        (a run folder's ``config.yaml`` writes them relative to the run folder again)."""
        return {f"{p.path}.{k}": v for p in self.parts() for k, v in p.relative.items()}

    def parts(self) -> list[Part]:
        """Every part, in the order they are validated."""
        out = [self.backbone, *([self.architecture] if self.architecture else [])]
        for t in self.tasks.values():
            out += [t.type, t.head, t.loss, *t.metrics]
        return [*out, self.combiner, self.data]


__all__ = ["Part", "TaskSpec", "Spec"]
