"""Settings in ``repr``: a part prints the options it was built with, as torch's layers print theirs.

    >>> zoo.make("combiner", {"name": "mgda", "wrt": "features"}, ["a", "b"], path="combiner")
    MGDACombiner(wrt='features', normalization='none', max_iter=1000, tol=1e-07)

:class:`ShowsSettings` is a base of :class:`~mtlzoo.contract.combine.Combiner`,
:class:`~mtlzoo.contract.architecture.Architecture` and the built-in heads, so that every
part built from an options object shows it, with no code in the part itself.
"""

from __future__ import annotations

import dataclasses
from typing import Any

#: keyword-argument values shown for a part built without an options object
_PLAIN = (bool, int, float, str, type(None))


def _plain(value: Any) -> bool:
    if isinstance(value, (list, tuple)):
        return all(isinstance(v, _PLAIN) for v in value)
    return isinstance(value, _PLAIN)


def settings_of(args: tuple[Any, ...], kwargs: dict[str, Any], position: int) -> dict[str, Any]:
    """What a part's ``repr`` shows, from its constructor's arguments: the fields of the options
    dataclass given at ``position`` (or as ``options=``), in declaration order; without one,
    the keyword arguments whose values are plain (numbers, strings, booleans, ``None`` and
    lists of them)."""
    options = kwargs.get("options", args[position] if len(args) > position else None)
    if dataclasses.is_dataclass(options) and not isinstance(options, type):
        return {f.name: getattr(options, f.name) for f in dataclasses.fields(options)}
    return {k: v for k, v in kwargs.items() if _plain(v)}


class ShowsSettings:
    """Mixin (before ``nn.Module`` among the bases): ``repr(part)`` shows its settings.

    The settings are captured when the object is created (see :func:`settings_of`), so a
    subclass needs no code for it; an ``extra_repr`` of its own still wins.
    """

    #: position of the options object among the constructor's arguments: the factory's
    #: arguments of the part's kind come first (``task_names`` for a combiner, ``parts`` for
    #: an architecture, ``feature_info, out_channels`` for a head), then the options
    options_position: int = 1

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        self = super().__new__(cls)
        # object.__setattr__: nn.Module's own __setattr__ needs its __init__ to have run
        object.__setattr__(self, "_mtlzoo_settings", settings_of(args, kwargs, cls.options_position))
        return self

    def extra_repr(self) -> str:
        """``name=value`` of each setting, comma-separated (what ``nn.Module.__repr__`` prints
        inside the parentheses)."""
        values = self.__dict__.get("_mtlzoo_settings") or {}
        return ", ".join(f"{k}={v!r}" for k, v in values.items())
