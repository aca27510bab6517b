"""Deprecated: mtlzoo 0.1's ``mtlzoo.tasks``, removed in 0.3. Import ``TaskInfo`` and ``TaskType``
from :mod:`mtlzoo`."""

from ._deprecated import Moved, shim

_MOVED = {
    "TaskInfo": Moved("mtlzoo", "TaskInfo"),
    "TaskType": Moved("mtlzoo", "TaskType"),
    "TargetInfo": Moved("mtlzoo", "TargetInfo"),
}

__getattr__, __dir__ = shim(__name__, _MOVED)
__all__ = sorted(_MOVED)
