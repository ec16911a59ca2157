"""The strict, lossless JSON codec for saga contexts.

A storage receives the context as JSON text (``ContextCodec.encode``) and must return exactly
that text; it never needs to parse it. The format, for whoever reads it anyway:

* The context is a JSON object whose keys are the dataclass field names as written (no case
  conversion), in declaration order, with every field present. A pydantic model is stored as
  ``model_dump(mode="json")`` and read with pydantic's own validation.
* ``str``, ``int``, ``bool`` and ``None`` are stored as themselves; ``float`` as a JSON number
  (NaN and infinities are rejected; an ``int`` in a float field is stored as a float).
* ``uuid.UUID`` as its canonical string; ``decimal.Decimal`` as ``str(value)`` (exact);
  ``datetime.date`` as ISO 8601; ``datetime.datetime`` as ``isoformat()`` - naive stays naive,
  a ``datetime.timezone`` offset is kept, and a ``zoneinfo.ZoneInfo`` adds its key as
  ``"2024-03-01T10:00:00+01:00[Europe/Paris]"``. Other tzinfo classes are rejected. ``fold``
  survives for ZoneInfo datetimes only (it means nothing for naive or fixed-offset ones).
* An ``enum.Enum`` member as its value (which must be a str or an int); a ``Literal`` as itself.
* ``list[X]`` and ``tuple[X, ...]`` / ``tuple[X, Y]`` as arrays (tuples decode back as tuples);
  ``dict[str, X]`` as an object; nested dataclasses as objects, like the context.
* A union whose members all produce different JSON kinds (string, number, bool, null, array,
  object) - ``int | str``, ``X | None``, ``list[int] | str`` - is stored plainly: the kind says
  which member it is. When two members share a kind (``UUID | str``, ``int | float``, two
  dataclasses) a plain value would be ambiguous, so every non-None value of that union is
  stored tagged, ``{"$type": "<member name>", "value": <encoded value>}``, and decoded by its
  tag. The member name is the type's name (``"UUID"``, ``"str"``, ``"Address"``,
  ``"list[int]"``), so renaming a class used in a tagged union changes the stored format.

Compatibility of stored contexts: adding a field with a default is compatible (a stored context
without it decodes with the default). Removing or renaming a field is not (an unknown key is an
error), nor is changing a field's type in a way that changes its stored form.

Encoding is strict: a value that does not match its annotation raises ``SagaContextError``
naming the path (``OrderContext.items[2]``) and the actual type; nothing is stringified. The
text is compact, keeps non-ASCII characters as they are (strings with lone surrogates, which
UTF-8 cannot hold, are rejected) and escapes control characters, so it never holds a raw NUL.
Decoding is typed by the annotations and equally strict (wrong kinds, missing fields, unknown
keys, unknown tags raise ``StorageCorruptedError`` with the cause chained).
"""

from __future__ import annotations

import dataclasses
import enum
import json
import types
import typing
from typing import Any, Generic, TypeVar

from saga_core._codec_types import (
    SCALARS,
    SUPPORTED,
    Conv,
    Mismatch,
    Unsupported,
    cls_name,
    dict_conv,
    enum_conv,
    fixed_tuple_conv,
    got,
    literal_conv,
    sequence_conv,
    type_name,
    union_conv,
)
from saga_core._errors import SagaContextError, StorageCorruptedError

__all__ = ["ContextCodec", "codec_for"]

T = TypeVar("T")

# One encoder for every call: json.dumps with options would build a new JSONEncoder each time.
# check_circular is off because the converters always build a fresh tree.
_dumps = json.JSONEncoder(
    ensure_ascii=False, check_circular=False, allow_nan=False, separators=(",", ":")
).encode


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not valid JSON")


_loads = json.JSONDecoder(parse_constant=_reject_constant).decode


class ContextCodec(Generic[T]):
    """Compiled encoder/decoder for one context type; get one with :func:`codec_for`."""

    __slots__ = ("_dec", "_enc", "_name", "_pydantic", "context_type")

    def __init__(self, context_type: type[T], conv: Conv, *, pydantic: bool) -> None:
        self.context_type = context_type
        self._name = cls_name(context_type)
        self._enc = conv.enc
        self._dec = conv.dec
        self._pydantic = pydantic

    def to_jsonable(self, value: T) -> dict[str, object]:
        """The JSON-compatible dict :meth:`encode` dumps. Raises ``SagaContextError``."""
        try:
            data = self._enc(value)
        except Mismatch as m:
            raise SagaContextError(f"{self._name}{m.where()}: {m.detail}") from m.__cause__
        except RecursionError:
            raise SagaContextError(self._too_deep) from None
        if type(data) is not dict:
            raise SagaContextError(f"{self._name} must dump to a JSON object, not {got(data)}")
        return data

    def encode(self, value: T) -> str:
        """The context as compact JSON text. Raises ``SagaContextError`` when a value does not
        match its annotation or cannot be stored losslessly."""
        try:
            text: str = _dumps(self._enc(value))
        except Mismatch as m:
            raise SagaContextError(f"{self._name}{m.where()}: {m.detail}") from m.__cause__
        except RecursionError:
            raise SagaContextError(self._too_deep) from None
        # str.isascii is O(1) in CPython; only non-ASCII text needs the UTF-8 check.
        if not text.isascii():
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:
                where = _find_surrogate(self.to_jsonable(value), self._name)
                raise SagaContextError(
                    f"{where}: the string holds a lone surrogate, which is not valid Unicode "
                    "and cannot be stored as UTF-8"
                ) from None
        return text

    def from_jsonable(self, data: object) -> T:
        """Build the context from :meth:`to_jsonable` output. Raises ``StorageCorruptedError``."""
        try:
            return typing.cast(T, self._dec(data))
        except Mismatch as m:
            raise StorageCorruptedError(
                f"stored context does not decode into {self._name}: "
                f"{self._name}{m.where()}: {m.detail}"
            ) from (m.__cause__ or m)
        except RecursionError as exc:
            raise StorageCorruptedError(f"stored {self._name} is nested too deeply") from exc

    def decode(self, text: str) -> T:
        """Build the context from :meth:`encode` output. Raises ``StorageCorruptedError``
        (invalid JSON, missing or unknown fields, a value of the wrong type)."""
        if self._pydantic:
            try:
                return typing.cast(T, self.context_type.model_validate_json(text))  # type: ignore[attr-defined]
            except Exception as exc:
                raise StorageCorruptedError(
                    f"stored context does not decode into {self._name}: {exc}"
                ) from exc
        try:
            data = _loads(text)
        except (ValueError, TypeError, RecursionError) as exc:
            raise StorageCorruptedError(
                f"stored context for {self._name} is not valid JSON: {exc}"
            ) from exc
        return self.from_jsonable(data)

    @property
    def _too_deep(self) -> str:
        return f"{self._name} is nested too deeply or contains a reference cycle"

    def __repr__(self) -> str:
        return f"ContextCodec({self._name})"


_CODECS: dict[type, ContextCodec[Any]] = {}
_OBJECTS: dict[type, Conv] = {}  # compiled dataclasses and pydantic models, shared by codecs


def codec_for(context_type: type[T]) -> ContextCodec[T]:
    """The (cached) codec for ``context_type``, a dataclass or a pydantic v2 model.

    Raises ``SagaContextError`` when it is neither, or when a field's annotation cannot be
    stored losslessly (the message names the type, the field and the annotation).
    """
    try:
        return _CODECS[context_type]
    except KeyError:
        pass
    except TypeError:
        raise SagaContextError(f"{context_type!r} is not a context type") from None
    if not isinstance(context_type, type):
        raise SagaContextError(f"{context_type!r} is not a context type (a class)")
    compiler = _Compiler()
    try:
        conv = compiler.obj(context_type)
    except Unsupported as exc:
        raise SagaContextError(f"{exc.message or exc.bad}; supported: {SUPPORTED}") from None
    if conv is None:
        raise SagaContextError(
            f"context type {cls_name(context_type)} must be a dataclass "
            "(decorate it with @dataclasses.dataclass) or a pydantic model"
        )
    _OBJECTS.update(compiler.pending)
    codec = ContextCodec(context_type, conv, pydantic=_is_pydantic_model(context_type))
    _CODECS[context_type] = codec
    return codec


def _find_surrogate(data: Any, path: str) -> str:
    """Path (in JSON terms) of the first string holding a lone surrogate, for the message."""
    if type(data) is str:
        try:
            data.encode("utf-8")
        except UnicodeEncodeError:
            return path
    elif type(data) is dict:
        for k, v in data.items():
            found = _find_surrogate(k, f"{path} (a key)") or _find_surrogate(v, f"{path}.{k}")
            if found:
                return found
    elif type(data) is list:
        for i, v in enumerate(data):
            found = _find_surrogate(v, f"{path}[{i}]")
            if found:
                return found
    return ""


# --- compiling annotations -------------------------------------------------------------------


class _Compiler:
    """One ``codec_for`` call. Dataclasses being compiled sit in ``pending`` so that recursive
    types (``children: list[Node]``) refer to themselves; they are shared only on success."""

    def __init__(self) -> None:
        self.pending: dict[type, Conv] = {}

    def obj(self, tp: type) -> Conv | None:
        conv = _OBJECTS.get(tp) or self.pending.get(tp)
        if conv is not None:
            return conv
        if isinstance(tp, type) and dataclasses.is_dataclass(tp):
            return self._dataclass(tp)
        if _is_pydantic_model(tp):
            return self._pydantic(tp)
        return None

    def compile(self, tp: Any) -> Conv:
        conv = SCALARS.get(tp) if _hashable(tp) else None
        if conv is not None:
            return conv
        if hasattr(tp, "__supertype__"):  # typing.NewType: stored as its base type
            return self.compile(tp.__supertype__)
        origin = typing.get_origin(tp)
        args = typing.get_args(tp)
        name = type_name(tp)
        if origin is typing.Union or origin is types.UnionType:
            return union_conv([self.compile(a) for a in args], name)
        if origin is typing.Literal:
            return literal_conv(tp)
        array = frozenset({"array"})
        if origin is list and len(args) == 1:
            return Conv(name, array, (list,), *sequence_conv(self.compile(args[0]), list, name))
        if origin is tuple:
            if args == ((),):  # tuple[()] before Python 3.11
                args = ()
            if len(args) == 2 and args[1] is Ellipsis:
                item = self.compile(args[0])
                return Conv(name, array, (tuple,), *sequence_conv(item, tuple, name))
            if Ellipsis not in args:
                items = [self.compile(a) for a in args]
                return Conv(name, array, (tuple,), *fixed_tuple_conv(items, name))
        if origin is dict and len(args) == 2:
            if args[0] is not str:
                raise Unsupported(name, "dict keys must be str")
            value = self.compile(args[1])
            return Conv(name, frozenset({"object"}), (dict,), *dict_conv(value, name))
        if isinstance(tp, type) and origin is None:
            if issubclass(tp, enum.Enum):
                return enum_conv(tp)
            conv = self.obj(tp)
            if conv is not None:
                return conv
            if tp in (list, tuple, dict):
                raise Unsupported(name, "give the item types, e.g. list[str], dict[str, int]")
        raise Unsupported(name)

    def _dataclass(self, cls: type) -> Conv:
        plan = _DataclassPlan(cls)
        conv = Conv(cls_name(cls), frozenset({"object"}), (cls,), plan.encode, plan.decode)
        self.pending[cls] = conv
        owner = cls_name(cls)
        try:
            hints = typing.get_type_hints(cls)
        except Exception as exc:
            raise Unsupported(
                owner,
                message=f"{owner}: its annotations cannot be resolved ({type(exc).__name__}: {exc}); "
                "define the types it uses at module level",
            ) from exc
        fields = dataclasses.fields(cls)
        names = {f.name for f in fields}
        for attr, hint in hints.items():
            if (
                attr in names
                or hint is typing.ClassVar
                or typing.get_origin(hint) is typing.ClassVar
            ):
                continue
            if isinstance(hint, dataclasses.InitVar):
                reason = "is an InitVar, whose value is gone after __init__ and cannot be stored"
            else:
                reason = f"is annotated but is not a field; decorate {owner} with @dataclass"
            raise Unsupported(owner, message=f"{owner}.{attr} {reason}")
        plan.fields = [(f, self._field(owner, f.name, hints[f.name])) for f in fields]
        plan.finish()
        return conv

    def _field(self, owner: str, name: str, hint: Any) -> Conv:
        try:
            return self.compile(hint)
        except Unsupported as exc:
            if exc.message:  # from a nested dataclass: say how we got there
                exc.message = f"{owner}.{name}: {exc.message}"
            else:
                shown = type_name(hint)
                if exc.reason:
                    inner = (
                        f" ({exc.reason})" if exc.bad == shown else f" ({exc.bad}: {exc.reason})"
                    )
                else:
                    inner = "" if exc.bad == shown else f" ({exc.bad} is not supported)"
                exc.message = (
                    f"{owner}.{name}: field type {shown!r} cannot be stored losslessly{inner}"
                )
            raise

    def _pydantic(self, cls: Any) -> Conv:
        name = cls_name(cls)

        def enc(v: Any) -> Any:
            if type(v) is not cls:
                raise Mismatch(f"expected {name}, got {got(v)}")
            try:
                # warnings="error": a field holding a value of the wrong type must not pass.
                return v.model_dump(mode="json", warnings="error")
            except Exception as exc:
                raise Mismatch(f"pydantic cannot serialize it: {exc}") from exc

        def dec(d: Any) -> Any:
            try:
                return cls.model_validate(d)
            except Exception as exc:
                raise Mismatch(f"pydantic validation failed: {exc}") from exc

        return Conv(name, frozenset({"object"}), (cls,), enc, dec)


class _DataclassPlan:
    """Per-dataclass field list; ``encode`` / ``decode`` are the hot path."""

    __slots__ = ("_dec_fields", "_enc_fields", "_names", "cls", "fields")

    def __init__(self, cls: type) -> None:
        self.cls = cls
        self.fields: list[tuple[dataclasses.Field[Any], Conv]] = []
        self._enc_fields: tuple[tuple[str, type | None, Any], ...] = ()
        self._dec_fields: tuple[tuple[str, type | None, Any, bool, bool], ...] = ()
        self._names: frozenset[str] = frozenset()

    def finish(self) -> None:
        self._enc_fields = tuple((f.name, c.exact, c.enc) for f, c in self.fields)
        self._dec_fields = tuple(
            (f.name, c.exact, c.dec, f.init, _required(f)) for f, c in self.fields
        )
        self._names = frozenset(f.name for f, _ in self.fields)

    def encode(self, v: Any) -> dict[str, Any]:
        if type(v) is not self.cls:
            raise Mismatch(f"expected {cls_name(self.cls)}, got {got(v)}")
        out = {}
        name = ""
        try:
            for name, exact, enc in self._enc_fields:
                x = getattr(v, name)
                # exact is None for converters that do more than a type check: never matches.
                out[name] = x if type(x) is exact else enc(x)
        except Mismatch as m:
            m.path.append(f".{name}")
            raise
        except AttributeError as exc:
            raise Mismatch(f"field {name!r} is not set") from exc
        return out

    def decode(self, d: Any) -> Any:
        cls = self.cls
        if type(d) is not dict:
            raise Mismatch(f"expected {cls_name(cls)} as a JSON object, got {got(d)}")
        kwargs = {}
        late = []  # init=False fields: set after construction, since __init__ does not take them
        seen = 0
        name = ""
        try:
            for name, exact, dec, init, required in self._dec_fields:
                if name in d:
                    seen += 1
                    x = d[name]
                    if type(x) is not exact:
                        x = dec(x)
                    if init:
                        kwargs[name] = x
                    else:
                        late.append((name, x))
                elif required:
                    raise Mismatch("missing required field")
        except Mismatch as m:
            m.path.append(f".{name}")
            raise
        if seen != len(d):
            unknown = sorted(str(k) for k in d if k not in self._names)
            raise Mismatch(f"unknown field(s) {', '.join(map(repr, unknown))}")
        try:
            obj = cls(**kwargs)
        except Exception as exc:
            raise Mismatch(f"{cls_name(cls)}() raised {type(exc).__name__}: {exc}") from exc
        for name, x in late:
            object.__setattr__(obj, name, x)  # works for frozen dataclasses too
        return obj


def _required(f: dataclasses.Field[Any]) -> bool:
    # Without a default, a missing field (init=False ones too) cannot be filled in.
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING


def _hashable(tp: Any) -> bool:
    try:
        hash(tp)
    except TypeError:
        return False
    return True


def _is_pydantic_model(tp: Any) -> bool:
    # Duck typed, so that pydantic is never imported here.
    return isinstance(tp, type) and all(
        hasattr(tp, a) for a in ("model_dump", "model_validate", "model_fields")
    )
