"""Deprecated: mtlzoo 0.1's ``mtlzoo.errors``, removed in 0.3. Import the errors from :mod:`mtlzoo`
(``from mtlzoo import ConfigError``); ``close_matches`` and ``did_you_mean`` from
:mod:`mtlzoo.contract.errors`."""

from ._deprecated import Moved, shim

_MOVED = {
    name: Moved("mtlzoo", name)
    for name in (
        "MtlzooError",
        "ConfigError",
        "UnknownNameError",
        "PluginError",
        "DataError",
        "TrainingError",
        "CheckpointError",
    )
}
_MOVED["DuplicateNameError"] = Moved(
    "mtlzoo", "PluginError", "a name two plugins register is refused for both and reported as a PluginError"
)
_MOVED["close_matches"] = Moved("mtlzoo.contract.errors", "close_matches")
_MOVED["did_you_mean"] = Moved("mtlzoo.contract.errors", "did_you_mean")

__getattr__, __dir__ = shim(__name__, _MOVED)
__all__ = sorted(_MOVED)
