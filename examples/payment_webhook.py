"""An order saga that waits for a payment webhook, served by FastAPI, with a resumable
server-sent-events progress stream.

The saga reserves stock, waits (durably, without holding a task) for the payment provider's
``payment-confirmed`` webhook, then ships the order. A payment that does not come within
``payment_timeout``, or an order not finished by its deadline, is rolled back: the stock is
released. A worker started in the app's lifespan runs the sagas; no request ever runs one.

* ``POST /orders`` ``{"items": [...], "amount": 25.0}`` stores the saga (``mediator.start``)
  and answers ``202`` with its id at once.
* ``GET /orders/{id}`` tells where the order is (``waiting``, ``completed``, ...).
* ``GET /orders/{id}/events`` streams the saga's journal as server-sent events, each with
  ``id: <position>``; a client that reconnects with the ``Last-Event-ID`` header (a browser's
  ``EventSource`` does so by itself) gets the events after that one, no gap and no repeat. The
  stream ends with an ``end`` event once the saga has ended (close the ``EventSource`` on it).
  A client that goes away stops only its stream: the saga goes on.
* ``POST /webhooks/payment`` ``{"event_id", "order_id", "payment_id", "amount"}`` delivers the
  payment to the waiting saga (``mediator.signal``, deduplicated by the provider's event id):
  a retried webhook answers ``200`` with ``"duplicate": true``; an unknown order ``404``; an
  order that has ended or no longer waits for a payment ``409``, with a JSON error.

Running this file serves nothing: it sends two orders to the app in-process through
``httpx.ASGITransport`` (one paid by a webhook delivered twice, one whose payment never comes)
and prints what the endpoints answer::

    uv run python examples/payment_webhook.py

To serve it, point an ASGI server (not a dependency of this repository) at ``app``, e.g.
``uvicorn payment_webhook:app`` from this folder; ``PAYMENT_TIMEOUT_SECONDS``,
``ORDER_DEADLINE_SECONDS`` and ``WORKER_POLL_SECONDS`` set its limits. ``create_app`` takes any
storage (``open_storage("sqlite:///shop.db")`` keeps waiting orders across restarts); the
memory storage used by default forgets them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Annotated, Any

import anyio
import fastapi
import fastapi.responses
import httpx
import pydantic

from saga_core import (
    Container,
    MemorySagaStorage,
    Saga,
    SagaContext,
    SagaContextError,
    SagaEvent,
    SagaFinishedError,
    SagaMediator,
    SagaNotFoundError,
    SagaRecord,
    SagaSignalRefusedError,
    SagaStatus,
    SagaStepHandler,
    SagaStorage,
    WaitForSignal,
    bootstrap,
)

PAYMENT_SIGNAL = "payment-confirmed"

# --- services -----------------------------------------------------------------------------------


class OutOfStockError(Exception):
    """Not enough stock for an order; nothing was reserved."""


class InventoryService:
    """Stock per item; a reservation takes one of each item of an order, or none."""

    def __init__(self, stock: dict[str, int]) -> None:
        self.stock = dict(stock)
        self.reservations: dict[str, list[str]] = {}

    async def reserve(self, order_id: str, items: list[str]) -> str:
        reservation_id = f"reservation-{order_id}"
        if reservation_id in self.reservations:  # a retried step (after a crash) reserves once
            return reservation_id
        missing = sorted(item for item in set(items) if self.stock.get(item, 0) < items.count(item))
        if missing:
            raise OutOfStockError(f"out of stock: {', '.join(missing)}")
        for item in items:
            self.stock[item] -= 1
        self.reservations[reservation_id] = list(items)
        return reservation_id

    async def release(self, reservation_id: str) -> None:
        for item in self.reservations.pop(reservation_id, []):
            self.stock[item] += 1


class ShippingService:
    def __init__(self) -> None:
        self.shipments: dict[str, str] = {}

    async def ship(self, order_id: str) -> str:
        return self.shipments.setdefault(order_id, f"TRACK-{order_id[:8]}")

    async def cancel(self, order_id: str) -> None:
        self.shipments.pop(order_id, None)


# --- the saga -----------------------------------------------------------------------------------


@dataclasses.dataclass
class Payment:
    """What the payment provider's webhook says (decoded from its JSON by the saga codec)."""

    event_id: str
    payment_id: str
    amount: float


@dataclasses.dataclass
class OrderContext(SagaContext):
    order_id: str
    items: list[str]
    amount: float
    reservation_id: str | None = None
    payment: Payment | None = None
    tracking_number: str | None = None


class ReserveStock(SagaStepHandler[OrderContext, None]):
    name = "reserve_stock"
    # A reservation is all or nothing: when it raised, there is nothing to release.
    failed_act_leaves_no_effect = True

    def __init__(self, inventory: InventoryService) -> None:
        self._inventory = inventory

    async def act(self, context: OrderContext) -> None:
        context.reservation_id = await self._inventory.reserve(context.order_id, context.items)

    async def compensate(self, context: OrderContext) -> None:
        if context.reservation_id:
            await self._inventory.release(context.reservation_id)


class ShipOrder(SagaStepHandler[OrderContext, None]):
    name = "ship_order"

    def __init__(self, shipping: ShippingService) -> None:
        self._shipping = shipping

    async def act(self, context: OrderContext) -> None:
        context.tracking_number = await self._shipping.ship(context.order_id)

    async def compensate(self, context: OrderContext) -> None:
        # Runs only when the order is rolled back while the shipment is being booked (its
        # deadline passed then): the booking cut short may have gone through.
        await self._shipping.cancel(context.order_id)


@dataclasses.dataclass(frozen=True)
class Settings:
    """The app's limits. ``Settings.from_env()`` reads them from the environment."""

    payment_timeout: timedelta = timedelta(minutes=30)
    """How long an order waits for its payment before its stock is released."""
    deadline: timedelta = timedelta(hours=2)
    """An order not finished by then (from its start) is rolled back, wherever it is."""
    poll_interval: float = 1.0
    """How often the worker looks for due timers, and the progress streams for new events."""

    @classmethod
    def from_env(cls) -> Settings:
        defaults = cls()

        def seconds(name: str, default: float) -> float:
            return float(os.environ.get(name, default))

        return cls(
            payment_timeout=timedelta(
                seconds=seconds("PAYMENT_TIMEOUT_SECONDS", defaults.payment_timeout.total_seconds())
            ),
            deadline=timedelta(
                seconds=seconds("ORDER_DEADLINE_SECONDS", defaults.deadline.total_seconds())
            ),
            poll_interval=seconds("WORKER_POLL_SECONDS", defaults.poll_interval),
        )


def order_saga(settings: Settings) -> type[Saga[OrderContext]]:
    """The order saga with the limits of ``settings`` (built per app, so that a test or a
    demo can make them short)."""

    class OrderSaga(Saga[OrderContext]):
        name = "order"
        deadline = settings.deadline
        steps = [
            ReserveStock,
            WaitForSignal(PAYMENT_SIGNAL, into="payment", timeout=settings.payment_timeout),
            ShipOrder,
        ]

    return OrderSaga


# --- the application ----------------------------------------------------------------------------


@dataclasses.dataclass
class Shop:
    """What the endpoints use: the mediator, and the services (to look at in a demo)."""

    mediator: SagaMediator
    settings: Settings
    inventory: InventoryService
    shipping: ShippingService


def create_app(
    settings: Settings | None = None,
    *,
    storage: SagaStorage | None = None,
    inventory: InventoryService | None = None,
    shipping: ShippingService | None = None,
) -> fastapi.FastAPI:
    """The shop's ASGI app; its lifespan runs the worker that runs the order sagas.

    Args:
        settings: the limits (default: ``Settings.from_env()``).
        storage: where the sagas are kept (default: a new memory storage).
        inventory: the stock (default: 10 of ``sku-1`` and of ``sku-2``).
        shipping: the carrier.
    """
    settings = Settings.from_env() if settings is None else settings
    inventory = InventoryService({"sku-1": 10, "sku-2": 10}) if inventory is None else inventory
    shipping = ShippingService() if shipping is None else shipping
    container = Container()
    container.register(InventoryService, inventory)
    container.register(ShippingService, shipping)
    saga = order_saga(settings)
    mediator = bootstrap(
        di_container=container,
        sagas_mapper=lambda sagas: sagas.bind(OrderContext, saga),
        saga_storage=MemorySagaStorage() if storage is None else storage,
    )
    app = fastapi.FastAPI(title="shop", lifespan=run_worker)
    app.state.shop = Shop(mediator, settings, inventory, shipping)
    app.include_router(router)
    app.add_exception_handler(ApiError, api_error_response)
    return app


@contextlib.asynccontextmanager
async def run_worker(app: fastapi.FastAPI) -> AsyncIterator[None]:
    """Run the sagas' worker while the app serves: it runs new orders, resumes those whose
    payment came, and rolls back those whose payment or deadline has passed. Stopping the app
    hands the sagas it holds back to storage, for the next worker."""
    shop: Shop = app.state.shop
    worker = shop.mediator.worker(poll_interval=shop.settings.poll_interval)
    async with anyio.create_task_group() as task_group:
        await task_group.start(worker.run)
        yield
        task_group.cancel_scope.cancel()


def get_shop(request: fastapi.Request) -> Shop:
    shop: Shop = request.app.state.shop
    return shop


ShopDep = Annotated[Shop, fastapi.Depends(get_shop)]


class ApiError(Exception):
    """Answered as ``{"error": code, "message": message}`` with ``status``."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


async def api_error_response(request: fastapi.Request, exc: Exception) -> fastapi.Response:
    assert isinstance(exc, ApiError)
    content = {"error": exc.code, "message": exc.message}
    return fastapi.responses.JSONResponse(content, status_code=exc.status)


def order_id_of(text: str) -> uuid.UUID:
    """The order (saga) id in ``text``; an id that is not one of ours is a 404."""
    try:
        return uuid.UUID(text)
    except ValueError:
        raise ApiError(404, "order_not_found", f"there is no order {text!r}") from None


async def load_order(shop: Shop, order_id: uuid.UUID) -> SagaRecord:
    try:
        return await shop.mediator.handle(order_id).record()
    except SagaNotFoundError:
        raise ApiError(404, "order_not_found", f"there is no order {order_id}") from None


router = fastapi.APIRouter()


class OrderRequest(pydantic.BaseModel):
    items: list[str] = pydantic.Field(min_length=1)
    amount: float = pydantic.Field(gt=0)


@router.post("/orders", status_code=202)
async def place_order(order: OrderRequest, shop: ShopDep) -> dict[str, Any]:
    order_id = uuid.uuid4()
    context = OrderContext(order_id=str(order_id), items=order.items, amount=order.amount)
    # Durable when this returns; the worker runs it. The request only stores it.
    await shop.mediator.start(context, saga_id=order_id)
    return {"order_id": str(order_id), "events": f"/orders/{order_id}/events"}


@router.get("/orders/{order_id}")
async def order_status(order_id: str, shop: ShopDep) -> dict[str, Any]:
    record = await load_order(shop, order_id_of(order_id))
    context: OrderContext = shop.mediator.stored_context(record)
    return {
        "order_id": str(record.saga_id),
        "status": record.status.value,
        "waiting_for": record.waiting_for,
        "tracking_number": context.tracking_number,
        "error": record.error,
    }


@router.get("/orders/{order_id}/events")
async def order_events(
    order_id: str,
    shop: ShopDep,
    last_event_id: Annotated[str | None, fastapi.Header()] = None,
) -> fastapi.responses.StreamingResponse:
    saga_id = order_id_of(order_id)
    await load_order(shop, saga_id)  # an unknown order is a 404 now, not an empty stream
    after = None
    if last_event_id is not None:
        try:
            after = int(last_event_id)
        except ValueError:
            after = -1
        if after < 0:
            raise ApiError(
                400,
                "bad_last_event_id",
                f"Last-Event-ID must be an event's id, got {last_event_id!r}",
            )

    async def stream() -> AsyncIterator[str]:
        # Watching only reads the journal: when the client goes away this generator is
        # cancelled, and the saga never notices.
        events = shop.mediator.watch(
            saga_id, after=after, poll_interval=shop.settings.poll_interval
        )
        async for event in events:
            yield f"id: {event.position}\ndata: {json.dumps(event_data(event))}\n\n"
        record = await shop.mediator.handle(saga_id).record()
        end = {"status": record.status.value, "error": record.error}
        yield f"event: end\ndata: {json.dumps(end)}\n\n"

    return fastapi.responses.StreamingResponse(
        stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
    )


def event_data(event: SagaEvent) -> dict[str, Any]:
    return {
        "step": event.step_id,
        "direction": event.direction.value,
        "event": event.event.value,
        "attempt": event.attempt,
        "at": event.at.isoformat(),
        "error": event.error,
    }


class PaymentWebhook(pydantic.BaseModel):
    event_id: str = pydantic.Field(min_length=1)
    """The provider's id of this notification: the same on each of its retries."""
    order_id: str
    payment_id: str
    amount: float


@router.post("/webhooks/payment")
async def payment_webhook(webhook: PaymentWebhook, shop: ShopDep) -> dict[str, Any]:
    order_id = order_id_of(webhook.order_id)
    payment = webhook.model_dump(exclude={"order_id"})  # decoded into OrderContext.payment
    try:
        delivered = await shop.mediator.signal(
            order_id, PAYMENT_SIGNAL, payment, signal_id=webhook.event_id
        )
    except SagaNotFoundError:
        raise ApiError(404, "order_not_found", f"there is no order {order_id}") from None
    except SagaFinishedError:
        # A retry of a payment the order took is a duplicate, even after it shipped (above):
        # this is a new payment for an order that has ended.
        raise ApiError(
            409,
            "order_finished",
            f"order {order_id} has ended; this payment was not taken for it: refund it",
        ) from None
    except SagaSignalRefusedError as exc:
        raise ApiError(409, "order_not_awaiting_payment", str(exc)) from None
    except SagaContextError as exc:
        raise ApiError(422, "bad_payment", str(exc)) from None
    return {"duplicate": not delivered, "event_id": webhook.event_id, "order_id": str(order_id)}


app = create_app()
"""The app to serve (its limits from the environment, see ``Settings.from_env``)."""


# --- running it in-process ----------------------------------------------------------------------


async def wait_for_status(client: httpx.AsyncClient, order_id: str, status: SagaStatus) -> None:
    with anyio.fail_after(10):
        while True:  # a client polls; the event stream is the way to be told
            if (await client.get(f"/orders/{order_id}")).json()["status"] == status.value:
                return
            await anyio.sleep(0.02)


async def print_events(client: httpx.AsyncClient, order_id: str, after: int | None = None) -> None:
    """GET the order's event stream (from after event ``after``) and print it."""
    headers = {} if after is None else {"Last-Event-ID": str(after)}
    print("GET /orders/{id}/events" + (f" (Last-Event-ID: {after})" if after else ""))
    response = await client.get(f"/orders/{order_id}/events", headers=headers)
    for block in response.text.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines())
        if not fields:
            continue
        data = json.loads(fields["data"])
        if fields.get("event") == "end":
            print(f"  end: {data['status']}")
            continue
        step = data["step"] or "(saga)"  # the saga's own events: claimed, finished ...
        line = f"  id {fields['id']}: {step} {data['direction']} {data['event']}"
        print(line + (f" ({data['error'].split(':', 1)[0]})" if data["error"] else ""))


async def deliver_payment(client: httpx.AsyncClient, payment: dict[str, Any]) -> None:
    response = await client.post("/webhooks/payment", json=payment)
    print(
        f"POST /webhooks/payment ({payment['event_id']}) -> {response.status_code} {response.text}"
    )


async def main() -> None:
    # Short limits, so that the unpaid order times out while you watch.
    demo = create_app(Settings(payment_timeout=timedelta(seconds=1), poll_interval=0.1))
    shop: Shop = demo.state.shop
    print(f"Stock: {shop.inventory.stock}")
    # httpx's in-process transport hands a response over once it is complete, so the event
    # streams below are printed after their saga ended; a browser reads them live.
    transport = httpx.ASGITransport(app=demo)
    async with (
        demo.router.lifespan_context(demo),
        httpx.AsyncClient(transport=transport, base_url="http://shop.local") as client,
    ):
        print("(an order paid by the provider's webhook, which it delivers twice)")
        response = await client.post("/orders", json={"items": ["sku-1", "sku-2"], "amount": 25.0})
        paid = response.json()["order_id"]
        print(f"POST /orders -> {response.status_code}, order {paid}")
        await wait_for_status(client, paid, SagaStatus.WAITING)
        print(f"GET /orders/{{id}} -> waiting for {PAYMENT_SIGNAL}")
        payment = {"event_id": "evt-81", "order_id": paid, "payment_id": "pay-1", "amount": 25.0}
        await deliver_payment(client, payment)
        await deliver_payment(client, payment)  # the provider retries
        await print_events(client, paid)
        await print_events(client, paid, after=6)  # a client reconnecting after event 6
        await deliver_payment(client, payment)  # a late retry: the order has shipped

        print("(an order whose payment never comes)")
        response = await client.post("/orders", json={"items": ["sku-1"], "amount": 10.0})
        unpaid = response.json()["order_id"]
        print(f"POST /orders -> {response.status_code}, order {unpaid}")
        await print_events(client, unpaid)
        late = {"event_id": "evt-82", "order_id": unpaid, "payment_id": "pay-2", "amount": 10.0}
        await deliver_payment(client, late)
    print(f"Stock: {shop.inventory.stock}")
    print(f"Shipments: {sorted(shop.shipping.shipments.values())}")


if __name__ == "__main__":
    anyio.run(main)
