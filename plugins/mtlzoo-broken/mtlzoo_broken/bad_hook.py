"""Implements a hook that does not exist (a typo of register_heads)."""

from mtlzoo import hookimpl


@hookimpl
def register_haeds(register):
    """Misspelled hook name."""
