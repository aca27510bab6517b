"""mtlzoo: a plugin-based model zoo for multi-task learning on images.

The public API, for users and plugin authors::

    import mtlzoo

    exp = mtlzoo.build("configs/quickstart.yaml", ["train.epochs=1"])   # a spec -> parts
    zoo = mtlzoo.Zoo.load()                   # the installed plugins (what `build` uses)
    print([e.name for e in zoo.list("combiner")])

Plugin authors implement hooks with :data:`hookimpl` (see :mod:`mtlzoo.contract.hooks`),
declare options with :func:`option`, and build on the contract types exported here.
Importing ``mtlzoo`` does not import torch; the torch-based names (``Combiner``, ``Step``,
``Backbone``, ``mark_unused``, ``Architecture``, ``Trainer``, ``Experiment``,
``MultiTaskModel`` ...) load on first use.
"""

from __future__ import annotations

from collections.abc import Iterable
from importlib import import_module
from typing import Any

from .contract.data import DatasetInfo, TargetInfo, TargetKind
from .contract.errors import (
    CheckpointError,
    ConfigError,
    DataError,
    DataProblems,
    MtlzooError,
    PluginError,
    SplitNotFound,
    TrainingError,
    UnknownNameError,
)
from .contract.features import FeatureInfo
from .contract.hooks import hookimpl
from .contract.options import option
from .contract.tasks import Derivation, TaskInfo, TaskType
from .zoo.zoo import Zoo

__version__ = "0.2.0"

_LAZY = {
    "Architecture": "mtlzoo.contract.architecture",
    "ArchitectureOutput": "mtlzoo.contract.architecture",
    "ArchitectureParts": "mtlzoo.contract.architecture",
    "Combiner": "mtlzoo.contract.combine",
    "Step": "mtlzoo.contract.combine",
    "Backbone": "mtlzoo.contract.backbone",
    "mark_unused": "mtlzoo.contract.backbone",
    "Trainer": "mtlzoo.runtime.train",
    "Experiment": "mtlzoo.runtime.experiment",
    "MultiTaskModel": "mtlzoo.contract.model",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'mtlzoo' has no attribute {name!r}")


def load(run_dir: Any, checkpoint: str = "best", *, zoo: Zoo | None = None, device: str = "cpu") -> Any:
    """A trained run ready to predict, without its training data: see :func:`mtlzoo.zoo.load.load`."""
    from .zoo.load import load as _load

    return _load(run_dir, checkpoint, zoo=zoo, device=device)


def build(
    spec: Any,
    overrides: Iterable[str] = (),
    *,
    split: str = "train",
    strict: bool | None = None,
    block: Iterable[str] = (),
) -> Any:
    """Build the experiment of a spec (a YAML path or a mapping) with dot-list ``overrides``:
    loads the plugins the spec's ``plugins`` section allows (:meth:`Zoo.for_spec`) and
    returns :meth:`Zoo.build`'s :class:`~mtlzoo.runtime.experiment.Experiment`."""
    zoo, _ = Zoo.for_spec(spec, overrides, strict=strict, block=block)
    return zoo.build(spec, overrides, split=split)


__all__ = [
    "Zoo",
    "build",
    "load",
    "hookimpl",
    "option",
    "FeatureInfo",
    "TargetInfo",
    "DatasetInfo",
    "TargetKind",
    "TaskInfo",
    "TaskType",
    "Derivation",
    "MtlzooError",
    "ConfigError",
    "DataError",
    "DataProblems",
    "SplitNotFound",
    "PluginError",
    "TrainingError",
    "CheckpointError",
    "UnknownNameError",
    "__version__",
    *_LAZY,
]
