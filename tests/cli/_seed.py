"""Put sagas in a storage in the states the CLI tests need, the way a live application would."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable
from typing import Any

import anyio

from saga_core import (
    SagaCompensatedError,
    SagaCompensationFailedError,
    SagaMediator,
    SagaStatus,
    bootstrap,
    open_storage,
)

from .cli_sagas import SWITCHES, NoteContext, OrderContext, saga_map

#: ``cli(*args) -> (exit code, stdout, stderr)``: the CLI run in-process.
CliRunner = Callable[..., tuple[int, str, str]]
#: ``seed(async_function, *args)``: run a seeding helper below on the test's backend.
Seeder = Callable[..., Any]


def _mediator(url: str) -> tuple[SagaMediator, contextlib.AsyncExitStack]:
    stack = contextlib.AsyncExitStack()
    storage = open_storage(url)
    stack.push_async_callback(storage.aclose)
    return bootstrap(sagas_mapper=saga_map, saga_storage=storage), stack


async def completed_order(url: str, order_id: str = "done") -> uuid.UUID:
    """An order saga that ran to COMPLETED."""
    mediator, stack = _mediator(url)
    async with stack:
        outcome = await mediator.run(OrderContext(order_id))
    assert outcome.status is SagaStatus.COMPLETED
    return outcome.saga_id


async def completed_note(url: str) -> uuid.UUID:
    """A note saga that ran to COMPLETED."""
    mediator, stack = _mediator(url)
    async with stack:
        outcome = await mediator.run(NoteContext("hello"))
    return outcome.saga_id


async def stalled_running(url: str, order_id: str = "stalled") -> uuid.UUID:
    """An order saga left RUNNING: its process 'died' (was cancelled) inside ``charge``."""
    mediator, stack = _mediator(url)
    saga_id = uuid.uuid4()
    started = SWITCHES.hang_in_charge = anyio.Event()
    async with stack, anyio.create_task_group() as task_group:

        async def run() -> None:
            async for _ in mediator.stream(OrderContext(order_id), saga_id=saga_id):
                pass

        task_group.start_soon(run)
        await started.wait()
        task_group.cancel_scope.cancel()
    return saga_id


async def stalled_compensating(url: str) -> uuid.UUID:
    """An order saga left COMPENSATING: shipping failed and the process stopped while the
    payment was being refunded (the refund finished; the reservation is still to undo)."""
    mediator, stack = _mediator(url)
    saga_id = uuid.uuid4()
    SWITCHES.fail_ship = True
    started = SWITCHES.refund_started = anyio.Event()
    may_finish = SWITCHES.refund_may_finish = anyio.Event()
    async with stack, anyio.create_task_group() as task_group:

        async def run() -> None:
            async for _ in mediator.stream(OrderContext("compensating"), saga_id=saga_id):
                pass

        task_group.start_soon(run)
        await started.wait()
        task_group.cancel_scope.cancel()
        may_finish.set()
    SWITCHES.fail_ship = False
    return saga_id


async def failed_order(url: str) -> uuid.UUID:
    """An order saga that ended FAILED: shipping failed and the refund kept failing."""
    mediator, stack = _mediator(url)
    saga_id = uuid.uuid4()
    SWITCHES.fail_ship = SWITCHES.refunds_down = True
    try:
        async with stack:
            async for _ in mediator.stream(OrderContext("failed"), saga_id=saga_id):
                pass
    except SagaCompensationFailedError:
        pass
    except SagaCompensatedError as exc:  # pragma: no cover - the scenario is broken
        raise AssertionError("the refund was expected to fail") from exc
    finally:
        SWITCHES.fail_ship = False
    return saga_id


async def park(url: str, saga_id: uuid.UUID) -> None:
    """Move a saga to the dead-letter state, as a worker that gave up on it does."""
    async with open_storage(url) as storage:
        await storage.claim(saga_id, owner="gave-up", lease_seconds=60.0)
        await storage.park(saga_id, owner="gave-up", reason="recovery gave up after 10 attempts")


async def status_of(url: str, saga_id: uuid.UUID) -> tuple[SagaStatus, bool]:
    """The stored status of a saga and whether it is parked."""
    async with open_storage(url) as storage:
        record = await storage.load(saga_id)
    return record.status, record.parked
