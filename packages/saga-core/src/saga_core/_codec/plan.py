"""Compiling context types: unions, dataclasses and pydantic models, and the dispatch from an
annotation to its converter (:class:`Compiler`). Internal to :mod:`saga_core._codec.context`."""

from __future__ import annotations

import dataclasses
import enum
import threading
import types
import typing
from collections.abc import Callable
from typing import Any

from saga_core._codec.text import TextEncoder, compile_text_encoder
from saga_core._codec.types import (
    JSON_KIND,
    MAX_CONTEXT_DEPTH,
    NONE,
    SCALARS,
    Conv,
    Mismatch,
    TooDeep,
    Unsupported,
    cls_name,
    dict_conv,
    enum_conv,
    fixed_tuple_conv,
    got,
    literal_conv,
    sequence_conv,
    type_name,
)

# Compiled dataclasses and pydantic models, shared by every codec that uses them.
_OBJECTS: dict[type, Conv] = {}


# --- unions --------------------------------------------------------------------------------


def union_conv(members: list[Conv], name: str) -> Conv:
    values = [m for m in members if m is not NONE]
    kinds = [k for m in values for k in m.kinds]
    tagged = len(kinds) != len(set(kinds))  # two members share a JSON kind: tag the values
    by_type: dict[type, list[Conv]] = {}
    for m in members:
        for t in m.outer:
            by_type.setdefault(t, []).append(m)
    all_kinds = frozenset(k for m in members for k in m.kinds)

    if not tagged and all(m.exact is not None for m in members):
        # e.g. str | None: a type check is the whole conversion.
        exact_types = frozenset(by_type)

        def enc_plain(v: Any) -> Any:
            if type(v) in exact_types:
                return v
            raise Mismatch(f"expected {name}, got {got(v)}")

        return Conv(name, all_kinds, tuple(by_type), enc_plain, enc_plain)

    def pick(v: Any) -> tuple[Conv, Any]:
        candidates = by_type.get(type(v))
        if candidates is not None:
            first: Mismatch | None = None
            for m in candidates:
                try:
                    return m, m.enc(v)
                except Mismatch as exc:  # noqa: PERF203 - usually a single candidate
                    first = first or exc
            assert first is not None
            raise first
        for m in members:  # looser matches, e.g. an int for a float member
            try:
                return m, m.enc(v)
            except Mismatch:  # noqa: PERF203 - only for values of no member's own type
                pass
        raise Mismatch(f"expected {name}, got {got(v)}")

    if not tagged:
        by_kind = {k: m for m in members for k in m.kinds}

        def enc(v: Any) -> Any:
            return pick(v)[1]

        def dec(d: Any) -> Any:
            m = by_kind.get(JSON_KIND.get(type(d), ""))
            if m is None:
                raise Mismatch(f"expected {name}, got {got(d)}")
            return m.dec(d)

        return Conv(name, all_kinds, tuple(by_type), enc, dec)

    by_name = {m.name: m for m in values}
    if len(by_name) != len(values):
        raise Unsupported(name, "two members have the same name, so no tag tells them apart")
    has_none = len(values) != len(members)

    def enc_tagged(v: Any) -> Any:
        m, out = pick(v)
        return out if m is NONE else {"$type": m.name, "value": out}

    def dec_tagged(d: Any) -> Any:
        if d is None and has_none:
            return None
        if type(d) is not dict or len(d) != 2 or "$type" not in d or "value" not in d:
            raise Mismatch(
                f'expected {name} tagged as {{"$type": ..., "value": ...}}, got {got(d)}'
            )
        tag = d["$type"]
        m = by_name.get(tag) if type(tag) is str else None
        if m is None:
            raise Mismatch(f"unknown $type {tag!r} for {name}; expected one of {sorted(by_name)}")
        return m.dec(d["value"])

    kinds_out = frozenset({"object", "null"} if has_none else {"object"})
    return Conv(name, kinds_out, tuple(by_type), enc_tagged, dec_tagged)


# --- compiling annotations -------------------------------------------------------------------


class Compiler:
    """One ``codec_for`` call. Dataclasses being compiled sit in ``pending`` so that recursive
    types (``children: list[Node]``) refer to themselves; they are shared only on success."""

    def __init__(self) -> None:
        self.pending: dict[type, Conv] = {}
        # Dataclasses whose fields are being compiled: meeting one again means it refers to
        # itself, so its values can nest without bound and their depth is counted.
        self.building: dict[type, DataclassPlan] = {}

    def commit(self) -> None:
        """Share what this call compiled with later calls (only once it all succeeded)."""
        _OBJECTS.update(self.pending)

    def obj(self, tp: type) -> Conv | None:
        conv = _OBJECTS.get(tp) or self.pending.get(tp)
        if conv is not None:
            building = self.building.get(tp)
            if building is not None:
                building.refers_to_itself = True
            return conv
        if isinstance(tp, type) and dataclasses.is_dataclass(tp):
            return self._dataclass(tp)
        if is_pydantic_model(tp):
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
        plan = DataclassPlan(cls)
        conv = Conv(cls_name(cls), frozenset({"object"}), (cls,), plan.encode, plan.decode)
        self.pending[cls] = conv
        self.building[cls] = plan
        try:
            self._dataclass_fields(cls, plan)
        finally:
            del self.building[cls]
        return conv

    def _dataclass_fields(self, cls: type, plan: DataclassPlan) -> None:
        owner = cls_name(cls)
        fields = dataclasses.fields(cls)
        names = {f.name for f in fields}
        # Checked before get_type_hints, which cannot evaluate a string InitVar on Python 3.10.
        for pseudo in getattr(cls, "__dataclass_fields__", {}).values():
            if pseudo.name not in names and _is_initvar(pseudo.type):
                raise Unsupported(
                    owner,
                    message=f"{owner}.{pseudo.name} is an InitVar, whose value is gone after "
                    "__init__, so it cannot be stored",
                )
        try:
            hints = typing.get_type_hints(cls)
        except Exception as exc:
            raise Unsupported(
                owner,
                message=f"{owner}: its annotations cannot be resolved "
                f"({type(exc).__name__}: {exc}); define the types it uses at module level",
            ) from exc
        for attr, hint in hints.items():
            if attr not in names and not (
                hint is typing.ClassVar or typing.get_origin(hint) is typing.ClassVar
            ):
                raise Unsupported(
                    owner,
                    message=f"{owner}.{attr} is annotated but is not a field; "
                    f"decorate {owner} with @dataclasses.dataclass",
                )
        plan.fields = [(f, self._field(owner, f.name, hints[f.name])) for f in fields]
        plan.finish()

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


class _Depth(threading.local):
    """How many values of self-referring dataclasses the current conversion is inside (per
    thread: a conversion never awaits, but a program may convert on several threads)."""

    level = 0


_depth = _Depth()


class DataclassPlan:
    """Per-dataclass field list; ``encode`` / ``decode`` are the hot path.

    A dataclass that refers to itself (``refers_to_itself``) counts how deeply its values nest
    and refuses more than :data:`MAX_CONTEXT_DEPTH` levels (:class:`TooDeep`).
    """

    __slots__ = ("_dec_fields", "_enc_fields", "_names", "cls", "fields", "refers_to_itself")

    def __init__(self, cls: type) -> None:
        self.cls = cls
        self.refers_to_itself = False
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

    def text_encoder(self, dumps: Callable[[Any], str]) -> TextEncoder | None:
        """The compiled direct-to-text encoder of this class (see :mod:`._codec_text`), or
        None for a class that refers to itself (its values take the counted general path)."""
        if self.refers_to_itself:
            return None
        return compile_text_encoder(self.cls, self._enc_fields, dumps)

    def encode(self, v: Any) -> dict[str, Any]:
        if self.refers_to_itself:
            encoded: dict[str, Any] = _counted(self._encode, v, self.cls)
            return encoded
        return self._encode(v)

    def decode(self, d: Any) -> Any:
        if self.refers_to_itself:
            return _counted(self._decode, d, self.cls)
        return self._decode(d)

    def _encode(self, v: Any) -> dict[str, Any]:
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

    def _decode(self, d: Any) -> Any:
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


def _counted(convert: Callable[[Any], Any], value: Any, cls: type) -> Any:
    """``convert(value)`` one level deeper; :class:`TooDeep` past :data:`MAX_CONTEXT_DEPTH`."""
    depth = _depth
    if depth.level >= MAX_CONTEXT_DEPTH:
        raise TooDeep(cls)
    depth.level += 1
    try:
        return convert(value)
    finally:
        depth.level -= 1


def _required(f: dataclasses.Field[Any]) -> bool:
    # Without a default, a missing field (init=False ones too) cannot be filled in.
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING


def _is_initvar(annotation: object) -> bool:
    if isinstance(annotation, str):  # unevaluated, as dataclasses itself recognises it
        return annotation.startswith(("InitVar", "dataclasses.InitVar"))
    return isinstance(annotation, dataclasses.InitVar) or annotation is dataclasses.InitVar


def _hashable(tp: Any) -> bool:
    try:
        hash(tp)
    except TypeError:
        return False
    return True


def is_pydantic_model(tp: Any) -> bool:
    # Duck typed, so that pydantic is never imported here.
    return isinstance(tp, type) and all(
        hasattr(tp, a) for a in ("model_dump", "model_validate", "model_fields")
    )
