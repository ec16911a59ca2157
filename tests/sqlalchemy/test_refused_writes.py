"""A write the database refuses for its own data fails only its own saga, even in a shared
group-commit transaction, and its error carries no other saga's data (issue 19, defect 2).

The refusals are the application's (a CHECK constraint on PostgreSQL, a trigger on SQLite,
refusing any write whose context holds ``REFUSE-ME``), an encoding error (a lone surrogate in
the context) and a journal entry the storage cannot encode (a naive ``at``).
"""

from __future__ import annotations

import dataclasses
import json
import traceback
from collections.abc import AsyncIterator, Callable
from contextlib import ExitStack
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from saga_core import (
    Response,
    Saga,
    SagaError,
    SagaStatus,
    SagaStepHandler,
    SagaUsageError,
    StorageCorruptedError,
    StorageUnavailableError,
    bootstrap,
    open_storage,
)
from saga_core.storage import Checkpoint
from saga_core.testing import make_checkpoint, make_entry, make_new_saga
from saga_sqlalchemy import SqlAlchemySagaStorage

from ._support import driver_url, outcomes_of, postgres_schema

pytestmark = pytest.mark.anyio

POISON = "REFUSE-ME"
REASON = "the application refuses this order"

#: The group-commit storages: SQLite in worker threads and on the event loop, PostgreSQL
#: through psycopg's sync engine and asyncpg's connection.
TARGETS = ["sqlite-threads", "sqlite-inline", "psycopg", "asyncpg"]


@dataclasses.dataclass
class Target:
    """A storage with group commit on, and how to make its database refuse a write."""

    storage: SqlAlchemySagaStorage
    refuse_poison: Callable[[], None]


def _sqlite_refusal(url: str) -> Callable[[], None]:
    def install() -> None:
        engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
        with engine.begin() as connection:
            for event in ("INSERT", "UPDATE"):
                connection.exec_driver_sql(
                    f"CREATE TRIGGER refuse_poison_{event.lower()} BEFORE {event} ON saga "
                    f"WHEN NEW.context LIKE '%{POISON}%' "
                    f"BEGIN SELECT RAISE(ABORT, '{REASON}'); END"
                )
        engine.dispose()

    return install


def _postgres_refusal(url: str, schema: str) -> Callable[[], None]:
    def install() -> None:
        engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
        with engine.begin() as connection:
            connection.exec_driver_sql(
                f'ALTER TABLE "{schema}".saga ADD CONSTRAINT refuse_poison '
                f"CHECK (strpos(context, '{POISON}') = 0)"
            )
        engine.dispose()

    return install


@pytest.fixture(params=TARGETS)
async def target(
    request: pytest.FixtureRequest, tmp_path: Path, anyio_backend: str
) -> AsyncIterator[Target]:
    kind = str(request.param)
    if kind == "asyncpg" and anyio_backend != "asyncio":
        pytest.skip("asyncpg runs on asyncio only; trio uses psycopg's sync engine")
    # One lane that lingers: concurrent writes surely share a transaction.
    options: dict[str, Any] = {"group_commit": True, "lanes": 1, "max_wait": 0.05}
    with ExitStack() as stack:
        if kind.startswith("sqlite"):
            url = f"sqlite:///{tmp_path}/sagas.db"
            storage = open_storage(url, inline=kind == "sqlite-inline", **options)
            assert isinstance(storage, SqlAlchemySagaStorage)
            await storage.create_schema()
            install = _sqlite_refusal(url)
        else:
            postgres_url = request.getfixturevalue("postgres_url")
            schema = stack.enter_context(postgres_schema(postgres_url))
            url = driver_url(postgres_url, kind)
            engine: Any = create_async_engine(url) if kind == "asyncpg" else sa.create_engine(url)
            storage = SqlAlchemySagaStorage(engine, schema=schema, dispose_engine=True, **options)
            await storage.create_schema()
            install = _postgres_refusal(driver_url(postgres_url, "psycopg"), schema)
        async with storage:
            yield Target(storage, install)


def _secret(index: int) -> str:
    return f"secret-of-saga-{index:03d}"


def _everything_said(error: BaseException) -> str:
    """All an application could log of ``error``: its traceback, with every chained error."""
    return "".join(traceback.format_exception(type(error), error, error.__traceback__))


def _refused_checkpoint(kind: str, checkpoint: Checkpoint) -> Checkpoint:
    if kind == "constraint":
        return checkpoint._replace(context=json.dumps({"note": POISON}))
    if kind == "encoding":
        return checkpoint._replace(context=json.dumps({"note": "\udcff"}, ensure_ascii=False))
    return checkpoint._replace(journal=[make_entry(at=datetime(2026, 1, 1, 12, 0))])


@pytest.mark.parametrize("refusal", ["constraint", "encoding", "naive-journal-time"])
async def test_a_refused_write_fails_only_its_own_saga(target: Target, refusal: str) -> None:
    storage = target.storage
    target.refuse_poison()
    sagas = [make_new_saga(context=json.dumps({"secret": _secret(i)})) for i in range(30)]
    created = await outcomes_of([partial(storage.create, new) for new in sagas])
    assert created == [None] * len(sagas)
    refused = 7
    checkpoints = [
        make_checkpoint(
            new.saga_id, 1, cursor=1, context=json.dumps({"secret": _secret(i), "step": 1})
        )
        for i, new in enumerate(sagas)
    ]
    checkpoints[refused] = _refused_checkpoint(refusal, checkpoints[refused])
    before = storage.group_commit_stats
    outcomes = await outcomes_of([partial(storage.checkpoint, c) for c in checkpoints])
    transactions = storage.group_commit_stats[0] - before[0]
    assert transactions < len(sagas) // 2, "the checkpoints should have shared transactions"

    error = outcomes.pop(refused)
    assert outcomes == [None] * (len(sagas) - 1)
    expected: dict[str, tuple[type[Exception], ...]] = {
        "constraint": (StorageUnavailableError,),
        "encoding": (StorageCorruptedError, StorageUnavailableError),  # as the driver says
        "naive-journal-time": (SagaUsageError,),
    }
    assert isinstance(error, expected[refusal]), repr(error)
    said = _everything_said(error)
    if refusal != "naive-journal-time":  # (refused before any saga's write was sent)
        assert str(sagas[refused].saga_id) in str(error)  # the error names its own saga
    if refusal == "constraint":
        assert "refuse" in str(error).lower()  # and the database's reason
    for index, new in enumerate(sagas):
        if index != refused:
            assert _secret(index) not in said, f"the error holds saga {index}'s context"
            assert str(new.saga_id) not in said and new.saga_id.hex not in said
    for index, new in enumerate(sagas):
        record = await storage.load(new.saga_id)
        if index == refused:
            assert record.version == 1
        else:
            assert (record.version, json.loads(record.context)["step"]) == (2, 1)


@dataclasses.dataclass
class Order:
    name: str
    note: str = ""
    count: int = 0


class Reserve(SagaStepHandler[Order, Response]):
    async def act(self, context: Order) -> None:
        context.count += 1

    async def compensate(self, context: Order) -> None:
        context.count -= 1


class Annotate(Reserve):
    async def act(self, context: Order) -> None:
        context.count += 1
        if context.name == "poisoned":
            context.note = POISON  # the database refuses this saga's next checkpoint


class Ship(Reserve):
    pass


class OrderSaga(Saga[Order]):
    steps = [Reserve, Annotate, Ship]


async def test_healthy_sagas_complete_next_to_a_refused_one(target: Target) -> None:
    storage = target.storage
    target.refuse_poison()
    mediator = bootstrap(sagas_mapper=lambda m: m.bind(Order, OrderSaga), saga_storage=storage)
    names = [f"order-{index}" for index in range(60)]
    names.insert(23, "poisoned")
    statuses: dict[str, SagaStatus | None] = {}
    errors: dict[str, BaseException] = {}

    async def run(name: str) -> None:
        try:
            outcome = await mediator.run(Order(name=name))
        except SagaError as exc:
            statuses[name], errors[name] = None, exc
        else:
            statuses[name] = outcome.status
            if outcome.error is not None:
                errors[name] = outcome.error

    async with anyio.create_task_group() as tg:
        for name in names:
            tg.start_soon(run, name)
    transactions, writes = storage.group_commit_stats
    assert transactions < writes // 2, "the sagas' writes should have shared transactions"
    poisoned = statuses.pop("poisoned")
    assert poisoned is not SagaStatus.COMPLETED
    assert set(statuses.values()) == {SagaStatus.COMPLETED}, {
        name: (status, errors.get(name))
        for name, status in statuses.items()
        if status is not SagaStatus.COMPLETED
    }
    completed = await storage.list_sagas(status=SagaStatus.COMPLETED, limit=1000)
    assert len(completed) == 60
    assert all(json.loads(record.context)["count"] == 3 for record in completed)
