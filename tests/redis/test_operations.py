"""Recovery bookkeeping on Redis: what the contract cannot see — where parked and finished
sagas are indexed, what the record's head holds, how ``list_sagas`` pages through the indexes
and shards, and foreign values at the index keys."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timedelta
from uuid import UUID, uuid4

import anyio
import pytest
import redis

from saga_core import (
    SagaStatus,
    SagaUsageError,
    StorageCorruptedError,
    StorageUnavailableError,
)
from saga_core.testing import DEFAULT_OWNER, make_checkpoint, make_entry, make_new_saga
from saga_redis import RedisSagaStorage
from saga_redis import _listing as listing_module
from saga_redis import _writes as writes_module
from saga_redis._records import HEAD_PARTS

from ._support import keys_under

pytestmark = [pytest.mark.anyio, pytest.mark.redis]


@pytest.fixture
def raw(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    client.close()


@pytest.fixture
async def storage(redis_url: str, redis_key_prefix: str) -> AsyncIterator[RedisSagaStorage]:
    async with RedisSagaStorage.from_url(redis_url, key_prefix=redis_key_prefix) as storage:
        yield storage


def _index(prefix: str, name: str, shard: int = 0) -> str:
    return f"{prefix}{{{shard}}}:{name}"


def _field(raw: redis.Redis, key: str, field: str) -> str:
    value = raw.hget(key, field)
    assert isinstance(value, str), (key, field, value)
    return value


def _head(raw: redis.Redis, key: str) -> dict[str, str]:
    """The parts of a record's head field, by name (see saga_redis/lua/prelude.lua)."""
    return dict(zip(HEAD_PARTS, _field(raw, key, "head").split(" ", 7), strict=True))


def _body(raw: redis.Redis, key: str) -> list[str]:
    """A record's body field: cursor, next step (JSON), applied steps (JSON), context."""
    return _field(raw, key, "body").split("\n", 3)


async def _released(storage: RedisSagaStorage, status: SagaStatus = SagaStatus.RUNNING) -> UUID:
    """A saga at version 2 in ``status`` with no lease."""
    new = make_new_saga()
    await storage.create(new)
    await storage.checkpoint(make_checkpoint(new.saga_id, 1, status=status, lease_seconds=None))
    return new.saga_id


# --- the parked index --------------------------------------------------------------------------


async def test_a_parked_saga_leaves_the_recovery_indexes_until_unparked(
    storage: RedisSagaStorage, raw: redis.Redis, redis_key_prefix: str
) -> None:
    updated = _index(redis_key_prefix, "updated")
    parked = _index(redis_key_prefix, "parked")
    saga_id = await _released(storage, SagaStatus.FAILED)
    member, key = str(saga_id), storage.record_key(saga_id)
    await storage.claim(saga_id, owner="worker", lease_seconds=60)
    assert (_head(raw, key)["owner"], _head(raw, key)["flags"]) == ("worker", "0")

    await storage.park(saga_id, owner="worker", reason="gave up")
    record = await storage.load(saga_id)
    assert raw.zscore(updated, member) is None
    assert raw.zscore(parked, member) == record.updated_at.timestamp() * 1e6
    # Parked (1) with an error (2), the reason; no lease.
    head = _head(raw, key)
    assert (head["flags"], head["owner"], head["expires"]) == ("3", "", "")
    assert raw.hget(key, "error") == "gave up"

    unparked = await storage.unpark(saga_id)
    assert raw.zscore(parked, member) is None
    assert raw.zscore(updated, member) == unparked.updated_at.timestamp() * 1e6
    assert unparked.updated_at > record.updated_at
    assert unparked.version == record.version
    assert (_head(raw, key)["flags"], _head(raw, key)["attempts"]) == ("2", "0")


async def test_a_checkpoint_of_a_parked_saga_keeps_it_out_of_recovery(
    storage: RedisSagaStorage, raw: redis.Redis, redis_key_prefix: str
) -> None:
    saga_id = await _released(storage)
    await storage.claim(saga_id, owner="worker", lease_seconds=60)
    await storage.park(saga_id, owner="worker", reason="stuck")
    version = (await storage.load(saga_id)).version
    # An operator writes the parked saga (with its current version), leaving a lapsed lease.
    await storage.checkpoint(
        make_checkpoint(saga_id, version, lease_owner="operator", lease_seconds=0)
    )
    assert raw.zscore(_index(redis_key_prefix, "updated"), str(saga_id)) is None
    assert await storage.list_recoverable() == []
    assert await storage.claim_recoverable(owner="w", lease_seconds=60) == []
    assert [r.saga_id for r in await storage.list_sagas(parked=True)] == [saga_id]


async def test_a_parked_saga_that_finishes_is_listed_once_and_as_parked(
    storage: RedisSagaStorage,
) -> None:
    saga_id = await _released(storage)
    await storage.claim(saga_id, owner="worker", lease_seconds=60)
    await storage.park(saga_id, owner="worker", reason="stuck")
    version = (await storage.load(saga_id)).version
    await storage.checkpoint(make_checkpoint(saga_id, version, status=SagaStatus.COMPLETED))

    assert [r.saga_id for r in await storage.list_sagas()] == [saga_id]
    assert [r.saga_id for r in await storage.list_sagas(parked=True)] == [saga_id]
    assert await storage.list_sagas(parked=False) == []
    listed = await storage.list_sagas(status=SagaStatus.COMPLETED)
    assert [(r.saga_id, r.parked) for r in listed] == [(saga_id, True)]

    unparked = await storage.unpark(saga_id)
    assert (unparked.parked, unparked.status) == (False, SagaStatus.COMPLETED)
    assert await storage.list_sagas(parked=True) == []
    assert [r.saga_id for r in await storage.list_sagas(parked=False)] == [saga_id]
    assert await storage.list_recoverable() == []


async def test_claim_recoverable_moves_a_parked_saga_found_in_the_recovery_index(
    storage: RedisSagaStorage, raw: redis.Redis, redis_key_prefix: str
) -> None:
    # What an older saga-redis writing the same prefix could leave behind.
    saga_id = await _released(storage)
    await storage.claim(saga_id, owner="worker", lease_seconds=60)
    await storage.park(saga_id, owner="worker", reason="stuck")
    updated, parked = _index(redis_key_prefix, "updated"), _index(redis_key_prefix, "parked")
    raw.zadd(updated, {str(saga_id): 1})
    raw.zrem(parked, str(saga_id))

    assert await storage.claim_recoverable(owner="other", lease_seconds=60) == []
    assert raw.zscore(updated, str(saga_id)) is None
    assert raw.zscore(parked, str(saga_id)) is not None
    record = await storage.load(saga_id)
    assert (record.parked, record.lease_owner) == (True, None)


# --- attempts ------------------------------------------------------------------------------------


async def test_renew_lease_moves_only_the_lease(
    storage: RedisSagaStorage, raw: redis.Redis, redis_key_prefix: str
) -> None:
    new = make_new_saga(lease_seconds=5)
    await storage.create(new)
    key, member = storage.record_key(new.saga_id), str(new.saga_id)
    updated = _index(redis_key_prefix, "updated")
    before, head_before = raw.hgetall(key), _head(raw, key)
    updated_score = raw.zscore(updated, member)

    await storage.renew_lease(new.saga_id, owner=DEFAULT_OWNER, lease_seconds=60)
    after, head_after = raw.hgetall(key), _head(raw, key)
    assert {k: v for k, v in after.items() if k != "head"} == {
        k: v for k, v in before.items() if k != "head"
    }
    assert {k: v for k, v in head_after.items() if k != "expires"} == {
        k: v for k, v in head_before.items() if k != "expires"
    }
    assert int(head_after["expires"]) > int(head_before["expires"])
    assert raw.zscore(updated, member) == updated_score


async def test_a_forced_claim_rewrites_only_the_head_and_the_index_entry(
    storage: RedisSagaStorage, raw: redis.Redis, redis_key_prefix: str
) -> None:
    new = make_new_saga(lease_owner="crashed runner", lease_seconds=600)
    await storage.create(new)
    key, member = storage.record_key(new.saga_id), str(new.saga_id)
    updated = _index(redis_key_prefix, "updated")
    before, head_before = raw.hgetall(key), _head(raw, key)

    record = await storage.claim(new.saga_id, owner="operator", lease_seconds=60, force=True)
    after, head_after = raw.hgetall(key), _head(raw, key)
    assert {k: v for k, v in after.items() if k != "head"} == {
        k: v for k, v in before.items() if k != "head"
    }
    assert (head_after["owner"], head_after["version"], head_after["attempts"]) == (
        "operator",
        str(record.version),
        str(int(head_before["attempts"]) + 1),
    )
    assert (head_after["status"], head_after["flags"]) == (
        head_before["status"],
        head_before["flags"],
    )
    assert raw.zscore(updated, member) == int(head_after["updated"])
    assert int(head_after["updated"]) > int(head_before["updated"])


# --- next_step ---------------------------------------------------------------------------------


async def test_next_step_is_a_json_string_in_the_body_empty_when_none(
    storage: RedisSagaStorage, raw: redis.Redis
) -> None:
    new = make_new_saga(next_step=None)
    await storage.create(new)
    key = storage.record_key(new.saga_id)
    assert _body(raw, key)[:3] == ["0", "", "[]"]
    assert (await storage.load(new.saga_id)).next_step is None
    await storage.checkpoint(make_checkpoint(new.saga_id, 1, cursor=1, next_step=""))
    assert _body(raw, key)[:2] == ["1", '""']
    assert (await storage.load(new.saga_id)).next_step == ""
    await storage.checkpoint(make_checkpoint(new.saga_id, 2, cursor=2, next_step="s.Ünï 😀"))
    assert _body(raw, key)[:2] == ["2", '"s.Ünï 😀"']
    await storage.checkpoint(make_checkpoint(new.saga_id, 3, cursor=3, next_step=None))
    assert _body(raw, key)[:2] == ["3", ""]
    assert (await storage.load(new.saga_id)).next_step is None


async def test_every_read_returns_next_step(storage: RedisSagaStorage) -> None:
    new = make_new_saga(next_step="s.Reserve")
    await storage.create(new)
    saga_id = new.saga_id
    await storage.checkpoint(
        make_checkpoint(saga_id, 1, cursor=1, next_step="s.Charge", lease_seconds=None)
    )
    assert [r.next_step for r in await storage.list_recoverable()] == ["s.Charge"]
    assert [r.next_step for r in await storage.list_sagas()] == ["s.Charge"]
    claimed = await storage.claim_recoverable(owner="w1", lease_seconds=0)
    assert [r.next_step for r in claimed] == ["s.Charge"]
    assert (await storage.claim(saga_id, owner="w2", lease_seconds=60)).next_step == "s.Charge"
    await storage.park(saga_id, owner="w2", reason="stuck")
    assert [r.next_step for r in await storage.list_sagas(parked=True)] == ["s.Charge"]
    assert (await storage.unpark(saga_id)).next_step == "s.Charge"


async def test_every_read_returns_next_step_across_shards(
    redis_url: str, redis_key_prefix: str
) -> None:
    async with RedisSagaStorage.from_url(redis_url, key_prefix=redis_key_prefix, shards=4) as s:
        steps = {}
        for index in range(8):
            new = make_new_saga(next_step=f"s.Step{index}", lease_seconds=0)
            await s.create(new)
            steps[new.saga_id] = new.next_step
        assert {r.saga_id: r.next_step for r in await s.list_recoverable()} == steps
        claimed = await s.claim_recoverable(owner="w", lease_seconds=60, limit=8)
        assert {r.saga_id: r.next_step for r in claimed} == steps


@pytest.mark.parametrize("next_step", [7, b"s.Reserve"])
async def test_a_next_step_that_is_not_a_string_is_refused_and_nothing_written(
    storage: RedisSagaStorage, next_step: object
) -> None:
    new = make_new_saga(next_step="s.Reserve")
    with pytest.raises(SagaUsageError, match="next_step"):
        await storage.create(new._replace(next_step=next_step))  # type: ignore[arg-type]
    await storage.create(new)
    checkpoint = make_checkpoint(new.saga_id, 1, cursor=1)
    with pytest.raises(SagaUsageError, match="next_step"):
        await storage.checkpoint(checkpoint._replace(next_step=next_step))  # type: ignore[arg-type]
    record = await storage.load(new.saga_id)
    assert (record.version, record.next_step) == (1, "s.Reserve")


# --- saga_version --------------------------------------------------------------------------------


async def test_a_record_stored_before_saga_versions_reads_as_version_1_everywhere(
    storage: RedisSagaStorage, raw: redis.Redis
) -> None:
    new = make_new_saga(saga_version=3)
    await storage.create(new)
    key = storage.record_key(new.saga_id)
    assert _field(raw, key, "saga_version") == "3"
    # What saga-redis wrote before it stored the definition's version: no such field.
    raw.hdel(key, "saga_version")
    assert set(raw.hkeys(key)) == {"name", "created", "head", "body"}
    assert (await storage.load(new.saga_id)).saga_version == 1
    assert [r.saga_version for r in await storage.list_sagas()] == [1]
    await storage.checkpoint(make_checkpoint(new.saga_id, 1, cursor=1, lease_seconds=None))
    assert [r.saga_version for r in await storage.list_recoverable()] == [1]
    claimed = await storage.claim_recoverable(owner="recovery", lease_seconds=30)
    assert [r.saga_version for r in claimed] == [1]
    assert (await storage.claim(new.saga_id, owner="recovery", lease_seconds=30)).saga_version == 1
    assert (await storage.unpark(new.saga_id)).saga_version == 1
    assert "saga_version" not in raw.hkeys(key)  # no write adds it


@pytest.mark.parametrize("saga_version", [0, -1, True, 1.0, "2", None])
async def test_a_saga_version_that_is_not_an_int_from_1_is_refused_before_any_write(
    storage: RedisSagaStorage, redis_url: str, redis_key_prefix: str, saga_version: object
) -> None:
    new = make_new_saga(saga_version=saga_version)  # type: ignore[arg-type]
    with pytest.raises(SagaUsageError, match="saga_version must be an int >= 1"):
        await storage.create(new)
    assert keys_under(redis_url, redis_key_prefix) == []


# --- parent_id -----------------------------------------------------------------------------------


async def test_a_child_s_record_holds_its_parent_id_and_a_record_without_one_has_none(
    storage: RedisSagaStorage, raw: redis.Redis
) -> None:
    parent, orphan = uuid4(), make_new_saga()
    child = make_new_saga(parent_id=parent)
    await storage.create(child)
    await storage.create(orphan)
    assert _field(raw, storage.record_key(child.saga_id), "parent") == str(parent)
    # No field for a saga without a parent: as in records stored before parents were.
    assert "parent" not in raw.hkeys(storage.record_key(orphan.saga_id))
    assert (await storage.load(orphan.saga_id)).parent_id is None
    await storage.checkpoint(make_checkpoint(child.saga_id, 1, cursor=1, lease_seconds=None))
    assert _field(raw, storage.record_key(child.saga_id), "parent") == str(parent)


# --- list_sagas ----------------------------------------------------------------------------------


async def test_list_sagas_pages_through_sagas_updated_at_the_same_microsecond(
    storage: RedisSagaStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(listing_module, "_LIST_PAGE", 3)
    ids = {await _released(storage) for _ in range(10)}
    # One claim_recoverable stamps every saga it claims with the same time.
    claimed = await storage.claim_recoverable(owner="w", lease_seconds=60)
    assert {r.saga_id for r in claimed} == ids
    assert len({r.updated_at for r in claimed}) == 1

    listed = await storage.list_sagas()
    assert sorted(r.saga_id for r in listed) == sorted(ids)
    assert [r.saga_id for r in await storage.list_sagas(limit=7)] == [r.saga_id for r in listed[:7]]
    assert await storage.list_sagas(saga_name="nobody") == []


async def test_list_sagas_merges_shards_and_indexes_oldest_first(
    redis_url: str, redis_key_prefix: str
) -> None:
    async with RedisSagaStorage.from_url(
        redis_url, key_prefix=redis_key_prefix, shards=4
    ) as storage:
        ids, statuses = [], {}
        for index in range(12):
            status = (SagaStatus.RUNNING, SagaStatus.COMPLETED, SagaStatus.FAILED)[index % 3]
            ids.append(await _released(storage, status))
            statuses[ids[-1]] = status
        await storage.claim(ids[2], owner="w", lease_seconds=60)
        await storage.park(ids[2], owner="w", reason="stuck")
        ids.append(ids.pop(2))  # parking updated it last

        assert len({storage._layout.shard_of(i).meta for i in ids}) > 1
        assert [r.saga_id for r in await storage.list_sagas()] == ids
        assert [r.saga_id for r in await storage.list_sagas(limit=5)] == ids[:5]
        completed = await storage.list_sagas(status=SagaStatus.COMPLETED)
        assert [r.saga_id for r in completed] == [
            i for i in ids if statuses[i] is SagaStatus.COMPLETED
        ]
        assert [r.saga_id for r in await storage.list_sagas(parked=True)] == [ids[-1]]
        cutoff = (await storage.load(ids[5])).updated_at
        old = await storage.list_sagas(updated_before=cutoff)
        assert [r.saga_id for r in old] == ids[:5]


async def test_finished_sagas_are_listed_until_they_expire(
    redis_url: str, redis_key_prefix: str
) -> None:
    async with RedisSagaStorage.from_url(
        redis_url, key_prefix=redis_key_prefix, retain_finished_seconds=0.2
    ) as storage:
        done = await _released(storage, SagaStatus.COMPLETED)
        assert [r.saga_id for r in await storage.list_sagas()] == [done]
        await anyio.sleep(0.4)
        assert await storage.list_sagas() == []
        # The finished index expired with the last saga that finished.
        assert keys_under(redis_url, redis_key_prefix) == [_index(redis_key_prefix, "meta")]


async def test_the_finished_index_forgets_sagas_older_than_the_retention(
    redis_url: str, redis_key_prefix: str, raw: redis.Redis
) -> None:
    finished = _index(redis_key_prefix, "finished")
    async with RedisSagaStorage.from_url(
        redis_url, key_prefix=redis_key_prefix, retain_finished_seconds=0.3
    ) as storage:
        first = await _released(storage, SagaStatus.COMPLETED)
        await anyio.sleep(0.5)
        second = await _released(storage, SagaStatus.COMPENSATED)
        assert raw.zrange(finished, 0, -1) == [str(second)]
        assert [r.saga_id for r in await storage.list_sagas()] == [second]
        assert first != second


async def test_list_sagas_drops_index_entries_whose_record_is_gone(
    storage: RedisSagaStorage, raw: redis.Redis, redis_key_prefix: str
) -> None:
    kept, deleted = await _released(storage), await _released(storage)
    raw.delete(storage.record_key(deleted))
    assert [r.saga_id for r in await storage.list_sagas()] == [kept]
    assert raw.zrange(_index(redis_key_prefix, "updated"), 0, -1) == [str(kept)]


async def test_list_sagas_by_lease_owner_matches_the_whole_name_spaces_included(
    redis_url: str, redis_key_prefix: str
) -> None:
    # The owner is the rest of the head's text: a name that another one starts with, or
    # that has spaces, must not match more or less than itself.
    owners = ["orders 7", "orders 7 b", "orders", "orders 7", "orders 70"] * 2
    async with RedisSagaStorage.from_url(
        redis_url, key_prefix=redis_key_prefix, shards=4
    ) as storage:
        sagas = [make_new_saga(lease_owner=owner) for owner in owners]
        for new in sagas:
            await storage.create(new)
        for owner in set(owners):
            listed = await storage.list_sagas(lease_owner=owner)
            assert [r.saga_id for r in listed] == [
                new.saga_id for new in sagas if new.lease_owner == owner
            ]
        assert len({storage._layout.shard_of(new.saga_id).meta for new in sagas}) > 1


@pytest.mark.parametrize(
    "filters",
    [
        {"status": "running"},
        {"saga_name": 5},
        {"parked": "yes"},
        {"updated_before": datetime(2030, 1, 1)},
        {"updated_before": "2030-01-01"},
        {"limit": -1},
        {"limit": 1.5},
    ],
)
async def test_list_sagas_refuses_invalid_filters(
    storage: RedisSagaStorage, filters: dict[str, object]
) -> None:
    with pytest.raises(SagaUsageError):
        await storage.list_sagas(**filters)  # type: ignore[arg-type]


async def test_a_closed_storage_refuses_the_operations(storage: RedisSagaStorage) -> None:
    saga_id = await _released(storage)
    await storage.aclose()
    calls = [
        storage.list_sagas(),
        storage.list_sagas(limit=0),
        storage.renew_lease(saga_id, owner="w", lease_seconds=1),
        storage.park(saga_id, owner="w", reason="x"),
        storage.unpark(saga_id),
    ]
    for call in calls:
        with pytest.raises(StorageUnavailableError, match="closed"):
            await call


# --- keys that are not ours ----------------------------------------------------------------------


async def test_a_foreign_value_at_the_finished_index_stops_the_final_checkpoint(
    storage: RedisSagaStorage, raw: redis.Redis, redis_key_prefix: str
) -> None:
    new = make_new_saga()
    await storage.create(new)
    finished = _index(redis_key_prefix, "finished")
    raw.set(finished, "not a sorted set")
    before = raw.hgetall(storage.record_key(new.saga_id))
    with pytest.raises(StorageCorruptedError, match="holds a string, not the sorted set"):
        await storage.checkpoint(make_checkpoint(new.saga_id, 1, status=SagaStatus.COMPLETED))
    assert raw.hgetall(storage.record_key(new.saga_id)) == before
    with pytest.raises(StorageCorruptedError, match="not the sorted set"):
        await storage.list_sagas()


async def test_a_foreign_value_at_the_parked_index_stops_park_and_unpark(
    storage: RedisSagaStorage, raw: redis.Redis, redis_key_prefix: str
) -> None:
    new = make_new_saga()
    await storage.create(new)
    parked = _index(redis_key_prefix, "parked")
    raw.set(parked, "not a sorted set")
    before = raw.hgetall(storage.record_key(new.saga_id))
    with pytest.raises(StorageCorruptedError, match="holds a string, not the sorted set"):
        await storage.park(new.saga_id, owner=DEFAULT_OWNER, reason="x")
    assert raw.hgetall(storage.record_key(new.saga_id)) == before
    raw.delete(parked)
    await storage.park(new.saga_id, owner=DEFAULT_OWNER, reason="x")
    raw.delete(parked)
    raw.set(parked, "not a sorted set")
    with pytest.raises(StorageCorruptedError, match="not the sorted set"):
        await storage.unpark(new.saga_id)
    assert (await storage.load(new.saga_id)).parked is True


async def test_the_keys_a_storage_keeps_per_saga_are_always_its_own(
    redis_url: str, redis_key_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A storage builds a saga's key names once and reuses them for its next writes: an equal
    # id in another object, and more sagas than it keeps, still reach their own keys.
    monkeypatch.setattr(writes_module, "_SAGAS_KEPT", 3)
    async with RedisSagaStorage.from_url(
        redis_url, key_prefix=redis_key_prefix, shards=4
    ) as storage:
        ids = [uuid4() for _ in range(10)]
        for saga_id in ids:
            await storage.create(make_new_saga(saga_id=saga_id))
        for saga_id in ids:
            await storage.checkpoint(make_checkpoint(UUID(str(saga_id)), 1, cursor=1))
            await storage.checkpoint(make_checkpoint(saga_id, 2, cursor=2))
        for saga_id in ids:
            record = await storage.load(saga_id)
            assert (record.saga_id, record.version, record.cursor) == (saga_id, 3, 2)
        records = [key for key in keys_under(redis_url, redis_key_prefix) if ":record:" in key]
        assert records == sorted(storage.record_key(saga_id) for saga_id in ids)


async def test_what_a_checkpoint_may_set_or_clear_is_stored_each_time(
    storage: RedisSagaStorage,
) -> None:
    # Error, next step and lease travel in a compact form (flags, and the lease framed once
    # per saga and runner): every combination, changing from one checkpoint to the next.
    new = make_new_saga()
    await storage.create(new)
    cases: list[tuple[str | None, str | None, str | None, float | None]] = [
        (None, "b", "runner", 60.0),
        ("boom", "c", "runner", 60.0),
        ("boom", None, "other", 30.0),
        (None, None, None, None),
        ("", "", "runner", 5.0),
        (None, "d", "runner", 5.0),
        ("again", "e", "runner", 60.0),
    ]
    for version, (error, next_step, owner, lease) in enumerate(cases, start=1):
        entry = make_entry(f"step-{version}", error=error)
        await storage.checkpoint(
            make_checkpoint(
                new.saga_id,
                version,
                cursor=version,
                error=error,
                next_step=next_step,
                lease_owner=owner,
                lease_seconds=lease,
                journal=[entry],
            )
        )
        record = await storage.load(new.saga_id)
        assert (record.version, record.cursor, record.error, record.next_step) == (
            version + 1,
            version,
            error,
            next_step,
        )
        assert record.lease_owner == owner
        if lease is None:
            assert record.lease_expires_at is None
        else:
            assert record.lease_expires_at is not None
            assert record.lease_expires_at - record.updated_at == timedelta(seconds=lease)
        assert (await storage.history(new.saga_id))[-1] == entry
    assert len(await storage.history(new.saga_id)) == len(cases)
