"""An order saga on Redis: reserve stock, charge the card, ship; one order that goes through
and one whose shipment is refused and is rolled back.

The storage is opened from a URL (``open_storage`` finds saga-redis through its entry point).
Every checkpoint is one atomic script on Redis; the program then reads each saga back from
Redis (status, version, time left before a finished saga expires, its journal) and finally
deletes every key it wrote.

Run it from the repository root, with Redis on 127.0.0.1:6379::

    uv run python examples/redis_order_saga.py

``$SAGA_EXAMPLE_REDIS`` picks another server or database (default
``redis://127.0.0.1:6379/0``) and ``$SAGA_EXAMPLE_PREFIX`` the key prefix (default: a new
``example:orders:<random>:`` each run).
"""

from __future__ import annotations

import dataclasses
import os
import uuid

import anyio
import redis

from saga_core import (
    Response,
    Saga,
    SagaCompensatedError,
    SagaContext,
    SagaStepHandler,
    SagaStepResult,
    bootstrap,
    open_storage,
)
from saga_redis import RedisSagaStorage

REDIS_URL = os.environ.get("SAGA_EXAMPLE_REDIS") or "redis://127.0.0.1:6379/0"


# --- the saga -----------------------------------------------------------------------------------


@dataclasses.dataclass
class OrderContext(SagaContext):
    """What the saga knows about the order; stored in Redis after every step."""

    order_id: str
    items: list[str]
    total_amount: float
    reservation_id: str | None = None
    payment_id: str | None = None
    tracking_number: str | None = None


class ShippingRefusedError(Exception):
    """The carrier does not ship to this address."""


class ReserveStock(SagaStepHandler[OrderContext, Response]):
    name = "reserve_stock"  # a stable step id: this is what Redis records

    async def act(self, context: OrderContext) -> SagaStepResult[OrderContext, Response]:
        context.reservation_id = f"reservation-{context.order_id}"
        return self._generate_step_result(Response())

    async def compensate(self, context: OrderContext) -> None:
        print(f"  released {context.reservation_id}")
        context.reservation_id = None


class ChargeCard(SagaStepHandler[OrderContext, Response]):
    name = "charge_card"

    async def act(self, context: OrderContext) -> SagaStepResult[OrderContext, Response]:
        context.payment_id = f"payment-{context.order_id}"
        return self._generate_step_result(Response())

    async def compensate(self, context: OrderContext) -> None:
        print(f"  refunded {context.payment_id} ({context.total_amount:.2f})")
        context.payment_id = None


class ShipOrder(SagaStepHandler[OrderContext, Response]):
    name = "ship_order"
    # Refusing to ship changes nothing at the carrier: no cancellation is needed then.
    failed_act_leaves_no_effect = True

    async def act(self, context: OrderContext) -> SagaStepResult[OrderContext, Response]:
        if context.order_id.startswith("abroad-"):
            raise ShippingRefusedError(f"no shipping to the address of {context.order_id}")
        context.tracking_number = f"TRACK-{context.order_id}"
        return self._generate_step_result(Response())


class OrderSaga(Saga[OrderContext]):
    name = "order"
    steps = [ReserveStock, ChargeCard, ShipOrder]


# --- running it ---------------------------------------------------------------------------------


async def show(storage: RedisSagaStorage, saga_id: uuid.UUID) -> None:
    """Print what Redis holds for the saga."""
    record = await storage.load(saga_id)
    with redis.Redis.from_url(REDIS_URL) as client:
        expires_in = client.pttl(storage.record_key(saga_id)) / 1000
    print(f"Final status: {record.status.name} (version {record.version})")
    print(f"Stored under: {storage.record_key(saga_id)}")
    if expires_in > 0:
        print(f"Expires in: {expires_in / 86400:.1f} days (retain_finished_seconds)")
    print("Journal:")
    for entry in await storage.history(saga_id):
        error = f" - {entry.error}" if entry.error else ""
        print(
            f"  {entry.at:%H:%M:%S.%f} {entry.step_id:<14} {entry.direction.value:<10} "
            f"{entry.event.value}{error}"
        )


def clean_up(prefix: str) -> int:
    """Delete every key under ``prefix``; return how many there were."""
    with redis.Redis.from_url(REDIS_URL) as client:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
    return len(keys)


async def main() -> None:
    prefix = os.environ.get("SAGA_EXAMPLE_PREFIX") or f"example:orders:{uuid.uuid4().hex[:8]}:"
    storage = open_storage(REDIS_URL, key_prefix=prefix)
    assert isinstance(storage, RedisSagaStorage)
    try:
        async with storage:
            mediator = bootstrap(
                sagas_mapper=lambda m: m.bind(OrderContext, OrderSaga), saga_storage=storage
            )

            print("== order 123 ==")
            saga_id = uuid.uuid4()
            context = OrderContext(order_id="123", items=["book"], total_amount=25.0)
            async for result in mediator.stream(context, saga_id=saga_id):
                print(f"Step completed: {result.step_id}")
            print(f"Tracking number: {context.tracking_number}")
            await show(storage, saga_id)

            print("== order abroad-7 ==")
            saga_id = uuid.uuid4()
            context = OrderContext(order_id="abroad-7", items=["lamp"], total_amount=80.0)
            try:
                async for result in mediator.stream(context, saga_id=saga_id):
                    verb = "compensated" if result.is_compensation else "completed"
                    outcome = "failed" if result.error else verb
                    print(f"Step {outcome}: {result.step_id}")
            except SagaCompensatedError as error:
                print(f"Saga compensated: {error.__cause__}")
            await show(storage, saga_id)
    finally:
        print(f"Cleaned up {clean_up(prefix)} keys under {prefix}")


if __name__ == "__main__":
    anyio.run(main)
