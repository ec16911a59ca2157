"""A database that goes away mid-saga corrupts nothing; the saga is recovered once it is back.

The storage connects as a role of its own; between two steps the test forbids that role to log
in and terminates its connections, so every write fails until the role may log in again.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any, ClassVar

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from saga_core import (
    Response,
    Saga,
    SagaContext,
    SagaStatus,
    SagaStepHandler,
    SagaStepResult,
    StorageUnavailableError,
    bootstrap,
    recover_saga,
)
from saga_sqlalchemy import SqlAlchemySagaStorage

from ._support import driver_url, unique_name

pytestmark = pytest.mark.anyio


@dataclasses.dataclass
class OutageContext(SagaContext):
    done: list[str] = dataclasses.field(default_factory=list)


class Outage:
    """Cuts the role off from the database, once, when the second step runs."""

    admin: ClassVar[sa.Engine | None] = None
    role: ClassVar[str] = ""
    armed: ClassVar[bool] = False

    @classmethod
    def cut(cls) -> None:
        assert cls.admin is not None
        with cls.admin.begin() as connection:
            connection.exec_driver_sql(f'ALTER ROLE "{cls.role}" NOLOGIN')
            connection.exec_driver_sql(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s",
                (cls.role,),
            )

    @classmethod
    def restore(cls) -> None:
        assert cls.admin is not None
        with cls.admin.begin() as connection:
            connection.exec_driver_sql(f'ALTER ROLE "{cls.role}" LOGIN')


class First(SagaStepHandler[OutageContext, Response]):
    async def act(self, context: OutageContext) -> SagaStepResult[OutageContext, Response]:
        context.done.append("first")
        return self._generate_step_result(Response())

    async def compensate(self, context: OutageContext) -> None:
        context.done.append("undo-first")


class Second(First):
    async def act(self, context: OutageContext) -> SagaStepResult[OutageContext, Response]:
        if Outage.armed:
            Outage.armed = False
            Outage.cut()
        context.done.append("second")
        return self._generate_step_result(Response())


class Third(First):
    async def act(self, context: OutageContext) -> SagaStepResult[OutageContext, Response]:
        context.done.append("third")
        return self._generate_step_result(Response())


class OutageSaga(Saga[OutageContext]):
    steps = [First, Second, Third]


@pytest.fixture
def own_role(postgres_url: str) -> Iterator[tuple[str, str]]:
    """A login role owning a schema of its own; yields (url as that role, schema)."""
    role = unique_name("saga_role")
    admin = sa.create_engine(driver_url(postgres_url, "psycopg"), poolclass=sa.NullPool)
    with admin.begin() as connection:
        connection.exec_driver_sql(f'CREATE ROLE "{role}" LOGIN')
        connection.exec_driver_sql(f'CREATE SCHEMA "{role}" AUTHORIZATION "{role}"')
    Outage.admin, Outage.role = admin, role
    url = sa.engine.make_url(postgres_url).set(username=role).render_as_string(False)
    try:
        yield url, role
    finally:
        Outage.armed = False
        with admin.begin() as connection:
            connection.exec_driver_sql(f'ALTER ROLE "{role}" LOGIN')
            connection.exec_driver_sql(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s",
                (role,),
            )
            connection.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{role}" CASCADE')
            connection.exec_driver_sql(f'DROP ROLE IF EXISTS "{role}"')
        admin.dispose()
        Outage.admin = None


@pytest.mark.parametrize("driver", ["asyncpg", "psycopg"])
async def test_saga_survives_losing_the_database_between_steps(
    own_role: tuple[str, str], driver: str, anyio_backend: str
) -> None:
    if driver == "asyncpg" and anyio_backend != "asyncio":
        pytest.skip("asyncpg runs on asyncio only")
    url, schema = own_role
    engine: Any = (
        create_async_engine(driver_url(url, driver), pool_size=2)
        if driver == "asyncpg"
        else sa.create_engine(driver_url(url, driver), pool_size=2)
    )
    async with SqlAlchemySagaStorage(engine, schema=schema, dispose_engine=True) as storage:
        await storage.create_schema()
        mediator = bootstrap(
            sagas_mapper=lambda m: m.bind(OutageContext, OutageSaga), saga_storage=storage
        )
        Outage.armed = True
        context = OutageContext()
        with pytest.raises(StorageUnavailableError) as info:
            await mediator.run(context)
        assert info.value.__cause__ is not None
        Outage.restore()
        assert await storage.list_recoverable() == []  # still leased to the runner
        saga_id = next(iter(await _ids(storage)))
        stored = await storage.load(saga_id)
        # Durable state is the last successful checkpoint: the first step, nothing half-done.
        assert (stored.status, stored.cursor, stored.version) == (SagaStatus.RUNNING, 1, 2)
        outcome = await recover_saga(
            saga=OutageSaga, saga_id=saga_id, storage=storage, owner=mediator.owner
        )
    assert outcome.status is SagaStatus.COMPLETED
    # Recovery resumed from the stored context: the second step ran again (at least once).
    assert outcome.context.done == ["first", "second", "third"]


async def _ids(storage: SqlAlchemySagaStorage) -> set[Any]:
    saga_table = storage.table

    def read(connection: sa.Connection, commit: Any) -> set[Any]:
        return set(connection.execute(sa.select(saga_table.c.saga_id)).scalars())

    return await storage._runner.run(read, "listing sagas")
