"""Converters between annotated values and JSON-compatible data, compiled once per annotation.

Internal to :mod:`saga_core._codec.context`, whose docstring describes the stored format. Every
annotation compiles to a :class:`Conv` holding an encoder (value -> JSON data) and a decoder
(JSON data -> value). Both raise :class:`Mismatch` on a value that does not fit; the field path
is added while the exception unwinds, so the success path never builds path strings.
"""

from __future__ import annotations

import datetime as dt
import decimal
import enum
import itertools
import math
import types
import typing
import uuid
import zoneinfo
from collections.abc import Callable
from typing import Any

SUPPORTED = (
    "str, int, float, bool, None, list[X], tuple[X, ...], tuple[X, Y], dict[str, X], uuid.UUID, "
    "datetime.datetime, datetime.date, decimal.Decimal, enum.Enum with str or int values, "
    "Literal of str or int values, NewType of these, dataclasses, pydantic models, "
    "and unions of these (X | None, X | Y)"
)

NoneType = type(None)

# The JSON kind a decoded value has; two union members of one kind need a tag to be told apart.
JSON_KIND: dict[type, str] = {
    str: "string",
    int: "number",
    float: "number",
    bool: "bool",
    NoneType: "null",
    list: "array",
    dict: "object",
}

Fn = Callable[[Any], Any]


class Mismatch(Exception):
    """A value that does not fit its annotation. ``path`` holds segments innermost first."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail
        self.path: list[str] = []

    def where(self) -> str:
        return "".join(reversed(self.path))


#: How deeply a context may nest a dataclass inside itself (a tree: ``children: list[Node]``,
#: or ``A -> B -> A``). A type that does not refer to itself nests only as deep as it is
#: written; one that does is refused deeper than this, on encode (``SagaContextError``) and on
#: decode (``StorageCorruptedError``), instead of overflowing Python's recursion limit.
MAX_CONTEXT_DEPTH = 100


class TooDeep(Exception):
    """A value nests a self-referring dataclass more than :data:`MAX_CONTEXT_DEPTH` levels
    deep (or holds a reference cycle). ``cls`` names the class."""

    def __init__(self, cls: type) -> None:
        super().__init__(cls)
        self.cls = cls


class Unsupported(Exception):
    """An annotation the codec cannot store losslessly: ``bad`` names it, ``reason`` says why
    when that is not obvious; ``message`` is the full text, set where the field is known."""

    def __init__(self, bad: str, reason: str = "", *, message: str = "") -> None:
        super().__init__(message or bad)
        self.bad = bad
        self.reason = reason
        self.message = message


class Conv:
    """The compiled converter of one annotation.

    ``outer`` are the Python types whose instances it takes (for union dispatch), ``kinds`` the
    JSON kinds it produces, ``exact`` the type stored as-is when it is the only check needed.
    """

    __slots__ = ("dec", "enc", "exact", "kinds", "name", "outer")

    def __init__(
        self,
        name: str,
        kinds: frozenset[str],
        outer: tuple[type, ...],
        enc: Fn,
        dec: Fn,
        exact: type | None = None,
    ) -> None:
        self.name = name
        self.kinds = kinds
        self.outer = outer
        self.enc = enc
        self.dec = dec
        self.exact = exact


def cls_name(cls: type) -> str:
    """The class's qualified name without the ``f.<locals>.`` part of function-local classes."""
    return cls.__qualname__.rpartition("<locals>.")[2]


def got(value: object) -> str:
    return cls_name(type(value))


def type_name(tp: Any) -> str:
    """A readable name for an annotation, used in messages and as a union tag."""
    if tp is None or tp is NoneType:
        return "None"
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Union or origin is types.UnionType:
        return " | ".join(type_name(a) for a in args)
    if origin is typing.Literal:
        return f"Literal[{', '.join(repr(a) for a in args)}]"
    if origin is not None:
        if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
            return f"tuple[{type_name(args[0])}, ...]"
        return f"{type_name(origin)}[{', '.join(type_name(a) for a in args)}]"
    if isinstance(tp, type):
        return cls_name(tp)
    if hasattr(tp, "__supertype__"):  # typing.NewType
        return str(tp.__name__)
    return repr(tp).replace("typing.", "")


# --- scalars -------------------------------------------------------------------------------


def _exact(tp: type, name: str) -> Conv:
    def conv(v: Any) -> Any:
        if type(v) is tp:
            return v
        raise Mismatch(f"expected {name}, got {got(v)}")

    # Stored as is, so the same check encodes and decodes.
    return Conv(name, frozenset({JSON_KIND[tp]}), (tp,), conv, conv, exact=tp)


def _float(v: Any) -> float:
    # Encoder and decoder: an int is accepted (and becomes a float) only when exactly representable.
    if type(v) is float:
        if math.isfinite(v):
            return v
        raise Mismatch(f"float value {v!r} is not finite; JSON cannot store it")
    if type(v) is int:
        try:
            f = float(v)
        except OverflowError:
            f = math.inf
        if f == v:
            return f
        raise Mismatch("int value is too large to be stored exactly as a float")
    raise Mismatch(f"expected float, got {got(v)}")


def _parsed(name: str, parse: Fn, errors: tuple[type[Exception], ...]) -> Fn:
    def dec(d: Any) -> Any:
        if type(d) is not str:
            raise Mismatch(f"expected {name} as a JSON string, got {got(d)}")
        try:
            return parse(d)
        except errors as exc:
            raise Mismatch(f"invalid {name} {d[:80]!r}: {exc}") from exc

    return dec


def _stringified(
    tp: type, name: str, fmt: Fn, parse: Fn, errors: tuple[type[Exception], ...]
) -> Conv:
    def enc(v: Any) -> Any:
        if type(v) is tp:
            return fmt(v)
        raise Mismatch(f"expected {name}, got {got(v)}")

    return Conv(name, frozenset({"string"}), (tp,), enc, _parsed(name, parse, errors))


def _enc_datetime(v: Any) -> str:
    if type(v) is not dt.datetime:
        raise Mismatch(f"expected datetime, got {got(v)}")
    tz = v.tzinfo
    if tz is None or type(tz) is dt.timezone:
        text = v.isoformat()
    elif type(tz) is zoneinfo.ZoneInfo and tz.key is not None:
        # The offset keeps the instant; the key restores the zone (RFC 9557 style suffix).
        text = f"{v.isoformat()}[{tz.key}]"
    else:
        raise Mismatch(
            f"datetime with tzinfo of type {got(tz)} cannot be stored losslessly; "
            "use datetime.timezone or zoneinfo.ZoneInfo"
        )
    # isoformat drops fold, which decides the instant of a repeated local wall time.
    return text + _FOLD if v.fold else text


_FOLD = "[fold=1]"


def _parse_datetime(s: str) -> dt.datetime:
    fold = 0
    if s.endswith(_FOLD):
        s, fold = s[: -len(_FOLD)], 1
    if not s.endswith("]"):
        return dt.datetime.fromisoformat(s).replace(fold=fold)
    at = s.rfind("[")
    fixed = dt.datetime.fromisoformat(s[:at])
    zone = zoneinfo.ZoneInfo(s[at + 1 : -1])
    local = fixed.replace(tzinfo=zone, fold=fold)
    if local.utcoffset() == fixed.utcoffset():
        return local
    return fixed.astimezone(zone)  # the zone's rules changed since it was stored: keep the instant


SCALARS: dict[Any, Conv] = {
    str: _exact(str, "str"),
    int: _exact(int, "int"),
    bool: _exact(bool, "bool"),
    NoneType: _exact(NoneType, "None"),
    float: Conv("float", frozenset({"number"}), (float,), _float, _float),
    uuid.UUID: _stringified(uuid.UUID, "UUID", str, uuid.UUID, (ValueError,)),
    dt.date: _stringified(dt.date, "date", dt.date.isoformat, dt.date.fromisoformat, (ValueError,)),
    decimal.Decimal: _stringified(
        decimal.Decimal, "Decimal", str, decimal.Decimal, (ArithmeticError, ValueError)
    ),
    dt.datetime: Conv(
        "datetime",
        frozenset({"string"}),
        (dt.datetime,),
        _enc_datetime,
        _parsed("datetime", _parse_datetime, (ValueError, zoneinfo.ZoneInfoNotFoundError)),
    ),
}
SCALARS[None] = SCALARS[NoneType]
NONE = SCALARS[NoneType]


def enum_conv(cls: type[enum.Enum]) -> Conv:
    value_types = {type(m._value_) for m in cls.__members__.values()}
    if not value_types <= {str, int}:
        raise Unsupported(cls_name(cls), "enum values must be str or int")
    name = cls_name(cls)

    def enc(v: Any) -> Any:
        if type(v) is cls:
            return v._value_
        raise Mismatch(f"expected {name}, got {got(v)}")

    def dec(d: Any) -> Any:
        if type(d) is str or type(d) is int:
            try:
                return cls(d)
            except ValueError as exc:
                raise Mismatch(f"{d!r} is not a value of {name}") from exc
        raise Mismatch(f"expected a value of {name}, got {got(d)}")

    return Conv(name, frozenset(JSON_KIND[t] for t in value_types), (cls,), enc, dec)


def literal_conv(tp: Any) -> Conv:
    values = typing.get_args(tp)
    if not all(type(a) is str or type(a) is int for a in values):
        raise Unsupported(type_name(tp), "Literal values must be str or int")
    allowed = frozenset((type(a), a) for a in values)
    outer = tuple({type(a) for a in values})
    name = type_name(tp)

    def conv(v: Any) -> Any:
        if type(v) in outer and (type(v), v) in allowed:
            return v
        shown = f" {v!r:.80}" if type(v) in outer else ""
        raise Mismatch(f"expected {name}, got {got(v)}{shown}")

    return Conv(name, frozenset(JSON_KIND[t] for t in outer), outer, conv, conv)


# --- containers ----------------------------------------------------------------------------


def _locate(items: Any, fns: Any, keys: Any) -> None:
    """Slow path after a failed fast path: redo item by item to find the failing one."""
    for key, fn, x in zip(keys, fns, items, strict=False):
        try:
            fn(x)
        except Mismatch as m:  # noqa: PERF203 - the slow path, run once after a failure
            m.path.append(f"[{key!r}]")
            raise
    raise AssertionError("unreachable: the fast path failed but every item converts")


def sequence_conv(item: Conv, container: type, name: str) -> tuple[Fn, Fn]:
    ok = {item.exact}
    exact = item.exact is not None
    item_enc, item_dec = item.enc, item.dec

    def convert(v: Any, fn: Fn) -> list[Any]:
        # map(type, ...) into a set runs in C: lists of scalars are checked without a Python loop.
        if exact and set(map(type, v)) <= ok:
            return list(v)
        try:
            return [fn(x) for x in v]
        except Mismatch:
            _locate(v, itertools.repeat(fn), range(len(v)))
            raise

    def enc(v: Any) -> Any:
        if type(v) is not container:
            raise Mismatch(f"expected {name}, got {got(v)}")
        return convert(v, item_enc)

    def dec(d: Any) -> Any:
        if type(d) is not list:
            raise Mismatch(f"expected {name} as a JSON array, got {got(d)}")
        out = convert(d, item_dec)
        return out if container is list else tuple(out)

    return enc, dec


def fixed_tuple_conv(items: list[Conv], name: str) -> tuple[Fn, Fn]:
    n = len(items)
    encs = [c.enc for c in items]
    decs = [c.dec for c in items]

    def convert(v: Any, fns: list[Fn]) -> list[Any]:
        try:
            return [fn(x) for fn, x in zip(fns, v, strict=True)]
        except Mismatch:
            _locate(v, fns, range(n))
            raise

    def enc(v: Any) -> Any:
        if type(v) is not tuple or len(v) != n:
            raise Mismatch(f"expected {name}, got {got(v)}" + _length(v, tuple))
        return convert(v, encs)

    def dec(d: Any) -> Any:
        if type(d) is not list or len(d) != n:
            raise Mismatch(f"expected {name} as a JSON array, got {got(d)}" + _length(d, list))
        return tuple(convert(d, decs))

    return enc, dec


def _length(v: Any, container: type) -> str:
    return f" of length {len(v)}" if isinstance(v, (list, tuple)) and type(v) is container else ""


def dict_conv(value: Conv, name: str) -> tuple[Fn, Fn]:
    ok = {value.exact}
    exact = value.exact is not None
    val_enc, val_dec = value.enc, value.dec

    def convert(v: Any, fn: Fn) -> dict[str, Any]:
        if not set(map(type, v)) <= {str}:
            bad = next(k for k in v if type(k) is not str)
            raise Mismatch(f"dict keys must be str, got key of type {got(bad)}")
        if exact and set(map(type, v.values())) <= ok:
            return dict(v)
        try:
            return {k: fn(x) for k, x in v.items()}
        except Mismatch:
            _locate(v.values(), itertools.repeat(fn), v.keys())
            raise

    def enc(v: Any) -> Any:
        if type(v) is not dict:
            raise Mismatch(f"expected {name}, got {got(v)}")
        return convert(v, val_enc)

    def dec(d: Any) -> Any:
        if type(d) is not dict:
            raise Mismatch(f"expected {name} as a JSON object, got {got(d)}")
        return convert(d, val_dec)

    return enc, dec
