"""Circuits shared by several processes through Redis: adapters (standing in for application
instances) with the same Redis database and namespace see one circuit per step. Uses the real
server (``redis_url``, database 14) under a namespace of the test's own."""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable
from typing import Any

import anyio
import pytest
import redis

from saga_breaker import AioBreakerAdapter
from saga_core import (
    CircuitOpenError,
    Fallback,
    MemorySagaStorage,
    Saga,
    SagaContext,
    SagaMediator,
    SagaStatus,
    SagaStepHandler,
)

pytestmark = pytest.mark.anyio

StepFactory = Callable[..., type[SagaStepHandler[Any, Any]]]
MediatorFactory = Callable[..., SagaMediator]


@dataclasses.dataclass
class OrderContext(SagaContext):
    order_id: str = "o-1"


class Downstream:
    """An action to guard: counts its calls, raises ``error`` while it is set."""

    def __init__(self, error: Exception | None = None) -> None:
        self.calls = 0
        self.error = error

    async def __call__(self) -> str:
        self.calls += 1
        if self.error is not None:
            raise self.error
        return "done"


async def fail(breaker: AioBreakerAdapter, step_id: str, times: int = 1) -> None:
    for _ in range(times):
        with pytest.raises(ConnectionError):
            await breaker.call(step_id, Downstream(ConnectionError("down")))


async def test_an_open_circuit_is_seen_by_every_adapter_sharing_the_namespace(
    redis_url: str, redis_namespace: str
) -> None:
    first = AioBreakerAdapter(
        fail_max=2, timeout_duration=60, redis=redis_url, namespace=redis_namespace
    )
    second = AioBreakerAdapter(
        fail_max=2,
        timeout_duration=60,
        redis=redis.Redis.from_url(redis_url),
        namespace=redis_namespace,
    )
    await fail(first, "reserve", times=2)
    downstream = Downstream()

    with pytest.raises(CircuitOpenError):
        await second.call("reserve", downstream)

    assert downstream.calls == 0
    assert await second.circuit_state("reserve") == "open"
    assert await second.call("charge", Downstream()) == "done"  # other steps: other circuits


async def test_failures_are_counted_across_adapters(redis_url: str, redis_namespace: str) -> None:
    first = AioBreakerAdapter(
        fail_max=2, timeout_duration=60, redis=redis_url, namespace=redis_namespace
    )
    second = AioBreakerAdapter(
        fail_max=2, timeout_duration=60, redis=redis_url, namespace=redis_namespace
    )

    await fail(first, "reserve")
    assert await second.circuit_state("reserve") == "closed"
    await fail(second, "reserve")

    assert await first.circuit_state("reserve") == "open"


async def test_another_namespace_is_another_circuit(redis_url: str, redis_namespace: str) -> None:
    first = AioBreakerAdapter(
        fail_max=1, timeout_duration=60, redis=redis_url, namespace=redis_namespace
    )
    other = AioBreakerAdapter(
        fail_max=1, timeout_duration=60, redis=redis_url, namespace=f"{redis_namespace}:other"
    )
    await fail(first, "reserve")

    assert await other.call("reserve", Downstream()) == "done"


async def test_a_trial_in_one_process_closes_the_circuit_for_all(
    redis_url: str, redis_namespace: str
) -> None:
    first = AioBreakerAdapter(
        fail_max=1, timeout_duration=1, redis=redis_url, namespace=redis_namespace
    )
    second = AioBreakerAdapter(
        fail_max=1, timeout_duration=1, redis=redis_url, namespace=redis_namespace
    )
    await fail(first, "reserve")
    # Redis keeps the opening time in whole seconds, so the circuit half-opens within 1 s.
    await anyio.sleep(1.1)

    assert await second.call("reserve", Downstream()) == "done"

    assert await first.circuit_state("reserve") == "closed"
    assert await first.call("reserve", Downstream()) == "done"


async def test_the_circuit_keys_live_under_the_namespace_and_step_id(
    redis_url: str, redis_namespace: str
) -> None:
    breaker = AioBreakerAdapter(
        fail_max=1, timeout_duration=60, redis=redis_url, namespace=redis_namespace
    )
    await fail(breaker, "reserve")

    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        keys = sorted(client.scan_iter(match=f"{redis_namespace}:*"))
        state = client.get(f"{redis_namespace}:reserve:aiobreaker:state")
    finally:
        client.close()
    assert keys == [
        f"{redis_namespace}:reserve:aiobreaker:{name}"
        for name in ("fail_counter", "opened_at", "state")
    ]
    assert state == "OPEN"


async def test_two_application_instances_share_the_open_circuit_in_saga_runs(
    redis_url: str,
    redis_namespace: str,
    make_step: StepFactory,
    make_mediator: MediatorFactory,
    ledger: list[str],
) -> None:
    primary = make_step("reserve", act_fails=math.inf)
    backup = make_step("reserve_elsewhere")

    def instance() -> tuple[SagaMediator, MemorySagaStorage]:
        """One application instance: its own saga definition, breaker and storage."""
        breaker = AioBreakerAdapter(
            fail_max=2, timeout_duration=60, redis=redis_url, namespace=redis_namespace
        )

        class OrderSaga(Saga[OrderContext]):
            steps = [Fallback(step=primary, fallback=backup, circuit_breaker=breaker)]

        storage = MemorySagaStorage()
        return make_mediator(OrderSaga, saga_storage=storage), storage

    (first, _), (second, second_storage) = instance(), instance()
    for _ in range(2):
        await first.run(OrderContext())
    ledger.clear()

    outcome = await second.run(OrderContext())

    assert outcome.status is SagaStatus.COMPLETED
    assert ledger == ["act:reserve_elsewhere"]
    history = await second_storage.history(outcome.saga_id)
    assert [(e.step_id, e.attempt, (e.error or "")[:16]) for e in history if e.error] == [
        ("reserve", 0, "CircuitOpenError")
    ]


async def test_when_redis_is_unreachable_calls_run_unguarded_and_say_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="saga_breaker")
    # Nothing listens on port 1: the connection is refused at once.
    breaker = AioBreakerAdapter(fail_max=1, redis="redis://127.0.0.1:1/0")

    await fail(breaker, "reserve", times=2)
    downstream = Downstream()
    assert await breaker.call("reserve", downstream) == "done"

    assert downstream.calls == 1
    messages = [r.getMessage() for r in caplog.records if r.name == "saga_breaker"]
    assert len(messages) == 3
    assert all("shared state cannot be reached" in m and "unguarded" in m for m in messages)
    with pytest.raises(redis.ConnectionError):
        await breaker.circuit_state("reserve")
