"""Moved to :mod:`mtlzoo.contract.weights` (public: plugins read weights files with it); this
name stays so code importing ``mtlzoo.runtime.weights`` keeps working."""

from __future__ import annotations

from ..contract.weights import (
    WrongShape,
    check_fit,
    describe_mismatch,
    fit_prefix,
    load_strict,
    mismatch,
    read_state_dict,
    rename_in_order,
)

__all__ = [
    "read_state_dict",
    "rename_in_order",
    "mismatch",
    "describe_mismatch",
    "check_fit",
    "load_strict",
    "fit_prefix",
    "WrongShape",
]
