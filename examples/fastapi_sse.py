"""A FastAPI endpoint that runs an order saga and streams its progress as server-sent events.

``POST /process-order`` answers with a ``text/event-stream``; every event is one
``data: {json}`` line:

* ``{"type": "start", "saga_id": ...}`` before the first step;
* ``{"type": "step_progress", "saga_id": ..., "step": "ReserveInventoryStep",
  "compensation": false, "failed": false}`` for every step result, compensations included;
* ``{"type": "complete", "saga_id": ...}`` when the saga completed, or
  ``{"type": "error", "saga_id": ..., "status": "compensated", "message": ...}`` when a step
  failed and the saga was rolled back (``"failed"`` if a compensation could not finish).

The code keeps the python-cqrs spelling on purpose (``cqrs.SagaMediator``,
``bootstrap.bootstrap(...)``, the mediator from ``fastapi.Depends(mediator_factory)``): moving
such an application to saga-core changes only its imports. If the client disconnects, the
stream is cancelled: a compensation in progress still finishes, and the saga is left to
recovery (see ``recovery.py``). For sagas that outlive the request (started detached, run by a
worker, followed by a stream the client can leave and resume), see ``payment_webhook.py``.

Running this file serves nothing: it sends two orders (one that completes, one whose payment
is declined) to the app in-process through ``httpx.ASGITransport`` and prints the events::

    uv run python examples/fastapi_sse.py

To serve it for real, point an ASGI server (not a dependency of this repository) at ``app``,
e.g. ``uvicorn fastapi_sse:app`` from this folder.
"""

from __future__ import annotations

import dataclasses
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import anyio
import di
import fastapi
import fastapi.responses
import httpx
import pydantic
from di import bind_by_type
from di.dependent import Dependent

import saga_core as cqrs
from saga_core import (
    MemorySagaStorage,
    Response,
    Saga,
    SagaContext,
    SagaStepHandler,
    SagaStepResult,
    bootstrap,
)

# --- services -----------------------------------------------------------------------------------


class PaymentDeclinedError(Exception):
    """The payment provider refused the charge."""


class InventoryService:
    def __init__(self) -> None:
        self.reservations: dict[str, list[str]] = {}

    async def reserve_items(self, order_id: str, items: list[str]) -> str:
        self.reservations[f"reservation-{order_id}"] = list(items)
        return f"reservation-{order_id}"

    async def release_items(self, reservation_id: str) -> None:
        self.reservations.pop(reservation_id, None)


class PaymentService:
    """Declines any charge above ``limit``."""

    def __init__(self, limit: float) -> None:
        self.limit = limit
        self.charges: dict[str, float] = {}

    async def charge(self, order_id: str, amount: float) -> str:
        if amount > self.limit:
            raise PaymentDeclinedError(f"card declined: {amount:.2f} is over the limit")
        self.charges[f"payment-{order_id}"] = amount
        return f"payment-{order_id}"

    async def refund(self, payment_id: str) -> None:
        self.charges.pop(payment_id, None)


class ShippingService:
    async def ship(self, order_id: str) -> str:
        return f"TRACK-{order_id}"


# --- the saga -----------------------------------------------------------------------------------


@dataclasses.dataclass
class OrderContext(SagaContext):
    order_id: str
    items: list[str]
    total_amount: float
    inventory_reservation_id: str | None = None
    payment_id: str | None = None
    tracking_number: str | None = None


class ReserveInventoryStep(SagaStepHandler[OrderContext, Response]):
    name = "reserve_inventory"

    def __init__(self, inventory_service: InventoryService) -> None:
        self._inventory_service = inventory_service

    async def act(self, context: OrderContext) -> SagaStepResult[OrderContext, Response]:
        context.inventory_reservation_id = await self._inventory_service.reserve_items(
            context.order_id, context.items
        )
        return self._generate_step_result(Response())

    async def compensate(self, context: OrderContext) -> None:
        if context.inventory_reservation_id:
            await self._inventory_service.release_items(context.inventory_reservation_id)


class ProcessPaymentStep(SagaStepHandler[OrderContext, Response]):
    name = "process_payment"
    # A declined card charges nothing, so a failed act needs no refund.
    failed_act_leaves_no_effect = True

    def __init__(self, payment_service: PaymentService) -> None:
        self._payment_service = payment_service

    async def act(self, context: OrderContext) -> SagaStepResult[OrderContext, Response]:
        context.payment_id = await self._payment_service.charge(
            context.order_id, context.total_amount
        )
        return self._generate_step_result(Response())

    async def compensate(self, context: OrderContext) -> None:
        if context.payment_id:
            await self._payment_service.refund(context.payment_id)


class ShipOrderStep(SagaStepHandler[OrderContext, Response]):
    name = "ship_order"

    def __init__(self, shipping_service: ShippingService) -> None:
        self._shipping_service = shipping_service

    async def act(self, context: OrderContext) -> SagaStepResult[OrderContext, Response]:
        context.tracking_number = await self._shipping_service.ship(context.order_id)
        return self._generate_step_result(Response())


class OrderSaga(Saga[OrderContext]):
    name = "order"
    steps = [ReserveInventoryStep, ProcessPaymentStep, ShipOrderStep]


# --- application wiring (module level, as in a FastAPI application) ----------------------------

inventory = InventoryService()
payments = PaymentService(limit=1000.0)
shipping = ShippingService()

di_container = di.Container()
di_container.bind(bind_by_type(Dependent(lambda: inventory, scope="request"), InventoryService))
di_container.bind(bind_by_type(Dependent(lambda: payments, scope="request"), PaymentService))
di_container.bind(bind_by_type(Dependent(lambda: shipping, scope="request"), ShippingService))

storage = MemorySagaStorage()


def saga_mapper(mapper: cqrs.SagaMap) -> None:
    mapper.bind(OrderContext, OrderSaga)


def mediator_factory() -> cqrs.SagaMediator:
    """Create saga mediator using bootstrap."""
    return bootstrap.bootstrap(
        di_container=di_container,
        sagas_mapper=saga_mapper,
        saga_storage=storage,
    )


# --- the endpoint -------------------------------------------------------------------------------

app = fastapi.FastAPI()


class ProcessOrderRequest(pydantic.BaseModel):
    order_id: str
    items: list[str]
    total_amount: float


def sse(event: dict[str, Any]) -> str:
    """One server-sent event carrying ``event`` as JSON."""
    return f"data: {json.dumps(event)}\n\n"


@app.post("/process-order")
async def process_order(
    request: ProcessOrderRequest,
    mediator: cqrs.SagaMediator = fastapi.Depends(mediator_factory),  # noqa: B008
) -> fastapi.responses.StreamingResponse:
    async def generate_sse() -> AsyncIterator[str]:
        saga_id = uuid.uuid4()
        context = OrderContext(
            order_id=request.order_id, items=request.items, total_amount=request.total_amount
        )

        yield sse({"type": "start", "saga_id": str(saga_id)})

        try:
            async for step_result in mediator.stream(context, saga_id=saga_id):
                yield sse(
                    {
                        "type": "step_progress",
                        "saga_id": str(saga_id),
                        "step": step_result.step_type.__name__,
                        "compensation": step_result.is_compensation,
                        "failed": step_result.failed,
                    }
                )
        except cqrs.SagaFailedError as exc:
            # The saga was rolled back (or its rollback failed): report it instead of breaking
            # the HTTP response halfway.
            status = (
                "failed" if isinstance(exc, cqrs.SagaCompensationFailedError) else "compensated"
            )
            yield sse(
                {"type": "error", "saga_id": str(saga_id), "status": status, "message": str(exc)}
            )
            return

        yield sse({"type": "complete", "saga_id": str(saga_id)})

    return fastapi.responses.StreamingResponse(generate_sse(), media_type="text/event-stream")


# --- running it in-process ----------------------------------------------------------------------


async def post_order(client: httpx.AsyncClient, order: dict[str, Any]) -> list[dict[str, Any]]:
    """POST ``order`` and return the events of the response stream, printing each one."""
    events: list[dict[str, Any]] = []
    async with client.stream("POST", "/process-order", json=order) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if line.startswith("data: "):
                event = json.loads(line.removeprefix("data: "))
                events.append(event)
                print(f"  {line}")
    return events


async def main() -> None:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://shop.local") as client:
        print("POST /process-order (an order that goes through)")
        await post_order(
            client, {"order_id": "123", "items": ["item_1", "item_2"], "total_amount": 100.0}
        )
        print("POST /process-order (an order whose payment is declined)")
        await post_order(client, {"order_id": "456", "items": ["item_3"], "total_amount": 5000.0})
    print(f"Reservations held: {sorted(inventory.reservations)}")
    print(f"Payments taken: {payments.charges}")


if __name__ == "__main__":
    anyio.run(main)
