"""The FastAPI SSE example's endpoint, read event by event through ``httpx.ASGITransport``.

Runs on asyncio and trio: Starlette's streaming response, FastAPI's threadpool for the sync
``mediator_factory`` dependency and httpx's ASGI transport are all built on anyio.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from types import ModuleType
from typing import Any

import anyio
import httpx
import pytest

from saga_core import MemorySagaStorage, SagaMediator, SagaNotFoundError, SagaStatus, bootstrap

pytestmark = pytest.mark.anyio

LoadExample = Callable[[str], ModuleType]


@pytest.fixture
def example(load_example: LoadExample) -> ModuleType:
    return load_example("fastapi_sse")


async def read_events(app: Any, order: dict[str, Any]) -> tuple[httpx.Response, list[Any]]:
    """POST ``order`` to ``/process-order``; return the response and its events in order."""
    events: list[Any] = []
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        with anyio.fail_after(10):
            async with client.stream("POST", "/process-order", json=order) as response:
                buffer = ""
                async for chunk in response.aiter_text():
                    buffer += chunk
                    # An event ends with a blank line; each of ours is one "data:" line.
                    while "\n\n" in buffer:
                        block, buffer = buffer.split("\n\n", 1)
                        assert block.startswith("data: "), block
                        events.append(json.loads(block.removeprefix("data: ")))
                assert buffer == "", f"trailing bytes after the last event: {buffer!r}"
    return response, events


def saga_id_of(events: list[Any]) -> uuid.UUID:
    """The saga id that every event carries, the same in all of them."""
    ids = {event["saga_id"] for event in events}
    assert len(ids) == 1, ids
    return uuid.UUID(ids.pop())


async def test_completed_order_streams_start_progress_complete(example: ModuleType) -> None:
    order = {"order_id": "sse-1", "items": ["a", "b"], "total_amount": 10.0}
    response, events = await read_events(example.app, order)

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert [e["type"] for e in events] == [
        "start",
        "step_progress",
        "step_progress",
        "step_progress",
        "complete",
    ]
    progress = [(e["step"], e["compensation"], e["failed"]) for e in events[1:4]]
    assert progress == [
        ("ReserveInventoryStep", False, False),
        ("ProcessPaymentStep", False, False),
        ("ShipOrderStep", False, False),
    ]
    saga_id = saga_id_of(events)
    record = await example.storage.load(saga_id)
    assert record.status is SagaStatus.COMPLETED
    assert "reservation-sse-1" in example.inventory.reservations
    assert example.payments.charges["payment-sse-1"] == 10.0


async def test_declined_order_streams_compensation_then_error(example: ModuleType) -> None:
    order = {"order_id": "sse-2", "items": ["a"], "total_amount": 5000.0}
    response, events = await read_events(example.app, order)

    assert response.status_code == 200
    assert [e["type"] for e in events] == [
        "start",
        "step_progress",
        "step_progress",
        "step_progress",
        "error",
    ]
    progress = [(e["step"], e["compensation"], e["failed"]) for e in events[1:4]]
    assert progress == [
        ("ReserveInventoryStep", False, False),
        ("ProcessPaymentStep", False, True),  # declined
        ("ReserveInventoryStep", True, False),  # rolled back; the declined charge needs none
    ]
    error = events[-1]
    assert error["status"] == "compensated"
    assert "PaymentDeclinedError: card declined" in error["message"]
    saga_id = saga_id_of(events)
    record = await example.storage.load(saga_id)
    assert record.status is SagaStatus.COMPENSATED
    assert "reservation-sse-2" not in example.inventory.reservations
    assert "payment-sse-2" not in example.payments.charges


async def test_invalid_request_is_rejected_before_any_saga_starts(example: ModuleType) -> None:
    transport = httpx.ASGITransport(app=example.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.post("/process-order", json={"order_id": "sse-3"})
    assert response.status_code == 422


async def test_mediator_factory_can_be_overridden(example: ModuleType) -> None:
    # The mediator comes from fastapi.Depends(mediator_factory), so tests (or another
    # deployment) can swap the storage without touching the endpoint.
    private_storage = MemorySagaStorage()

    def private_mediator() -> SagaMediator:
        return bootstrap(
            di_container=example.di_container,
            sagas_mapper=example.saga_mapper,
            saga_storage=private_storage,
        )

    example.app.dependency_overrides[example.mediator_factory] = private_mediator
    try:
        order = {"order_id": "sse-4", "items": ["a"], "total_amount": 1.0}
        _, events = await read_events(example.app, order)
    finally:
        example.app.dependency_overrides.clear()

    saga_id = saga_id_of(events)
    assert (await private_storage.load(saga_id)).status is SagaStatus.COMPLETED
    with pytest.raises(SagaNotFoundError):
        await example.storage.load(saga_id)
