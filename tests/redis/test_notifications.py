"""Work notifications on Redis: the scripts that make a saga due publish to the prefix's work
channel, so an idle worker in another process (another storage instance on the same Redis)
wakes at once instead of at its next poll; a plain checkpoint publishes nothing and costs no
extra command. On one server, on the Redis Cluster and behind Sentinel, with every client."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timezone
from typing import Any

import anyio
import pytest
import redis
import redis.asyncio

from saga_core import (
    Response,
    Saga,
    SagaContext,
    SagaHandle,
    SagaMap,
    SagaMediator,
    SagaStatus,
    SagaStepHandler,
    StorageUnavailableError,
    WaitForSignal,
)
from saga_core.storage import NewSignal, WorkNotifications
from saga_core.testing import make_checkpoint, make_new_saga
from saga_redis import RedisSagaStorage
from saga_redis._lua import read_lua

from . import servers
from ._support import TcpProxy, url_with_port

pytestmark = [pytest.mark.anyio, pytest.mark.redis]

#: Longer than any test waits: a worker that only polled would never see the work in time.
SLOW_POLL = 30.0
#: How soon an idle worker must act on work made due elsewhere.
AT_ONCE = 1.0
#: How long a listener is given to show it got nothing.
QUIET = 0.3

_PAST = datetime(2020, 1, 1, tzinfo=timezone.utc)
_FUTURE = datetime(2200, 1, 1, tzinfo=timezone.utc)


@dataclasses.dataclass
class Order(SagaContext):
    order_id: int
    paid: int | None = None
    reserved: bool = False


class Reserve(SagaStepHandler[Order, Response]):
    async def act(self, context: Order) -> None:
        context.reserved = True

    async def compensate(self, context: Order) -> None:
        context.reserved = False


class PaidOrder(Saga[Order]):
    steps = [Reserve, WaitForSignal("paid", into="paid")]


@pytest.fixture(params=["one server", "cluster"])
def deployment(request: pytest.FixtureRequest, redis_url: str) -> tuple[str, str]:
    """A URL and a key prefix of the test's own."""
    if request.param == "cluster":
        return (
            request.getfixturevalue("redis_cluster_url"),
            request.getfixturevalue("cluster_key_prefix"),
        )
    return redis_url, request.getfixturevalue("redis_key_prefix")


@contextlib.asynccontextmanager
async def two_processes(url: str, prefix: str) -> AsyncIterator[tuple[SagaMediator, SagaMediator]]:
    """Two mediators, each with its own map and its own storage on ``url``, as two processes
    would have."""
    async with (
        RedisSagaStorage.from_url(url, key_prefix=prefix) as first,
        RedisSagaStorage.from_url(url, key_prefix=prefix) as second,
    ):
        mediators = []
        for storage in (first, second):
            saga_map = SagaMap()
            saga_map.bind(Order, PaidOrder)
            mediators.append(SagaMediator(saga_map, storage))
        yield mediators[0], mediators[1]


async def listening(storage: RedisSagaStorage) -> None:
    """Wait until some connection listens on the storage's work channel and the worker that
    opened it has polled once (it then sleeps for SLOW_POLL)."""
    channel = f"{storage.key_prefix}work"
    with anyio.fail_after(10):
        while not await anyio.to_thread.run_sync(_subscribers, channel):  # noqa: ASYNC110 (polling Redis)
            await anyio.sleep(0.02)
    await anyio.sleep(QUIET)


def _subscribers(channel: str) -> int:
    """Subscribers of ``channel`` on every server the tests run (PUBSUB NUMSUB counts those
    of one node)."""
    total = 0
    for port in (6379, *servers.CLUSTER_PORTS):
        client = redis.Redis(host="127.0.0.1", port=port)
        try:
            total += int(client.pubsub_numsub(channel)[0][1])
        except redis.ConnectionError:
            pass  # a setup this test does not use
        finally:
            client.close()
    return total


async def until_waiting_for_payment(handle: SagaHandle[Any]) -> None:
    """Wait, at most AT_ONCE, until the saga is suspended at its wait for "paid"."""
    with anyio.fail_after(AT_ONCE):
        while (await handle.record()).waiting_for != "paid":  # noqa: ASYNC110 (polling the storage)
            await anyio.sleep(0.01)


async def next_notification(notifications: AsyncIterator[None], within: float = AT_ONCE) -> None:
    with anyio.fail_after(within):
        await notifications.__anext__()


async def no_notification(notifications: AsyncIterator[None]) -> None:
    with anyio.move_on_after(QUIET) as waited:
        await notifications.__anext__()
    assert waited.cancelled_caught, "a notification arrived for work that is not due"


async def test_the_storage_has_the_capability(redis_url: str) -> None:
    assert isinstance(RedisSagaStorage.from_url(redis_url), WorkNotifications)


async def test_an_idle_worker_starts_resumes_and_cancels_sagas_of_another_process_at_once(
    deployment: tuple[str, str],
) -> None:
    async with (
        two_processes(*deployment) as (worker_side, client_side),
        anyio.create_task_group() as tg,
    ):
        await tg.start(worker_side.worker(poll_interval=SLOW_POLL).run)
        assert isinstance(worker_side.storage, RedisSagaStorage)
        await listening(worker_side.storage)

        # A detached start: the worker runs it up to its wait.
        handle = await client_side.start(Order(order_id=1))
        await until_waiting_for_payment(handle)
        # A signal it waits for: the worker resumes it to the end.
        assert await client_side.signal(handle.saga_id, "paid", 10)
        with anyio.fail_after(AT_ONCE):
            outcome = await handle.result(poll_interval=0.01)
        assert outcome.status is SagaStatus.COMPLETED
        assert outcome.context.paid == 10

        # A cancel of a waiting saga: the worker compensates it.
        other = await client_side.start(Order(order_id=2))
        await until_waiting_for_payment(other)
        await client_side.cancel(other.saga_id, reason="customer cancelled")
        with anyio.fail_after(AT_ONCE):
            cancelled = await other.result(poll_interval=0.01)
        assert cancelled.status is SagaStatus.COMPENSATED
        assert cancelled.context.reserved is False
        tg.cancel_scope.cancel()


async def test_a_listener_is_told_of_each_kind_of_due_work_and_of_nothing_else(
    deployment: tuple[str, str],
) -> None:
    url, prefix = deployment
    async with (
        RedisSagaStorage.from_url(url, key_prefix=prefix) as writer,
        RedisSagaStorage.from_url(url, key_prefix=prefix) as listener,
        listener.work_notifications() as notifications,
    ):
        # A WAITING saga due now (a detached start) is news; one due later is not.
        await writer.create(make_new_saga(status=SagaStatus.WAITING, wake_at=_PAST))
        await next_notification(notifications)
        await writer.create(make_new_saga(status=SagaStatus.WAITING, wake_at=_FUTURE))
        await no_notification(notifications)

        # A RUNNING saga, its checkpoints and its suspension at a wait publish nothing.
        new = make_new_saga()
        await writer.create(new)
        await writer.checkpoint(make_checkpoint(new.saga_id, 1, cursor=1))
        suspend = make_checkpoint(
            new.saga_id, 2, status=SagaStatus.WAITING, cursor=1, next_step="wait"
        )._replace(wake_at=_FUTURE, waiting_for="paid")
        await writer.checkpoint(suspend)
        await no_notification(notifications)

        # A signal it does not wait for is kept quietly; the one it waits for is news.
        def signal(name: str) -> NewSignal:
            return NewSignal(new.saga_id, f"evt-{name}", name, "1", 1, "wait")

        assert await writer.deliver_signal(signal("shipped"))
        await no_notification(notifications)
        assert await writer.deliver_signal(signal("paid"))
        await next_notification(notifications)

        # A cancel of a WAITING saga is news; of a RUNNING one (its runner sees it) not.
        await writer.request_cancel(new.saga_id, reason="changed my mind")
        await next_notification(notifications)
        running = make_new_saga()
        await writer.create(running)
        await writer.request_cancel(running.saga_id, reason="changed my mind")
        await no_notification(notifications)


async def test_a_parked_saga_is_no_news(redis_url: str, redis_key_prefix: str) -> None:
    async with (
        RedisSagaStorage.from_url(redis_url, key_prefix=redis_key_prefix) as storage,
        storage.work_notifications() as notifications,
    ):
        new = make_new_saga()
        await storage.create(new)
        suspend = make_checkpoint(
            new.saga_id, 1, status=SagaStatus.WAITING, cursor=1, next_step="wait"
        )._replace(wake_at=_FUTURE, waiting_for="paid")
        await storage.checkpoint(suspend)
        await storage.claim(new.saga_id, owner="operator", lease_seconds=60)
        await storage.park(new.saga_id, owner="operator", reason="broken")
        await storage.request_cancel(new.saga_id, reason="no one may run it")
        await no_notification(notifications)


async def test_a_checkpoint_publishes_nothing_and_costs_one_script(
    redis_url: str, redis_key_prefix: str
) -> None:
    assert "PUBLISH" not in read_lua("checkpoint.lua").upper()
    async with anyio.create_task_group() as tg:
        proxy = TcpProxy("127.0.0.1", 6379)
        port = await proxy.start(tg)
        url = url_with_port(redis_url, port)
        async with (
            RedisSagaStorage.from_url(url, key_prefix=redis_key_prefix) as storage,
            storage.work_notifications() as notifications,
        ):
            saga_map = SagaMap()

            @dataclasses.dataclass
            class Plain(SagaContext):
                n: int = 0

            class Bump(SagaStepHandler[Plain, Response]):
                async def act(self, context: Plain) -> None:
                    context.n += 1

            class ThreeBumps(Saga[Plain]):
                steps = [type(f"Bump{i}", (Bump,), {"name": f"bump_{i}"}) for i in range(3)]

            saga_map.bind(Plain, ThreeBumps)
            mediator = SagaMediator(saga_map, storage)
            await mediator.run(Plain())  # loads the scripts
            before = proxy.evalsha
            outcome = await mediator.run(Plain())
            assert outcome.status is SagaStatus.COMPLETED
            assert proxy.evalsha - before == 4  # n + 1 checkpoints, one script each
            await no_notification(notifications)
        proxy.stop()
        tg.cancel_scope.cancel()


async def test_entering_raises_when_redis_cannot_be_reached() -> None:
    async with anyio.create_task_group() as tg:
        proxy = TcpProxy("127.0.0.1", 6379)
        port = await proxy.start(tg)
        proxy.stop()  # nothing listens on the port any more
        await anyio.sleep(0.05)
        async with RedisSagaStorage.from_url(f"redis://127.0.0.1:{port}/0") as storage:
            with pytest.raises(StorageUnavailableError, match="cannot be reached"):
                async with storage.work_notifications():
                    pass
        tg.cancel_scope.cancel()


async def test_a_closed_storage_refuses_to_listen(redis_url: str) -> None:
    storage = RedisSagaStorage.from_url(redis_url)
    await storage.aclose()
    with pytest.raises(StorageUnavailableError, match="closed"):
        async with storage.work_notifications():
            pass


async def test_the_listener_subscribes_again_after_a_lost_connection_and_says_so(
    redis_url: str, redis_key_prefix: str
) -> None:
    async with anyio.create_task_group() as tg:
        proxy = TcpProxy("127.0.0.1", 6379)
        port = await proxy.start(tg)
        async with (
            RedisSagaStorage.from_url(redis_url, key_prefix=redis_key_prefix) as writer,
            RedisSagaStorage.from_url(
                url_with_port(redis_url, port), key_prefix=redis_key_prefix
            ) as listener,
            listener.work_notifications() as notifications,
        ):
            connections = proxy.connections
            proxy.cut()  # as a server restart does
            # Back: what was published meanwhile is lost, so it says "look" once.
            await next_notification(notifications, within=5)
            assert proxy.connections > connections
            await writer.create(make_new_saga(status=SagaStatus.WAITING, wake_at=_PAST))
            await next_notification(notifications)
        proxy.stop()
        tg.cancel_scope.cancel()


async def test_the_blocks_own_error_comes_out_as_it_was_raised(redis_url: str) -> None:
    async with RedisSagaStorage.from_url(redis_url) as storage:
        with pytest.raises(LookupError, match="mine"):
            async with storage.work_notifications():
                raise LookupError("mine")


@pytest.fixture(params=["redis.asyncio", "redis sync"])
def given_client(request: pytest.FixtureRequest, redis_url: str) -> Iterator[Any]:
    """A redis-py client of the kind the test names, given to the storage."""
    if request.param == "redis.asyncio":
        if request.getfixturevalue("anyio_backend") != "asyncio":
            pytest.skip("a redis.asyncio client runs on asyncio only")
        yield redis.asyncio.Redis.from_url(redis_url)
    else:
        client = redis.Redis.from_url(redis_url)
        yield client
        client.close()


async def test_a_storage_given_a_redis_py_client_listens_too(
    given_client: Any, redis_url: str, redis_key_prefix: str
) -> None:
    async with (
        RedisSagaStorage.from_url(redis_url, key_prefix=redis_key_prefix) as writer,
        RedisSagaStorage(given_client, key_prefix=redis_key_prefix).work_notifications() as heard,
    ):
        new = make_new_saga(status=SagaStatus.WAITING, wake_at=_PAST)
        await writer.create(new)
        await next_notification(heard)
        await writer.create(make_new_saga())
        await no_notification(heard)
    if isinstance(given_client, redis.asyncio.Redis):
        await given_client.aclose()


async def test_a_listener_behind_sentinel_is_told(
    redis_sentinel_url: str, sentinel_key_prefix: str
) -> None:
    async with (
        RedisSagaStorage.from_url(redis_sentinel_url, key_prefix=sentinel_key_prefix) as writer,
        RedisSagaStorage.from_url(redis_sentinel_url, key_prefix=sentinel_key_prefix) as other,
        other.work_notifications() as notifications,
    ):
        new = make_new_saga(status=SagaStatus.WAITING, wake_at=_PAST)
        await writer.create(new)
        await next_notification(notifications)
        await writer.request_cancel(new.saga_id, reason="stop")
        await next_notification(notifications)
