"""One damaged record never fails a batch: what the contract cannot damage on Redis — a record
whose ``head`` the scripts cannot read, a record key of another type, an index member that is
not a saga id — and where a claimed damaged record is parked."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Iterator
from uuid import UUID

import pytest
import redis

from saga_core import StorageCorruptedError
from saga_core.testing import deeply_nested_json, make_checkpoint, make_entry, make_new_saga
from saga_redis import RedisSagaStorage

pytestmark = [pytest.mark.anyio, pytest.mark.redis]

_HEALTHY = 3


@pytest.fixture
def raw(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    client.close()


@pytest.fixture(params=[1, 4], ids=["one-shard", "four-shards"])
async def storage(
    request: pytest.FixtureRequest, redis_url: str, redis_key_prefix: str
) -> AsyncIterator[RedisSagaStorage]:
    async with RedisSagaStorage.from_url(
        redis_url, key_prefix=redis_key_prefix, shards=request.param
    ) as storage:
        yield storage


async def _stalled(storage: RedisSagaStorage, count: int) -> list[UUID]:
    """``count`` RUNNING sagas without a lease, oldest first."""
    ids = []
    for _ in range(count):
        new = make_new_saga()
        await storage.create(new)
        await storage.checkpoint(make_checkpoint(new.saga_id, 1, lease_seconds=None))
        ids.append(new.saga_id)
    return ids


def _reported(caplog: pytest.LogCaptureFixture, saga_id: UUID | None) -> list[str]:
    """The messages of the damaged-record reports about ``saga_id``."""
    return [
        record.getMessage()
        for record in caplog.records
        if record.name == "saga_core.storage" and getattr(record, "saga_id", "-") == saga_id
    ]


def _set_head_part(raw: redis.Redis, key: str, index: int, value: str) -> None:
    head = raw.hget(key, "head")
    assert isinstance(head, str)
    parts = head.split(" ", 7)
    parts[index] = value
    raw.hset(key, "head", " ".join(parts))


def _replace_with(raw: redis.Redis, key: str, kind: str) -> None:
    raw.delete(key)
    if kind == "string":
        raw.set(key, "someone else's value")
    else:
        raw.rpush(key, "someone else's value")


# Damage the scripts meet when they read a record's head (see saga_redis._scripts).
_UNREADABLE: dict[str, Callable[[redis.Redis, str], object]] = {
    "version": lambda raw, key: _set_head_part(raw, key, 0, "one"),
    "status": lambda raw, key: _set_head_part(raw, key, 1, "paused"),
    "update-time": lambda raw, key: _set_head_part(raw, key, 2, "soon"),
    "lease-expiry": lambda raw, key: _set_head_part(raw, key, 3, "later"),
    "flags": lambda raw, key: _set_head_part(raw, key, 5, "9"),
    # Numbers that Lua's doubles would not give back as they are: a claim would write garbage.
    "version-of-19-digits": lambda raw, key: _set_head_part(raw, key, 0, "1" * 19),
    "attempts-of-400-digits": lambda raw, key: _set_head_part(raw, key, 4, "9" * 400),
    "no-head": lambda raw, key: raw.hdel(key, "head"),
    "a-string": lambda raw, key: _replace_with(raw, key, "string"),
    "a-list": lambda raw, key: _replace_with(raw, key, "list"),
}


@pytest.mark.parametrize("damage", list(_UNREADABLE))
async def test_a_record_the_scripts_cannot_read_is_reported_and_every_other_saga_served(
    storage: RedisSagaStorage,
    raw: redis.Redis,
    caplog: pytest.LogCaptureFixture,
    damage: str,
) -> None:
    (damaged,) = await _stalled(storage, 1)  # the oldest: met first by every scan
    healthy = set(await _stalled(storage, _HEALTHY))
    key = storage.record_key(damaged)
    _UNREADABLE[damage](raw, key)
    kind = raw.type(key)
    value = raw.hgetall(key) if kind == "hash" else raw.dump(key)

    with caplog.at_level(logging.ERROR, logger="saga_core.storage"):
        listed = {record.saga_id for record in await storage.list_sagas(limit=100)}
    assert listed == healthy
    assert any(str(damaged) in message for message in _reported(caplog, damaged))
    assert {record.saga_id for record in await storage.list_recoverable(limit=100)} == healthy
    claimed = await storage.claim_recoverable(owner="worker", lease_seconds=60.0)
    assert {record.saga_id for record in claimed} == healthy
    # Never written: the scripts cannot tell its version, so they cannot fence a write.
    assert raw.type(key) == kind
    assert (raw.hgetall(key) if kind == "hash" else raw.dump(key)) == value


async def test_a_listing_fills_its_limit_past_damaged_records(
    storage: RedisSagaStorage, raw: redis.Redis
) -> None:
    damaged = await _stalled(storage, 2)  # the oldest: the first page meets them first
    healthy = await _stalled(storage, _HEALTHY)
    for saga_id in damaged:
        raw.hset(storage.record_key(saga_id), "body", "0\n\n[]\n{not json")
    listed = await storage.list_sagas(limit=_HEALTHY)
    assert [record.saga_id for record in listed] == healthy


async def test_a_claimed_damaged_record_is_parked_with_the_error_and_reported(
    storage: RedisSagaStorage,
    raw: redis.Redis,
    redis_key_prefix: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    (damaged,) = await _stalled(storage, 1)
    healthy = set(await _stalled(storage, _HEALTHY))
    key = storage.record_key(damaged)
    raw.hset(key, "body", f"0\n\n[]\n{deeply_nested_json()}")

    with caplog.at_level(logging.ERROR, logger="saga_core.storage"):
        claimed = await storage.claim_recoverable(owner="worker", lease_seconds=60.0)
    assert {record.saga_id for record in claimed} == healthy
    assert _reported(caplog, damaged)
    shard = key.split("}:", 1)[0] + "}:"
    assert raw.zscore(f"{shard}parked", str(damaged)) is not None
    assert raw.zscore(f"{shard}updated", str(damaged)) is None
    error = raw.hget(key, "error")
    assert isinstance(error, str)
    assert error.startswith(f"StorageCorruptedError: saga {damaged}: field 'body'"), error
    assert "nested too deeply" in error
    # Parked, not leased: no worker claims it again until it is repaired and unparked.
    assert await storage.claim_recoverable(owner="worker", lease_seconds=60.0) == []
    head = raw.hget(key, "head")
    assert isinstance(head, str)
    assert head.split(" ", 7)[7] == ""


async def test_an_index_member_that_is_not_a_saga_id_is_reported_and_skipped(
    storage: RedisSagaStorage, raw: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    (copied,) = await _stalled(storage, 1)
    healthy = set(await _stalled(storage, _HEALTHY)) | {copied}
    key = storage.record_key(copied)
    shard = key.split("}:", 1)[0] + "}:"
    # A saga record under a key that does not end in a saga id, listed in the index.
    raw.copy(key, f"{shard}record:not-a-saga-id")
    raw.zadd(f"{shard}updated", {"not-a-saga-id": 1})

    with caplog.at_level(logging.ERROR, logger="saga_core.storage"):
        listed = {record.saga_id for record in await storage.list_sagas(limit=100)}
    assert listed == healthy
    assert any("'not-a-saga-id'" in message for message in _reported(caplog, None))
    assert {record.saga_id for record in await storage.list_recoverable(limit=100)} == healthy
    claimed = await storage.claim_recoverable(owner="worker", lease_seconds=60.0)
    assert {record.saga_id for record in claimed} == healthy


async def test_errors_about_one_record_name_its_saga(
    storage: RedisSagaStorage, raw: redis.Redis
) -> None:
    new = make_new_saga(journal=[make_entry("a")])
    await storage.create(new)
    raw.lset(storage.journal_key(new.saga_id), 0, "not an entry")
    with pytest.raises(StorageCorruptedError) as caught:
        await storage.history(new.saga_id)
    assert caught.value.saga_id == new.saga_id
    _set_head_part(raw, storage.record_key(new.saga_id), 1, "paused")
    with pytest.raises(StorageCorruptedError, match=f"saga {new.saga_id}: ") as caught:
        await storage.claim(new.saga_id, owner="worker", lease_seconds=60.0)
    assert caught.value.saga_id == new.saga_id
    _replace_with(raw, storage.record_key(new.saga_id), "string")
    with pytest.raises(StorageCorruptedError, match=f"saga {new.saga_id}: ") as caught:
        await storage.load(new.saga_id)
    assert caught.value.saga_id == new.saga_id
