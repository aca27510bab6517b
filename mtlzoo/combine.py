"""Deprecated: mtlzoo 0.1's ``mtlzoo.combine``, removed in 0.3. Import ``Combiner`` and ``Step``
from :mod:`mtlzoo`; the ``wrt`` helpers from :mod:`mtlzoo.contract.combine`; the collectives
from :mod:`mtlzoo.contract.dist`."""

from ._deprecated import Moved, shim

_MOVED = {
    "Combiner": Moved("mtlzoo", "Combiner"),
    "Step": Moved("mtlzoo", "Step"),
    "Wrt": Moved("mtlzoo.contract.combine", "Wrt"),
    "WRT_CHOICES": Moved("mtlzoo.contract.combine", "WRT_CHOICES"),
    "HEADS_CHOICES": Moved("mtlzoo.contract.combine", "HEADS_CHOICES"),
    "check_wrt": Moved("mtlzoo.contract.combine", "check_wrt"),
    "world_size": Moved("mtlzoo.contract.dist", "world_size"),
    "all_reduce_mean": Moved("mtlzoo.contract.dist", "all_reduce_mean"),
    "all_reduce_sum": Moved("mtlzoo.contract.dist", "all_reduce_sum"),
}

__getattr__, __dir__ = shim(__name__, _MOVED)
__all__ = sorted(_MOVED)
