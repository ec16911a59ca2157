"""Outage: a loopback TCP proxy between the sagas and PostgreSQL/Redis is cut mid-run (every
open connection dropped, new ones closed at once) and later restored. The runs in flight stop
with StorageUnavailableError and leave their sagas unfinished (RUNNING/COMPENSATING) in storage;
nothing is lost: after the outage a RecoveryWorker, through the same proxy and the same storage
object, finishes every saga, and the ledger invariants hold.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import anyio
import anyio.abc
import pytest

from saga_core import SagaStorageError, StorageUnavailableError, bootstrap

from ._kit import (
    ACT,
    Ledger,
    LedgerContext,
    StorageSpec,
    bind,
    check_ledger,
    fails,
    load_all,
    recover_all,
    saga_ids,
    unfinished,
)

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

SAGAS = 30
FAIL_EVERY = 5


class CuttableProxy:
    """Forwards loopback connections to a server until :meth:`cut`, which drops every open
    connection and closes new ones at once, until :meth:`restore`."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self.down = False
        self.refused = 0
        self._pairs: set[anyio.CancelScope] = set()

    async def start(self, task_group: anyio.abc.TaskGroup) -> int:
        listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
        self.port = listener.extra(anyio.abc.SocketAttribute.local_port)
        task_group.start_soon(listener.serve, self._forward)
        return self.port

    async def _forward(self, client: anyio.abc.SocketStream) -> None:
        if self.down:
            self.refused += 1
            await client.aclose()
            return
        scope = anyio.CancelScope()
        self._pairs.add(scope)
        try:
            with scope:
                async with (
                    client,
                    await anyio.connect_tcp("127.0.0.1", self.target_port) as upstream,
                    anyio.create_task_group() as pumps,
                ):
                    pumps.start_soon(self._pump, client, upstream, pumps.cancel_scope)
                    pumps.start_soon(self._pump, upstream, client, pumps.cancel_scope)
        finally:
            self._pairs.discard(scope)

    @staticmethod
    async def _pump(
        source: anyio.abc.SocketStream, sink: anyio.abc.SocketStream, pair: anyio.CancelScope
    ) -> None:
        try:
            async for chunk in source:
                await sink.send(chunk)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            pass
        pair.cancel()

    def cut(self) -> None:
        self.down = True
        for scope in list(self._pairs):
            scope.cancel()

    def restore(self) -> None:
        self.down = False


def finished_acts(ledger: Ledger) -> int:
    return sum(e.direction == ACT and e.finished is not None for e in ledger.effects())


def with_port(url: str, port: int) -> str:
    parts = urlsplit(url)
    user = f"{parts.username}@" if parts.username else ""
    return urlunsplit(parts._replace(netloc=f"{user}127.0.0.1:{port}"))


async def test_storage_outage_mid_run_then_recovery(
    server_spec: StorageSpec, anyio_backend: str, tmp_path: Path
) -> None:
    run = uuid.uuid4().hex[:10]
    ledger = Ledger(tmp_path / "ledger.db")
    ledger.create()
    ids = saga_ids(run, SAGAS)
    expected = {saga_id: fails(index, FAIL_EVERY) for index, saga_id in enumerate(ids)}
    default_port = 5432 if server_spec.kind == "postgres" else 6379
    proxy = CuttableProxy(urlsplit(server_spec.url).port or default_port)
    errors: dict[int, BaseException] = {}
    async with anyio.create_task_group() as proxy_group:
        proxied = with_port(server_spec.url, await proxy.start(proxy_group))
        storage = server_spec.open(anyio_backend, connections=5, url=proxied)
        async with storage:
            mediator = bootstrap(sagas_mapper=bind, saga_storage=storage, lease_seconds=1.0)
            limiter = anyio.CapacityLimiter(10)

            async def one(index: int) -> None:
                context = LedgerContext(ledger.path, index, fails(index, FAIL_EVERY), 0.02)
                async with limiter:
                    try:
                        await mediator.run(context, saga_id=ids[index])
                    except Exception as exc:
                        errors[index] = exc

            async def cut_mid_run() -> None:
                # Some sagas have finished, others are mid-way: cut now.
                while finished_acts(ledger) < 40:  # noqa: ASYNC110 (polling the ledger)
                    await anyio.sleep(0.005)
                proxy.cut()

            with anyio.fail_after(60):
                async with mediator, anyio.create_task_group() as runs:
                    runs.start_soon(cut_mid_run)
                    for index in range(SAGAS):
                        runs.start_soon(one, index)
            assert errors, "the outage interrupted no saga"
            assert len(errors) < SAGAS, "no saga finished before the outage"
            assert all(isinstance(e, SagaStorageError) for e in errors.values()), errors
            assert any(isinstance(e, StorageUnavailableError) for e in errors.values()), errors
            # What the outage left behind, seen directly (not through the proxy).
            async with server_spec.open(anyio_backend, connections=2) as direct:
                stalled = await unfinished(direct)
            assert stalled, "the outage left no saga to recover"
            proxy.restore()
            counter = await recover_all(storage, within=60)
            records = await load_all(storage, ids)
        proxy_group.cancel_scope.cancel()
    problems = check_ledger(ledger, records, expected)
    ledger.close()
    assert not problems, "\n".join(problems)
    assert counter.resumed >= len(stalled)
    print(
        f"{server_spec.kind}: {len(errors)} runs stopped by the outage, {len(stalled)} sagas "
        f"left unfinished, {counter.resumed} recovered, {proxy.refused} connections refused"
    )
