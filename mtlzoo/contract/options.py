"""Options: declared once, as a dataclass, and validated before anything is built.

A part's options are the fields of one dataclass. The zoo validates the spec's values
against it, fills in the defaults and hands the factory **one instance** of it::

    from dataclasses import dataclass
    from typing import Literal
    from mtlzoo import option

    @dataclass
    class FCNOptions:
        channels: int = option(64, ge=1)             # a range, checked with the key path
        use: Literal["all", "last"] = "all"          # a choice
        dropout: float = option(0.0, ge=0, lt=1)
        rates: tuple[int, int, int] = (12, 24, 36)   # exactly three ints

    def make_fcn(feature_info, out_channels, options: FCNOptions): ...

Supported field types (nested freely): ``bool`` (only ``true``/``false``; ``1`` is not a
boolean), ``int`` (not a bool, not a float), ``float`` (ints accepted; NaN and infinities
refused unless ``option(finite=False)``; YAML strings such as ``1e-3`` are read as
numbers), ``str``, ``Literal[...]`` (one of the listed values), ``Optional[X]`` /
``X | None``, ``list[X]``, ``tuple[X, ...]`` (any length), ``tuple[X, Y]`` (exactly that
many), ``dict[str, X]``, another dataclass (a nested mapping), and ``Any`` (passed as
is). :func:`option` adds bounds (``ge``, ``gt``, ``le``, ``lt``; for a list or tuple of
numbers they apply to every element) and lengths (``min_len``, ``max_len``). A method
``check(self)`` on the dataclass, if present, runs after the fields are valid and raises
``ValueError`` for a combination that is not allowed; its message is reported with the
key path.

The schema is checked when the part is registered: an unsupported field type or a
default that fails its own constraints is a registration error naming the plugin and
the part.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import MISSING, dataclass
from typing import Any, Literal, Union

from .errors import ConfigError, did_you_mean

_META = "mtlzoo"
#: every int option fits a signed 64-bit integer (what torch and numpy hold), bounds or not
INT_RANGE = (-(2**63), 2**63 - 1)
_INT = re.compile(r"[+-]?\d+")
_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")


@dataclass(frozen=True)
class Constraint:
    """Bounds and lengths of one option (see :func:`option`)."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    min_len: int | None = None
    max_len: int | None = None
    finite: bool = True
    help: str = ""
    path: bool = False

    def describe(self) -> str:
        """The bounds in words (``>= 1 and < 10``)."""
        parts = [
            f"{op} {_num(v)}"
            for op, v in ((">=", self.ge), (">", self.gt), ("<=", self.le), ("<", self.lt))
            if v is not None
        ]
        return " and ".join(parts)


def _num(v: float) -> str:
    return _text(v) if isinstance(v, int) else f"{v:g}"


def _text(value: Any) -> str:
    """``str(value)``; an integer of more than 40 digits (Python refuses to print one of more
    than 4300) is described by its number of digits instead."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10**40:
        sign = "a negative" if value < 0 else "an"
        try:
            digits = str(len(str(abs(value))))
        except ValueError:  # beyond the printing limit: the digit count from the logarithm
            digits = f"about {int(math.log10(abs(value))) + 1}"
        return f"{sign} integer of {digits} digits"
    try:
        return str(value)
    except ValueError:
        return f"a {type(value).__name__} holding an integer too long to print"


def option(
    default: Any = MISSING,
    *,
    default_factory: Any = MISSING,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
    min_len: int | None = None,
    max_len: int | None = None,
    finite: bool = True,
    help: str = "",
    path: bool = False,
) -> Any:
    """A dataclass field with bounds: ``channels: int = option(64, ge=1)``.

    A list or dict ``default`` is copied for every instance (no ``default_factory``
    needed). ``finite=False`` lets a float option be NaN or infinite. ``help`` is shown by
    ``mtlzoo list`` next to the option. ``path=True`` marks a file or folder: a relative
    value written in a spec file is resolved against that file's folder (a value given on the
    command line, against the current directory)."""
    if default is not MISSING and isinstance(default, (list, dict, set)):
        value = default
        default_factory, default = (lambda: type(value)(value)), MISSING  # noqa: E731
    meta = {_META: Constraint(ge, gt, le, lt, min_len, max_len, finite, help, path)}
    if default_factory is not MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def constraint(f: dataclasses.Field) -> Constraint:
    """The :class:`Constraint` of a field (the default one when declared without :func:`option`)."""
    return f.metadata.get(_META, Constraint())


class SchemaError(TypeError):
    """An options dataclass that mtlzoo cannot validate (a plugin bug, found at registration)."""


# -- types -----------------------------------------------------------------------------------------
def _hints(schema: type) -> dict[str, Any]:
    try:
        return typing.get_type_hints(schema)
    except Exception as exc:  # noqa: BLE001 - unresolvable forward references and the like
        raise SchemaError(f"{schema.__name__}: cannot read its field types ({exc})") from None


def type_name(tp: Any) -> str:
    """A short, readable name of a field type (``list[int]``, ``'a' | 'b'``, ``int | None``)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return "any value"
    if origin is Literal:
        return " | ".join(repr(a) for a in args)
    if origin in (Union, types.UnionType):
        return " | ".join("None" if a is type(None) else type_name(a) for a in args)
    if origin in (list, tuple, dict):
        inner = ", ".join("..." if a is Ellipsis else type_name(a) for a in args)
        return f"{origin.__name__}[{inner}]"
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return f"a mapping ({tp.__name__})"
    return getattr(tp, "__name__", str(tp))


def check_type(tp: Any, where: str) -> None:
    """Raise :class:`SchemaError` unless ``tp`` is a supported field type (see the module docstring)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any or tp in (bool, int, float, str):
        return
    if origin is Literal:
        if not args or not all(isinstance(a, (str, int, float, bool)) for a in args):
            raise SchemaError(f"{where}: Literal values must be strings, numbers or booleans")
        return
    if origin in (Union, types.UnionType):
        for a in args:
            if a is not type(None):
                check_type(a, where)
        return
    if origin is list and len(args) == 1:
        return check_type(args[0], where)
    if origin is tuple and args:
        for a in args:
            if a is not Ellipsis:
                check_type(a, where)
        return
    if origin is dict and len(args) == 2:
        if args[0] is not str:
            raise SchemaError(f"{where}: dict keys must be str (YAML mapping keys)")
        return check_type(args[1], where)
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return check_schema(tp, where)
    raise SchemaError(
        f"{where}: unsupported option type {type_name(tp)} (use bool, int, float, str, Literal, "
        f"Optional, list, tuple, dict[str, X], a dataclass or Any)"
    )


def check_schema(schema: Any, where: str = "") -> None:
    """Check an options dataclass at registration: supported field types, and defaults
    that satisfy their own constraints. Raises :class:`SchemaError` naming the field."""
    if not (isinstance(schema, type) and dataclasses.is_dataclass(schema)):
        raise SchemaError(f"{where or 'options'}: must be a dataclass, got {schema!r}")
    hints = _hints(schema)
    for f in dataclasses.fields(schema):
        check_type(hints[f.name], f"{schema.__name__}.{f.name}")
    defaults = {}
    for f in dataclasses.fields(schema):
        if f.default is not MISSING:
            defaults[f.name] = f.default
        elif f.default_factory is not MISSING:
            defaults[f.name] = f.default_factory()
    try:
        _build(schema, defaults, "", require=False)
    except ConfigError as exc:
        raise SchemaError(f"{schema.__name__}: invalid default: {exc}") from None


# -- validation ------------------------------------------------------------------------------------
def _join(path: str, key: Any) -> str:
    if isinstance(key, int):
        return f"{path}[{_text(key)}]"
    return f"{path}.{_text(key)}" if path else _text(key)


def _repr(value: Any, limit: int = 60) -> str:
    """``repr(value)`` shortened to ``limit`` characters (long integers described, see :func:`_text`)."""
    if isinstance(value, int) and not isinstance(value, bool):
        text = _text(value)
    else:
        try:
            text = repr(value)
        except ValueError:  # an integer beyond Python's 4300-digit printing limit, nested
            text = _text(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _got(value: Any) -> str:
    text = _repr(value)
    return f"{text} ({type(value).__name__})" if not isinstance(value, str) else text


def _fail(path: str, message: str) -> ConfigError:
    return ConfigError(f"{path}: {message}" if path else message)


def coerce(value: Any, tp: Any, path: str, con: Constraint = Constraint()) -> Any:
    """Validate ``value`` against the field type ``tp`` (and constraint ``con``); return it in
    its Python form (tuples for tuple fields, dataclass instances for nested mappings)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None:
            if type(None) in args:
                return None
            raise _fail(path, f"needs a value, got null (expected {type_name(tp)})")
        options = [a for a in args if a is not type(None)]
        if len(options) == 1:
            return coerce(value, options[0], path, con)
        for a in options:
            try:
                return coerce(value, a, path, con)
            except ConfigError:
                continue
        raise _fail(path, f"expected {type_name(tp)}, got {_got(value)}")
    if value is None:
        raise _fail(path, f"needs a value, got null (expected {type_name(tp)})")
    if origin is Literal:
        if isinstance(value, bool) and ("off" if not value else "on") in args:
            value = "off" if not value else "on"  # YAML 1.1 reads a bare off/on as a boolean
        if value in args and not (isinstance(value, bool) and not any(isinstance(a, bool) for a in args)):
            return value
        choices = ", ".join(repr(a) for a in args)
        hint = did_you_mean(value, [str(a) for a in args]) if isinstance(value, str) else ""
        return _raise(path, f"{_repr(value)} is not one of {choices}{hint}")
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise _fail(path, f"expected true or false, got {_got(value)}")
    if tp is int:
        if isinstance(value, str) and _INT.fullmatch(value.strip()):
            try:
                value = int(value)  # e.g. from ${oc.env:...}
            except ValueError:  # more digits than Python converts
                digits = len(value.strip().lstrip("+-"))
                raise _fail(path, f"must be a 64-bit integer, got an integer of {digits} digits") from None
        if isinstance(value, int) and not isinstance(value, bool):
            value = _bounded(value, path, con)
            if not INT_RANGE[0] <= value <= INT_RANGE[1]:
                raise _fail(path, f"must be a 64-bit integer (-2**63 to 2**63 - 1), got {_num(value)}")
            return value
        raise _fail(path, f"expected an integer, got {_got(value)}")
    if tp is float:
        if isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
            value = float(value)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            try:
                value = float(value)
            except OverflowError:  # an int beyond the float range
                raise _fail(path, f"must be a finite number, got {_num(value)}") from None
            if con.finite and not math.isfinite(value):
                raise _fail(path, f"must be a finite number, got {value}")
            return _bounded(value, path, con)
        raise _fail(path, f"expected a number, got {_got(value)}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise _fail(path, f"expected a string, got {_got(value)} (quote it in YAML)")
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise _fail(path, f"expected a list ({type_name(tp)}), got {_got(value)}")
        if origin is tuple and Ellipsis not in args:
            if len(value) != len(args):
                raise _fail(
                    path, f"expected {len(args)} values ({type_name(tp)}), got {len(value)}: {list(value)}"
                )
            items = [coerce(v, a, _join(path, i), con) for i, (v, a) in enumerate(zip(value, args))]
        else:
            items = [coerce(v, args[0], _join(path, i), con) for i, v in enumerate(value)]
        if con.min_len is not None and len(items) < con.min_len:
            raise _fail(path, f"needs at least {con.min_len} values, got {len(items)}")
        if con.max_len is not None and len(items) > con.max_len:
            raise _fail(path, f"takes at most {con.max_len} values, got {len(items)}")
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, Mapping):
            raise _fail(path, f"expected a mapping ({type_name(tp)}), got {_got(value)}")
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise _fail(_join(path, k), f"keys must be strings, got {_got(k)}")
            out[k] = coerce(v, args[1], _join(path, k), con)
        return out
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if isinstance(value, tp):  # a default instance: validate its fields like a mapping
            value = plain(value)
        return _build(tp, value, path, require=True, what=path)
    raise _fail(path, f"unsupported option type {type_name(tp)}")  # check_schema prevents this


def _raise(path: str, message: str) -> Any:
    raise _fail(path, message)


def _bounded(value: float, path: str, con: Constraint) -> Any:
    bad = (
        (con.ge is not None and value < con.ge)
        or (con.gt is not None and value <= con.gt)
        or (con.le is not None and value > con.le)
        or (con.lt is not None and value >= con.lt)
    )
    if bad:
        raise _fail(path, f"must be {con.describe()}, got {_num(value)}")
    return value


def _build(schema: type, values: Any, path: str, require: bool, what: str = "") -> Any:
    if values is None:
        values = {}
    if not isinstance(values, Mapping):
        raise _fail(path, f"expected a mapping of options, got {_got(values)}")
    hints = _hints(schema)
    fields = {f.name: f for f in dataclasses.fields(schema) if f.init}
    for key in values:
        if key not in fields:
            owner = what or f"{schema.__name__}"
            valid = ", ".join(fields) or "none"
            raise _fail(
                _join(path, key),
                f"unknown option of {owner}{did_you_mean(_text(key), fields)}; valid options: {valid}",
            )
    kwargs = {}
    for name, f in fields.items():
        if name in values:
            kwargs[name] = coerce(values[name], hints[name], _join(path, name), constraint(f))
        elif f.default is MISSING and f.default_factory is MISSING:
            if require:
                raise _fail(_join(path, name), f"{what or schema.__name__} needs a value for this option")
    try:
        instance = schema(**kwargs)
    except TypeError as exc:  # a required field when require=False (registration-time default check)
        if require:
            raise _fail(path, f"{what or schema.__name__}: {exc}") from None
        return None
    except (ValueError, ConfigError) as exc:  # __post_init__ checks
        raise _check_failed(path, str(exc), fields) from None
    check = getattr(instance, "check", None)
    if callable(check):
        try:
            check()
        except (ValueError, ConfigError) as exc:
            raise _check_failed(path, str(exc), fields) from None
    return instance


def _check_failed(path: str, message: str, fields: Mapping[str, Any]) -> ConfigError:
    """A ``check()`` message that starts with ``<field>: `` is reported at that field's path."""
    key, sep, rest = message.partition(": ")
    if sep and key in fields:
        return _fail(_join(path, key), rest)
    return _fail(path, message)


def build_options(schema: type | None, values: Any, path: str, what: str) -> Any:
    """Validate the mapping ``values`` against the options dataclass ``schema`` and return an
    instance of it (defaults filled in). ``path`` is the spec key path used in errors,
    ``what`` names the part (``"head 'fcn'"``). A part without options (``schema=None``)
    accepts only an empty mapping and returns ``None``."""
    if schema is None:
        if values:
            if not isinstance(values, Mapping):
                raise _fail(path, f"expected a mapping of options, got {_got(values)}")
            keys = sorted(values, key=_text)
            raise _fail(_join(path, keys[0]), f"{what} takes no options; remove {_repr(keys)}")
        return None
    return _build(schema, values, path, require=True, what=what)


def plain(value: Any) -> Any:
    """Option values as plain data (tuples as lists, dataclass instances as dicts), for YAML
    and JSON."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (list, tuple)):
        return [plain(x) for x in value]
    if isinstance(value, dict):
        return {k: plain(x) for k, x in value.items()}
    return value


def to_dict(instance: Any) -> dict[str, Any]:
    """An options instance as a plain mapping (``{}`` for a part without options)."""
    return {} if instance is None else plain(instance)


def describe_fields(schema: type | None) -> list[dict[str, Any]]:
    """Name, type, default and bounds of every option, for ``mtlzoo list`` and the docs."""
    if schema is None:
        return []
    hints = _hints(schema)
    out = []
    for f in dataclasses.fields(schema):
        con = constraint(f)
        if f.default is not MISSING:
            default = f.default
        elif f.default_factory is not MISSING:
            default = f.default_factory()
        else:
            default = "(required)"
        out.append(
            {
                "name": f.name,
                "type": type_name(hints[f.name]),
                "default": plain(default),
                "bounds": con.describe(),
                "help": con.help,
            }
        )
    return out


__all__ = [
    "option",
    "build_options",
    "check_schema",
    "to_dict",
    "describe_fields",
    "coerce",
    "plain",
    "SchemaError",
    "Constraint",
    "type_name",
]
