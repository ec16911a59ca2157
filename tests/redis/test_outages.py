"""Redis going away mid-saga: the run stops with StorageUnavailableError, the saga keeps its last
checkpoint, and recovery finishes it once Redis is back. A dropped connection or a flushed
script cache (what a restart does) is survived without the caller noticing."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from urllib.parse import urlsplit

import anyio
import anyio.abc
import pytest
import redis

from saga_core import (
    Response,
    Saga,
    SagaContext,
    SagaStatus,
    SagaStepHandler,
    SagaUsageError,
    StorageUnavailableError,
    bootstrap,
    recover_saga,
)
from saga_redis import RedisSagaStorage

from ._support import TcpProxy, url_with_port

pytestmark = [pytest.mark.anyio, pytest.mark.redis]

LEASE = 0.3


@dataclasses.dataclass
class Trip(SagaContext):
    trip_id: str
    booked: list[str] = dataclasses.field(default_factory=list)


# What the steps do to the outside world, in order; and what a step runs before its effect.
ledger: list[str] = []
before_effect: dict[str, Callable[[], None]] = {}


class _Book(SagaStepHandler[Trip, Response]):
    what = ""

    async def act(self, context: Trip) -> Response:
        hook = before_effect.pop(self.what, None)
        if hook is not None:
            hook()
        ledger.append(f"book:{self.what}")
        context.booked.append(self.what)
        return Response()

    async def compensate(self, context: Trip) -> None:
        ledger.append(f"cancel:{self.what}")


class BookFlight(_Book):
    name = "book_flight"
    what = "flight"


class BookHotel(_Book):
    name = "book_hotel"
    what = "hotel"


class BookCar(_Book):
    name = "book_car"
    what = "car"


class TripSaga(Saga[Trip]):
    name = "trip"
    steps = [BookFlight, BookHotel, BookCar]


@pytest.fixture(autouse=True)
def _fresh_ledger() -> None:
    ledger.clear()
    before_effect.clear()


@pytest.fixture
async def proxy(redis_url: str) -> AsyncIterator[TcpProxy]:
    target = urlsplit(redis_url)
    proxy = TcpProxy(target.hostname or "127.0.0.1", target.port or 6379)
    async with anyio.create_task_group() as tg:
        await proxy.start(tg)
        yield proxy
        proxy.stop()


@pytest.fixture
def clients() -> Iterator[list[redis.Redis]]:
    """Synchronous clients a test made; closed afterwards (a storage never closes them)."""
    made: list[redis.Redis] = []
    yield made
    for client in made:
        client.close()


def _through(
    proxy: TcpProxy, redis_url: str, prefix: str, kind: str, clients: list[redis.Redis]
) -> RedisSagaStorage:
    url = url_with_port(redis_url, proxy.port)
    if kind == "sync-client":
        clients.append(redis.Redis.from_url(url))
        return RedisSagaStorage(clients[-1], key_prefix=prefix)
    return RedisSagaStorage.from_url(url, key_prefix=prefix)


@pytest.mark.parametrize("kind", ["url", "sync-client"])
async def test_redis_lost_mid_saga_leaves_it_recoverable_from_its_last_checkpoint(
    proxy: TcpProxy,
    redis_url: str,
    redis_key_prefix: str,
    kind: str,
    clients: list[redis.Redis],
) -> None:
    saga_id = uuid.uuid4()
    async with _through(proxy, redis_url, redis_key_prefix, kind, clients) as storage:
        mediator = bootstrap(
            sagas_mapper=lambda m: m.bind(Trip, TripSaga),
            saga_storage=storage,
            lease_seconds=LEASE,
        )
        before_effect["hotel"] = proxy.stop  # Redis disappears while the hotel is being booked
        with pytest.raises(StorageUnavailableError) as caught:
            await mediator.run(Trip(trip_id="t-1"), saga_id=saga_id)
        assert caught.value.__cause__ is not None
    assert ledger == ["book:flight", "book:hotel"]

    async with RedisSagaStorage.from_url(redis_url, key_prefix=redis_key_prefix) as direct:
        stored = await direct.load(saga_id)
        # The flight's checkpoint is the last one that reached Redis.
        assert (stored.status, stored.cursor, stored.applied, stored.version) == (
            SagaStatus.RUNNING,
            1,
            ("book_flight",),
            2,
        )
        assert '"flight"' in stored.context and '"hotel"' not in stored.context
        await anyio.sleep(LEASE + 0.2)
        assert [r.saga_id for r in await direct.list_recoverable()] == [saga_id]
        outcome = await recover_saga(saga=TripSaga, saga_id=saga_id, storage=direct)
        assert outcome.status is SagaStatus.COMPLETED
        assert outcome.context.booked == ["flight", "hotel", "car"]
        # At least once: the hotel step whose checkpoint was lost ran again.
        assert ledger == ["book:flight", "book:hotel", "book:hotel", "book:car"]
        assert (await direct.load(saga_id)).status is SagaStatus.COMPLETED


@pytest.mark.parametrize("kind", ["url", "sync-client"])
async def test_dropped_connections_and_a_flushed_script_cache_are_survived(
    proxy: TcpProxy,
    redis_url: str,
    redis_key_prefix: str,
    kind: str,
    clients: list[redis.Redis],
) -> None:
    admin = redis.Redis.from_url(redis_url)

    def restart() -> None:
        # What a restart of a server without persistence looks like to the clients that
        # survive it (the data loss aside): connections reset, scripts unknown.
        proxy.cut()
        admin.script_flush()

    before_effect["hotel"] = restart
    before_effect["car"] = restart
    try:
        async with _through(proxy, redis_url, redis_key_prefix, kind, clients) as storage:
            mediator = bootstrap(
                sagas_mapper=lambda m: m.bind(Trip, TripSaga), saga_storage=storage
            )
            outcome = await mediator.run(Trip(trip_id="t-2"))
    finally:
        admin.close()
    assert outcome.status is SagaStatus.COMPLETED
    assert ledger == ["book:flight", "book:hotel", "book:car"]
    assert proxy.connections >= 3


async def _black_hole(task_group: anyio.abc.TaskGroup) -> int:
    """A port that accepts connections and never answers."""
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)

    async def swallow(stream: anyio.abc.SocketStream) -> None:
        async with stream:
            async for _ in stream:
                pass

    task_group.start_soon(listener.serve, swallow)
    return int(listener.extra(anyio.abc.SocketAttribute.local_port))


@pytest.mark.parametrize("database", ["0", "14"])
async def test_a_server_that_does_not_answer_the_handshake_times_out_as_unavailable(
    database: str,
) -> None:
    # The connection opens, its handshake (HELLO, and SELECT for database 14) gets no
    # answer: command_timeout bounds the wait.
    async with anyio.create_task_group() as tg:
        port = await _black_hole(tg)
        async with RedisSagaStorage.from_url(
            f"redis://127.0.0.1:{port}/{database}", command_timeout=0.3
        ) as storage:
            with pytest.raises(StorageUnavailableError, match="cannot be reached") as caught:
                await storage.load(uuid.uuid4())
        assert caught.value.__cause__ is not None
        tg.cancel_scope.cancel()


async def test_a_reply_that_does_not_come_times_out_as_unavailable(
    redis_url: str, redis_key_prefix: str
) -> None:
    # The server is paused (CLIENT PAUSE) after the storage connected: command_timeout
    # bounds the wait for the reply.
    admin = redis.Redis.from_url(redis_url)
    try:
        async with RedisSagaStorage.from_url(
            redis_url, key_prefix=redis_key_prefix, command_timeout=0.3
        ) as storage:
            await storage.list_recoverable()  # connected
            admin.client_pause(2000, all=True)
            try:
                with pytest.raises(StorageUnavailableError, match="cannot be reached") as caught:
                    await storage.load(uuid.uuid4())
            finally:
                admin.client_unpause()
        assert caught.value.__cause__ is not None
    finally:
        admin.close()


async def test_a_storage_opened_from_a_url_is_used_inside_async_with(
    redis_url: str, redis_key_prefix: str
) -> None:
    # Its client's connections live in the 'async with' block (structured concurrency):
    # before it, a call says how to open the storage; after it, the storage is closed.
    storage = RedisSagaStorage.from_url(redis_url, key_prefix=redis_key_prefix)
    with pytest.raises(SagaUsageError, match="async with open_storage"):
        await storage.load(uuid.uuid4())
    async with storage:
        mediator = bootstrap(sagas_mapper=lambda m: m.bind(Trip, TripSaga), saga_storage=storage)
        outcome = await mediator.run(Trip(trip_id="t-3"))
        assert outcome.status is SagaStatus.COMPLETED
    with pytest.raises(StorageUnavailableError, match="closed"):
        await storage.load(outcome.saga_id)
    with pytest.raises(StorageUnavailableError, match="closed"):
        async with storage:
            pass


async def test_closing_a_storage_inside_its_block_releases_the_client_at_the_end(
    redis_url: str, redis_key_prefix: str
) -> None:
    # aclose() from a nested cancel scope refuses later calls; the connections are released
    # where they were opened, when the block ends.
    async with RedisSagaStorage.from_url(redis_url, key_prefix=redis_key_prefix) as storage:
        await storage.list_recoverable()
        with anyio.move_on_after(5):
            await storage.aclose()
        with pytest.raises(StorageUnavailableError, match="closed"):
            await storage.list_recoverable()


async def test_storages_on_event_loops_in_several_threads_at_once_stay_their_own(
    redis_url: str, redis_key_prefix: str
) -> None:
    # Each event loop opens its own storage (and connections) on the same prefix: they meet
    # only in Redis.
    done: list[str] = []

    async def run_many(label: str) -> None:
        async with RedisSagaStorage.from_url(redis_url, key_prefix=redis_key_prefix) as storage:
            mediator = bootstrap(
                sagas_mapper=lambda m: m.bind(Trip, TripSaga), saga_storage=storage
            )
            for index in range(40):
                await mediator.run(Trip(trip_id=f"{label}-{index}"))
        done.append(label)

    def in_thread(label: str, backend: str) -> None:
        anyio.run(run_many, label, backend=backend)

    async with anyio.create_task_group() as tg:
        for label, backend in (("a", "asyncio"), ("t", "trio"), ("b", "asyncio")):
            tg.start_soon(anyio.to_thread.run_sync, in_thread, label, backend)
        await run_many("here")
    assert sorted(done) == ["a", "b", "here", "t"]
