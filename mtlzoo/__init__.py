"""mtlzoo: a plugin-based model zoo for multi-task learning on images.

Public API for plugin authors: :data:`hookimpl`, the types in :mod:`mtlzoo.model`,
:mod:`mtlzoo.tasks`, :mod:`mtlzoo.data` and :mod:`mtlzoo.combine`, and the errors in
:mod:`mtlzoo.errors`.
"""

from .hookspecs import hookimpl

__version__ = "0.1.0"
__all__ = ["hookimpl", "__version__"]
