"""Key layout, RESP framing and value encoding: no server needed (URLs: test_urls.py)."""

from __future__ import annotations

import json
import uuid

import pytest
import redis
from redis.crc import key_slot

from saga_core import (
    SagaStatus,
    SagaUsageError,
    StorageCorruptedError,
)
from saga_core.testing import deeply_nested_json
from saga_redis import DEFAULT_KEY_PREFIX, RedisSagaStorage, open_redis_storage
from saga_redis._keys import KeyLayout, validate_key_prefix
from saga_redis._records import (
    decode_journal,
    decode_record,
    encode_applied,
    encode_body,
    micros_to_datetime,
    pairs,
)

# --- key prefix and layout ---------------------------------------------------------------------


@pytest.mark.parametrize("prefix", ["saga:", "a", "shop/orders:sagas-v2.", "X" * 100, "0:"])
def test_valid_key_prefixes_are_accepted(prefix: str) -> None:
    assert validate_key_prefix(prefix) == prefix


@pytest.mark.parametrize(
    "prefix",
    [
        "",
        ":saga",
        "sa ga:",
        "saga{x}:",
        "saga}:",
        "saga*:",
        "sa?ga",
        "[saga]",
        "s\n",
        "é:",
        "X" * 101,
    ],
)
def test_invalid_key_prefixes_are_refused_with_the_rules(prefix: str) -> None:
    with pytest.raises(SagaUsageError, match="invalid Redis key prefix") as caught:
        validate_key_prefix(prefix)
    assert "letters, digits" in str(caught.value)


@pytest.mark.parametrize("prefix", [None, b"saga:", 5])
def test_a_key_prefix_that_is_not_a_str_is_refused(prefix: object) -> None:
    with pytest.raises(SagaUsageError):
        validate_key_prefix(prefix)


def test_storage_refuses_an_invalid_prefix_before_touching_redis() -> None:
    client = redis.Redis(host="127.0.0.1", port=1)
    with pytest.raises(SagaUsageError, match="invalid Redis key prefix"):
        RedisSagaStorage(client, key_prefix="bad prefix")
    with pytest.raises(SagaUsageError, match="invalid Redis key prefix"):
        RedisSagaStorage.from_url("redis://127.0.0.1:1/0", key_prefix="{tag}")


@pytest.mark.parametrize("shards", [1, 3, 16])
def test_every_key_a_script_touches_for_a_saga_shares_one_hash_slot(shards: int) -> None:
    layout = KeyLayout(DEFAULT_KEY_PREFIX, shards)
    for _ in range(200):
        saga_id = uuid.uuid4()
        shard = layout.shard_of(saga_id)
        keys = [
            layout.record(saga_id),
            layout.journal(saga_id),
            shard.updated,
            shard.meta,
            shard.parked,
            shard.finished,
        ]
        assert len({key_slot(key.encode()) for key in keys}) == 1, keys


def test_shards_spread_sagas_over_distinct_hash_slots() -> None:
    layout = KeyLayout("saga:", 16)
    slots = {key_slot(layout.record(uuid.uuid4()).encode()) for _ in range(2000)}
    assert len(slots) == 16


def test_key_names_follow_the_documented_layout() -> None:
    saga_id = uuid.UUID("12345678-1234-5678-1234-567812345678")
    layout = KeyLayout("shop:", 1)
    assert layout.record(saga_id) == f"shop:{{0}}:record:{saga_id}"
    assert layout.journal(saga_id) == f"shop:{{0}}:journal:{saga_id}"
    shard = layout.shard_of(saga_id)
    assert (shard.updated, shard.meta, shard.parked, shard.finished) == (
        "shop:{0}:updated",
        "shop:{0}:meta",
        "shop:{0}:parked",
        "shop:{0}:finished",
    )


@pytest.mark.parametrize("shards", [0, -1, 16385, 1.5, True, "2"])
def test_invalid_shard_counts_are_refused(shards: object) -> None:
    with pytest.raises(SagaUsageError, match="shards"):
        KeyLayout("saga:", shards)  # type: ignore[arg-type]


# --- constructor and factory arguments ---------------------------------------------------------


def test_storage_refuses_something_that_is_not_a_redis_client() -> None:
    with pytest.raises(SagaUsageError, match="redis-py client"):
        RedisSagaStorage(object())  # type: ignore[arg-type]


@pytest.mark.parametrize("retain", [0, -1, float("nan"), float("inf"), "7d", True])
def test_invalid_retention_is_refused(retain: object) -> None:
    with pytest.raises(SagaUsageError, match="retain_finished_seconds"):
        RedisSagaStorage.from_url("redis://127.0.0.1/0", retain_finished_seconds=retain)


@pytest.mark.parametrize("cap", [0, -5, 2.5, True])
def test_invalid_journal_caps_are_refused(cap: object) -> None:
    with pytest.raises(SagaUsageError, match="max_journal_entries"):
        RedisSagaStorage.from_url("redis://127.0.0.1/0", max_journal_entries=cap)


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("max_connections", 0),
        ("connect_timeout", 0),
        ("command_timeout", -1.0),
        ("ssl_context", "yes"),
    ],
)
def test_invalid_connection_options_are_refused(option: str, value: object) -> None:
    with pytest.raises(SagaUsageError, match=option):
        open_redis_storage("rediss://127.0.0.1/0", **{option: value})


def test_the_factory_names_an_unknown_option_and_the_accepted_ones() -> None:
    with pytest.raises(SagaUsageError, match="socket_timeout") as caught:
        open_redis_storage("redis://127.0.0.1/0", socket_timeout=3)
    assert "key_prefix" in str(caught.value)


def test_the_storage_reports_its_settings() -> None:
    storage = RedisSagaStorage.from_url(
        "redis://127.0.0.1/0",
        key_prefix="app:",
        retain_finished_seconds=None,
        max_journal_entries=None,
        shards=2,
    )
    assert (storage.key_prefix, storage.shards) == ("app:", 2)
    assert storage.retain_finished_seconds is None
    assert storage.max_journal_entries is None


# --- values ---------------------------------------------------------------------------------------


def test_applied_step_ids_are_a_json_array() -> None:
    assert encode_applied(()) == "[]"
    for _ in range(2):  # the second time from the cache of arrays seen
        assert json.loads(encode_applied(("a", 'b"c', "日本"))) == ["a", 'b"c', "日本"]
    assert encode_applied(["a", "b"]) == encode_applied(("a", "b")) == '["a","b"]'


@pytest.mark.parametrize(
    "item",
    [
        "not json",
        "[1, 2]",
        '{"step_id": "s"}',
        '["s", "sideways", "started", 1, 0, null]',
        '["s", "act", "paused", 1, 0, null]',
        '["s", "act", "started", "1", 0, null]',
        '["s", "act", "started", 1, "2026-01-01T00:00:00+00:00", null]',
        '["s", "act", "started", 1, 1.5, null]',
        '["s", "act", "started", 1, 0, 7]',
        '[7, "act", "started", 1, 0, null]',
        '["s", "act", "started", 1, 99999999999999999999, null]',
    ],
)
def test_a_foreign_journal_element_is_reported_with_its_key(item: str) -> None:
    with pytest.raises(StorageCorruptedError, match="element 0 of the Redis list 'the-key'"):
        decode_journal(uuid.uuid4(), "the-key", [item.encode()])


_HEAD = ["1", "running", "2", "", "0", "0", "tok-1", ""]
_BODY = ["0", "", "[]", "{}"]


def _fields(head: list[str] = _HEAD, body: list[str] = _BODY, **more: bytes) -> dict[str, bytes]:
    """A record's hash fields from its head and body parts (see saga_redis/lua/prelude.lua),
    as saga-redis wrote them before it stored the definition's version."""
    return {
        "name": b"n",
        "created": b"1",
        "head": " ".join(head).encode(),
        "body": "\n".join(body).encode(),
        **more,
    }


def _with(parts: list[str], index: int, value: str) -> list[str]:
    changed = list(parts)
    changed[index] = value
    return changed


@pytest.mark.parametrize(
    ("field", "fields"),
    [
        ("head", _fields(head=_with(_HEAD, 1, "paused"))),
        ("head", _fields(head=_with(_HEAD, 0, "one"))),
        ("head", _fields(head=_with(_HEAD, 0, "0"))),
        ("head", _fields(head=_with(_HEAD, 2, "soon"))),
        ("head", _fields(head=_with(_HEAD, 3, "soon"))),
        ("head", _fields(head=_with(_HEAD, 4, "many"))),
        ("head", _fields(head=_with(_HEAD, 4, "-1"))),
        ("head", _fields(head=_with(_HEAD, 5, "9"))),
        ("head", _fields(head=_with(_HEAD, 0, "1" * 19))),  # more than the scripts can count
        ("head", _fields(head=_with(_HEAD, 2, "9" * 400))),
        ("head", _fields(head=_with(_HEAD, 7, "owner"))),  # an owner without an expiry
        ("head", _fields(head=_HEAD[:6])),
        ("head", {k: v for k, v in _fields().items() if k != "head"}),
        ("error", _fields(head=_with(_HEAD, 5, "2"))),  # the error flag without an error
        ("body", _fields(body=_with(_BODY, 2, "{}"))),
        ("body", _fields(body=_with(_BODY, 2, "[1]"))),
        ("body", _fields(body=_with(_BODY, 3, "{not json"))),
        ("body", _fields(body=_with(_BODY, 0, "x"))),
        ("body", _fields(body=_with(_BODY, 1, "7"))),  # a next step that is not a string
        ("body", _fields(body=_BODY[:3])),
        ("body", {**_fields(), "body": b"0\n\xff\n[]\n{}"}),  # not UTF-8
        ("error", _fields(error=b"Boom: x")),  # an error without the head's flag
        ("name", {k: v for k, v in _fields().items() if k != "name"}),
        ("created", _fields(created=b"yesterday")),
        ("saga_version", _fields(saga_version=b"0")),
        ("saga_version", _fields(saga_version=b"seven")),
        ("saga_version", _fields(saga_version=b" 7")),
        ("saga_version", _fields(saga_version="\u0667".encode())),  # int() takes it
        ("saga_version", _fields(saga_version=b"1" * 19)),
        ("parent", _fields(parent=b"not-a-uuid")),
        ("parent", _fields(parent=uuid.UUID(int=1).hex.encode())),  # not as saga-redis writes it
    ],
)
def test_a_foreign_record_field_is_reported_with_its_key_and_field(
    field: str, fields: dict[str, bytes]
) -> None:
    with pytest.raises(StorageCorruptedError, match=f"field '{field}' of the Redis hash 'the-key'"):
        decode_record(uuid.uuid4(), "the-key", fields)


@pytest.mark.parametrize("part", [1, 2, 3], ids=["next-step", "applied", "context"])
def test_json_nested_too_deeply_is_reported_as_corrupt_not_as_a_recursion_error(
    part: int,
) -> None:
    saga_id = uuid.uuid4()
    fields = _fields(body=_with(_BODY, part, deeply_nested_json()))
    with pytest.raises(StorageCorruptedError, match="nested too deeply") as caught:
        decode_record(saga_id, "the-key", fields)
    assert caught.value.saga_id == saga_id
    assert str(saga_id) in str(caught.value)


def test_a_field_name_that_is_not_utf8_does_not_hide_the_record() -> None:
    flat: list[bytes] = []
    for field, value in _fields().items():
        flat += (field.encode(), value)
    record = decode_record(uuid.uuid4(), "the-key", pairs([b"\xff", b"x", *flat]))
    assert record.version == 1


def test_a_record_reads_its_parent_from_the_parent_field_and_none_without_it() -> None:
    parent_id = uuid.uuid4()
    child = decode_record(uuid.uuid4(), "the-key", _fields(parent=str(parent_id).encode()))
    assert child.parent_id == parent_id
    assert decode_record(uuid.uuid4(), "the-key", _fields()).parent_id is None


def test_a_record_reads_back_every_part_of_its_head_and_body() -> None:
    fresh = decode_record(uuid.uuid4(), "the-key", _fields())
    assert (fresh.version, fresh.attempts, fresh.parked, fresh.error) == (1, 0, False, None)
    assert (fresh.lease_owner, fresh.lease_expires_at, fresh.next_step) == (None, None, None)
    head = ["7", "failed", "2", "5", "3", "3", "tok-9", "a runner with spaces"]
    body = ["2", json.dumps("s.Ünï 😀", ensure_ascii=False), '["a","b"]', '{"x": "1\\n2"}']
    record = decode_record(uuid.uuid4(), "the-key", _fields(head=head, body=body, error=b"Boom: x"))
    assert (record.version, record.status, record.attempts, record.parked) == (
        7,
        SagaStatus.FAILED,
        3,
        True,
    )
    assert (record.lease_owner, record.lease_expires_at) == (
        "a runner with spaces",
        micros_to_datetime(5),
    )
    assert (record.cursor, record.next_step, record.applied) == (2, "s.Ünï 😀", ("a", "b"))
    assert (record.context, record.error) == ('{"x": "1\\n2"}', "Boom: x")
    empty_step = decode_record(uuid.uuid4(), "the-key", _fields(body=_with(_BODY, 1, '""')))
    assert empty_step.next_step == ""


def test_the_saga_version_reads_back_and_is_1_when_the_record_has_none() -> None:
    assert decode_record(uuid.uuid4(), "the-key", _fields()).saga_version == 1
    stored = decode_record(uuid.uuid4(), "the-key", _fields(saga_version=b"42"))
    assert stored.saga_version == 42


def test_the_body_keeps_the_context_and_the_step_id_as_given() -> None:
    # The context goes last, as it is (a JSON text may end in a line break); a step id goes
    # as a JSON string, which never holds a raw one.
    for context in ('{"a": 1}', '"line\\nbreak"', '{"k": "v"}\n'):
        for next_step in (None, "", "s\nt", "x y", "日本"):
            body = encode_body(3, next_step, '["s"]', context)
            record = decode_record(uuid.uuid4(), "the-key", {**_fields(), "body": body.encode()})
            assert (record.cursor, record.next_step, record.context) == (3, next_step, context)
            assert record.applied == ("s",)
