"""Tests for saga_core._codec.context: the strict, lossless JSON context codec, and SagaContext.

This module uses ``from __future__ import annotations``, so every context below has string
annotations that the codec resolves; ``make_dataclass`` covers real (unstringified) types.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import json
import math
import socket
import typing
import uuid
from collections.abc import Callable
from decimal import Decimal
from typing import Any, ClassVar, Literal, NewType, Optional, Union
from zoneinfo import ZoneInfo

import pydantic
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from saga_core._codec.context import ContextCodec, codec_for
from saga_core._codec.saga_context import SagaContext
from saga_core._codec.types import MAX_CONTEXT_DEPTH
from saga_core._model.errors import SagaContextError, StorageCorruptedError

# --- contexts used by the tests ----------------------------------------------------------------


class Color(str, enum.Enum):
    RED = "red"
    GREEN = "green"


class Priority(enum.IntEnum):
    LOW = 1
    HIGH = 2


class Perm(enum.IntFlag):
    R = 4
    W = 2


@dataclasses.dataclass
class OrderContext(SagaContext):
    order_id: str
    items: list[str]
    total_amount: float
    reservation_id: str | None = None


@dataclasses.dataclass
class Small(SagaContext):
    order_id: str
    n: int = 0


@dataclasses.dataclass(frozen=True)
class Address:
    city: str
    zip_code: str | None = None


@dataclasses.dataclass
class Card:
    number: str


@dataclasses.dataclass
class Iban:
    number: str


UserId = NewType("UserId", str)


@dataclasses.dataclass
class Everything(SagaContext):
    s: str
    i: int
    f: float
    b: bool
    none: None
    u: uuid.UUID
    when: dt.datetime
    day: dt.date
    amount: Decimal
    color: Color
    prio: Priority
    perm: Perm
    tags: list[str]
    matrix: list[list[int]]
    floats: tuple[float, ...]
    pair: tuple[int, str]
    empty: tuple[()]
    scores: dict[str, float]
    addresses: dict[str, list[Address]]
    address: Address
    maybe: Address | None
    opt_int: Optional[int]  # noqa: UP045 - the typing spelling must work too
    int_or_str: Union[int, str]  # noqa: UP007
    list_or_str: list[int] | str
    uuid_or_str: uuid.UUID | str
    when_or_str: dt.datetime | str | None
    int_or_float: int | float
    dec_or_str: Decimal | str
    payment: Card | Iban
    status: Literal["new", "paid"]
    user: UserId


def make_everything() -> Everything:
    return Everything(
        s="héllo ✓ 🎉",
        i=-(2**70),
        f=0.1,
        b=False,
        none=None,
        u=uuid.UUID("12345678-1234-5678-1234-567812345678"),
        when=dt.datetime(2024, 3, 1, 10, 0, 0, 123456, tzinfo=dt.timezone(dt.timedelta(hours=5))),
        day=dt.date(2024, 2, 29),
        amount=Decimal("12345678901234567890.000000000000000001"),
        color=Color.GREEN,
        prio=Priority.HIGH,
        perm=Perm.R | Perm.W,
        tags=["a", "b"],
        matrix=[[1, 2], [], [3]],
        floats=(1.5, -0.0, 1e300),
        pair=(7, "seven"),
        empty=(),
        scores={"x": 1.0, "": 2.5},
        addresses={"home": [Address("Paris", "75001"), Address("Lyon")]},
        address=Address("Berlin"),
        maybe=None,
        opt_int=3,
        int_or_str="3",
        list_or_str=[1, 2],
        uuid_or_str="12345678-1234-5678-1234-567812345678",
        when_or_str=dt.datetime(2024, 1, 1),
        int_or_float=1.0,
        dec_or_str=Decimal("1.10"),
        payment=Iban("DE00"),
        status="paid",
        user=UserId("u-1"),
    )


def shape(value: object) -> object:
    """The value with every type made explicit, so == also compares exact types."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return (
            type(value),
            {f.name: shape(getattr(value, f.name)) for f in dataclasses.fields(value)},
        )
    if isinstance(value, (list, tuple)):
        return (type(value), [shape(v) for v in value])
    if isinstance(value, dict):
        return (dict, {k: shape(v) for k, v in value.items()})
    if isinstance(value, dt.datetime):
        return (dt.datetime, value, value.tzinfo, value.fold)
    return (type(value), value)


T = typing.TypeVar("T")


def round_trip(value: T) -> T:
    codec: ContextCodec[T] = codec_for(type(value))
    text = codec.encode(value)
    json.loads(text)  # valid JSON
    decoded = codec.decode(text)
    assert decoded == value
    assert shape(decoded) == shape(value)
    assert codec.from_jsonable(json.loads(text)) == value
    assert json.loads(text) == codec.to_jsonable(value)
    return decoded


# --- round trips -----------------------------------------------------------------------------


def test_round_trip_of_every_supported_type() -> None:
    round_trip(make_everything())


def test_stored_format() -> None:
    data = json.loads(codec_for(Everything).encode(make_everything()))
    assert data["u"] == "12345678-1234-5678-1234-567812345678"
    assert data["when"] == "2024-03-01T10:00:00.123456+05:00"
    assert data["day"] == "2024-02-29"
    assert data["amount"] == "12345678901234567890.000000000000000001"
    assert data["color"] == "green"
    assert data["prio"] == 2
    assert data["perm"] == 6
    assert data["floats"] == [1.5, -0.0, 1e300]
    assert data["pair"] == [7, "seven"]
    assert data["addresses"] == {"home": [{"city": "Paris", "zip_code": "75001"},
                                          {"city": "Lyon", "zip_code": None}]}  # fmt: skip
    # distinguishable by JSON kind: plain
    assert data["maybe"] is None
    assert data["opt_int"] == 3
    assert data["int_or_str"] == "3"
    assert data["list_or_str"] == [1, 2]
    # members sharing a JSON kind: tagged
    assert data["uuid_or_str"] == {"$type": "str", "value": "12345678-1234-5678-1234-567812345678"}
    assert data["when_or_str"] == {"$type": "datetime", "value": "2024-01-01T00:00:00"}
    assert data["int_or_float"] == {"$type": "float", "value": 1.0}
    assert data["dec_or_str"] == {"$type": "Decimal", "value": "1.10"}
    assert data["payment"] == {"$type": "Iban", "value": {"number": "DE00"}}
    assert data["status"] == "paid"
    assert data["user"] == "u-1"
    assert list(data) == [f.name for f in dataclasses.fields(Everything)]  # names as written


def test_compact_and_unicode_kept() -> None:
    text = codec_for(Small).encode(Small("é🎉\x00", 1))
    assert text == '{"order_id":"é🎉\\u0000","n":1}'
    assert codec_for(Small).decode(text) == Small("é🎉\x00", 1)


@pytest.mark.parametrize(
    ("value", "member"),
    [
        (uuid.UUID(int=5), "UUID"),
        ("plain", "str"),
        (None, None),
    ],
)
def test_tagged_union_with_none(value: uuid.UUID | str | None, member: str | None) -> None:
    @dataclasses.dataclass
    class C:
        v: uuid.UUID | str | None

    stored = codec_for(C).to_jsonable(C(value))["v"]
    assert stored == (None if member is None else {"$type": member, "value": str(value)})
    round_trip(C(value))


def test_int_float_union_keeps_the_exact_type_in_either_order() -> None:
    @dataclasses.dataclass
    class C:
        a: int | float
        b: float | int

    for a, b in [(1, 1), (1.0, 1.0), (2**80, 0.5)]:
        assert shape(round_trip(C(a, b))) == shape(C(a, b))


def test_float_field_accepts_int_and_decodes_float() -> None:
    decoded = codec_for(OrderContext).decode(
        codec_for(OrderContext).encode(OrderContext("o", [], 3))
    )
    assert decoded.total_amount == 3.0
    assert type(decoded.total_amount) is float


@pytest.mark.parametrize(
    "when",
    [
        dt.datetime(2024, 1, 2, 3, 4, 5),
        dt.datetime(2024, 1, 2, 3, 4, 5, 6),
        dt.datetime(2024, 1, 2, tzinfo=dt.timezone.utc),
        dt.datetime(2024, 1, 2, tzinfo=dt.timezone(-dt.timedelta(hours=3, minutes=30))),
        dt.datetime(2024, 1, 2, tzinfo=dt.timezone(dt.timedelta(seconds=5, microseconds=3))),
        dt.datetime(2024, 7, 1, 12, tzinfo=ZoneInfo("Europe/Paris")),
        dt.datetime(2024, 11, 3, 1, 30, tzinfo=ZoneInfo("America/New_York")),
        dt.datetime(2024, 11, 3, 1, 30, fold=1, tzinfo=ZoneInfo("America/New_York")),
        dt.datetime(2024, 3, 10, 2, 30, tzinfo=ZoneInfo("America/New_York")),  # in a DST gap
        dt.datetime(2024, 3, 10, 2, 30, fold=1, tzinfo=ZoneInfo("America/New_York")),
        dt.datetime(2024, 7, 1, fold=1, tzinfo=ZoneInfo("Europe/Paris")),
        dt.datetime(2024, 11, 3, 1, 30, fold=1),
        dt.datetime(2024, 11, 3, 1, 30, fold=1, tzinfo=dt.timezone.utc),
        dt.datetime.min,
        dt.datetime.max,
    ],
)
def test_datetimes_round_trip_exactly(when: dt.datetime) -> None:
    @dataclasses.dataclass
    class C:
        when: dt.datetime

    decoded = round_trip(C(when)).when
    assert decoded.tzinfo == when.tzinfo
    assert decoded.utcoffset() == when.utcoffset()
    assert (decoded.fold, decoded.isoformat()) == (when.fold, when.isoformat())


def test_fold_is_stored() -> None:
    @dataclasses.dataclass
    class C:
        when: dt.datetime

    when = dt.datetime(2024, 11, 3, 1, 30, fold=1, tzinfo=ZoneInfo("America/New_York"))
    stored = "2024-11-03T01:30:00-05:00[America/New_York][fold=1]"
    assert codec_for(C).to_jsonable(C(when)) == {"when": stored}
    naive = dt.datetime(2024, 11, 3, 1, 30, fold=1)
    assert codec_for(C).to_jsonable(C(naive)) == {"when": "2024-11-03T01:30:00[fold=1]"}


def test_zoneinfo_key_is_stored() -> None:
    @dataclasses.dataclass
    class C:
        when: dt.datetime

    when = dt.datetime(2024, 7, 1, 12, tzinfo=ZoneInfo("Europe/Paris"))
    assert codec_for(C).to_jsonable(C(when)) == {"when": "2024-07-01T12:00:00+02:00[Europe/Paris]"}
    assert codec_for(C).decode(codec_for(C).encode(C(when))).when.tzinfo is ZoneInfo("Europe/Paris")


@pytest.mark.parametrize(
    "text", ["0.1", "-0", "1E+3", "1.000", "3.14159265358979323846264338327950288419716939937510"]
)
def test_decimal_is_exact(text: str) -> None:
    @dataclasses.dataclass
    class C:
        d: Decimal

    decoded = round_trip(C(Decimal(text))).d
    assert decoded.as_tuple() == Decimal(text).as_tuple()


def test_decimal_nan_round_trips() -> None:
    @dataclasses.dataclass
    class C:
        d: Decimal

    codec = codec_for(C)
    assert codec.decode(codec.encode(C(Decimal("NaN")))).d.is_nan()


def test_nested_optional_collections_and_tuples() -> None:
    @dataclasses.dataclass
    class C:
        a: list[tuple[int, Address | None]]
        b: dict[str, dict[str, list[uuid.UUID]]]
        c: tuple[tuple[str, ...], ...] | None
        d: list[Priority | Color]

    round_trip(
        C([(1, None), (2, Address("x"))], {"k": {"j": [uuid.UUID(int=1)]}}, (("a",), ()), [])
    )
    round_trip(C([], {}, None, [Priority.LOW, Color.RED]))


@dataclasses.dataclass
class Node:
    name: str
    children: list[Node] = dataclasses.field(default_factory=list)


def test_recursive_dataclass() -> None:
    round_trip(Node("root", [Node("a", [Node("b")]), Node("c")]))


def test_large_context() -> None:
    big = OrderContext("o" * 1_000_000, [f"item-{i}" for i in range(10_000)], 1.5)
    assert round_trip(big) == big
    emoji = Small("🎉" * 300_000)
    assert round_trip(emoji) == emoji


def test_frozen_slots_kw_only_and_init_false_fields() -> None:
    @dataclasses.dataclass(frozen=True, slots=True)
    class Frozen(SagaContext):
        a: int
        b: str = dataclasses.field(default="x", kw_only=True)
        computed: int = dataclasses.field(init=False, default=0)

    value = Frozen(1, b="y")
    object.__setattr__(value, "computed", 42)
    decoded = round_trip(value)
    assert decoded.computed == 42


def test_init_false_set_by_post_init() -> None:
    @dataclasses.dataclass
    class Post:
        a: int
        double: int = dataclasses.field(init=False)

        def __post_init__(self) -> None:
            self.double = self.a * 2

    value = Post(2)
    value.double = 5  # changed after __init__: the stored value wins
    assert round_trip(value).double == 5


def test_missing_field_with_default_uses_the_default() -> None:
    codec = codec_for(OrderContext)
    assert codec.decode('{"order_id":"o","items":[],"total_amount":1.0}') == OrderContext(
        "o", [], 1.0, None
    )


def test_classvar_is_not_stored() -> None:
    @dataclasses.dataclass
    class C:
        limit: ClassVar[int] = 3
        a: int = 0

    assert codec_for(C).to_jsonable(C(1)) == {"a": 1}


def test_unstringified_annotations() -> None:
    cls = dataclasses.make_dataclass(
        "Made", [("a", list[int]), ("b", "uuid.UUID | None"), ("c", dict[str, Address] | None)]
    )
    cls.__module__ = __name__
    value = cls([1], uuid.UUID(int=3), {"x": Address("y")})
    assert round_trip(value) == value


def test_codec_is_cached() -> None:
    assert codec_for(OrderContext) is codec_for(OrderContext)
    assert codec_for(OrderContext).context_type is OrderContext


# --- SagaContext ---------------------------------------------------------------------------------


def test_saga_context_to_dict_and_from_dict() -> None:
    ctx = OrderContext("o-1", ["a", "b"], 9.5, reservation_id="r")
    data = ctx.to_dict()
    assert data == {
        "order_id": "o-1",
        "items": ["a", "b"],
        "total_amount": 9.5,
        "reservation_id": "r",
    }
    assert OrderContext.from_dict(data) == ctx
    everything = make_everything()
    assert Everything.from_dict(everything.to_dict()) == everything
    with pytest.raises(StorageCorruptedError, match="order_id"):
        OrderContext.from_dict({"items": []})


def test_saga_context_has_no_fields() -> None:
    assert not dataclasses.is_dataclass(SagaContext)
    with pytest.raises(SagaContextError, match="must be a dataclass"):
        codec_for(SagaContext)


# --- unsupported annotations -------------------------------------------------------------------


@dataclasses.dataclass
class Payment:
    payment: socket.socket


@pytest.mark.parametrize(
    ("annotation", "fragment"),
    [
        (socket.socket, "field type 'socket' cannot be stored losslessly"),
        (list, "give the item types"),
        (dict, "give the item types"),
        (tuple, "give the item types"),
        (Any, "'Any'"),
        (object, "'object'"),
        (bytes, "'bytes'"),
        (complex, "'complex'"),
        (set[int], "'set[int]'"),
        (frozenset[str], "'frozenset[str]'"),
        (dict[int, str], "dict keys must be str"),
        (list[Any], "(Any is not supported)"),
        (dict[str, object] | None, "(object is not supported)"),
        (Callable[[], int], "cannot be stored losslessly"),
        (dt.time, "'time'"),
        (dt.timedelta, "'timedelta'"),
        (Literal[1.5], "Literal values must be str or int"),
        (typing.Sequence[int], "cannot be stored losslessly"),
    ],
)
def test_unsupported_annotation(annotation: object, fragment: str) -> None:
    cls = dataclasses.make_dataclass("Ctx", [("field", annotation)])
    with pytest.raises(SagaContextError) as info:
        codec_for(cls)
    message = str(info.value)
    assert message.startswith("Ctx.field: ")
    assert fragment in message
    assert "supported: str, int" in message


def test_unsupported_message_names_context_field_and_type() -> None:
    with pytest.raises(SagaContextError, match=r"^Payment\.payment: field type 'socket' cannot"):
        codec_for(Payment)


def test_unsupported_in_nested_dataclass_names_the_path() -> None:
    @dataclasses.dataclass
    class Outer:
        inner: list[Payment]

    with pytest.raises(SagaContextError, match=r"^Outer\.inner: Payment\.payment: field type"):
        codec_for(Outer)
    # the failure did not leave a half-compiled Outer behind
    with pytest.raises(SagaContextError):
        codec_for(Outer)


def test_unsupported_enum_values() -> None:
    class Ratio(enum.Enum):
        HALF = 0.5

    cls = dataclasses.make_dataclass("Ctx", [("r", Ratio)])
    with pytest.raises(SagaContextError, match="enum values must be str or int"):
        codec_for(cls)


def test_same_named_union_members_are_rejected() -> None:
    first = dataclasses.make_dataclass("Twin", [("a", int)])
    second = dataclasses.make_dataclass("Twin", [("a", int)])
    cls = dataclasses.make_dataclass("Ctx", [("t", Union[first, second])])  # noqa: UP007
    with pytest.raises(SagaContextError, match="same name"):
        codec_for(cls)


def test_initvar_is_rejected() -> None:
    @dataclasses.dataclass
    class C:
        a: int
        seed: dataclasses.InitVar[int] = 0

    with pytest.raises(SagaContextError, match=r"C\.seed is an InitVar"):
        codec_for(C)


def test_unstringified_initvar_is_rejected() -> None:
    cls = dataclasses.make_dataclass("Ctx", [("a", int), ("seed", dataclasses.InitVar[int])])
    with pytest.raises(SagaContextError, match=r"Ctx\.seed is an InitVar"):
        codec_for(cls)


def test_undecorated_subclass_is_rejected() -> None:
    class Child(Small):
        extra: str = "lost"

    with pytest.raises(SagaContextError, match=r"Child\.extra is annotated but is not a field"):
        codec_for(Child)


def test_unresolvable_annotation() -> None:
    @dataclasses.dataclass
    class Local:
        x: int

    @dataclasses.dataclass
    class C:
        local: Local  # a string annotation naming a function-local class

    with pytest.raises(SagaContextError, match="cannot be resolved"):
        codec_for(C)


@pytest.mark.parametrize("bad", [int, 3, "Small", Small("x"), list[int], Color])
def test_not_a_context_type(bad: Any) -> None:
    with pytest.raises(SagaContextError):
        codec_for(bad)


# --- mismatched values ---------------------------------------------------------------------------


@dataclasses.dataclass
class Strict:
    i: int = 0
    s: str = ""
    f: float = 0.0
    items: list[str] = dataclasses.field(default_factory=list)
    scores: dict[str, int] = dataclasses.field(default_factory=dict)
    address: Address | None = None
    pair: tuple[int, str] = (0, "")
    day: dt.date = dt.date(2000, 1, 1)
    when: dt.datetime = dt.datetime(2000, 1, 1)
    u: uuid.UUID | str = ""
    color: Color = Color.RED
    status: Literal["new", "paid"] = "new"


class Opaque:
    pass


class UtcLike(dt.tzinfo):
    def utcoffset(self, d: dt.datetime | None) -> dt.timedelta:
        return dt.timedelta(0)

    def dst(self, d: dt.datetime | None) -> dt.timedelta:
        return dt.timedelta(0)

    def tzname(self, d: dt.datetime | None) -> str:
        return "UTC"


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"i": {1, 2}}, "Strict.i: expected int, got set"),
        ({"i": True}, "Strict.i: expected int, got bool"),
        ({"i": 1.0}, "Strict.i: expected int, got float"),
        ({"i": Priority.LOW}, "Strict.i: expected int, got Priority"),
        ({"s": Opaque()}, "Strict.s: expected str, got Opaque"),
        ({"s": Color.RED}, "Strict.s: expected str, got Color"),
        ({"s": None}, "Strict.s: expected str, got NoneType"),
        ({"f": math.nan}, "Strict.f: float value nan is not finite"),
        ({"f": -math.inf}, "Strict.f: float value -inf is not finite"),
        ({"f": True}, "Strict.f: expected float, got bool"),
        ({"f": 2**60 + 1}, "Strict.f: int value is too large to be stored exactly"),
        ({"f": Decimal(1)}, "Strict.f: expected float, got Decimal"),
        ({"items": ["a", "b", 3]}, "Strict.items[2]: expected str, got int"),
        ({"items": ("a",)}, "Strict.items: expected list[str], got tuple"),
        ({"scores": {"a": 1, "b": "2"}}, "Strict.scores['b']: expected int, got str"),
        ({"scores": {1: 1}}, "Strict.scores: dict keys must be str, got key of type int"),
        ({"address": Address(3)}, "Strict.address.city: expected str, got int"),  # type: ignore[arg-type]
        ({"address": Card("x")}, "Strict.address: expected Address | None, got Card"),
        ({"pair": (1, "a", 2)}, "Strict.pair: expected tuple[int, str], got tuple of length 3"),
        ({"pair": (1, 2)}, "Strict.pair[1]: expected str, got int"),
        ({"day": dt.datetime(2020, 1, 1)}, "Strict.day: expected date, got datetime"),
        ({"when": dt.date(2020, 1, 1)}, "Strict.when: expected datetime, got date"),
        ({"when": dt.datetime(2020, 1, 1, tzinfo=UtcLike())}, "tzinfo of type UtcLike"),
        ({"u": 5}, "Strict.u: expected UUID | str, got int"),
        ({"color": "red"}, "Strict.color: expected Color, got str"),
        ({"status": "old"}, "Strict.status: expected Literal['new', 'paid'], got str 'old'"),
    ],
)
def test_mismatched_value(changes: dict[str, Any], message: str) -> None:
    value = dataclasses.replace(Strict(), **changes)
    codec = codec_for(Strict)
    for encode in (codec.encode, codec.to_jsonable):
        with pytest.raises(SagaContextError) as info:
            encode(value)
        assert message in str(info.value)


def test_subclass_instance_is_rejected() -> None:
    @dataclasses.dataclass
    class Sub(Small):
        pass

    with pytest.raises(SagaContextError, match="expected Small, got Sub"):
        codec_for(Small).encode(Sub("x"))


def test_lone_surrogate_is_rejected() -> None:
    with pytest.raises(SagaContextError, match=r"Strict\.items\[1\]: .*lone surrogate"):
        codec_for(Strict).encode(Strict(items=["é", "\ud800"]))


def test_lone_surrogate_in_a_dict_key_is_rejected() -> None:
    with pytest.raises(SagaContextError, match=r"Strict\.scores \(a key\): .*lone surrogate"):
        codec_for(Strict).encode(Strict(scores={"\udfff": 1}))


def test_pydantic_instance_of_another_type_is_rejected() -> None:
    with pytest.raises(SagaContextError, match="expected PydanticOrder, got PydanticLine"):
        codec_for(PydanticOrder).encode(PydanticLine(sku="a", qty=1))  # type: ignore[arg-type]


def test_reference_cycle_is_rejected() -> None:
    node = Node("loop")
    node.children.append(node)
    with pytest.raises(SagaContextError, match="reference cycle"):
        codec_for(Node).encode(node)


def test_unset_field_is_rejected() -> None:
    @dataclasses.dataclass
    class C:
        late: int = dataclasses.field(init=False)

    with pytest.raises(SagaContextError, match=r"C: field 'late' is not set"):
        codec_for(C).encode(C())


# --- corrupted stored data ------------------------------------------------------------------

GOOD = '{"order_id":"o","items":["a"],"total_amount":1.5,"reservation_id":null}'


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "not valid JSON"),
        ("{", "not valid JSON"),
        (GOOD[:-1], "not valid JSON"),
        ('{"order_id":"o","items":[],"total_amount":NaN}', "not valid JSON"),
        ("[]", "OrderContext: expected OrderContext as a JSON object, got list"),
        ('{"items":[],"total_amount":1.5}', "OrderContext.order_id: missing required field"),
        (GOOD.replace("}", ',"extra":1}'), "OrderContext: unknown field(s) 'extra'"),
        (GOOD.replace('"o"', "1"), "OrderContext.order_id: expected str, got int"),
        (GOOD.replace('["a"]', '["a",2]'), "OrderContext.items[1]: expected str, got int"),
        (GOOD.replace('["a"]', '"a"'), "OrderContext.items: expected list[str] as a JSON array"),
        (GOOD.replace("1.5", '"1.5"'), "OrderContext.total_amount: expected float, got str"),
        (GOOD.replace("1.5", "1e999"), "OrderContext.total_amount: float value inf"),
        (
            GOOD.replace("null", "true"),
            "OrderContext.reservation_id: expected str | None, got bool",
        ),
    ],
)
def test_corrupted_order_context(text: str, message: str) -> None:
    with pytest.raises(StorageCorruptedError) as info:
        codec_for(OrderContext).decode(text)
    assert message in str(info.value)
    assert info.value.__cause__ is not None


def strict_text(**changes: object) -> str:
    data = codec_for(Strict).to_jsonable(Strict())
    data.update(changes)
    return json.dumps(data)


@pytest.mark.parametrize(
    ("text", "message", "cause"),
    [
        (strict_text(i=True), "Strict.i: expected int, got bool", None),
        (strict_text(i=1.0), "Strict.i: expected int, got float", None),
        (strict_text(color="blue"), "Strict.color: 'blue' is not a value of Color", ValueError),
        (strict_text(color=1), "Strict.color: 1 is not a value of Color", ValueError),
        (strict_text(day="2024-13-01"), "Strict.day: invalid date '2024-13-01'", ValueError),
        (strict_text(day=20240101), "Strict.day: expected date as a JSON string, got int", None),
        (strict_text(when="yesterday"), "Strict.when: invalid datetime 'yesterday'", ValueError),
        (strict_text(when="2024-01-01T00:00:00+00:00[Nowhere/Land]"), "invalid datetime", KeyError),
        (strict_text(u="not-a-uuid"), "Strict.u: expected UUID | str tagged as", None),
        (
            strict_text(u={"$type": "UUID", "value": "xyz"}),
            "Strict.u: invalid UUID 'xyz'",
            ValueError,
        ),
        (strict_text(u={"$type": "int", "value": 1}), "Strict.u: unknown $type 'int'", None),
        (strict_text(u={"$type": "str", "value": "x", "n": 1}), "tagged as", None),
        (strict_text(pair=[1]), "Strict.pair: expected tuple[int, str] as a JSON array", None),
        (strict_text(scores={"a": "1"}), "Strict.scores['a']: expected int, got str", None),
        (
            strict_text(address={"city": "x", "zip": 1}),
            "Strict.address: unknown field(s) 'zip'",
            None,
        ),
        (strict_text(address={}), "Strict.address.city: missing required field", None),
        (strict_text(status="old"), "Strict.status: expected Literal['new', 'paid']", None),
        (strict_text(u=None), "Strict.u: expected UUID | str tagged as", None),
        (strict_text(u={"$type": ["str"], "value": "x"}), "unknown $type ['str']", None),
    ],
)
def test_corrupted_value(text: str, message: str, cause: type[Exception] | None) -> None:
    with pytest.raises(StorageCorruptedError) as info:
        codec_for(Strict).decode(text)
    assert message in str(info.value)
    assert "Strict" in str(info.value)
    assert info.value.__cause__ is not None
    if cause is not None:
        assert isinstance(info.value.__cause__, cause)


def test_corrupted_decimal() -> None:
    @dataclasses.dataclass
    class C:
        d: Decimal

    with pytest.raises(StorageCorruptedError, match=r"C\.d: invalid Decimal '1,5'") as info:
        codec_for(C).decode('{"d":"1,5"}')
    assert isinstance(info.value.__cause__, ArithmeticError)


def test_post_init_failure_on_decode() -> None:
    @dataclasses.dataclass
    class Checked:
        n: int

        def __post_init__(self) -> None:
            if self.n < 0:
                raise ValueError("n must be >= 0")

    with pytest.raises(StorageCorruptedError, match="n must be >= 0") as info:
        codec_for(Checked).decode('{"n":-1}')
    assert isinstance(info.value.__cause__, ValueError)


def test_from_jsonable_rejects_non_dict() -> None:
    with pytest.raises(StorageCorruptedError):
        codec_for(OrderContext).from_jsonable(["x"])


def test_decode_of_non_text() -> None:
    with pytest.raises(StorageCorruptedError):
        codec_for(OrderContext).decode(None)  # type: ignore[arg-type]


# --- pydantic ----------------------------------------------------------------------------------


class PydanticLine(pydantic.BaseModel):
    sku: str
    qty: int


class PydanticOrder(pydantic.BaseModel):
    order_id: uuid.UUID
    when: dt.datetime
    amount: Decimal
    lines: list[PydanticLine]
    tags: tuple[str, ...] = ()
    note: str | None = None


def make_pydantic_order() -> PydanticOrder:
    return PydanticOrder(
        order_id=uuid.UUID(int=9),
        when=dt.datetime(2024, 5, 6, 7, 8, 9, tzinfo=dt.timezone.utc),
        amount=Decimal("10.50"),
        lines=[PydanticLine(sku="a", qty=2)],
        tags=("x", "y"),
    )


def test_pydantic_round_trip() -> None:
    order = make_pydantic_order()
    codec = codec_for(PydanticOrder)
    text = codec.encode(order)
    assert json.loads(text)["order_id"] == str(uuid.UUID(int=9))
    assert codec.decode(text) == order
    assert codec.from_jsonable(codec.to_jsonable(order)) == order


def test_pydantic_model_nested_in_a_dataclass() -> None:
    @dataclasses.dataclass
    class C:
        order: PydanticOrder
        other: PydanticLine | None = None

    round_trip(C(make_pydantic_order(), PydanticLine(sku="b", qty=1)))


def test_pydantic_mismatched_value() -> None:
    order = make_pydantic_order()
    order.lines = {1, 2}  # type: ignore[assignment]  # no validate_assignment: passes pydantic
    with pytest.raises(SagaContextError, match="PydanticOrder: pydantic cannot serialize"):
        codec_for(PydanticOrder).encode(order)


def test_pydantic_corrupted() -> None:
    codec = codec_for(PydanticOrder)
    with pytest.raises(StorageCorruptedError, match="PydanticOrder") as info:
        codec.decode('{"order_id": "nope"}')
    assert info.value.__cause__ is not None
    with pytest.raises(StorageCorruptedError, match="PydanticOrder") as info:
        codec.from_jsonable({"order_id": "nope"})
    assert info.value.__cause__ is not None


# --- property: round trip of generated contexts ------------------------------------------------


@dataclasses.dataclass
class Generated(SagaContext):
    text: str
    number: int
    ratio: float
    flag: bool
    ident: uuid.UUID
    stamp: dt.datetime
    amount: Decimal
    color: Color
    words: list[str]
    counts: dict[str, int]
    coords: tuple[float, float]
    maybe: Address | None
    choice: uuid.UUID | str
    mixed: int | float | list[str] | None


@st.composite
def generated(draw: st.DrawFn) -> Generated:
    finite = st.floats(allow_nan=False, allow_infinity=False)
    return Generated(
        text=draw(st.text()),
        number=draw(st.integers()),
        ratio=draw(finite),
        flag=draw(st.booleans()),
        ident=draw(st.uuids()),
        stamp=draw(
            st.datetimes(
                timezones=st.none() | st.timezones() | st.just(dt.timezone(dt.timedelta(hours=-2)))
            )
        ),
        amount=draw(st.decimals(allow_nan=False)),
        color=draw(st.sampled_from(Color)),
        words=draw(st.lists(st.text(max_size=5), max_size=5)),
        counts=draw(st.dictionaries(st.text(max_size=5), st.integers(), max_size=5)),
        coords=(draw(finite), draw(finite)),
        maybe=draw(st.none() | st.builds(Address, st.text(), st.none() | st.text())),
        choice=draw(st.uuids() | st.text()),
        mixed=draw(st.none() | st.integers() | finite | st.lists(st.text(max_size=3), max_size=3)),
    )


@settings(max_examples=200, deadline=None)
@given(generated())
def test_generated_round_trip(value: Generated) -> None:
    codec = codec_for(Generated)
    try:
        text = codec.encode(value)
    except SagaContextError as exc:  # only lone surrogates may be refused
        assert "lone surrogate" in str(exc)
        return
    decoded = codec.decode(text)
    assert shape(decoded) == shape(value)
    assert Generated.from_dict(value.to_dict()) == value


# --- the compiled direct-to-text path ---------------------------------------------------------


def general_text(codec: ContextCodec[Any], value: Any) -> str:
    """What the general path (dict of JSON values, then the C encoder) writes."""
    return json.dumps(codec.to_jsonable(value), ensure_ascii=False, separators=(",", ":"))


@settings(max_examples=200, deadline=None)
@given(generated())
def test_generated_text_path_writes_what_the_general_path_writes(value: Generated) -> None:
    codec = codec_for(Generated)
    text = codec._text(value)
    assert text is not None  # every field holds a value of its own type
    assert text == general_text(codec, value)
    assert json.loads(text) == json.loads(general_text(codec, value))


@given(
    st.text(),
    st.integers(),
    st.booleans(),
)
def test_text_path_of_direct_fields(text: str, number: int, flag: bool) -> None:
    @dataclasses.dataclass
    class Direct:
        s: str
        n: int
        b: bool
        z: None = None

    codec = codec_for(Direct)
    value = Direct(text, number, flag)
    assert codec._text(value) == general_text(codec, value)


def test_text_path_of_a_dataclass_without_fields() -> None:
    @dataclasses.dataclass
    class NoFields:
        pass

    assert codec_for(NoFields)._text(NoFields()) == "{}"
    assert codec_for(NoFields).encode(NoFields()) == "{}"


def test_text_path_keeps_non_ascii_field_names_and_values() -> None:
    @dataclasses.dataclass
    class Ünicode:
        naïve: str
        größe: int

    codec = codec_for(Ünicode)
    value = Ünicode('ré"sumé\\\x00\n', 3)
    assert codec._text(value) == '{"naïve":"ré\\"sumé\\\\\\u0000\\n","größe":3}'
    assert codec.decode(codec.encode(value)) == value


@pytest.mark.parametrize(
    ("field", "bad", "message"),
    [
        ("order_id", 5, r"Small\.order_id: expected str, got int"),
        ("n", True, r"Small\.n: expected int, got bool"),
        ("n", Priority.LOW, r"Small\.n: expected int, got Priority"),
        ("n", "5", r"Small\.n: expected int, got str"),
    ],
)
def test_text_path_leaves_a_wrong_value_to_the_general_path(
    field: str, bad: object, message: str
) -> None:
    """A value of another type (even a subclass of the field's type) is not written by the
    text path; the general path refuses it with the field's path."""
    codec = codec_for(Small)
    value = Small("o")
    setattr(value, field, bad)
    assert codec._text(value) is None
    with pytest.raises(SagaContextError, match=message):
        codec.encode(value)


def test_text_path_leaves_unset_fields_and_other_classes_to_the_general_path() -> None:
    codec = codec_for(Small)
    value = Small("o")
    del value.order_id  # (a field with a default would read the class attribute)
    assert codec._text(value) is None
    with pytest.raises(SagaContextError, match="Small: field 'order_id' is not set"):
        codec.encode(value)

    @dataclasses.dataclass
    class Sub(Small):
        pass

    assert codec._text(Sub("o")) is None
    with pytest.raises(SagaContextError, match="expected Small, got Sub"):
        codec.encode(Sub("o"))


def test_text_path_leaves_a_converter_failure_to_the_general_path() -> None:
    codec = codec_for(OrderContext)
    value = OrderContext("o", ["a", 1], math.nan)  # type: ignore[list-item]
    assert codec._text(value) is None
    with pytest.raises(SagaContextError, match=r"OrderContext\.items\[1\]: expected str"):
        codec.encode(value)
    value.items = ["a"]
    assert codec._text(value) is None  # NaN is refused by the float converter
    with pytest.raises(SagaContextError, match="not finite"):
        codec.encode(value)


def test_pydantic_contexts_have_no_text_path() -> None:
    codec = codec_for(PydanticOrder)
    order = make_pydantic_order()
    assert codec._text(order) is None
    assert json.loads(codec.encode(order))["order_id"] == str(uuid.UUID(int=9))


# --- limits: nesting depth and huge integers ----------------------------------------------------


def nested_nodes(depth: int) -> Node:
    """A chain of ``depth`` Nodes, each the only child of the one above."""
    node = Node("leaf")
    for level in range(depth - 1):
        node = Node(f"level-{level}", [node])
    return node


def test_a_self_referring_context_nests_up_to_the_documented_limit() -> None:
    codec = codec_for(Node)
    deepest = nested_nodes(MAX_CONTEXT_DEPTH)
    assert codec.decode(codec.encode(deepest)) == deepest


def test_nesting_past_the_limit_is_a_context_error_that_states_the_limit() -> None:
    with pytest.raises(SagaContextError, match=f"more than {MAX_CONTEXT_DEPTH} levels deep"):
        codec_for(Node).encode(nested_nodes(MAX_CONTEXT_DEPTH + 1))


def test_a_stored_context_nested_past_the_limit_is_corrupt_not_a_recursion_error() -> None:
    level = '{"name":"x","children":['
    text = level * MAX_CONTEXT_DEPTH + '{"name":"leaf","children":[]}' + "]}" * MAX_CONTEXT_DEPTH
    with pytest.raises(StorageCorruptedError, match=f"more than {MAX_CONTEXT_DEPTH} levels"):
        codec_for(Node).decode(text)


def test_json_nested_beyond_any_parser_is_corrupt_not_a_recursion_error() -> None:
    with pytest.raises(StorageCorruptedError, match="not valid JSON"):
        codec_for(Node).decode("[" * 100_000 + "]" * 100_000)


@dataclasses.dataclass
class Ledger:
    total: int
    entries: list[int] = dataclasses.field(default_factory=list)


@pytest.mark.parametrize(
    ("ledger", "where"),
    [(Ledger(10**5000), r"Ledger\.total"), (Ledger(1, [1, 10**5000]), r"Ledger\.entries\[1\]")],
    ids=["field", "list item"],
)
def test_an_int_too_long_for_text_is_a_context_error_naming_where(
    ledger: Ledger, where: str
) -> None:
    with pytest.raises(SagaContextError, match=f"{where}: .*digits"):
        codec_for(Ledger).encode(ledger)


def test_a_stored_int_too_long_for_python_is_corrupt() -> None:
    with pytest.raises(StorageCorruptedError):
        codec_for(Ledger).decode('{"total": %s, "entries": []}' % ("9" * 5000))


def test_field_from_jsonable_decodes_as_the_field_type_and_leaves_the_context() -> None:
    context = OrderContext("o-1", ["book"], 10.0)
    codec = codec_for(OrderContext)
    assert codec.field_from_jsonable(context, "total_amount", 12) == 12.0
    assert type(codec.field_from_jsonable(context, "total_amount", 12)) is float
    assert codec.field_from_jsonable(context, "reservation_id", "r-9") == "r-9"
    assert context == OrderContext("o-1", ["book"], 10.0)
    with pytest.raises(StorageCorruptedError, match="reservation_id"):
        codec.field_from_jsonable(context, "reservation_id", 5)
