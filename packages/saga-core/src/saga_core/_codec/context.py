"""The strict, lossless JSON codec for saga contexts.

A storage receives the context as JSON text (``ContextCodec.encode``) and must return exactly
that text; it never needs to parse it. The format, for whoever reads it anyway:

* The context is a JSON object whose keys are the dataclass field names as written (no case
  conversion), in declaration order, with every field present. A pydantic model is stored as
  ``model_dump(mode="json")`` and read with pydantic's own validation, so pydantic's rules
  apply to it (its types, its handling of NaN, its ``extra`` setting), not the ones below.
* ``str``, ``int``, ``bool`` and ``None`` are stored as themselves; ``float`` as a JSON number
  (NaN and infinities are rejected; an ``int`` in a float field is stored as a float).
* ``uuid.UUID`` as its canonical string; ``decimal.Decimal`` as ``str(value)`` (exact);
  ``datetime.date`` as ISO 8601; ``datetime.datetime`` as ``isoformat()`` - naive stays naive,
  a ``datetime.timezone`` offset is kept, and a ``zoneinfo.ZoneInfo`` adds its key as
  ``"2024-03-01T10:00:00+01:00[Europe/Paris]"``. Other tzinfo classes are rejected. A
  datetime with ``fold=1`` gets a further ``"[fold=1]"`` suffix (isoformat drops it).
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

import json
import json.encoder
import typing
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from saga_core._codec.plan import Compiler, DataclassPlan, is_pydantic_model
from saga_core._codec.types import (
    MAX_CONTEXT_DEPTH,
    SUPPORTED,
    Conv,
    Mismatch,
    TooDeep,
    Unsupported,
    cls_name,
    got,
)
from saga_core._model.errors import SagaContextError, StorageCorruptedError

__all__ = ["ContextCodec", "codec_for"]

T = TypeVar("T")

# One encoder for every call: json.dumps with options would build a new JSONEncoder each time.
# check_circular is off because the converters always build a fresh tree.
_encoder = json.JSONEncoder(
    ensure_ascii=False, check_circular=False, allow_nan=False, separators=(",", ":")
)


def _make_dumps() -> Callable[[Any], str]:
    # JSONEncoder.encode builds a C encoder per call; building it once saves a good part of a
    # checkpoint's encoding cost. Without the C accelerator, the plain encoder is used.
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:
        return _encoder.encode
    c_encode = make(
        None, _encoder.default, json.encoder.encode_basestring, None, ":", ",", False, False, False
    )
    join = "".join
    return lambda obj: join(c_encode(obj, 0))


_dumps = _make_dumps()


def _no_text(value: object) -> None:
    return None


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not valid JSON")


_loads = json.JSONDecoder(parse_constant=_reject_constant).decode


class ContextCodec(Generic[T]):
    """Compiled encoder/decoder for one context type; get one with :func:`codec_for`."""

    __slots__ = ("_dec", "_enc", "_name", "_pydantic", "_text", "context_type")

    context_type: type[T]

    def __init__(self, context_type: type[T], conv: Conv, *, pydantic: bool) -> None:
        self.context_type = context_type
        self._name = cls_name(context_type)
        self._enc = conv.enc
        self._dec = conv.dec
        self._pydantic = pydantic
        # A dataclass also gets its compiled direct-to-text encoder (the hot path).
        plan = getattr(conv.enc, "__self__", None)
        text = plan.text_encoder(_dumps) if isinstance(plan, DataclassPlan) else None
        self._text: Callable[[Any], str | None] = text or _no_text

    def to_jsonable(self, value: T) -> dict[str, object]:
        """The JSON-compatible dict :meth:`encode` dumps. Raises ``SagaContextError``."""
        try:
            data = self._enc(value)
        except Mismatch as m:
            raise SagaContextError(f"{self._name}{m.where()}: {m.detail}") from m.__cause__
        except (TooDeep, RecursionError) as exc:
            raise SagaContextError(self._too_deep(exc)) from None
        if type(data) is not dict:
            raise SagaContextError(f"{self._name} must dump to a JSON object, not {got(data)}")
        return data

    def encode(self, value: T) -> str:
        """The context as compact JSON text. Raises ``SagaContextError`` when a value does not
        match its annotation or cannot be stored losslessly."""
        try:
            text = self._text(value)
            if text is None:  # not the common case: the general path encodes it or says why not
                text = _dumps(self._enc(value))
        except Mismatch as m:
            raise SagaContextError(f"{self._name}{m.where()}: {m.detail}") from m.__cause__
        except (TooDeep, RecursionError) as exc:
            raise SagaContextError(self._too_deep(exc)) from None
        except ValueError as exc:  # an int with more digits than Python turns into text
            where = _find(self.to_jsonable(value), self._name, _int_too_long) or self._name
            raise SagaContextError(
                f"{where}: {exc}; store such a number as a str or a Decimal field"
            ) from exc
        # str.isascii is O(1) in CPython; only non-ASCII text needs the UTF-8 check.
        if not text.isascii():
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:
                where = _find(self.to_jsonable(value), self._name, _has_lone_surrogate)
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
        except (TooDeep, RecursionError) as exc:
            raise StorageCorruptedError(f"stored {self._too_deep(exc)}") from exc

    def field_from_jsonable(self, context: T, field: str, value: object) -> object:
        """``value`` (JSON data) decoded as the type of ``context``'s field ``field``, exactly as
        a stored context holding it would decode (``context`` itself is not changed).

        Raises:
            SagaContextError: ``context`` does not encode.
            StorageCorruptedError: ``value`` does not decode as that field's type.
        """
        data = self.to_jsonable(context)
        data[field] = value
        return getattr(self.from_jsonable(data), field)

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

    def _too_deep(self, error: TooDeep | RecursionError) -> str:
        if isinstance(error, TooDeep):
            return (
                f"{self._name} nests {cls_name(error.cls)} more than {MAX_CONTEXT_DEPTH} levels "
                "deep (the most a context may nest a class inside itself), or holds a reference "
                "cycle"
            )
        return f"{self._name} is nested deeper than Python's recursion limit allows"

    def __repr__(self) -> str:
        return f"ContextCodec({self._name})"


_CODECS: dict[type, ContextCodec[Any]] = {}


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
    compiler = Compiler()
    try:
        conv = compiler.obj(context_type)
    except Unsupported as exc:
        raise SagaContextError(f"{exc.message or exc.bad}; supported: {SUPPORTED}") from None
    if conv is None:
        raise SagaContextError(
            f"context type {cls_name(context_type)} must be a dataclass "
            "(decorate it with @dataclasses.dataclass) or a pydantic model"
        )
    compiler.commit()
    codec = ContextCodec(context_type, conv, pydantic=is_pydantic_model(context_type))
    _CODECS[context_type] = codec
    return codec


def _has_lone_surrogate(value: object) -> bool:
    if type(value) is not str:
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _int_too_long(value: object) -> bool:
    if type(value) is not int:
        return False
    try:
        str(value)
    except ValueError:
        return True
    return False


def _find(data: Any, path: str, bad: Callable[[object], bool]) -> str:
    """Path (in JSON terms) of the first value (or dict key) for which ``bad`` is true, for
    the message; ``""`` when there is none."""
    if bad(data):
        return path
    if type(data) is dict:
        for k, v in data.items():
            found = (path + " (a key)") if bad(k) else _find(v, f"{path}.{k}", bad)
            if found:
                return found
    elif type(data) is list:
        for i, v in enumerate(data):
            found = _find(v, f"{path}[{i}]", bad)
            if found:
                return found
    return ""
