"""Deprecated: mtlzoo 0.1's ``mtlzoo.data``, removed in 0.3. Import ``TargetInfo`` and
``DatasetInfo`` from :mod:`mtlzoo`; target kinds are registered by plugins since 0.2
(``Zoo.load().list("target_kind")``), so ``TARGET_KINDS`` only lists the built-in ones."""

from ._deprecated import Moved, shim

_MOVED = {
    "TargetInfo": Moved("mtlzoo", "TargetInfo"),
    "DatasetInfo": Moved("mtlzoo", "DatasetInfo"),
    "TARGET_KINDS": Moved(
        "",
        "",
        "target kinds are registered by plugins now (`Zoo.load().list('target_kind')`, "
        "`mtlzoo list target_kind`); this tuple holds only 0.1's six",
        ("segmentation", "boundary", "depth", "normals", "labels", "class"),
    ),
}

__getattr__, __dir__ = shim(__name__, _MOVED)
__all__ = sorted(_MOVED)
