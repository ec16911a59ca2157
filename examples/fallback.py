"""Fallback with a circuit breaker: when the primary step fails, its fallback step runs instead.

python-cqrs's documented fallback example with only its imports changed, run to its end inside
``main``, then run twice more to show the circuit breaker: ``PrimaryStep`` always raises, so after
``fail_max=2`` failed sagas the circuit is open and the third saga does not call the primary at
all (its journal records the skipped primary as failed with ``CircuitOpenError``); every saga
still completes through ``FallbackStep``. The breaker keeps one circuit per primary step and
logs its state changes on the ``saga_breaker`` logger (an opened circuit at WARNING).

Run it from the repository root::

    uv run python examples/fallback.py
"""

from __future__ import annotations

import dataclasses
import logging
import uuid

import anyio
import di

import saga_core as cqrs
from saga_breaker import AioBreakerAdapter
from saga_core import (
    Fallback,
    MemorySagaStorage,
    Response,
    Saga,
    SagaContext,
    SagaStepHandler,
    SagaStepResult,
    StepEvent,
    bootstrap,
)

# --- python-cqrs's documented example, unchanged but for its imports -------------------------


@dataclasses.dataclass
class OrderContext(SagaContext):
    order_id: str
    reservation_id: str | None = None


class ReserveInventoryResponse(Response):
    reservation_id: str
    source: str


class PrimaryStep(SagaStepHandler[OrderContext, ReserveInventoryResponse]):
    async def act(
        self, context: OrderContext
    ) -> SagaStepResult[OrderContext, ReserveInventoryResponse]:
        # Primary step that may fail
        raise RuntimeError("Service unavailable")


class FallbackStep(SagaStepHandler[OrderContext, ReserveInventoryResponse]):
    async def act(
        self, context: OrderContext
    ) -> SagaStepResult[OrderContext, ReserveInventoryResponse]:
        # Fallback step executes when primary fails
        reservation_id = f"fallback_reservation_{context.order_id}"
        context.reservation_id = reservation_id
        return self._generate_step_result(
            ReserveInventoryResponse(reservation_id=reservation_id, source="fallback")
        )


class OrderSaga(Saga[OrderContext]):
    steps = [
        Fallback(
            step=PrimaryStep,
            fallback=FallbackStep,
            circuit_breaker=AioBreakerAdapter(
                fail_max=2,
                timeout_duration=60,
            ),
        ),
    ]


# Setup
di_container = di.Container()
storage = MemorySagaStorage()


def saga_mapper(mapper: cqrs.SagaMap) -> None:
    mapper.bind(OrderContext, OrderSaga)


mediator = bootstrap.bootstrap(
    di_container=di_container,
    sagas_mapper=saga_mapper,
    saga_storage=storage,
)


async def run_seed_example() -> uuid.UUID:
    """That example's "Execute" block (top-level ``async for`` needs a coroutine in a script)."""
    context = OrderContext(order_id="123")
    saga_id = uuid.uuid4()

    async for step_result in mediator.stream(context, saga_id=saga_id):
        print(f"Step: {step_result.step_type.__name__}")
    return saga_id


# --- beyond that example: watch the circuit open ------------------------------------------------


async def primary_outcome(saga_id: uuid.UUID) -> str:
    """How the saga's journal records the primary: called and failed, or skipped."""
    for entry in await storage.history(saga_id):
        if entry.step_id == PrimaryStep.step_id and entry.event is StepEvent.FAILED:
            called = "called, failed" if entry.attempt else "not called"
            return f"{called} ({entry.error})"
    return "succeeded"


async def main() -> None:
    node = OrderSaga.steps[0]
    assert isinstance(node, Fallback) and isinstance(node.circuit_breaker, AioBreakerAdapter)
    breaker = node.circuit_breaker
    for run in range(1, 4):
        print(f"Saga {run}:")
        saga_id = await run_seed_example()
        record = await storage.load(saga_id)
        print(f"  primary: {await primary_outcome(saga_id)}")
        print(f"  status: {record.status.name}")
        print(f"  circuit of PrimaryStep: {await breaker.circuit_state(PrimaryStep.step_id)}")


if __name__ == "__main__":
    # The circuit's state changes are logged on "saga_breaker"; configuring logging is the
    # application's choice, never the library's. The core's per-step warnings are left out.
    logging.basicConfig(level=logging.WARNING, format="  [log] %(name)s: %(message)s")
    logging.getLogger("saga_core").setLevel(logging.ERROR)
    anyio.run(main)
