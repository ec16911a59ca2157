"""The payment webhook example, through its HTTP endpoints: orders started detached and run by
the lifespan's worker, a progress stream read live that a client leaves and resumes with
``Last-Event-ID``, webhooks delivered (and retried), timeouts and deadlines that roll an
order back.

The app runs in-process with its lifespan; responses stream through
``StreamingASGITransport`` (httpx's own ASGI transport would wait for a stream to end). Runs on
asyncio and trio: FastAPI, Starlette and the transport are built on anyio.
"""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from types import ModuleType
from typing import Any

import anyio
import httpx
import pytest

from saga_core import SagaRecord, SagaStatus

from ._asgi_stream import ServerSentEvent, StreamingASGITransport, server_sent_events

pytestmark = pytest.mark.anyio

LoadExample = Callable[[str], ModuleType]
Steps = list[tuple[str, str, str]]

# Every order ends within a few seconds here; a hung test fails instead of waiting forever.
TEST_SECONDS = 10


@pytest.fixture
def example(load_example: LoadExample) -> ModuleType:
    return load_example("payment_webhook")


def settings(example: ModuleType, **limits: Any) -> Any:
    """The example's settings with a fast worker, and ``limits``."""
    return example.Settings(poll_interval=0.02, **limits)


@contextlib.asynccontextmanager
async def serve(app: Any) -> AsyncIterator[tuple[httpx.AsyncClient, StreamingASGITransport]]:
    """A client of ``app`` and its transport, with the app's lifespan (its worker) running."""
    async with app.router.lifespan_context(app), anyio.create_task_group() as task_group:
        transport = StreamingASGITransport(app, task_group)
        async with httpx.AsyncClient(transport=transport, base_url="http://shop.test") as client:
            yield client, transport
        task_group.cancel_scope.cancel()  # a stream a failed test left open


async def place_order(client: httpx.AsyncClient, items: list[str], amount: float) -> str:
    response = await client.post("/orders", json={"items": items, "amount": amount})
    assert response.status_code == 202, response.text
    order_id: str = response.json()["order_id"]
    assert response.json()["events"] == f"/orders/{order_id}/events"
    return order_id


async def read_events(
    client: httpx.AsyncClient,
    order_id: str,
    *,
    last_event_id: str | None = None,
    count: int | None = None,
    on_event: Callable[[ServerSentEvent], None] = lambda event: None,
) -> list[ServerSentEvent]:
    """Read the order's event stream to its end, or only ``count`` events and then
    disconnect; ``on_event`` sees each event as it arrives."""
    headers = {} if last_event_id is None else {"Last-Event-ID": last_event_id}
    events: list[ServerSentEvent] = []
    async with client.stream("GET", f"/orders/{order_id}/events", headers=headers) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        async with contextlib.aclosing(server_sent_events(response)) as stream:
            async for event in stream:
                events.append(event)
                on_event(event)
                if len(events) == count:
                    break  # leaving client.stream(...) disconnects
    return events


#: The saga's own events (who claimed it, its decision to compensate, its end), between the
#: steps' and waits'.
SAGA_EVENTS = ("claimed", "compensating", "finished")


def steps_of(events: list[ServerSentEvent]) -> Steps:
    """(step, direction, event) of each journal event of a step or a wait (not the saga's
    own events, nor the final ``end``)."""
    data = [json.loads(event.data) for event in events if event.event is None]
    return [(d["step"], d["direction"], d["event"]) for d in data if d["event"] not in SAGA_EVENTS]


def end_of(events: list[ServerSentEvent]) -> dict[str, Any]:
    """The data of the stream's last event, which must be its ``end``."""
    assert events and events[-1].event == "end", events
    end: dict[str, Any] = json.loads(events[-1].data)
    return end


async def record_of(app: Any, order_id: str) -> SagaRecord:
    record: SagaRecord = await app.state.shop.mediator.handle(uuid.UUID(order_id)).record()
    return record


async def wait_for_status(app: Any, order_id: str, status: SagaStatus) -> SagaRecord:
    while (record := await record_of(app, order_id)).status is not status:  # noqa: ASYNC110 (polling the storage)
        await anyio.sleep(0.01)
    return record


def webhook(order_id: str, event_id: str = "evt-1", amount: float = 25.0) -> dict[str, Any]:
    return {"event_id": event_id, "order_id": order_id, "payment_id": "pay-1", "amount": amount}


ORDER_SHIPPED: Steps = [
    ("reserve_stock", "act", "started"),
    ("reserve_stock", "act", "completed"),
    ("signal:payment-confirmed", "act", "started"),
    ("signal:payment-confirmed", "act", "completed"),
    ("ship_order", "act", "started"),
    ("ship_order", "act", "completed"),
]


async def test_paid_order_ships_and_its_stream_resumes_after_a_disconnect(
    example: ModuleType,
) -> None:
    inventory = example.InventoryService({"sku-1": 1, "sku-2": 1})
    shipping = example.ShippingService()
    booking = Gate(shipping, "ship")
    app = example.create_app(settings(example), inventory=inventory, shipping=shipping)
    with anyio.fail_after(TEST_SECONDS):
        async with serve(app) as (client, transport):
            order_id = await place_order(client, ["sku-1", "sku-2"], 25.0)

            # A first connection reads two events, then the client goes away ...
            first = await read_events(client, order_id, count=2)
            assert [event.id for event in first] == ["1", "2"]
            await transport.wait_idle()  # the server's side of the stream ended with it
            # ... which does not touch the saga: it goes on to wait for its payment.
            record = await wait_for_status(app, order_id, SagaStatus.WAITING)
            assert record.waiting_for == "payment-confirmed"
            assert record.cancel_reason is None
            assert inventory.stock == {"sku-1": 0, "sku-2": 0}

            delivered = await client.post("/webhooks/payment", json=webhook(order_id))
            assert delivered.status_code == 200
            assert delivered.json() == {
                "duplicate": False,
                "event_id": "evt-1",
                "order_id": order_id,
            }
            await booking.entered.wait()  # resumed by the webhook; the shipment is held
            retried = await client.post("/webhooks/payment", json=webhook(order_id))
            assert retried.status_code == 200
            assert retried.json()["duplicate"] is True

            # The client reconnects with the last id it got and reads live to the end: the
            # shipment (and its checkpoint, that writes the next events) goes through once the
            # stream has shown the wait.
            def ship_after_the_wait_shows(event: ServerSentEvent) -> None:
                if steps_of([event]) == [("signal:payment-confirmed", "act", "started")]:
                    booking.opened.set()

            rest = await read_events(
                client, order_id, last_event_id=first[-1].id, on_event=ship_after_the_wait_shows
            )
            journal = [*first, *rest[:-1]]
            assert [event.id for event in journal] == [str(n) for n in range(1, len(journal) + 1)]
            assert steps_of(journal) == ORDER_SHIPPED
            saga_events = [
                json.loads(e.data) for e in journal if json.loads(e.data)["event"] in SAGA_EVENTS
            ]
            assert [e["event"] for e in saga_events] == ["claimed", "claimed", "finished"]
            assert end_of(rest) == {"status": "completed", "error": None}

            # The provider retries after the order has ended: still the same answer.
            late_retry = await client.post("/webhooks/payment", json=webhook(order_id))
            assert late_retry.status_code == 200
            assert late_retry.json()["duplicate"] is True
            unknown_event = await client.post("/webhooks/payment", json=webhook(order_id, "evt-3"))
            assert unknown_event.status_code == 409
            assert unknown_event.json()["error"] == "order_finished"

            status = (await client.get(f"/orders/{order_id}")).json()
            assert status["status"] == "completed"
            assert status["tracking_number"] == shipping.shipments[order_id]
            context = app.state.shop.mediator.stored_context(await record_of(app, order_id))
            assert context.payment == example.Payment("evt-1", "pay-1", 25.0)
            # A reconnect after the end gets only the end.
            after_end = await read_events(client, order_id, last_event_id=journal[-1].id)
            assert [event.event for event in after_end] == ["end"]
    assert inventory.stock == {"sku-1": 0, "sku-2": 0}  # sold
    assert booking.calls == [(order_id,)]


async def test_unpaid_order_is_rolled_back_when_the_payment_times_out(
    example: ModuleType,
) -> None:
    inventory = example.InventoryService({"sku-1": 1})
    releasing = Gate(inventory, "release")
    shipping = example.ShippingService()
    app = example.create_app(
        settings(example, payment_timeout=timedelta(seconds=0.2)),
        inventory=inventory,
        shipping=shipping,
    )
    with anyio.fail_after(TEST_SECONDS):
        async with serve(app) as (client, _):
            order_id = await place_order(client, ["sku-1"], 10.0)
            await releasing.entered.wait()  # timed out; the stock is being released
            during = await client.post("/webhooks/payment", json=webhook(order_id, amount=10.0))
            releasing.opened.set()
            events = await read_events(client, order_id)
            after = await client.post("/webhooks/payment", json=webhook(order_id, amount=10.0))

    assert steps_of(events) == [
        ("reserve_stock", "act", "started"),
        ("reserve_stock", "act", "completed"),
        ("signal:payment-confirmed", "act", "started"),
        ("signal:payment-confirmed", "act", "failed"),
        ("reserve_stock", "compensate", "started"),
        ("reserve_stock", "compensate", "completed"),
    ]
    (timed_out,) = [
        data
        for data in (json.loads(event.data) for event in events[:-1])
        if (data["step"], data["event"]) == ("signal:payment-confirmed", "failed")
    ]
    assert timed_out["error"].startswith("SagaWaitTimedOutError")
    end = end_of(events)
    assert end["status"] == "compensated"
    assert "SagaWaitTimedOutError" in end["error"]
    assert inventory.stock == {"sku-1": 1}  # released
    assert inventory.reservations == {}
    assert shipping.shipments == {}
    # A payment that comes too late is refused, with what to do about it.
    assert during.status_code == 409
    assert during.json()["error"] == "order_not_awaiting_payment"
    assert after.status_code == 409
    assert after.json()["error"] == "order_finished"
    assert "refund" in after.json()["message"]


async def test_order_past_its_deadline_is_rolled_back(example: ModuleType) -> None:
    inventory = example.InventoryService({"sku-1": 1})
    app = example.create_app(
        settings(example, payment_timeout=timedelta(minutes=5), deadline=timedelta(seconds=0.2)),
        inventory=inventory,
    )
    with anyio.fail_after(TEST_SECONDS):
        async with serve(app) as (client, _):
            order_id = await place_order(client, ["sku-1"], 10.0)
            events = await read_events(client, order_id)

    end = end_of(events)
    assert end["status"] == "compensated"
    assert "SagaDeadlineExceededError" in end["error"]
    assert steps_of(events)[-2:] == [
        ("reserve_stock", "compensate", "started"),
        ("reserve_stock", "compensate", "completed"),
    ]
    assert inventory.stock == {"sku-1": 1}


async def test_payment_that_comes_before_the_saga_waits_is_kept(example: ModuleType) -> None:
    inventory = example.InventoryService({"sku-1": 1})
    reserving = Gate(inventory, "reserve")
    app = example.create_app(settings(example), inventory=inventory)
    with anyio.fail_after(TEST_SECONDS):
        async with serve(app) as (client, _):
            order_id = await place_order(client, ["sku-1"], 10.0)
            await reserving.entered.wait()
            record = await record_of(app, order_id)  # at its first step, not at the wait
            assert (record.cursor, record.next_step) == (0, "reserve_stock")
            delivered = await client.post("/webhooks/payment", json=webhook(order_id, amount=10.0))
            assert delivered.status_code == 200
            assert delivered.json()["duplicate"] is False
            reserving.opened.set()
            events = await read_events(client, order_id)

    assert steps_of(events) == ORDER_SHIPPED
    assert end_of(events) == {"status": "completed", "error": None}


async def test_out_of_stock_order_ends_compensated_with_nothing_to_undo(
    example: ModuleType,
) -> None:
    app = example.create_app(settings(example), inventory=example.InventoryService({"sku-1": 0}))
    with anyio.fail_after(TEST_SECONDS):
        async with serve(app) as (client, _):
            order_id = await place_order(client, ["sku-1"], 10.0)
            events = await read_events(client, order_id)

    assert steps_of(events) == [
        ("reserve_stock", "act", "started"),
        ("reserve_stock", "act", "failed"),
    ]
    end = end_of(events)
    assert end["status"] == "compensated"
    assert "OutOfStockError: out of stock: sku-1" in end["error"]


async def test_wrong_orders_and_bad_requests_get_json_errors(example: ModuleType) -> None:
    app = example.create_app(settings(example))
    unknown = str(uuid.uuid4())
    with anyio.fail_after(TEST_SECONDS):
        async with serve(app) as (client, _):
            for order_id in (unknown, "not-an-order-id"):
                response = await client.post("/webhooks/payment", json=webhook(order_id))
                assert response.status_code == 404, response.text
                assert response.json()["error"] == "order_not_found"
                assert order_id in response.json()["message"]
                for path in (f"/orders/{order_id}", f"/orders/{order_id}/events"):
                    response = await client.get(path)
                    assert response.status_code == 404, (path, response.text)
                    assert response.json()["error"] == "order_not_found"

            order_id = await place_order(client, ["sku-1"], 10.0)
            for bad_id in ("seven", "-1"):
                response = await client.get(
                    f"/orders/{order_id}/events", headers={"Last-Event-ID": bad_id}
                )
                assert response.status_code == 400
                assert response.json()["error"] == "bad_last_event_id"
            missing_id = {k: v for k, v in webhook(order_id).items() if k != "event_id"}
            response = await client.post("/webhooks/payment", json=missing_id)
            assert response.status_code == 422
            response = await client.post("/orders", json={"items": [], "amount": 1.0})
            assert response.status_code == 422
            # None of these touched the order.
            assert (await record_of(app, order_id)).signals == ()


def test_settings_come_from_the_environment(
    example: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PAYMENT_TIMEOUT_SECONDS", "90")
    monkeypatch.setenv("ORDER_DEADLINE_SECONDS", "600")
    monkeypatch.setenv("WORKER_POLL_SECONDS", "0.5")
    found = example.Settings.from_env()
    assert found == example.Settings(
        payment_timeout=timedelta(seconds=90), deadline=timedelta(minutes=10), poll_interval=0.5
    )
    saga = example.order_saga(found)
    assert saga.deadline == timedelta(minutes=10)
    assert saga.steps[1] == example.WaitForSignal(
        "payment-confirmed", into="payment", timeout=timedelta(seconds=90)
    )


# --- holding a service call ---------------------------------------------------------------------


class Gate:
    """Holds every call of ``service.<method>`` until ``opened`` is set; ``entered`` is set at
    the first call, ``calls`` holds the arguments of each."""

    def __init__(self, service: Any, method: str) -> None:
        self.entered = anyio.Event()
        self.opened = anyio.Event()
        self.calls: list[tuple[Any, ...]] = []
        call = getattr(service, method)

        async def held(*args: Any) -> Any:
            self.calls.append(args)
            self.entered.set()
            await self.opened.wait()
            return await call(*args)

        setattr(service, method, held)
