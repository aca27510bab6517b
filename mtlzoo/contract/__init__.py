"""The contract a plugin author builds against: hooks, options, the part types and errors.

Torch-free modules: :mod:`~.hooks`, :mod:`~.options`, :mod:`~.errors`, :mod:`~.data`,
:mod:`~.tasks`, :mod:`~.features`. The torch-based ones: :mod:`~.backbone` (the
:class:`Backbone` base and :func:`mark_unused`), :mod:`~.combine` (:class:`Combiner` and the
:class:`Step` it receives), :mod:`~.dist` (collectives) and :mod:`~.layers` (small blocks).
"""
