"""Put sagas in a storage in the states the CLI tests need, the way a live application would."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import uuid
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

import anyio

from saga_core import (
    SagaCompensatedError,
    SagaCompensationFailedError,
    SagaMediator,
    SagaStatus,
    StepDirection,
    StepEvent,
    bootstrap,
    open_storage,
)
from saga_core.storage import Checkpoint, JournalEntry, NewSaga, SagaRecord

from . import child_sagas, parallel_sagas, waiting_sagas
from .cli_sagas import HOSTILE, SWITCHES, NoteContext, OrderContext, saga_map

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


async def stalled_compensating(url: str, order_id: str = "compensating") -> uuid.UUID:
    """An order saga left COMPENSATING: shipping failed and the process stopped while the
    payment was being refunded (the refund finished; the reservation is still to undo)."""
    mediator, stack = _mediator(url)
    saga_id = uuid.uuid4()
    SWITCHES.fail_ship = True
    started = SWITCHES.refund_started = anyio.Event()
    may_finish = SWITCHES.refund_may_finish = anyio.Event()
    async with stack, anyio.create_task_group() as task_group:

        async def run() -> None:
            async for _ in mediator.stream(OrderContext(order_id), saga_id=saga_id):
                pass

        task_group.start_soon(run)
        await started.wait()
        task_group.cancel_scope.cancel()
        may_finish.set()
    SWITCHES.fail_ship = False
    return saga_id


async def failed_order(url: str, order_id: str = "failed") -> uuid.UUID:
    """An order saga that ended FAILED: shipping failed and the refund kept failing."""
    mediator, stack = _mediator(url)
    saga_id = uuid.uuid4()
    SWITCHES.fail_ship = SWITCHES.refunds_down = True
    try:
        async with stack:
            async for _ in mediator.stream(OrderContext(order_id), saga_id=saga_id):
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


async def hold_lease(url: str, saga_id: uuid.UUID, owner: str) -> None:
    """Lease a saga to ``owner`` for an hour, as a runner that hung holds it."""
    async with open_storage(url) as storage:
        await storage.claim(saga_id, owner=owner, lease_seconds=3600.0)


async def status_of(url: str, saga_id: uuid.UUID) -> tuple[SagaStatus, bool]:
    """The stored status of a saga and whether it is parked."""
    async with open_storage(url) as storage:
        record = await storage.load(saga_id)
    return record.status, record.parked


def _hostile_context() -> str:
    """A context whose keys and values hold :data:`HOSTILE` (stored as the codec would: JSON
    with the characters themselves, not their escapes)."""
    order = OrderContext(order_id=HOSTILE)
    return json.dumps({**dataclasses.asdict(order), HOSTILE: HOSTILE}, ensure_ascii=False)


async def hostile_records(url: str) -> tuple[uuid.UUID, uuid.UUID]:
    """Two sagas whose every stored text holds :data:`HOSTILE`: one RUNNING and leased, with
    an error and a journal; one parked with it as the reason. Returns (leased, parked)."""
    leased, parked = uuid.uuid4(), uuid.uuid4()
    name, step, owner = f"saga {HOSTILE}", f"step {HOSTILE}", f"owner {HOSTILE}"
    context = _hostile_context()
    now = datetime.now(timezone.utc)
    started = JournalEntry(step, StepDirection.ACT, StepEvent.STARTED, 1, now)
    failed = JournalEntry(step, StepDirection.ACT, StepEvent.FAILED, 1, now, f"Error: {HOSTILE}")
    async with open_storage(url) as storage:
        for saga_id in (leased, parked):
            await storage.create(
                NewSaga(saga_id, name, context, owner, 600.0, [started], next_step=step)
            )
            await storage.checkpoint(
                Checkpoint(
                    saga_id,
                    expected_version=1,
                    status=SagaStatus.RUNNING,
                    cursor=0,
                    applied=(step,),
                    context=context,
                    journal=[failed],
                    error=f"Error: {HOSTILE}",
                    lease_owner=owner,
                    lease_seconds=600.0,
                    next_step=step,
                )
            )
        await storage.park(parked, owner=owner, reason=f"gave up: {HOSTILE}")
    return leased, parked


async def given_up(url: str, error: str) -> uuid.UUID:
    """An order saga RUNNING with ``error`` recorded, claimed once by a recovery that then let
    go of it: a worker with ``--max-attempts 1`` parks it at its next claim."""
    saga_id = uuid.uuid4()
    context = json.dumps(dataclasses.asdict(OrderContext("given-up")))
    async with open_storage(url) as storage:
        await storage.create(NewSaga(saga_id, "order", context, "seed", 600.0, next_step="reserve"))
        claimed = await storage.claim(saga_id, owner="seed", lease_seconds=600.0)
        await storage.checkpoint(
            Checkpoint(
                saga_id,
                expected_version=claimed.version,
                status=SagaStatus.RUNNING,
                cursor=0,
                applied=(),
                context=context,
                journal=[],
                error=error,
                next_step="reserve",
            )
        )
    return saga_id


async def waiting_approval(url: str, order_id: str = "a-1") -> uuid.UUID:
    """An approval saga WAITING for its signal ``approved`` (due in an hour, its timeout)."""
    async with open_storage(url) as storage:
        mediator = bootstrap(sagas_mapper=waiting_sagas.saga_map, saga_storage=storage)
        outcome = await mediator.run(waiting_sagas.ApprovalContext(order_id))
    assert outcome.status is SagaStatus.WAITING
    return outcome.saga_id


async def waiting_hold(url: str, item: str = "box") -> uuid.UUID:
    """A hold saga WAITING for ``release``, with no timeout and no deadline."""
    async with open_storage(url) as storage:
        mediator = bootstrap(sagas_mapper=waiting_sagas.saga_map, saga_storage=storage)
        outcome = await mediator.run(waiting_sagas.HoldContext(item))
    assert outcome.status is SagaStatus.WAITING
    return outcome.saga_id


async def with_children(url: str, context: child_sagas.OrderContext) -> uuid.UUID:
    """Run the saga of :mod:`child_sagas` bound to ``context``'s type, with its children,
    until it ends or waits (for a child that waits)."""
    async with open_storage(url) as storage:
        mediator = bootstrap(sagas_mapper=child_sagas.saga_map, saga_storage=storage)
        outcome = await mediator.run(context)
    return outcome.saga_id


async def record_of(url: str, saga_id: uuid.UUID) -> SagaRecord:
    """The stored record of a saga."""
    async with open_storage(url) as storage:
        return await storage.load(saga_id)


async def stalled_in_parallel(url: str, order_id: str = "d-1") -> uuid.UUID:
    """A dispatch saga RUNNING at its ``Parallel`` group, as a runner that stopped while
    ``label`` ran leaves it: ``check`` and the other branches completed, each in a checkpoint
    of its own, and the lease released.

    Written here as the runner writes it, not by cancelling a live runner: on asyncio a
    runner cancelled inside a group fails with ``BrokenResourceError`` instead of stopping
    cleanly (an engine bug, in ``saga_core._engine.branches``).
    """
    saga_id = uuid.uuid4()
    group = parallel_sagas.DispatchSaga.definition().nodes[1].node_id
    context = parallel_sagas.DispatchContext(order_id, checked=True)
    now = datetime.now(timezone.utc)

    def act(step_id: str, event: StepEvent) -> JournalEntry:
        return JournalEntry(step_id, StepDirection.ACT, event, 1, now)

    def stored(context: parallel_sagas.DispatchContext) -> str:
        return json.dumps(dataclasses.asdict(context))

    async with open_storage(url) as storage:
        new = NewSaga(
            saga_id, "dispatch", stored(context), "seed", 600.0, [act("check", StepEvent.STARTED)]
        )
        await storage.create(new._replace(next_step="check"))
        branches = ("reserve", "courier", "pack", "label")
        journal = [
            act("check", StepEvent.COMPLETED),
            *(act(b, StepEvent.STARTED) for b in branches),
        ]
        applied: tuple[str, ...] = ("check",)
        changes: list[tuple[str | None, dict[str, Any]]] = [
            (None, {}),
            ("reserve", {"reserved": True}),
            ("courier", {"carrier": "courier"}),
            ("pack", {"packed": True}),
        ]
        for version, (step_id, change) in enumerate(changes, start=1):
            if step_id is not None:
                context = dataclasses.replace(context, **change)
                applied += (step_id,)
                journal = [act(step_id, StepEvent.COMPLETED)]
            last = version == len(changes)
            await storage.checkpoint(
                Checkpoint(
                    saga_id,
                    expected_version=version,
                    status=SagaStatus.RUNNING,
                    cursor=1,
                    applied=applied,
                    context=stored(context),
                    journal=journal,
                    lease_owner=None if last else "seed",
                    lease_seconds=None if last else 600.0,
                    next_step=group,
                )
            )
    return saga_id
