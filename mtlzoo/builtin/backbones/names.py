"""timm's architecture names without importing timm (which imports torch).

Spec validation (``mtlzoo config show``, and ``mtlzoo train`` before it builds anything) must
refuse ``arch: resnt18`` exactly as building the model does, yet stay fast and torch-free. timm
registers an architecture by decorating its model function with ``@register_model`` (and maps
old names with ``register_model_deprecations``); reading those declarations from timm's installed
source gives the names ``timm.is_model`` accepts in about 50 ms, against seconds for
``import timm``. A name the scan does not find is confirmed with timm itself before it is
refused, so the scan can only make validation faster, never wrong
(``tests/test_build_path.py`` checks it finds every name of the installed timm).
"""

from __future__ import annotations

import functools
import importlib.util
import re
from pathlib import Path

from ...contract.errors import close_matches

_REGISTERED = re.compile(r"@register_model\s*\n\s*def\s+(\w+)\s*\(")
_DEPRECATIONS = re.compile(r"register_model_deprecations\(\s*__name__\s*,\s*\{([^}]*)\}", re.S)
_KEY = re.compile(r"['\"]([\w.-]+)['\"]\s*:")


@functools.lru_cache(maxsize=1)
def _scan() -> tuple[frozenset[str], frozenset[str]]:
    """``(registered, deprecated)`` names declared in the installed timm's model modules."""
    spec = importlib.util.find_spec("timm")
    if spec is None or spec.origin is None:
        return frozenset(), frozenset()
    names: set[str] = set()
    old: set[str] = set()
    for path in (Path(spec.origin).parent / "models").glob("*.py"):
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        names.update(_REGISTERED.findall(text))
        for block in _DEPRECATIONS.findall(text):
            old.update(_KEY.findall(block))
    return frozenset(names), frozenset(old)


def scanned_timm_names(deprecated: bool = True) -> frozenset[str]:
    """Architecture names declared in the installed timm's model modules (``timm.list_models()``,
    and with ``deprecated`` the old names timm still accepts); empty when timm is not installed
    or declares none this way."""
    names, old = _scan()
    return names | old if deprecated else names


def is_timm_architecture(name: str) -> bool:
    """Whether ``timm.is_model(name)`` (a pretrained tag such as ``.a1_in1k`` is ignored), asking
    timm itself only for a name the scan does not find."""
    if name.split(".", 1)[0] in scanned_timm_names():
        return True
    import timm

    return bool(timm.is_model(name))


def unknown_timm_architecture(name: str) -> str:
    """The message for an architecture timm does not have, with the closest names."""
    hits = close_matches(name, scanned_timm_names(deprecated=False))
    hint = f"; closest timm names: {', '.join(repr(h) for h in hits)}" if hits else ""
    return (
        f"unknown timm architecture {name!r}{hint} (search them with `mtlzoo list backbone 'timm:*pattern*'`)"
    )


__all__ = ["scanned_timm_names", "is_timm_architecture", "unknown_timm_architecture"]
