"""Deprecated: mtlzoo 0.1's ``mtlzoo.model``, removed in 0.3. Import ``FeatureInfo`` and
``MultiTaskModel`` from :mod:`mtlzoo`."""

from ._deprecated import Moved, shim

_MOVED = {
    "FeatureInfo": Moved("mtlzoo", "FeatureInfo"),
    "MultiTaskModel": Moved("mtlzoo", "MultiTaskModel"),
}

__getattr__, __dir__ = shim(__name__, _MOVED)
__all__ = sorted(_MOVED)
