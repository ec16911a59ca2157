"""Every example program runs: as a script (a subprocess, as the README tells users to run it)
and in-process on asyncio and trio, and prints what it claims to show.

Each ``check_*`` function holds the key lines of one example's output, in order; the script
run and the in-process run are checked by the same function.
"""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import anyio
import di
import pytest
from di import bind_by_type
from di.dependent import Dependent

from saga_core import (
    Container,
    MemorySagaStorage,
    Saga,
    SagaCompensatedError,
    SagaContext,
    SagaStatus,
    SagaStepHandler,
    StepDirection,
    StepEvent,
    bootstrap,
)

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
SCRIPT_TIMEOUT_SECONDS = 60

LoadExample = Callable[[str], ModuleType]


def normalise(output: str) -> list[str]:
    """The output's non-empty lines, with runs of whitespace collapsed to one space."""
    return [" ".join(line.split()) for line in output.splitlines() if line.strip()]


def assert_in_order(output: str, fragments: list[str]) -> None:
    """Each fragment occurs in a line after the line holding the previous fragment."""
    lines = normalise(output)
    position = 0
    for fragment in fragments:
        for index in range(position, len(lines)):
            if fragment in lines[index]:
                position = index + 1
                break
        else:
            shown = "\n".join(lines)
            raise AssertionError(
                f"{fragment!r} not found after line {position} of the output:\n{shown}"
            )


def line_index(output: str, fragment: str) -> int:
    """The index (in ``normalise(output)``) of the first line holding ``fragment``."""
    for index, line in enumerate(normalise(output)):
        if fragment in line:
            return index
    raise AssertionError(f"{fragment!r} not in the output:\n{output}")


def run_script(name: str) -> str:
    """Run ``examples/<name>.py`` as the README does; return its stdout once it exits 0."""
    completed = subprocess.run(
        [sys.executable, str(EXAMPLES / f"{name}.py")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=SCRIPT_TIMEOUT_SECONDS,
        check=False,
    )
    assert completed.returncode == 0, (
        f"examples/{name}.py exited with {completed.returncode}\n"
        f"stdout:\n{completed.stdout}\nstderr:\n{completed.stderr}"
    )
    return completed.stdout


# --- what each example must print ---------------------------------------------------------------


def check_order_saga(output: str) -> None:
    assert_in_order(
        output,
        [
            "Starting saga",
            "Step completed: ReserveInventoryStep -> "
            "InventoryReserved(reservation_id='reservation-123')",
            "Step completed: ProcessPaymentStep -> PaymentProcessed(payment_id='payment-123'",
            "Step completed: ShipOrderStep -> OrderShipped(tracking_number='TRACK-123')",
            "Final status: COMPLETED",
            "Tracking number: TRACK-123",
            "Journal:",
        ],
    )
    journal = normalise(output.split("Journal:", 1)[1])
    entries = [
        re.fullmatch(r"\+ ?[\d.]+ ms (\w+) (\w+) (\w+) \(attempt (\d+)\)", line) for line in journal
    ]
    assert all(entries), journal
    assert [m.groups() for m in entries if m] == [
        (step, "act", event, "1")
        for step in ("reserve_inventory", "process_payment", "ship_order")
        for event in ("started", "completed")
    ]


def check_compensation(output: str) -> None:
    assert_in_order(
        output,
        [
            "Order 456: 5000.00, card limit 1000.00",
            "act reserve_inventory ok InventoryReserved(reservation_id='reservation-456')",
            "act process_payment FAILED PaymentDeclinedError: card declined",
            "nothing was charged, nothing to refund",
            "compensate process_payment done",
            "released reservation-456",
            "compensate reserve_inventory done",
            "Saga compensated: saga",
            "Inventory reservations left: {}",
            "Payments charged: {}",
            "Shipments booked: {}",
            "Final status: COMPENSATED",
            "Recorded error: PaymentDeclinedError: card declined",
        ],
    )
    assert "ship_order" not in output  # the step after the failed one never ran


def check_recovery(output: str) -> None:
    assert_in_order(
        output,
        [
            "1. The process dies while process_payment is inside act",
            "act reserve_inventory: ok",
            "-- the process stopped here --",
            "stored: RUNNING, 1 of 3 steps done, to undo on rollback: ['reserve_inventory']",
            "Saga recovered successfully!",
            "stored: COMPLETED, 3 of 3 steps done",
            "charge called 2 times, 1 payment made",
            "2. Shipping fails; the process stops while the payment is being refunded",
            "act ship_order: FAILED (no carrier for order B-2)",
            "-- the process stopped here --",
            "refunded so far: ['payment-B-2']",
            "stored: COMPENSATING, 2 of 3 steps done, to undo on rollback: ['reserve_inventory']",
            "Compensation completed",
            "stored: COMPENSATED",
            "inventory still reserved: ['reservation-A-1']",
            "3. Shipping fails and the refund keeps failing: the saga ends FAILED",
            "compensate process_payment: FAILED (payment provider unreachable)",
            "the stream raised SagaCompensationFailedError",
            "stored: FAILED, 2 of 3 steps done, to undo on rollback: "
            "['reserve_inventory', 'process_payment']",
            "(the payment provider is back)",
            "Compensation completed",
            "stored: COMPENSATED",
            "refunded: ['payment-B-2', 'payment-C-3']",
            "inventory still reserved: ['reservation-A-1']",
        ],
    )
    assert "Compensation failed again" not in output


def check_recovery_loop(output: str) -> None:
    assert_in_order(
        output,
        [
            "A-1: RUNNING",
            "B-2: COMPENSATING",
            "C-3: RUNNING",
            "Recoverable right now: ['A-1', 'B-2']",
            "round 1: 2 stalled saga(s)",
            "order A-1 (running): recovered, completed",
            "order B-2 (compensating): Compensation completed",
            "no stalled saga(s)",
            "1 stalled saga(s)",
            "order C-3 (running): recovered, completed",
            "The job finished 3 saga(s)",
            "A-1: COMPLETED",
            "B-2: COMPENSATED",
            "C-3: COMPLETED",
            "Payments made: ['payment-A-1', 'payment-B-2', 'payment-C-3']",
            "Refunded: ['payment-B-2']",
            "Reserved: ['reservation-A-1', 'reservation-C-3']",
        ],
    )
    # C-3's runner died holding its lease: it is recovered in a later round than the others.
    assert line_index(output, "order C-3") > line_index(output, "round 2:")


def check_fastapi_sse(output: str) -> None:
    events = [json.loads(line[len("data: ") :]) for line in normalise(output) if "data: " in line]
    assert [(e["type"], e.get("step"), e.get("compensation"), e.get("failed")) for e in events] == [
        ("start", None, None, None),
        ("step_progress", "ReserveInventoryStep", False, False),
        ("step_progress", "ProcessPaymentStep", False, False),
        ("step_progress", "ShipOrderStep", False, False),
        ("complete", None, None, None),
        ("start", None, None, None),
        ("step_progress", "ReserveInventoryStep", False, False),
        ("step_progress", "ProcessPaymentStep", False, True),
        ("step_progress", "ReserveInventoryStep", True, False),
        ("error", None, None, None),
    ]
    assert events[-1]["status"] == "compensated"
    assert "card declined" in events[-1]["message"]
    assert_in_order(
        output, ["(an order that goes through)", "(an order whose payment is declined)"]
    )


def check_payment_webhook(output: str) -> None:
    assert_in_order(
        output,
        [
            "Stock: {'sku-1': 10, 'sku-2': 10}",
            "(an order paid by the provider's webhook, which it delivers twice)",
            "POST /orders -> 202, order",
            "GET /orders/{id} -> waiting for payment-confirmed",
            '(evt-81) -> 200 {"duplicate":false,"event_id":"evt-81"',
            '(evt-81) -> 200 {"duplicate":true,"event_id":"evt-81"',
            "GET /orders/{id}/events",
            "id 1: reserve_stock act claimed",
            "id 2: reserve_stock act started",
            "id 4: signal:payment-confirmed act started",
            "id 5: signal:payment-confirmed act claimed",
            "id 6: signal:payment-confirmed act completed",
            "id 8: ship_order act completed",
            "id 9: (saga) act finished",
            "end: completed",
            "GET /orders/{id}/events (Last-Event-ID: 6)",
            "id 7: ship_order act started",
            "id 8: ship_order act completed",
            "id 9: (saga) act finished",
            "end: completed",
            '(evt-81) -> 200 {"duplicate":true,"event_id":"evt-81"',
            "(an order whose payment never comes)",
            "id 6: signal:payment-confirmed act failed (SagaWaitTimedOutError)",
            "id 7: (saga) compensate compensating (SagaWaitTimedOutError)",
            "id 9: reserve_stock compensate completed",
            "id 10: (saga) compensate finished",
            "end: compensated",
            '(evt-82) -> 409 {"error":"order_finished"',
            "Stock: {'sku-1': 9, 'sku-2': 9}",
        ],
    )
    # The resumed stream starts after event 6: nothing before it again.
    resumed = output.split("(Last-Event-ID: 6)", 1)[1].split("end: completed", 1)[0]
    assert normalise(resumed) == [
        "id 7: ship_order act started",
        "id 8: ship_order act completed",
        "id 9: (saga) act finished",
    ]
    assert output.count("ship_order act started") == 2  # once per stream of the paid order


def check_parallel_order(output: str) -> None:
    assert_in_order(
        output,
        [
            "Order A-1 (a courier is free):",
            "open order A-1",
            "courier: booked courier-A-1",
            "stock: reserved stock-A-1",
            # the child saga starts from both branches' changes, merged
            "shipping saga: pickup 09:00-11:00 with courier-A-1",
            "shipping saga: label label-A-1",
            "card: charged",
            "status: COMPLETED",
            "child:shipping/book_pickup, child:shipping/print_label, charge_card",
            "context: stock stock-A-1, courier courier-A-1",
            "label from the shipping saga: label-A-1",
            "Order A-2 (no courier free):",
            # the courier failed first, then the reservation was cancelled: last ended first
            "stock: release the reservation of order A-2",
            "courier: cancel any booking of order A-2",
            "cancel order A-2",
            "status: COMPENSATED",
            "Order A-3 (the card is declined once shipping is arranged):",
            "shipping saga: label label-A-3",
            # the completed child is compensated as a unit, its steps in reverse order
            "shipping saga: void the label label-A-3",
            "shipping saga: cancel the pickup 09:00-11:00",
            "cancel order A-3",
            "status: COMPENSATED",
        ],
    )
    assert "stock: reserved stock-A-2" not in output  # cancelled mid-act
    # Both branches started (in either order) before either ended: they ran concurrently.
    for order in output.split("Order A-")[1:]:
        lines = normalise(order)
        first_end = min(i for i, line in enumerate(lines) if "booked" in line or "release" in line)
        starts = [
            i for i, line in enumerate(lines) if line.endswith(("reserving ...", "booking ..."))
        ]
        assert len(starts) == 2 and max(starts) < first_end


CHECKS: dict[str, Callable[[str], None]] = {
    "order_saga": check_order_saga,
    "compensation": check_compensation,
    "recovery": check_recovery,
    "recovery_loop": check_recovery_loop,
    "fastapi_sse": check_fastapi_sse,
    "payment_webhook": check_payment_webhook,
    "parallel_order": check_parallel_order,
}


# --- as scripts ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(CHECKS))
def test_example_runs_as_a_script(name: str) -> None:
    CHECKS[name](run_script(name))


@pytest.mark.parametrize("name", sorted(CHECKS))
def test_example_says_what_it_shows_and_how_to_run_it(name: str, load_example: LoadExample) -> None:
    docstring = load_example(name).__doc__
    assert docstring is not None
    assert f"uv run python examples/{name}.py" in docstring


# --- in-process, on asyncio and trio ------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("name", sorted(CHECKS))
async def test_example_main_runs_in_process(
    name: str, load_example: LoadExample, capsys: pytest.CaptureFixture[str]
) -> None:
    module = load_example(name)
    with anyio.fail_after(30):
        await module.main()
    CHECKS[name](capsys.readouterr().out)


@pytest.mark.anyio
async def test_order_saga_steps_get_the_services_bound_in_di(load_example: LoadExample) -> None:
    m = load_example("order_saga")
    inventory, payments, shipping = m.InventoryService(), m.PaymentService(), m.ShippingService()
    storage = MemorySagaStorage()
    mediator = bootstrap.bootstrap(  # python-cqrs's spelling
        di_container=m.build_container(inventory, payments, shipping),
        sagas_mapper=m.saga_mapper,
        saga_storage=storage,
    )
    context = m.OrderContext(order_id="o-1", items=["a"], total_amount=12.5)
    saga_id = uuid.uuid4()
    results = [r async for r in mediator.stream(context, saga_id=saga_id)]

    assert [r.step_type for r in results] == [
        m.ReserveInventoryStep,
        m.ProcessPaymentStep,
        m.ShipOrderStep,
    ]
    assert all(r.saga_id == saga_id and not r.is_compensation for r in results)
    assert inventory.reservations == {"reservation-o-1": ["a"]}
    assert payments.charges == {"payment-o-1": 12.5}
    assert shipping.shipments == {"TRACK-o-1": "o-1"}
    record = await storage.load(saga_id)
    assert record.status is SagaStatus.COMPLETED
    assert record.saga_name == "order"
    journal = await storage.history(saga_id)
    assert [(e.step_id, e.event) for e in journal] == [
        *(
            (step, event)
            for step in ("reserve_inventory", "process_payment", "ship_order")
            for event in (StepEvent.STARTED, StepEvent.COMPLETED)
        ),
        ("", StepEvent.FINISHED),
    ]


@pytest.mark.anyio
async def test_compensation_streams_failure_then_compensations_then_raises(
    load_example: LoadExample,
) -> None:
    m = load_example("compensation")
    inventory, payments = m.InventoryService(), m.PaymentService(limit=10.0)
    container = Container()
    container.register(m.InventoryService, inventory)
    container.register(m.PaymentService, payments)
    container.register(m.ShippingService, m.ShippingService())
    storage = MemorySagaStorage()
    mediator = bootstrap(di_container=container, sagas_mapper=m.saga_mapper, saga_storage=storage)
    saga_id = uuid.uuid4()
    seen: list[tuple[str, StepDirection, bool]] = []
    with pytest.raises(SagaCompensatedError) as caught:
        async for result in mediator.stream(
            m.OrderContext(order_id="o-2", items=["a"], total_amount=11.0), saga_id=saga_id
        ):
            # A loop, not a comprehension: the results before the raise are kept.
            seen.append((result.step_id, result.direction, result.failed))  # noqa: PERF401

    assert isinstance(caught.value, RuntimeError)
    assert isinstance(caught.value.__cause__, m.PaymentDeclinedError)
    assert seen == [
        ("reserve_inventory", StepDirection.ACT, False),
        ("process_payment", StepDirection.ACT, True),
        ("process_payment", StepDirection.COMPENSATE, False),
        ("reserve_inventory", StepDirection.COMPENSATE, False),
    ]
    assert inventory.reservations == {}
    record = await storage.load(saga_id)
    assert record.status is SagaStatus.COMPENSATED
    assert record.applied == ()


# A saga of another kind, sharing the storage with the recovery job's OrderSaga.


@dataclasses.dataclass
class OtherContext(SagaContext):
    note: str = ""


class HangingStep(SagaStepHandler[OtherContext, None]):
    name = "hanging"

    async def act(self, context: OtherContext) -> None:
        await anyio.sleep_forever()


class OtherSaga(Saga[OtherContext]):
    name = "other"
    steps = [HangingStep]


@pytest.mark.anyio
async def test_recovery_job_leaves_other_sagas_alone_and_ends(load_example: LoadExample) -> None:
    m = load_example("recovery_loop")
    storage = MemorySagaStorage()
    other = bootstrap(sagas_mapper=lambda s: s.bind(OtherContext, OtherSaga), saga_storage=storage)
    saga_id = uuid.uuid4()

    async def run_other() -> None:
        async for _ in other.stream(OtherContext(), saga_id=saga_id):
            pass

    with anyio.move_on_after(0.05):
        await run_other()
    record = await storage.load(saga_id)
    assert record.status is SagaStatus.RUNNING
    assert [r.saga_id for r in await storage.list_recoverable()] == [saga_id]

    with anyio.fail_after(5):
        finished: dict[uuid.UUID, Any] = await m.recovery_job(
            storage=storage, di_container=di.Container(), interval=0.0, max_rounds=2
        )

    assert finished == {}
    assert (await storage.load(saga_id)).version == record.version  # not even claimed


@pytest.mark.anyio
async def test_recovery_job_leaves_a_live_long_step_alone(load_example: LoadExample) -> None:
    m = load_example("recovery_loop")
    ship_calls: list[str] = []

    class SlowShipping(m.ShippingService):  # type: ignore[name-defined,misc]
        async def ship(self, order_id: str) -> str:
            ship_calls.append(order_id)
            await anyio.sleep(0.6)  # healthy, just longer than the 0.2 s lease
            return f"TRACK-{order_id}"

    inventory, payments, shipping = m.InventoryService(), m.PaymentService(), SlowShipping()
    container = di.Container()
    container.bind(bind_by_type(Dependent(lambda: inventory, scope="request"), m.InventoryService))
    container.bind(bind_by_type(Dependent(lambda: payments, scope="request"), m.PaymentService))
    container.bind(bind_by_type(Dependent(lambda: shipping, scope="request"), m.ShippingService))
    storage = MemorySagaStorage()
    mediator = bootstrap(
        di_container=container, sagas_mapper=m.saga_mapper, saga_storage=storage, lease_seconds=0.2
    )
    saga_id = uuid.uuid4()
    live_error: list[BaseException] = []
    finished: dict[uuid.UUID, Any] = {}

    async def live_runner() -> None:
        try:
            async for _ in mediator.stream(m.OrderContext("slow-1"), saga_id=saga_id):
                pass
        except Exception as exc:
            live_error.append(exc)

    async def job() -> None:
        finished.update(
            await m.recovery_job(
                storage=storage, di_container=container, interval=0.1, max_rounds=8
            )
        )

    # The live process runs its sagas inside `async with mediator:`, which renews their leases
    # while a step runs; the job must leave the saga to it.
    with anyio.fail_after(10):
        async with mediator, anyio.create_task_group() as tg:
            tg.start_soon(live_runner)
            tg.start_soon(job)

    assert live_error == []
    assert ship_calls == ["slow-1"]
    assert finished == {}
    assert (await storage.load(saga_id)).status is SagaStatus.COMPLETED
