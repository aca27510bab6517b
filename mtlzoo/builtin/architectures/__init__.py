"""Built-in multi-task architectures (registration and options; torch-free).

==============  ==========================================================================
name            what it is
==============  ==========================================================================
``hps``         hard parameter sharing: one backbone feeding one head per task (the model
                without ``model.architecture``)
==============  ==========================================================================
"""

from __future__ import annotations

from ...contract.hooks import hookimpl

IMPL = "mtlzoo.builtin.architectures"


@hookimpl
def register_architectures(register):
    """Register the built-in architectures."""
    register("hps", f"{IMPL}.hps:make_hps", None, "Hard parameter sharing: one backbone, one head per task")


__all__ = ["register_architectures"]
