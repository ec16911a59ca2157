"""Durable waits on Redis: where WAITING sagas, signals and cancels live in the key layout
(``saga_redis._keys``), how sagas move between the ``updated``, ``due`` and ``waiting``
indexes, and the rules of the storage protocol they keep, on one server (one shard and four)
and on the Redis Cluster. Times come from the Redis server's clock, so the tests use wake
times well in the past or the future of it."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone
from uuid import UUID, uuid4

import anyio
import pytest
import redis
from redis.cluster import RedisCluster
from redis.crc import key_slot

from saga_core import (
    SagaCancelledError,
    SagaFinishedError,
    SagaSignalPendingError,
    SagaSignalRefusedError,
    SagaStatus,
    SagaUsageError,
    SagaVersionConflictError,
    StorageCorruptedError,
)
from saga_core.storage import Checkpoint, NewSaga, NewSignal, SagaRecord
from saga_core.testing import make_checkpoint, make_new_saga
from saga_redis import RedisSagaStorage
from saga_redis._keys import KeyLayout

pytestmark = [pytest.mark.anyio, pytest.mark.redis]

Raw = redis.Redis | RedisCluster

_PAST = datetime(2020, 1, 1, tzinfo=timezone.utc)
_FUTURE = datetime(2200, 1, 1, tzinfo=timezone.utc)


@pytest.fixture(params=["one shard", "four shards", "cluster"])
async def setup(
    request: pytest.FixtureRequest, redis_url: str
) -> AsyncIterator[tuple[RedisSagaStorage, Raw]]:
    """A storage and a plain client behind its back (decoding replies)."""
    raw: Raw
    if request.param == "cluster":
        url = request.getfixturevalue("redis_cluster_url")
        prefix = request.getfixturevalue("cluster_key_prefix")
        host, port = request.getfixturevalue("redis_cluster_nodes")[0]
        raw, shards = RedisCluster(host=host, port=port, decode_responses=True), 6
    else:
        url, prefix = redis_url, request.getfixturevalue("redis_key_prefix")
        raw, shards = (
            redis.Redis.from_url(url, decode_responses=True),
            (1 if request.param == "one shard" else 4),
        )
    try:
        async with RedisSagaStorage.from_url(url, key_prefix=prefix, shards=shards) as storage:
            yield storage, raw
    finally:
        raw.close()


@pytest.fixture
def storage(setup: tuple[RedisSagaStorage, Raw]) -> RedisSagaStorage:
    return setup[0]


@pytest.fixture
def raw(setup: tuple[RedisSagaStorage, Raw]) -> Raw:
    return setup[1]


def _layout(storage: RedisSagaStorage) -> KeyLayout:
    return KeyLayout(storage.key_prefix, storage.shards)


def _where(storage: RedisSagaStorage, raw: Raw, saga_id: UUID) -> dict[str, float | None]:
    """The saga's score in each index of its shard (None: not a member)."""
    shard = _layout(storage).shard_of(saga_id)
    indexes = {
        "updated": shard.updated,
        "due": shard.due,
        "waiting": shard.waiting,
        "parked": shard.parked,
        "finished": shard.finished,
    }
    return {name: raw.zscore(key, str(saga_id)) for name, key in indexes.items()}


def _member_of(storage: RedisSagaStorage, raw: Raw, saga_id: UUID) -> set[str]:
    return {name for name, score in _where(storage, raw, saga_id).items() if score is not None}


def _micros(value: datetime) -> int:
    return (value - datetime(1970, 1, 1, tzinfo=timezone.utc)) // timedelta(microseconds=1)


def _waiting_saga(wake_at: datetime | None = _PAST, deadline_at: datetime | None = None) -> NewSaga:
    """A new WAITING saga without a lease (started detached), at its first step."""
    return make_new_saga()._replace(
        status=SagaStatus.WAITING,
        lease_owner=None,
        lease_seconds=None,
        wake_at=wake_at,
        deadline_at=deadline_at,
    )


def _suspend(
    saga_id: UUID,
    version: int,
    *,
    wake_at: datetime | None = _FUTURE,
    waiting_for: str | None = "paid",
    cursor: int = 1,
    next_step: str | None = "wait",
) -> Checkpoint:
    """A checkpoint that suspends the saga at its wait ``next_step``."""
    return make_checkpoint(
        saga_id, version, status=SagaStatus.WAITING, cursor=cursor, next_step=next_step
    )._replace(wake_at=wake_at, waiting_for=waiting_for)


def _signal(
    saga_id: UUID,
    signal_id: str = "evt-1",
    name: str = "paid",
    *,
    wait_cursor: int = 1,
    wait_step: str = "wait",
) -> NewSignal:
    """A signal for the wait of a saga :func:`_suspend` suspended."""
    return NewSignal(
        saga_id=saga_id,
        signal_id=signal_id,
        name=name,
        payload='{"amount": 10}',
        wait_cursor=wait_cursor,
        wait_step=wait_step,
    )


async def _created(storage: RedisSagaStorage, new: NewSaga) -> NewSaga:
    """``new``, once ``storage`` has created it."""
    await storage.create(new)
    return new


async def _suspended(
    storage: RedisSagaStorage,
    *,
    wake_at: datetime | None = _FUTURE,
    waiting_for: str | None = "paid",
) -> SagaRecord:
    """A saga created RUNNING and suspended at cursor 1 (version 2)."""
    new = await _created(storage, make_new_saga())
    await storage.checkpoint(_suspend(new.saga_id, 1, wake_at=wake_at, waiting_for=waiting_for))
    return await storage.load(new.saga_id)


# --- key layout ------------------------------------------------------------------------------


@pytest.mark.parametrize("shards", [1, 3, 16])
def test_a_sagas_signals_and_its_shards_wait_indexes_share_its_hash_slot(shards: int) -> None:
    layout = KeyLayout("saga:", shards)
    for _ in range(200):
        saga_id = uuid4()
        shard = layout.shard_of(saga_id)
        keys = [layout.record(saga_id), layout.signals(saga_id), shard.due, shard.waiting]
        assert len({key_slot(key.encode()) for key in keys}) == 1, keys


def test_wait_keys_follow_the_documented_layout() -> None:
    saga_id = UUID("12345678-1234-5678-1234-567812345678")
    layout = KeyLayout("shop:", 1)
    shard = layout.shard_of(saga_id)
    assert layout.signals(saga_id) == f"shop:{{0}}:signals:{saga_id}"
    assert (shard.due, shard.waiting) == ("shop:{0}:due", "shop:{0}:waiting")


# --- creating and suspending -----------------------------------------------------------------


async def test_a_detached_saga_rests_in_due_at_its_wake_time_and_never_in_updated(
    storage: RedisSagaStorage, raw: Raw
) -> None:
    deadline = datetime(2100, 5, 6, 7, 8, 9, 123456, tzinfo=timezone.utc)
    new = await _created(storage, _waiting_saga(wake_at=_PAST, deadline_at=deadline))
    record = await storage.load(new.saga_id)
    assert record.status is SagaStatus.WAITING
    assert (record.lease_owner, record.lease_expires_at) == (None, None)
    assert (record.wake_at, record.waiting_for, record.deadline_at) == (_PAST, None, deadline)
    assert (record.cancel_reason, record.signals) == (None, ())
    where = _where(storage, raw, new.saga_id)
    assert _member_of(storage, raw, new.saga_id) == {"due", "waiting"}
    assert where["due"] == _micros(_PAST)
    assert where["waiting"] == _micros(record.updated_at)


async def test_a_wait_for_a_signal_only_rests_at_infinity_and_is_not_claimed(
    storage: RedisSagaStorage, raw: Raw
) -> None:
    record = await _suspended(storage, wake_at=None)
    assert _where(storage, raw, record.saga_id)["due"] == float("inf")
    assert await storage.claim_recoverable(owner="worker", lease_seconds=30) == []


async def test_a_suspend_moves_the_saga_from_updated_to_due_and_a_resume_moves_it_back(
    storage: RedisSagaStorage, raw: Raw
) -> None:
    record = await _suspended(storage, wake_at=_FUTURE, waiting_for="paid")
    saga_id = record.saga_id
    assert record.status is SagaStatus.WAITING
    assert (record.lease_owner, record.wake_at, record.waiting_for) == (None, _FUTURE, "paid")
    assert _member_of(storage, raw, saga_id) == {"due", "waiting"}
    assert _where(storage, raw, saga_id)["due"] == _micros(_FUTURE)

    await storage.checkpoint(make_checkpoint(saga_id, 2, cursor=2))
    resumed = await storage.load(saga_id)
    assert (resumed.wake_at, resumed.waiting_for) == (None, None)
    assert resumed.lease_owner == "runner"
    assert _member_of(storage, raw, saga_id) == {"updated"}
    assert "wait" not in raw.hgetall(storage.record_key(saga_id))


async def test_a_finished_waiting_saga_leaves_due_and_its_signals_expire_with_it(
    storage: RedisSagaStorage, raw: Raw
) -> None:
    record = await _suspended(storage)
    saga_id = record.saga_id
    assert await storage.deliver_signal(_signal(saga_id, name="other"))
    await storage.checkpoint(make_checkpoint(saga_id, 2, status=SagaStatus.COMPENSATED))
    assert _member_of(storage, raw, saga_id) == {"finished"}
    signals = _layout(storage).signals(saga_id)
    assert 0 < raw.pttl(signals) <= raw.pttl(storage.record_key(saga_id)) + 1000


async def test_waiting_sagas_are_listed_through_their_own_index(storage: RedisSagaStorage) -> None:
    resting = await _suspended(storage)
    running = await _created(storage, make_new_saga())
    listed = await storage.list_sagas(status=SagaStatus.WAITING)
    assert [record.saga_id for record in listed] == [resting.saga_id]
    assert {record.saga_id for record in await storage.list_sagas()} == {
        resting.saga_id,
        running.saga_id,
    }


# --- claims ----------------------------------------------------------------------------------


async def test_a_claimed_saga_stays_in_due_at_its_wake_time_leased_and_still_waiting(
    storage: RedisSagaStorage, raw: Raw
) -> None:
    due = await _created(storage, _waiting_saga(wake_at=_PAST))
    later = await _created(storage, _waiting_saga(wake_at=_FUTURE))
    assert [r.saga_id for r in await storage.list_recoverable()] == [due.saga_id]
    (claimed,) = await storage.claim_recoverable(owner="worker", lease_seconds=30)
    assert claimed.saga_id == due.saga_id
    assert (claimed.status, claimed.lease_owner, claimed.version) == (
        SagaStatus.WAITING,
        "worker",
        2,
    )
    assert claimed.wake_at == _PAST
    assert _member_of(storage, raw, due.saga_id) == {"due", "waiting"}
    assert _where(storage, raw, due.saga_id)["due"] == _micros(_PAST)
    assert _where(storage, raw, due.saga_id)["waiting"] == _micros(claimed.updated_at)
    assert _member_of(storage, raw, later.saga_id) == {"due", "waiting"}


async def test_a_claimed_waiting_saga_is_found_again_in_its_place_once_its_lease_expires(
    storage: RedisSagaStorage,
) -> None:
    new = await _created(storage, _waiting_saga(wake_at=_PAST))
    await storage.claim_recoverable(owner="crashed", lease_seconds=0.05)
    assert await storage.claim_recoverable(owner="worker", lease_seconds=30) == []
    await anyio.sleep(0.1)
    # due now, later than the abandoned claim's wake
    await _created(storage, make_new_saga(lease_seconds=0))
    (again,) = await storage.claim_recoverable(owner="worker", lease_seconds=30, limit=1)
    assert (again.saga_id, again.lease_owner, again.attempts) == (new.saga_id, "worker", 2)


async def test_a_claimed_saga_that_is_not_due_yet_waits_for_its_wake_time_after_its_lease(
    storage: RedisSagaStorage,
) -> None:
    new = await _created(storage, _waiting_saga(wake_at=_FUTURE))
    await storage.claim(new.saga_id, owner="operator", lease_seconds=0.05)
    await anyio.sleep(0.1)
    assert await storage.list_recoverable() == []


async def test_claims_take_the_earliest_due_first_waiting_by_wake_time_ties_by_creation(
    storage: RedisSagaStorage,
) -> None:
    stalled = await _created(storage, make_new_saga(lease_seconds=0))  # due now: its update time
    early = await _created(storage, _waiting_saga(wake_at=_PAST))
    tied = [_waiting_saga(wake_at=_PAST + timedelta(days=1)) for _ in range(5)]
    for new in tied:
        await storage.create(new)
    expected = [early.saga_id, *(new.saga_id for new in tied), stalled.saga_id]
    assert [r.saga_id for r in await storage.list_recoverable()] == expected
    assert [r.saga_id for r in await storage.list_recoverable(limit=3)] == expected[:3]
    claimed = await storage.claim_recoverable(owner="worker", lease_seconds=30, limit=4)
    assert [r.saga_id for r in claimed] == expected[:4]
    rest = await storage.claim_recoverable(owner="worker", lease_seconds=30)
    assert [r.saga_id for r in rest] == expected[4:]


async def test_a_claim_scan_never_reads_resting_waiting_sagas(
    storage: RedisSagaStorage, raw: Raw
) -> None:
    resting = [_waiting_saga(wake_at=_FUTURE) for _ in range(30)]
    for new in resting:
        await storage.create(new)
    # Their records made unreadable: a scan that read one would report it.
    for new in resting:
        raw.hset(storage.record_key(new.saga_id), "head", "garbage")
    assert await storage.claim_recoverable(owner="worker", lease_seconds=30) == []
    for shard in _layout(storage).all_shards():
        assert raw.zcard(shard.updated) == 0


# --- parking ---------------------------------------------------------------------------------


async def test_a_parked_waiting_saga_leaves_every_wait_index_and_unparking_puts_it_back(
    storage: RedisSagaStorage, raw: Raw
) -> None:
    new = await _created(storage, _waiting_saga(wake_at=_PAST))
    await storage.claim(new.saga_id, owner="worker", lease_seconds=30)
    await storage.park(new.saga_id, owner="worker", reason="cannot load")
    assert _member_of(storage, raw, new.saga_id) == {"parked"}
    assert await storage.list_recoverable() == []
    record = await storage.unpark(new.saga_id)
    assert (record.status, record.parked, record.wake_at) == (SagaStatus.WAITING, False, _PAST)
    assert _member_of(storage, raw, new.saga_id) == {"due", "waiting"}
    assert [r.saga_id for r in await storage.list_recoverable()] == [new.saga_id]


# --- signals ---------------------------------------------------------------------------------


async def test_a_signal_is_stored_once_per_id_and_read_in_delivery_order(
    storage: RedisSagaStorage, raw: Raw
) -> None:
    record = await _suspended(storage, waiting_for="paid")
    saga_id = record.saga_id
    ids = [f"evt-{n}" for n in (3, 1, 2, 10)]
    for signal_id in ids:
        assert await storage.deliver_signal(_signal(saga_id, signal_id, name=f"n {signal_id}"))
    assert not await storage.deliver_signal(_signal(saga_id, "evt-1"))
    loaded = await storage.load(saga_id)
    assert [s.signal_id for s in loaded.signals] == ids
    assert [s.name for s in loaded.signals] == [f"n {i}" for i in ids]
    assert json.loads(loaded.signals[0].payload) == {"amount": 10}
    assert loaded.version == record.version and loaded.updated_at == record.updated_at
    stamps = [s.delivered_at for s in loaded.signals]
    assert stamps == sorted(stamps) and all(s.tzinfo is not None for s in stamps)
    assert raw.hlen(_layout(storage).signals(saga_id)) == len(ids)
    for listed in (await storage.list_sagas(), await storage.list_sagas(status=SagaStatus.WAITING)):
        assert listed[0].signals == loaded.signals


async def test_concurrent_deliveries_of_one_signal_store_it_once(storage: RedisSagaStorage) -> None:
    record = await _suspended(storage)
    results: list[bool] = []

    async def deliver() -> None:
        results.append(await storage.deliver_signal(_signal(record.saga_id)))

    async with anyio.create_task_group() as tasks:
        for _ in range(20):
            tasks.start_soon(deliver)
    assert sorted(results) == [False] * 19 + [True]
    assert len((await storage.load(record.saga_id)).signals) == 1


async def test_the_awaited_signal_makes_a_waiting_saga_due_now(
    storage: RedisSagaStorage, raw: Raw
) -> None:
    record = await _suspended(storage, wake_at=_FUTURE, waiting_for="paid")
    saga_id = record.saga_id
    assert await storage.deliver_signal(_signal(saga_id, "evt-0", name="other"))
    assert (await storage.load(saga_id)).wake_at == _FUTURE  # not the name it waits for
    assert await storage.list_recoverable() == []
    assert await storage.deliver_signal(_signal(saga_id))
    woken = await storage.load(saga_id)
    assert woken.wake_at is not None and woken.wake_at < _FUTURE
    assert _where(storage, raw, saga_id)["due"] == _micros(woken.wake_at)
    (claimed,) = await storage.claim_recoverable(owner="worker", lease_seconds=30)
    assert claimed.saga_id == saga_id


async def test_a_suspend_after_the_signal_arrived_is_due_at_once(storage: RedisSagaStorage) -> None:
    new = await _created(storage, make_new_saga())
    assert await storage.deliver_signal(_signal(new.saga_id))
    await storage.checkpoint(_suspend(new.saga_id, 1, wake_at=None, waiting_for="paid"))
    assert [r.saga_id for r in await storage.list_recoverable()] == [new.saga_id]


async def test_a_checkpoint_consumes_a_pending_signal_once(storage: RedisSagaStorage) -> None:
    record = await _suspended(storage)
    saga_id = record.saga_id
    assert await storage.deliver_signal(_signal(saga_id))
    (claimed,) = await storage.claim_recoverable(owner="worker", lease_seconds=30)
    assert [s.signal_id for s in claimed.signals] == ["evt-1"]
    resume = make_checkpoint(saga_id, claimed.version, cursor=2, lease_owner="worker")
    with pytest.raises(SagaVersionConflictError, match="evt-2"):
        await storage.checkpoint(resume._replace(consume_signal="evt-2"))
    await storage.checkpoint(resume._replace(consume_signal="evt-1"))
    after = await storage.load(saga_id)
    assert (after.signals, after.cursor) == ((), 2)
    assert not await storage.deliver_signal(_signal(saga_id))  # still known: a duplicate
    again = make_checkpoint(saga_id, after.version, cursor=2, lease_owner="worker")
    with pytest.raises(SagaVersionConflictError):
        await storage.checkpoint(again._replace(consume_signal="evt-1"))


async def test_a_pending_signal_refuses_a_checkpoint_written_unless_it(
    storage: RedisSagaStorage,
) -> None:
    new = await _created(storage, make_new_saga())
    assert await storage.deliver_signal(_signal(new.saga_id))
    with pytest.raises(SagaSignalPendingError, match="paid"):
        await storage.checkpoint(_suspend(new.saga_id, 1)._replace(unless_signal="paid"))
    assert (await storage.load(new.saga_id)).version == 1
    await storage.checkpoint(_suspend(new.saga_id, 1)._replace(unless_signal="other"))
    assert (await storage.load(new.saga_id)).status is SagaStatus.WAITING


async def test_signals_the_saga_does_not_accept_are_refused(storage: RedisSagaStorage) -> None:
    record = await _suspended(storage)
    saga_id = record.saga_id
    with pytest.raises(SagaSignalRefusedError, match="gone past"):
        await storage.deliver_signal(_signal(saga_id, wait_cursor=0, wait_step="first"))
    with pytest.raises(SagaSignalRefusedError, match="gone past"):
        await storage.deliver_signal(_signal(saga_id, wait_step="another"))
    assert await storage.deliver_signal(_signal(saga_id, "early", wait_cursor=5, wait_step="x"))
    await storage.checkpoint(
        make_checkpoint(saga_id, record.version, status=SagaStatus.COMPENSATING)
    )
    with pytest.raises(SagaSignalRefusedError, match="compensating"):
        await storage.deliver_signal(_signal(saga_id, "late"))
    assert not await storage.deliver_signal(_signal(saga_id, "early"))  # duplicate first
    await storage.checkpoint(
        make_checkpoint(saga_id, record.version + 1, status=SagaStatus.COMPENSATED)
    )
    with pytest.raises(SagaFinishedError):
        await storage.deliver_signal(_signal(saga_id, "later"))


# --- cancels ---------------------------------------------------------------------------------


async def test_a_cancel_wakes_a_waiting_saga_and_refuses_moving_it_forward(
    storage: RedisSagaStorage, raw: Raw
) -> None:
    record = await _suspended(storage, wake_at=None)
    saga_id = record.saga_id
    cancelled = await storage.request_cancel(saga_id, reason="customer cancelled")
    assert cancelled.cancel_reason == "customer cancelled"
    assert (cancelled.version, cancelled.updated_at) == (record.version, record.updated_at)
    assert cancelled.wake_at is not None
    assert _where(storage, raw, saga_id)["due"] == _micros(cancelled.wake_at)
    again = await storage.request_cancel(saga_id, reason="second thoughts")
    assert again.cancel_reason == "customer cancelled"
    with pytest.raises(SagaSignalRefusedError, match="cancelled"):
        await storage.deliver_signal(_signal(saga_id))
    (claimed,) = await storage.claim_recoverable(owner="worker", lease_seconds=30)
    version = claimed.version
    for forward in (
        make_checkpoint(saga_id, version, cursor=2, lease_owner="worker"),
        make_checkpoint(saga_id, version, status=SagaStatus.COMPLETED, cursor=1),
    ):
        with pytest.raises(SagaCancelledError, match="customer cancelled"):
            await storage.checkpoint(forward)
    await storage.checkpoint(
        make_checkpoint(saga_id, version, status=SagaStatus.COMPENSATING, cursor=1)
    )
    after = await storage.load(saga_id)
    assert (after.status, after.cancel_reason) == (SagaStatus.COMPENSATING, "customer cancelled")


async def test_a_cancelled_running_saga_may_not_suspend(storage: RedisSagaStorage) -> None:
    new = await _created(storage, make_new_saga())
    await storage.request_cancel(new.saga_id, reason="stop")
    with pytest.raises(SagaCancelledError):
        await storage.checkpoint(_suspend(new.saga_id, 1, cursor=0))
    await storage.checkpoint(make_checkpoint(new.saga_id, 1, cursor=0))  # a hand-back
    assert (await storage.load(new.saga_id)).version == 2


# --- what a caller gets wrong, and what was stored before --------------------------------------


async def test_new_waiting_sagas_that_do_not_fit_together_are_refused_before_writing(
    storage: RedisSagaStorage,
) -> None:
    for bad in (
        _waiting_saga()._replace(lease_owner="runner", lease_seconds=30.0),
        _waiting_saga(wake_at=datetime(2020, 1, 1)),
        make_new_saga()._replace(wake_at=_PAST),
    ):
        with pytest.raises(SagaUsageError):
            await storage.create(bad)
        assert await storage.list_sagas() == []
    new = await _created(storage, make_new_saga())
    with pytest.raises(SagaUsageError, match="aware"):
        await storage.checkpoint(_suspend(new.saga_id, 1, wake_at=datetime(2020, 1, 1)))


@pytest.fixture
async def on_one_server(
    redis_url: str, redis_key_prefix: str
) -> AsyncIterator[tuple[RedisSagaStorage, redis.Redis]]:
    """A storage with the default options on the one server, and a plain client behind its
    back (decoding replies)."""
    raw = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        async with RedisSagaStorage.from_url(redis_url, key_prefix=redis_key_prefix) as storage:
            yield storage, raw
    finally:
        raw.close()


async def test_a_record_stored_before_durable_waits_reads_with_none_of_them(
    on_one_server: tuple[RedisSagaStorage, redis.Redis],
) -> None:
    storage, raw = on_one_server
    saga_id = uuid4()
    # A record as saga-redis wrote it before: head flags 0-3, no wait, deadline,
    # cancel or signals.
    raw.hset(
        storage.record_key(saga_id),
        mapping={
            "name": "old",
            "created": "1767323045678901",
            "head": "3 running 1767323045678999 1767323050000000 1 2 tok-1 runner",
            "body": '2\n"step-3"\n["a","b"]\n{"n": 1}',
            "error": "TimeoutError: slow",
        },
    )
    raw.zadd(_layout(storage).shard_of(saga_id).updated, {str(saga_id): 1767323045678999})
    record = await storage.load(saga_id)
    assert (record.version, record.cursor, record.error) == (3, 2, "TimeoutError: slow")
    assert (record.wake_at, record.waiting_for, record.deadline_at) == (None, None, None)
    assert (record.cancel_reason, record.signals, record.parent_id) == (None, (), None)
    await storage.checkpoint(make_checkpoint(saga_id, 3, cursor=3))
    assert (await storage.load(saga_id)).version == 4


@pytest.mark.parametrize(
    ("damage", "problem"),
    [
        ("set", "of its signals"),
        ("entry", "of its signals"),
        ("cancel flag", "'cancel'"),
        ("wait", "'wait'"),
    ],
)
async def test_damaged_wait_data_is_reported_naming_the_saga(
    on_one_server: tuple[RedisSagaStorage, redis.Redis], damage: str, problem: str
) -> None:
    storage, raw = on_one_server
    new = await _created(storage, _waiting_saga(wake_at=_PAST))
    saga_id = new.saga_id
    record_key, signals_key = storage.record_key(saga_id), _layout(storage).signals(saga_id)
    if damage == "set":
        raw.sadd(signals_key, "x")
    elif damage == "entry":
        raw.hset(signals_key, "evt", "0 12 tok not-json\n{}")
    elif damage == "cancel flag":
        parts = str(raw.hget(record_key, "head")).split(" ")
        parts[5] = "4"  # a cancel flag without its reason
        raw.hset(record_key, "head", " ".join(parts))
    else:
        raw.hset(record_key, "wait", "soon paid")
    with pytest.raises(StorageCorruptedError, match=problem) as caught:
        await storage.load(saga_id)
    assert caught.value.saga_id == saga_id
    assert await storage.list_recoverable() == []  # reported, not served
