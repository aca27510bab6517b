"""Moved to :mod:`mtlzoo.contract.model` (public: the ``hps`` architecture is built from it);
this name stays so code importing ``mtlzoo.runtime.model`` keeps working."""

from __future__ import annotations

from ..contract.model import MultiTaskModel, Normalize

__all__ = ["MultiTaskModel", "Normalize"]
