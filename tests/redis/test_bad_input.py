"""Bad input gets a clear error and loses nothing: unreachable Redis, keys that are not ours,
corrupt values, duplicate ids, misuse."""

from __future__ import annotations

import dataclasses
import re
import socket
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import datetime
from pathlib import Path

import anyio
import coredis.exceptions
import pytest
import redis
import redis.asyncio

from saga_core import (
    Response,
    Saga,
    SagaAlreadyExistsError,
    SagaContext,
    SagaStatus,
    SagaStepHandler,
    SagaUsageError,
    StepDirection,
    StepEvent,
    StorageCorruptedError,
    StorageSchemaError,
    StorageUnavailableError,
    bootstrap,
)
from saga_core.testing import make_checkpoint, make_entry, make_new_saga
from saga_redis import RedisSagaStorage

pytestmark = [pytest.mark.anyio, pytest.mark.redis]

CLOSED_PORT_URL = "redis://127.0.0.1:1/14"


@pytest.fixture
def raw(redis_url: str) -> Iterator[redis.Redis]:
    """A plain client to plant foreign values and inspect keys."""
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    client.close()


@pytest.fixture
async def storage(redis_url: str, redis_key_prefix: str) -> AsyncIterator[RedisSagaStorage]:
    async with RedisSagaStorage.from_url(redis_url, key_prefix=redis_key_prefix) as storage:
        yield storage


def snapshot(raw: redis.Redis, prefix: str) -> dict[object, tuple[object, object, bool]]:
    """Every key under ``prefix``: its type, its value and whether it expires, to prove that a
    refused write changed nothing."""
    found: dict[object, tuple[object, object, bool]] = {}
    for key in raw.scan_iter(match=f"{prefix}*", count=1000):
        kind = raw.type(key)
        value: object
        if kind == "hash":
            value = raw.hgetall(key)
        elif kind == "list":
            value = raw.lrange(key, 0, -1)
        elif kind == "zset":
            value = raw.zrange(key, 0, -1, withscores=True)
        elif kind == "string":
            value = raw.get(key)
        else:
            value = None
        found[key] = (kind, value, raw.pttl(key) > 0)
    return found


# --- Redis unreachable at start -------------------------------------------------------------------


async def test_unreachable_redis_raises_storage_unavailable_quickly_with_the_cause() -> None:
    async with RedisSagaStorage.from_url(CLOSED_PORT_URL) as storage:
        started = time.monotonic()
        with pytest.raises(StorageUnavailableError, match=re.escape("127.0.0.1:1")) as caught:
            await storage.create(make_new_saga())
        assert time.monotonic() - started < 2.0
        # The client's own error, naming the address it tried.
        assert isinstance(caught.value.__cause__, coredis.exceptions.ConnectionError)
        for call in (storage.load(uuid.uuid4()), storage.list_recoverable()):
            with pytest.raises(StorageUnavailableError):
                await call


@pytest.fixture
def dead_socket(tmp_path: Path) -> Iterator[str]:
    """The path of a unix socket nothing listens on (bound, never listening: refused)."""
    path = str(tmp_path / "redis.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.bind(path)
        yield path


# Each kind of URL with a password, on ports where nothing listens, and the addresses its
# error must name. The Sentinel one waits out a failover first: shortened to a second.
UNREACHABLE = [
    ("redis://:s3cret@127.0.0.1:1/14", ["redis://127.0.0.1:1/14"]),
    ("rediss://user:s3cret@127.0.0.1:1", ["rediss://127.0.0.1:1/0"]),
    ("redis+cluster://:s3cret@127.0.0.1:1,127.0.0.1:2", ["127.0.0.1:1,127.0.0.1:2"]),
    (
        "redis+sentinel://:s3cret@127.0.0.1:1,127.0.0.1:2/shop/3?failover_timeout=1",
        ["redis+sentinel://127.0.0.1:1,127.0.0.1:2/shop/3", "No primary found for 'shop'"],
    ),
    ("unix://:s3cret@{socket}?db=2", ["unix://{socket}?db=2"]),
]


@pytest.mark.parametrize(("url", "named"), UNREACHABLE, ids=lambda value: str(value)[:14])
async def test_an_unreachable_deployment_names_the_addresses_tried_never_the_password(
    url: str, named: list[str], dead_socket: str
) -> None:
    url = url.format(socket=dead_socket)
    # A cluster client learns the cluster's layout as it opens; the others connect on use.
    with anyio.fail_after(15), pytest.raises(StorageUnavailableError) as caught:
        async with RedisSagaStorage.from_url(url) as storage:
            await storage.load(uuid.uuid4())
    message = str(caught.value)
    for part in named:
        assert part.format(socket=dead_socket) in message
    assert "s3cret" not in message
    assert "recoverable once Redis is back" in message


@pytest.mark.parametrize(
    ("scheme", "message"),
    [
        ("redis+cluster", "names servers that run without cluster mode"),
        ("redis+sentinel", "names servers that are not Redis Sentinels"),
    ],
)
async def test_a_url_naming_the_wrong_kind_of_deployment_says_so(
    redis_url: str, scheme: str, message: str
) -> None:
    address = redis_url.split("://", 1)[1].split("/", 1)[0].rsplit("@", 1)[-1]
    url = f"{scheme}://{address}" + ("/shop" if scheme == "redis+sentinel" else "")
    with pytest.raises(SagaUsageError, match=re.escape(message)) as caught:
        async with RedisSagaStorage.from_url(url) as storage:
            await storage.load(uuid.uuid4())
    assert address in str(caught.value)


async def test_unreachable_redis_through_a_sync_client_raises_storage_unavailable() -> None:
    client = redis.Redis.from_url(CLOSED_PORT_URL)
    try:
        async with RedisSagaStorage(client) as storage:
            started = time.monotonic()
            with pytest.raises(StorageUnavailableError) as caught:
                await storage.create(make_new_saga())
            assert time.monotonic() - started < 5.0
            assert isinstance(caught.value.__cause__, redis.ConnectionError)
    finally:
        client.close()


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_unreachable_redis_through_an_asyncio_client_raises_storage_unavailable() -> None:
    client = redis.asyncio.Redis.from_url(CLOSED_PORT_URL)
    try:
        async with RedisSagaStorage(client) as storage:
            with pytest.raises(StorageUnavailableError) as caught:
                await storage.load(uuid.uuid4())
            assert isinstance(caught.value.__cause__, redis.ConnectionError)
    finally:
        await client.aclose()


@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_an_asyncio_client_on_trio_is_refused_at_once(redis_url: str) -> None:
    client = redis.asyncio.Redis.from_url(redis_url)
    storage = RedisSagaStorage(client)
    with (
        anyio.fail_after(5),
        pytest.raises(SagaUsageError, match=re.escape("synchronous redis.Redis")),
    ):
        await storage.create(make_new_saga())


async def test_a_closed_storage_refuses_every_call(storage: RedisSagaStorage) -> None:
    await storage.aclose()
    with pytest.raises(StorageUnavailableError, match="closed"):
        await storage.create(make_new_saga())


# --- keys that are not ours ---------------------------------------------------------------------


async def test_a_foreign_value_at_a_record_key_is_reported_and_left_alone(
    storage: RedisSagaStorage, raw: redis.Redis, redis_key_prefix: str
) -> None:
    new = make_new_saga()
    key = storage.record_key(new.saga_id)
    raw.set(key, "someone else's value")
    with pytest.raises(StorageCorruptedError, match="holds a string, not the hash") as caught:
        await storage.create(new)
    assert key in str(caught.value)
    before = snapshot(raw, redis_key_prefix)
    calls = [
        storage.load(new.saga_id),
        storage.history(new.saga_id),
        storage.checkpoint(make_checkpoint(new.saga_id, 1)),
        storage.checkpoint(make_checkpoint(new.saga_id, 1, journal=[make_entry()])),
        storage.claim(new.saga_id, owner="recovery", lease_seconds=5),
        storage.renew_lease(new.saga_id, owner="runner", lease_seconds=5),
        storage.park(new.saga_id, owner="runner", reason="stuck"),
        storage.unpark(new.saga_id),
    ]
    for call in calls:
        with pytest.raises(StorageCorruptedError, match=re.escape(key)):
            await call
    assert raw.get(key) == "someone else's value"
    assert not raw.exists(storage.journal_key(new.saga_id))
    assert snapshot(raw, redis_key_prefix) == before


@pytest.mark.parametrize("kind", ["list", "zset", "set"])
async def test_a_record_key_of_any_other_type_is_reported_by_its_type(
    storage: RedisSagaStorage, raw: redis.Redis, redis_key_prefix: str, kind: str
) -> None:
    new = make_new_saga()
    key = storage.record_key(new.saga_id)
    if kind == "list":
        raw.rpush(key, "x")
    elif kind == "zset":
        raw.zadd(key, {"x": 1})
    else:
        raw.sadd(key, "x")
    before = snapshot(raw, redis_key_prefix)
    found = {"list": "list", "zset": "zset", "set": "set"}[kind]
    for call in (
        storage.create(new),
        storage.checkpoint(make_checkpoint(new.saga_id, 1, journal=[make_entry()])),
        storage.load(new.saga_id),
        storage.history(new.saga_id),
    ):
        with pytest.raises(StorageCorruptedError, match=f"{re.escape(key)}' holds a {found}"):
            await call
    assert snapshot(raw, redis_key_prefix) == before


@pytest.mark.parametrize(
    "fields",
    [
        {"user": "alice", "version": "many"},
        {"user": "alice"},  # none of a record's fields: not to be taken for a missing record
        {"version": "1", "status": "paused", "updated": "1"},
    ],
)
async def test_a_foreign_hash_at_a_record_key_is_reported_and_left_alone(
    storage: RedisSagaStorage,
    raw: redis.Redis,
    redis_key_prefix: str,
    fields: dict[str, str],
) -> None:
    new = make_new_saga()
    key = storage.record_key(new.saga_id)
    for field, value in fields.items():
        raw.hset(key, field, value)
    before = snapshot(raw, redis_key_prefix)
    with pytest.raises(StorageCorruptedError, match="is not a saga record"):
        await storage.create(new)
    with pytest.raises(StorageCorruptedError, match="is not a saga record"):
        await storage.checkpoint(make_checkpoint(new.saga_id, 1, journal=[make_entry()]))
    with pytest.raises(StorageCorruptedError, match="is not a saga record"):
        await storage.claim(new.saga_id, owner="recovery", lease_seconds=5)
    with pytest.raises(StorageCorruptedError, match="is not a saga record"):
        await storage.renew_lease(new.saga_id, owner="runner", lease_seconds=5)
    with pytest.raises(StorageCorruptedError, match="field '"):
        await storage.load(new.saga_id)
    assert snapshot(raw, redis_key_prefix) == before


async def test_a_foreign_value_at_the_recovery_index_stops_writes_before_anything_is_written(
    storage: RedisSagaStorage, raw: redis.Redis, redis_key_prefix: str
) -> None:
    # The index is checked by a create's or checkpoint's first write itself.
    existing = make_new_saga()
    await storage.create(existing)
    index = f"{redis_key_prefix}{{0}}:updated"
    raw.delete(index)
    raw.set(index, "not a sorted set")
    before = snapshot(raw, redis_key_prefix)
    new = make_new_saga(journal=[make_entry()])
    with pytest.raises(StorageCorruptedError, match="holds a string, not the sorted set"):
        await storage.create(new)
    assert not raw.exists(storage.record_key(new.saga_id))
    for checkpoint in (
        make_checkpoint(existing.saga_id, 1, journal=[make_entry()]),
        make_checkpoint(existing.saga_id, 1),
        make_checkpoint(existing.saga_id, 1, status=SagaStatus.COMPLETED, journal=[make_entry()]),
    ):
        with pytest.raises(StorageCorruptedError, match=re.escape(index)):
            await storage.checkpoint(checkpoint)
    assert (await storage.load(existing.saga_id)).version == 1
    assert await storage.history(existing.saga_id) == []
    with pytest.raises(StorageCorruptedError, match=re.escape(index)):
        await storage.claim_recoverable(owner="recovery", lease_seconds=5)
    with pytest.raises(StorageCorruptedError, match=re.escape(index)):
        await storage.claim(existing.saga_id, owner="recovery", lease_seconds=5)
    assert snapshot(raw, redis_key_prefix) == before


async def test_a_foreign_value_at_the_finished_index_stops_the_final_checkpoint(
    storage: RedisSagaStorage, raw: redis.Redis, redis_key_prefix: str
) -> None:
    new = make_new_saga()
    await storage.create(new)
    index = f"{redis_key_prefix}{{0}}:finished"
    raw.rpush(index, "not a sorted set")
    before = snapshot(raw, redis_key_prefix)
    for journal in ([], [make_entry()]):
        with pytest.raises(StorageCorruptedError, match="holds a list, not the sorted set"):
            await storage.checkpoint(
                make_checkpoint(new.saga_id, 1, status=SagaStatus.COMPLETED, journal=journal)
            )
    assert snapshot(raw, redis_key_prefix) == before
    await storage.checkpoint(make_checkpoint(new.saga_id, 1, journal=[make_entry()]))
    assert (await storage.load(new.saga_id)).version == 2


async def test_a_refused_first_create_of_a_prefix_records_no_layout(
    storage: RedisSagaStorage, raw: redis.Redis, redis_key_prefix: str
) -> None:
    index = f"{redis_key_prefix}{{0}}:updated"
    raw.set(index, "not a sorted set")
    with pytest.raises(StorageCorruptedError, match=re.escape(index)):
        await storage.create(make_new_saga())
    assert sorted(raw.scan_iter(match=f"{redis_key_prefix}*")) == [index]
    raw.delete(index)
    await storage.create(make_new_saga())
    assert raw.hgetall(f"{redis_key_prefix}{{0}}:meta") == {"shards": "1", "layout": "2"}


async def test_a_foreign_value_at_the_meta_key_stops_every_write(
    storage: RedisSagaStorage, raw: redis.Redis, redis_key_prefix: str
) -> None:
    existing = make_new_saga()
    await storage.create(existing)
    meta = f"{redis_key_prefix}{{0}}:meta"
    raw.delete(meta)
    raw.set(meta, "not a hash")
    before = snapshot(raw, redis_key_prefix)
    with pytest.raises(StorageCorruptedError, match="holds a string, not the hash"):
        await storage.create(make_new_saga())
    with pytest.raises(StorageCorruptedError, match=re.escape(meta)):
        await storage.claim(existing.saga_id, owner="recovery", lease_seconds=5)
    with pytest.raises(StorageCorruptedError, match=re.escape(meta)):
        await storage.claim_recoverable(owner="recovery", lease_seconds=5)
    assert snapshot(raw, redis_key_prefix) == before


@pytest.mark.parametrize("entries", [0, 2, 1001])
@pytest.mark.parametrize("status", [SagaStatus.RUNNING, SagaStatus.COMPLETED])
async def test_a_foreign_value_at_a_journal_key_stops_the_checkpoint(
    storage: RedisSagaStorage,
    raw: redis.Redis,
    redis_key_prefix: str,
    entries: int,
    status: SagaStatus,
) -> None:
    # With entries to append, the append checks the journal itself (and the index entry the
    # checkpoint wrote just before is put back as it was); without, the journal is checked
    # before anything is written.
    new = make_new_saga()
    await storage.create(new)
    journal = storage.journal_key(new.saga_id)
    raw.hset(journal, "not", "a list")
    before = await storage.load(new.saga_id)
    keys_before = snapshot(raw, redis_key_prefix)
    checkpoint = make_checkpoint(
        new.saga_id, 1, cursor=1, status=status, journal=[make_entry()] * entries
    )
    with pytest.raises(StorageCorruptedError, match="holds a hash, not the list"):
        await storage.checkpoint(checkpoint)
    with pytest.raises(StorageCorruptedError, match=re.escape(journal)):
        await storage.history(new.saga_id)
    assert await storage.load(new.saga_id) == before
    assert snapshot(raw, redis_key_prefix) == keys_before
    assert raw.hgetall(journal) == {"not": "a list"}


@pytest.mark.parametrize("status", [SagaStatus.RUNNING, SagaStatus.COMPLETED])
async def test_a_foreign_journal_stops_the_checkpoint_of_a_parked_saga(
    storage: RedisSagaStorage, raw: redis.Redis, redis_key_prefix: str, status: SagaStatus
) -> None:
    # A parked saga's index entry is in the parked index: the one the refused write puts back.
    new = make_new_saga(lease_owner="runner")
    await storage.create(new)
    await storage.park(new.saga_id, owner="runner", reason="stuck")
    parked = await storage.load(new.saga_id)
    journal = storage.journal_key(new.saga_id)
    raw.hset(journal, "not", "a list")
    keys_before = snapshot(raw, redis_key_prefix)
    checkpoint = make_checkpoint(new.saga_id, parked.version, status=status, journal=[make_entry()])
    with pytest.raises(StorageCorruptedError, match="holds a hash, not the list"):
        await storage.checkpoint(checkpoint)
    assert snapshot(raw, redis_key_prefix) == keys_before
    assert await storage.load(new.saga_id) == parked


async def test_a_journal_without_its_record_is_not_adopted(
    storage: RedisSagaStorage, raw: redis.Redis
) -> None:
    new = make_new_saga()
    journal = storage.journal_key(new.saga_id)
    raw.rpush(journal, "left over")
    with pytest.raises(StorageCorruptedError, match="has no record"):
        await storage.create(new)
    assert raw.lrange(journal, 0, -1) == ["left over"]
    assert not raw.exists(storage.record_key(new.saga_id))


# --- corrupt values -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "part", "value"),
    [
        ("body", 3, "{not json"),  # the context
        ("body", 2, "reserve"),  # the applied steps
        ("body", 0, "x"),  # the cursor
        ("head", 1, "paused"),  # the status
        ("head", 0, "one"),  # the version
    ],
)
async def test_a_corrupt_record_field_is_reported_with_key_and_field(
    storage: RedisSagaStorage, raw: redis.Redis, field: str, part: int, value: str
) -> None:
    new = make_new_saga()
    await storage.create(new)
    key = storage.record_key(new.saga_id)
    separator = "\n" if field == "body" else " "
    stored = raw.hget(key, field)
    assert isinstance(stored, str)
    parts = stored.split(separator)
    parts[part] = value
    raw.hset(key, field, separator.join(parts))
    with pytest.raises(StorageCorruptedError, match=f"field '{field}'") as caught:
        await storage.load(new.saga_id)
    assert key in str(caught.value)
    assert raw.hget(key, field) == separator.join(parts)


async def test_a_corrupt_journal_entry_is_reported_with_its_position(
    storage: RedisSagaStorage, raw: redis.Redis
) -> None:
    new = make_new_saga(journal=[make_entry("a"), make_entry("b")])
    await storage.create(new)
    raw.lset(storage.journal_key(new.saga_id), 1, '{"step_id": "b", "oops": true}')
    with pytest.raises(StorageCorruptedError, match="element 1 of the Redis list"):
        await storage.history(new.saga_id)


# --- ids and arguments --------------------------------------------------------------------------


@dataclasses.dataclass
class Order(SagaContext):
    order_id: str
    steps_run: int = 0


class Reserve(SagaStepHandler[Order, Response]):
    async def act(self, context: Order) -> Response:
        context.steps_run += 1
        return Response()


class OrderSaga(Saga[Order]):
    steps = [Reserve]


async def test_starting_a_saga_id_twice_is_refused_and_the_first_run_is_kept(
    storage: RedisSagaStorage,
) -> None:
    mediator = bootstrap(sagas_mapper=lambda m: m.bind(Order, OrderSaga), saga_storage=storage)
    saga_id = uuid.uuid4()
    await mediator.run(Order(order_id="first"), saga_id=saga_id)
    before = await storage.load(saga_id)
    second = Order(order_id="second")
    with pytest.raises(SagaAlreadyExistsError, match=str(saga_id)):
        await mediator.run(second, saga_id=saga_id)
    assert second.steps_run == 0
    assert await storage.load(saga_id) == before
    assert '"first"' in before.context


async def test_a_lease_without_an_owner_is_refused_and_nothing_written(
    storage: RedisSagaStorage,
) -> None:
    new = make_new_saga()
    await storage.create(new)
    with pytest.raises(SagaUsageError, match="lease_owner"):
        await storage.checkpoint(make_checkpoint(new.saga_id, 1, lease_owner=None))
    for owner in ("", None):
        with pytest.raises(SagaUsageError, match="lease owner"):
            await storage.claim(new.saga_id, owner=owner, lease_seconds=5)  # type: ignore[arg-type]
    assert (await storage.load(new.saga_id)).version == 1


async def test_a_naive_journal_time_is_refused_and_nothing_written(
    storage: RedisSagaStorage,
) -> None:
    new = make_new_saga()
    await storage.create(new)
    naive = make_entry(at=datetime(2026, 1, 1, 12, 0))
    with pytest.raises(SagaUsageError, match="naive"):
        await storage.checkpoint(make_checkpoint(new.saga_id, 1, journal=[naive]))
    assert (await storage.load(new.saga_id)).version == 1


@pytest.mark.parametrize("lease", [-1.0, float("nan"), "60"])
async def test_an_invalid_lease_length_is_refused(storage: RedisSagaStorage, lease: object) -> None:
    with pytest.raises(SagaUsageError, match="lease_seconds"):
        await storage.create(make_new_saga(lease_seconds=lease))  # type: ignore[arg-type]


@pytest.mark.parametrize("limit", [-1, 2.5, True])
async def test_an_invalid_limit_is_refused(storage: RedisSagaStorage, limit: object) -> None:
    with pytest.raises(SagaUsageError, match="limit"):
        await storage.list_recoverable(limit=limit)  # type: ignore[arg-type]
    with pytest.raises(SagaUsageError, match="limit"):
        await storage.claim_recoverable(owner="o", lease_seconds=1, limit=limit)  # type: ignore[arg-type]


async def test_a_prefix_written_with_another_shard_count_is_refused(
    storage: RedisSagaStorage, redis_url: str, redis_key_prefix: str
) -> None:
    await storage.create(make_new_saga())
    async with RedisSagaStorage.from_url(
        redis_url, key_prefix=redis_key_prefix, shards=2
    ) as resharded:
        with pytest.raises(StorageSchemaError, match="shards=1") as caught:
            for _ in range(20):  # some ids land in shard 1, which has no meta yet
                await resharded.create(make_new_saga())
        assert "shards=2" in str(caught.value)
        with pytest.raises(StorageSchemaError):
            await resharded.claim_recoverable(owner="recovery", lease_seconds=5)


async def test_a_prefix_written_with_key_layout_1_is_refused_and_left_alone(
    storage: RedisSagaStorage, raw: redis.Redis, redis_key_prefix: str
) -> None:
    # What an earlier saga-redis left: its meta says layout 1, its records had other fields.
    meta = f"{redis_key_prefix}{{0}}:meta"
    raw.hset(meta, mapping={"shards": "1", "layout": "1"})
    old = make_new_saga()
    raw.hset(storage.record_key(old.saga_id), mapping={"version": "1", "status": "running"})
    before = snapshot(raw, redis_key_prefix)
    calls = [
        storage.create(make_new_saga()),
        storage.claim(old.saga_id, owner="recovery", lease_seconds=5),
        storage.claim_recoverable(owner="recovery", lease_seconds=5),
        storage.list_recoverable(),
        storage.list_sagas(),
    ]
    for call in calls:
        with pytest.raises(StorageSchemaError, match="another version of saga-redis") as caught:
            await call
        assert "layout 1" in str(caught.value)
        assert "layout 2" in str(caught.value)
    assert snapshot(raw, redis_key_prefix) == before


async def test_enums_in_records_come_back_as_enums(storage: RedisSagaStorage) -> None:
    new = make_new_saga(journal=[make_entry(direction=StepDirection.COMPENSATE)])
    await storage.create(new)
    assert (await storage.load(new.saga_id)).status is SagaStatus.RUNNING
    (entry,) = await storage.history(new.saga_id)
    assert (entry.direction, entry.event) == (StepDirection.COMPENSATE, StepEvent.STARTED)
