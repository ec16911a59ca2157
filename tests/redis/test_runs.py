"""Whole sagas through ``bootstrap`` on Redis, with every kind of client: one atomic script per
checkpoint (n + 1 for a successful saga of n steps), rollbacks, and many sagas at once."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import anyio
import pytest
import redis
import redis.asyncio

from saga_core import (
    Response,
    Saga,
    SagaCompensatedError,
    SagaContext,
    SagaStatus,
    SagaStepHandler,
    StepDirection,
    StepEvent,
    bootstrap,
)
from saga_redis import RedisSagaStorage

from ._support import TcpProxy, url_with_port

pytestmark = [pytest.mark.anyio, pytest.mark.redis]


@dataclasses.dataclass
class Counter(SagaContext):
    label: str
    n: int = 0
    fail_at: int = -1


class Bump(SagaStepHandler[Counter, Response]):
    async def act(self, context: Counter) -> Response:
        if context.n == context.fail_at:
            raise RuntimeError(f"step {context.n} refused")
        context.n += 1
        return Response()

    async def compensate(self, context: Counter) -> None:
        context.n -= 1


def _bumps(count: int) -> list[type[SagaStepHandler[Counter, Response]]]:
    return [type(f"Bump{i}", (Bump,), {"name": f"bump_{i}"}) for i in range(count)]


class OneStep(Saga[Counter]):
    name = "one-step"
    steps = _bumps(1)


@dataclasses.dataclass
class Counter3(Counter):
    pass


class ThreeSteps(Saga[Counter3]):
    name = "three-steps"
    steps = _bumps(3)


class CountingAsyncRedis(redis.asyncio.Redis):
    """An asyncio client that counts the EVALSHA commands it sends."""

    evalsha_sent = 0

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        if args and args[0] == "EVALSHA":
            self.evalsha_sent += 1
        return await super().execute_command(*args, **options)  # type: ignore[no-untyped-call]


class CountingRedis(redis.Redis):
    """A synchronous client that counts the EVALSHA commands it sends."""

    evalsha_sent = 0

    def execute_command(self, *args: Any, **options: Any) -> Any:
        if args and args[0] == "EVALSHA":
            self.evalsha_sent += 1
        return super().execute_command(*args, **options)  # type: ignore[no-untyped-call]


def _mediator(storage: RedisSagaStorage) -> Any:
    def bind(mapper: Any) -> None:
        mapper.bind(Counter, OneStep)
        mapper.bind(Counter3, ThreeSteps)

    return bootstrap(sagas_mapper=bind, saga_storage=storage)


async def _writes_per_saga(storage: RedisSagaStorage, count: Any) -> dict[int, int]:
    mediator = _mediator(storage)
    writes = {}
    for context in (Counter(label="one"), Counter3(label="three")):
        before = count()
        outcome = await mediator.run(context)
        assert outcome.status is SagaStatus.COMPLETED
        writes[len(mediator.saga_map.saga_for(type(context)).steps)] = count() - before
    return writes


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_one_evalsha_per_checkpoint_with_an_asyncio_client(
    redis_url: str, redis_key_prefix: str
) -> None:
    client = CountingAsyncRedis.from_url(redis_url)
    assert isinstance(client, CountingAsyncRedis)
    try:
        storage = RedisSagaStorage(client, key_prefix=redis_key_prefix)
        writes = await _writes_per_saga(storage, lambda: client.evalsha_sent)
    finally:
        await client.aclose()
    assert writes == {1: 2, 3: 4}


async def test_one_evalsha_per_checkpoint_with_a_sync_client(
    redis_url: str, redis_key_prefix: str
) -> None:
    client = CountingRedis.from_url(redis_url)
    assert isinstance(client, CountingRedis)
    try:
        storage = RedisSagaStorage(client, key_prefix=redis_key_prefix)
        writes = await _writes_per_saga(storage, lambda: client.evalsha_sent)
    finally:
        client.close()
    assert writes == {1: 2, 3: 4}


async def test_one_evalsha_per_checkpoint_from_a_url(redis_url: str, redis_key_prefix: str) -> None:
    target = urlsplit(redis_url)
    proxy = TcpProxy(target.hostname or "127.0.0.1", target.port or 6379)
    async with anyio.create_task_group() as tg:
        await proxy.start(tg)
        url = url_with_port(redis_url, proxy.port)
        async with RedisSagaStorage.from_url(url, key_prefix=redis_key_prefix) as storage:
            await storage.list_recoverable()  # connect, and load the scripts, beforehand
            writes = await _writes_per_saga(storage, lambda: proxy.evalsha)
        proxy.stop()
    assert writes == {1: 2, 3: 4}


@pytest.fixture
async def storage(redis_url: str, redis_key_prefix: str) -> AsyncIterator[RedisSagaStorage]:
    async with RedisSagaStorage.from_url(redis_url, key_prefix=redis_key_prefix) as storage:
        yield storage


async def test_a_failed_saga_is_compensated_and_its_history_kept(
    storage: RedisSagaStorage,
) -> None:
    mediator = _mediator(storage)
    saga_id = uuid.uuid4()
    results = []
    with pytest.raises(SagaCompensatedError, match="step 2 refused"):
        async for result in mediator.stream(Counter3(label="x", fail_at=2), saga_id=saga_id):
            results.append(result)  # noqa: PERF401 - the stream ends by raising
    # The act that raised may have had an effect, so it is compensated too, first.
    assert [(r.step_id, r.direction) for r in results] == [
        ("bump_0", StepDirection.ACT),
        ("bump_1", StepDirection.ACT),
        ("bump_2", StepDirection.ACT),
        ("bump_2", StepDirection.COMPENSATE),
        ("bump_1", StepDirection.COMPENSATE),
        ("bump_0", StepDirection.COMPENSATE),
    ]
    record = await storage.load(saga_id)
    assert (record.status, record.applied, record.lease_owner) == (
        SagaStatus.COMPENSATED,
        (),
        None,
    )
    assert record.error == "RuntimeError: step 2 refused"
    history = [(e.step_id, e.direction, e.event) for e in await storage.history(saga_id)]
    act, compensate = StepDirection.ACT, StepDirection.COMPENSATE
    started, completed = StepEvent.STARTED, StepEvent.COMPLETED
    assert history == [
        ("bump_0", act, started),
        ("bump_0", act, completed),
        ("bump_1", act, started),
        ("bump_1", act, completed),
        ("bump_2", act, started),
        ("bump_2", act, StepEvent.FAILED),
        ("", compensate, StepEvent.COMPENSATING),
        ("bump_2", compensate, started),
        ("bump_2", compensate, completed),
        ("bump_1", compensate, started),
        ("bump_1", compensate, completed),
        ("bump_0", compensate, started),
        ("bump_0", compensate, completed),
        ("", compensate, StepEvent.FINISHED),
    ]


async def test_many_sagas_at_once_all_complete(storage: RedisSagaStorage) -> None:
    mediator = _mediator(storage)
    outcomes = []

    async def one(index: int) -> None:
        outcomes.append(await mediator.run(Counter3(label=str(index))))

    async with anyio.create_task_group() as tg:
        for index in range(60):
            tg.start_soon(one, index)
    assert len(outcomes) == 60
    assert {o.status for o in outcomes} == {SagaStatus.COMPLETED}
    assert {o.context.n for o in outcomes} == {3}
    assert await storage.list_recoverable() == []


async def test_a_small_pool_serves_many_concurrent_sagas(
    redis_url: str, redis_key_prefix: str
) -> None:
    async with RedisSagaStorage.from_url(
        redis_url, key_prefix=redis_key_prefix, max_connections=2
    ) as storage:
        mediator = _mediator(storage)
        done = []

        async def one(index: int) -> None:
            done.append((await mediator.run(Counter3(label=str(index)))).status)

        async with anyio.create_task_group() as tg:
            for index in range(30):
                tg.start_soon(one, index)
        assert done == [SagaStatus.COMPLETED] * 30


async def test_calls_cancelled_in_flight_leave_the_storage_usable(
    storage: RedisSagaStorage,
) -> None:
    for _ in range(20):
        with anyio.move_on_after(0.0005):
            await storage.list_recoverable()
    mediator = _mediator(storage)
    assert (await mediator.run(Counter3(label="after"))).status is SagaStatus.COMPLETED
