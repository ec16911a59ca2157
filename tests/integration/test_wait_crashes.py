"""Crash safety around durable waits, with real processes killed with SIGKILL: a worker child
dies just before or just after the write that suspends a saga at its wait, just before or just
after the write that consumes the signal it resumed with (the next step's), or inside the act
of the step after the wait (resumed, its write not made: the signal delivered, not consumed).

The sagas (``_kit.WaitLedgerSaga``: step one, a wait for "go", steps two and three; every
fourth fails at step three) are started detached. They run to their wait — by the child killed
around a suspend, then by a fresh worker — and are signalled (each once, then the same signal
again: a duplicate); then a child killed around a resume, and finally two worker processes at
once run them to their end, while this process waits for each with ``handle.result()`` and
watches each from where it stood before the signals. Checked, over the external effects ledger
and the storage: nothing lost (every saga ended, its signal consumed exactly once — one
COMPLETED entry of its wait, the payload in the context, nothing left pending — every act at
least once, compensations complete and in order, no step run by two runners at once) and the
watch resumed without gaps or duplicates.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import pytest
from anyio.streams.buffered import BufferedByteReceiveStream

from saga_core import (
    SagaEvent,
    SagaOutcome,
    SagaRecord,
    SagaStatus,
    SagaStorage,
    SagaWorker,
    StepEvent,
    bootstrap,
)

from ._kit import (
    FAST_BACKOFF,
    GO,
    GO_WAIT_ID,
    HERE,
    WAIT_CRASH_POINTS,
    Ledger,
    StorageSpec,
    WaitLedgerContext,
    bind,
    check_ledger,
    child_env,
    fails,
    load_all,
    saga_ids,
    saga_map,
)

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

WORKER = HERE / "worker_child.py"
SAGAS = 12
FAIL_EVERY = 4
LEASE = 1.0  # a dead child's leases expire this long after its last write
KILL_AT = 2  # the child dies the second time it reaches its point


@pytest.fixture
def wait_storage(storage_spec: StorageSpec) -> StorageSpec:
    """Every storage the crash tests run on: SQLite (a file), PostgreSQL and Redis."""
    return storage_spec


def worker_config(spec: StorageSpec, backend: str, **extra: Any) -> dict[str, Any]:
    return {
        "storage": spec.to_json(),
        "backend": backend,
        "concurrency": 4,
        "batch_size": 10,
        "lease": LEASE,
        "connections": 3,
        **extra,
    }


async def open_worker(config: dict[str, Any], log: Path) -> anyio.abc.Process:
    with log.open("ab") as stderr:
        return await anyio.open_process(
            [sys.executable, str(WORKER), json.dumps(config)],
            env=child_env(),
            stdout=subprocess.PIPE,
            stderr=stderr,
        )


async def run_until_killed(config: dict[str, Any], ledger: Ledger, log: Path) -> None:
    """Run a worker child armed at ``config["point"]`` until it is dead; check it was killed
    there (not ended some other way) and record its death in the ledger."""
    process = await open_worker(config, log)
    async with process:
        with anyio.fail_after(60):
            status = await process.wait()
        ledger.died(process.pid)
    if status != -signal.SIGKILL:
        output = await anyio.Path(log).read_text(errors="replace")
        raise AssertionError(
            f"the worker armed at {config['point']} ended with {status}, not SIGKILL: "
            f"{output[-3000:]}"
        )


async def ready_worker(config: dict[str, Any], log: Path) -> anyio.abc.Process:
    """A worker child that polls (it said "ready": it stops cleanly on SIGTERM from now)."""
    process = await open_worker(config, log)
    assert process.stdout is not None
    with anyio.fail_after(30):
        line = await BufferedByteReceiveStream(process.stdout).receive_until(b"\n", 1000)
    assert line == b"ready", line
    return process


async def ready_workers(count: int, config: dict[str, Any], log: Path) -> list[anyio.abc.Process]:
    """``count`` worker children started at once (their imports overlap), each ready."""
    workers: list[anyio.abc.Process] = []

    async def start() -> None:
        workers.append(await ready_worker(config, log))

    try:
        async with anyio.create_task_group() as task_group:
            for _ in range(count):
                task_group.start_soon(start)
    except BaseException:
        for process in workers:  # the ones that did start: none is left running
            process.kill()
        raise
    return workers


async def stop_worker(process: anyio.abc.Process) -> int | None:
    """Stop a worker child with SIGTERM; its exit status."""
    if process.returncode is None:
        process.send_signal(signal.SIGTERM)
    with anyio.fail_after(30):
        status = await process.wait()
    await process.aclose()
    return status


async def run_worker_until(
    storage: SagaStorage, done: Callable[[list[SagaRecord]], bool], ids: list[uuid.UUID]
) -> None:
    """Run a worker in this process until ``done`` holds for the records of ``ids``."""
    worker = SagaWorker(
        saga_map(), storage, poll_interval=0.05, lease_seconds=LEASE, backoff=FAST_BACKOFF
    )
    async with anyio.create_task_group() as task_group:
        await task_group.start(worker.run)
        with anyio.fail_after(60):
            while not done(list((await load_all(storage, ids)).values())):  # noqa: ASYNC110
                await anyio.sleep(0.05)
        task_group.cancel_scope.cancel()


def all_waiting(records: list[SagaRecord]) -> bool:
    return len(records) == SAGAS and all(
        (r.status, r.cursor, r.waiting_for) == (SagaStatus.WAITING, 1, GO) for r in records
    )


@pytest.mark.parametrize("point", WAIT_CRASH_POINTS)
async def test_sigkill_around_a_wait_then_recover(
    wait_storage: StorageSpec, anyio_backend: str, tmp_path: Path, point: str
) -> None:
    run = uuid.uuid4().hex[:10]
    ledger = Ledger(tmp_path / "ledger.db")
    ledger.create()
    ids = saga_ids(run, SAGAS)
    expected = {saga_id: fails(index, FAIL_EVERY) for index, saga_id in enumerate(ids)}
    log = tmp_path / "workers.log"
    armed = worker_config(wait_storage, anyio_backend, point=point, at=KILL_AT)
    suspending = point.startswith("suspend")
    try:
        async with wait_storage.open(anyio_backend, connections=4) as storage:
            mediator = bootstrap(sagas_mapper=bind, saga_storage=storage)
            for index, saga_id in enumerate(ids):
                context = WaitLedgerContext(ledger.path, index, expected[saga_id], 0.002)
                await mediator.start(context, saga_id=saga_id)

            # 1. The sagas run to their wait (a child killed around a suspend first).
            if suspending:
                await run_until_killed(armed, ledger, log)
            await run_worker_until(storage, all_waiting, ids)
            marks = {saga_id: len(await storage.history(saga_id)) for saga_id in ids}

            # 2. Each is signalled, and again with the same id: a duplicate.
            for index, saga_id in enumerate(ids):
                signal_id = f"{run}-{index}"
                assert await mediator.signal(saga_id, GO, f"go-{index}", signal_id=signal_id)
                assert not await mediator.signal(saga_id, GO, f"go-{index}", signal_id=signal_id)

            # 3. A child killed around a resume.
            if not suspending:
                await run_until_killed(armed, ledger, log)

            # 4. Two workers at once run them to their end; this process waits and watches.
            workers = await ready_workers(2, worker_config(wait_storage, anyio_backend), log)
            outcomes: dict[uuid.UUID, SagaOutcome[Any]] = {}
            events: dict[uuid.UUID, list[SagaEvent]] = {}

            async def follow(saga_id: uuid.UUID) -> None:
                events[saga_id] = [
                    event
                    async for event in mediator.watch(
                        saga_id, after=marks[saga_id], poll_interval=0.05
                    )
                ]
                outcomes[saga_id] = await mediator.handle(saga_id).result(poll_interval=0.05)

            try:
                with anyio.fail_after(90):
                    async with anyio.create_task_group() as task_group:
                        for saga_id in ids:
                            task_group.start_soon(follow, saga_id)
            finally:
                stopped = [await stop_worker(process) for process in workers]
            assert stopped == [0, 0]
            records = await load_all(storage, ids)
            histories = {saga_id: await storage.history(saga_id) for saga_id in ids}

        problems = check_ledger(ledger, records, expected)
        for index, saga_id in enumerate(ids):
            record, history = records[saga_id], histories[saga_id]
            where = f"saga {index} ({record.status.value})"
            wait = [e.event for e in history if e.step_id == GO_WAIT_ID]
            if wait.count(StepEvent.STARTED) != 1 or wait.count(StepEvent.COMPLETED) != 1:
                problems.append(f"{where}: its wait's journal is {wait}: resumed once")
            if StepEvent.FAILED in wait:
                problems.append(f"{where}: its wait failed: {wait}")
            if record.signals:
                problems.append(f"{where}: signals still pending: {record.signals}")
            if mediator.stored_context(record).go != f"go-{index}":
                problems.append(f"{where}: the context did not take the signal's payload")
            if outcomes[saga_id].status is not record.status:
                problems.append(f"{where}: handle.result() says {outcomes[saga_id].status}")
            positions = [event.position for event in events[saga_id]]
            if positions != list(range(marks[saga_id] + 1, len(history) + 1)):
                problems.append(f"{where}: watched positions {positions}, {len(history)} entries")
            elif events[saga_id] != [
                SagaEvent.of(position, entry)
                for position, entry in enumerate(history, 1)
                if position > marks[saga_id]
            ]:
                problems.append(f"{where}: the watched events are not the journal's")
        assert not problems, "\n".join(problems)
    finally:
        ledger.close()
