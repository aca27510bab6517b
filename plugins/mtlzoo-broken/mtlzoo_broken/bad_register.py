"""Registers one part, then raises: the half registration must be undone."""

from mtlzoo import hookimpl


@hookimpl
def register_heads(register):
    """Register a head, then fail."""
    register("half_registered_head", lambda feature_info, out_channels: None, None, "never kept")
    raise RuntimeError("something inside the plugin went wrong")
