"""Cancellation: a client that disconnects from the server-sent-events example
(``examples/fastapi_sse.py``) mid-saga leaves the saga RUNNING with its lease released
(recoverable at once, not failed), and a RecoveryWorker finishes it.

The ASGI app is driven in-process the way an ASGI server drives it (httpx's ASGITransport reads
a whole response before returning it, so it cannot disconnect halfway): the request body, then
``http.disconnect`` once the first events have arrived, while the third step is still in
flight (it waits on an event that never comes during the request).
"""

from __future__ import annotations

import importlib.util
import json
import sys
import uuid
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import anyio
import pytest

from saga_core import RecoveryWorker, SagaMap, SagaStatus

from ._kit import REPO

pytestmark = pytest.mark.anyio


@pytest.fixture
def example() -> Iterator[ModuleType]:
    """A fresh copy of the example (its services and memory storage are module globals)."""
    name = f"examples_fastapi_sse_{uuid.uuid4().hex[:8]}"
    spec = importlib.util.spec_from_file_location(name, REPO / "examples" / "fastapi_sse.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        del sys.modules[name]


def events_of(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    body = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.response.body")
    blocks = [block for block in body.decode().split("\n\n") if block]
    return [json.loads(block.removeprefix("data: ")) for block in blocks]


async def test_client_disconnect_mid_saga_leaves_it_to_the_worker(example: ModuleType) -> None:
    shipping = example.shipping
    real_ship = shipping.ship
    in_ship = anyio.Event()
    never = anyio.Event()

    async def stuck_ship(order_id: str) -> str:
        in_ship.set()
        await never.wait()
        raise AssertionError("unreachable")

    shipping.ship = stuck_ship
    order = {"order_id": "gone-1", "items": ["a", "b"], "total_amount": 10.0}
    body = json.dumps(order).encode()
    disconnected = anyio.Event()
    requested = False
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        nonlocal requested
        if not requested:
            requested = True
            return {"type": "http.request", "body": body, "more_body": False}
        await disconnected.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        # Spec 2.3: the response listens for http.disconnect and stops streaming on it.
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/process-order",
        "raw_path": b"/process-order",
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"shop.local"),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("shop.local", 80),
    }
    with anyio.fail_after(10):
        async with anyio.create_task_group() as task_group:
            task_group.start_soon(example.app, scope, receive, send)
            await in_ship.wait()
            await anyio.sleep(0.05)  # the progress events of the first two steps go out
            disconnected.set()  # the client goes away while ship_order is in flight
    events = events_of(sent)
    assert [e["type"] for e in events] == ["start", "step_progress", "step_progress"], events
    saga_id = uuid.UUID(events[0]["saga_id"])

    storage = example.storage
    record = await storage.load(saga_id)
    assert record.status is SagaStatus.RUNNING  # not failed, not compensated
    assert record.cursor == 2 and record.next_step == "ship_order"
    assert record.lease_owner is None  # handed back at once, not left to expire
    assert [r.saga_id for r in await storage.list_recoverable()] == [saga_id]
    assert example.payments.charges == {"payment-gone-1": 10.0}

    shipping.ship = real_ship
    sagas = SagaMap()
    sagas.bind(example.OrderContext, example.OrderSaga)
    worker = RecoveryWorker(sagas, storage, container=example.di_container)
    report = await worker.run_once()
    assert (report.claimed, report.completed, report.errors) == (1, 1, 0), report
    record = await storage.load(saga_id)
    assert record.status is SagaStatus.COMPLETED
    context = json.loads(record.context)
    assert context["tracking_number"] == "TRACK-gone-1"
    # Nothing was undone, and nothing done twice.
    assert example.inventory.reservations == {"reservation-gone-1": ["a", "b"]}
    assert example.payments.charges == {"payment-gone-1": 10.0}
