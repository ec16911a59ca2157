"""A process restarted under its old owner name takes back its sagas at once.

A child running sagas under ``bootstrap(owner="orders-7")`` with long leases (10 minutes) is
killed with SIGKILL inside a step. Another name cannot touch its sagas until the leases
expire; the same name can, at once: a ``RecoveryWorker`` started as ``orders-7`` finishes them
all when it starts, and ``recover_saga`` (the seed's recovery call, no owner given) finishes
one in a process bootstrapped as ``orders-7``. On SQLite, PostgreSQL and Redis, asyncio and
trio; the effects ledger checks that nothing was lost or run twice at once.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import anyio
import pytest

from saga_core import (
    RecoveryWorker,
    SagaLeaseHeldError,
    SagaStatus,
    bootstrap,
    recover_saga,
)

from ._kit import (
    FAST_BACKOFF,
    Ledger,
    LedgerContext,
    LedgerSaga,
    StorageSpec,
    bind,
    check_ledger,
    load_all,
    saga_ids,
    saga_map,
    unfinished,
)
from .test_crash_recovery import run_child

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

OWNER = "orders-7"
SAGAS = 6
LONG_LEASE = 600.0  # far longer than the test: only the owner's own claims can succeed


async def crash_inside_a_step(
    spec: StorageSpec, backend: str, tmp_path: Path
) -> tuple[Ledger, list[uuid.UUID]]:
    """Run a child as ``orders-7`` until SIGKILL inside the third act; its ledger and the
    ids of its sagas."""
    run = uuid.uuid4().hex[:10]
    ledger = Ledger(tmp_path / f"ledger-{run}.db")
    ledger.create()
    config: dict[str, object] = {
        "storage": spec.to_json(),
        "backend": backend,
        "ledger": ledger.path,
        "run": run,
        "first": 0,
        "count": SAGAS,
        "fail_every": 0,
        "concurrency": 3,
        "lease": LONG_LEASE,
        "pause": 0.003,
        "owner": OWNER,
        "point": "inside_act",
        "at": 3,
    }
    # The storage is ready (SQLite: its tables created) before the child uses it.
    async with spec.open(backend) as storage:
        assert await unfinished(storage) == []
    await run_child(config, ledger, tmp_path / f"{run}.log")
    return ledger, saga_ids(run, SAGAS)


async def test_a_worker_under_the_old_name_takes_back_its_sagas_at_once(
    storage_spec: StorageSpec, anyio_backend: str, tmp_path: Path
) -> None:
    ledger, ids = await crash_inside_a_step(storage_spec, anyio_backend, tmp_path)
    try:
        async with storage_spec.open(anyio_backend) as storage:
            left = await unfinished(storage)
            assert left, "the kill left no saga to take back"
            assert {record.lease_owner for record in left} == {OWNER}

            # Another name waits for the leases: nothing is recoverable yet.
            stranger = RecoveryWorker(saga_map(), storage, backoff=FAST_BACKOFF)
            assert (await stranger.run_once()).claimed == 0

            own = RecoveryWorker(saga_map(), storage, owner=OWNER, backoff=FAST_BACKOFF)
            async with anyio.create_task_group() as task_group:
                await task_group.start(own.run)
                with anyio.fail_after(30):
                    while await unfinished(storage):  # noqa: ASYNC110 (polling the storage)
                        await anyio.sleep(0.05)
                task_group.cancel_scope.cancel()
            records = await load_all(storage, ids)
        problems = check_ledger(ledger, records, dict.fromkeys(ids, False))
        assert not problems, "\n".join(problems)
        assert {record.status for record in records.values()} == {SagaStatus.COMPLETED}
    finally:
        ledger.close()


async def test_recover_saga_in_a_process_bootstrapped_under_the_old_name(
    storage_spec: StorageSpec, anyio_backend: str, tmp_path: Path
) -> None:
    ledger, ids = await crash_inside_a_step(storage_spec, anyio_backend, tmp_path)
    try:
        async with storage_spec.open(anyio_backend) as storage:
            stalled = (await unfinished(storage))[0].saga_id
            with pytest.raises(SagaLeaseHeldError):
                await recover_saga(
                    saga=LedgerSaga, saga_id=stalled, context_builder=LedgerContext,
                    storage=storage, owner="someone-else",
                )  # fmt: skip

            bootstrap(sagas_mapper=bind, saga_storage=storage, owner=OWNER)
            # The seed's call, unchanged: no owner given, the process's name is used.
            outcome = await recover_saga(
                saga=LedgerSaga,
                saga_id=stalled,
                context_builder=LedgerContext,
                container=None,
                storage=storage,
            )
            assert outcome.status is SagaStatus.COMPLETED
            # An operator can also take over a live lease by force, under any name.
            others = [record.saga_id for record in await unfinished(storage)]
            for saga_id in others:
                forced = await recover_saga(
                    saga=LedgerSaga,
                    saga_id=saga_id,
                    context_builder=LedgerContext,
                    storage=storage,
                    owner="operator",
                    force=True,
                )
                assert forced.status is SagaStatus.COMPLETED
            records = await load_all(storage, ids)
        problems = check_ledger(ledger, records, dict.fromkeys(ids, False))
        assert not problems, "\n".join(problems)
    finally:
        ledger.close()
