"""Bad input gets a clear error and loses nothing."""

from __future__ import annotations

import contextlib
import importlib.util
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from saga_core import (
    SagaNotFoundError,
    SagaUsageError,
    StorageCorruptedError,
    StorageNotFoundError,
    StorageSchemaError,
    StorageUnavailableError,
    open_storage,
    recover_saga,
)
from saga_core.testing import make_checkpoint, make_entry, make_new_saga
from saga_sqlalchemy import SqlAlchemySagaStorage, open_sqlalchemy_storage

from ._sagas import ThreeStepSaga
from ._support import driver_url, postgres_schema

pytestmark = pytest.mark.anyio

# Nothing listens on port 1 of this machine: connections are refused at once.
CLOSED_PORT_URL = "postgresql+{driver}://postgres@127.0.0.1:1/test"


@pytest.mark.parametrize(
    "names",
    [
        {"table": "saga; DROP TABLE x"},
        {"table": "1saga"},
        {"schema": "a.b"},
        {"table": "x" * 64},
        {"table": ""},
    ],
)
def test_invalid_table_or_schema_name_is_refused(names: dict[str, Any], tmp_path: Path) -> None:
    engine = sa.create_engine(f"sqlite:///{tmp_path}/x.db")
    with pytest.raises(SagaUsageError, match=r"identifier"):
        SqlAlchemySagaStorage(engine, **names)
    with pytest.raises(SagaUsageError):
        open_storage(f"sqlite:///{tmp_path}/y.db", **names)


def test_unknown_option_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SagaUsageError, match="unknown SQL storage option"):
        open_storage(f"sqlite:///{tmp_path}/x.db", tabel="oops")


async def test_missing_tables_say_to_create_or_migrate(tmp_path: Path) -> None:
    engine = sa.create_engine(f"sqlite:///{tmp_path}/empty.db")
    async with SqlAlchemySagaStorage(engine, dispose_engine=True) as storage:
        with pytest.raises(StorageSchemaError, match=r"create_schema.*Alembic") as info:
            await storage.create(make_new_saga())
        assert info.value.__cause__ is not None


async def test_incompatible_tables_are_detected(tmp_path: Path) -> None:
    engine = sa.create_engine(f"sqlite:///{tmp_path}/old.db")
    with engine.begin() as connection:
        connection.exec_driver_sql("CREATE TABLE saga (saga_id TEXT PRIMARY KEY, state TEXT)")
    async with SqlAlchemySagaStorage(engine, dispose_engine=True) as storage:
        with pytest.raises(StorageSchemaError, match="incompatible"):
            await storage.load(make_new_saga().saga_id)


async def test_postgres_missing_tables_say_to_create_or_migrate(postgres_url: str) -> None:
    with postgres_schema(postgres_url) as schema:
        engine = sa.create_engine(driver_url(postgres_url, "psycopg"))
        async with SqlAlchemySagaStorage(engine, schema=schema, dispose_engine=True) as storage:
            with pytest.raises(StorageSchemaError, match="create_schema"):
                await storage.list_recoverable()


async def test_stored_context_that_is_not_json_is_reported_as_corrupted(tmp_path: Path) -> None:
    async with open_storage(f"sqlite:///{tmp_path}/c.db") as storage:
        new = make_new_saga(saga_name=ThreeStepSaga.definition().name)
        await storage.create(new)
        assert isinstance(storage, SqlAlchemySagaStorage)
        saga_table = storage.table
        engine = sa.create_engine(f"sqlite:///{tmp_path}/c.db")
        with engine.begin() as connection:
            connection.execute(sa.update(saga_table).values(context="{not json"))
        engine.dispose()
        with pytest.raises(StorageCorruptedError, match="not valid JSON") as info:
            await storage.load(new.saga_id)
        assert isinstance(info.value.__cause__, ValueError)
        with pytest.raises(StorageCorruptedError):
            await recover_saga(saga=ThreeStepSaga, saga_id=new.saga_id, storage=storage)


@pytest.mark.parametrize(
    "journal",
    [
        '["s", "act", "started", 1, 0, null]',  # no line end: a partial event
        '{"not": "an event"}\n',
        '["s", "sideways", "started", 1, 0, null]\n',
        '["s", "act", "started", "1", 0, null]\n',
        "not json\n",
        "[" * 100_000 + "]" * 100_000 + "\n",  # nested deeper than a parser recurses
    ],
    ids=["partial", "object", "direction", "attempt", "not-json", "deep"],
)
async def test_a_journal_that_is_not_ours_is_reported_as_corrupted(
    journal: str, tmp_path: Path
) -> None:
    async with open_storage(f"sqlite:///{tmp_path}/j.db") as storage:
        assert isinstance(storage, SqlAlchemySagaStorage)
        new = make_new_saga()
        await storage.create(new)
        engine = sa.create_engine(f"sqlite:///{tmp_path}/j.db")
        with engine.begin() as connection:
            connection.execute(sa.update(storage.table).values(journal=journal))
        engine.dispose()
        with pytest.raises(StorageCorruptedError, match="journal") as info:
            await storage.history(new.saga_id)
        assert info.value.saga_id == new.saga_id
        # The state itself still loads: only the history is unreadable.
        assert (await storage.load(new.saga_id)).saga_id == new.saga_id


@pytest.mark.parametrize("path", ["sqlite-inline", "sqlite-threads", "psycopg", "asyncpg"])
async def test_a_naive_journal_time_is_refused_and_nothing_written(
    path: str, anyio_backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Each write path (SQLite on the loop or in threads, PostgreSQL through a sync engine or
    asyncpg's connection) refuses it as a usage error, not as an unknown outcome."""
    if path == "asyncpg" and anyio_backend != "asyncio":
        pytest.skip("asyncpg runs on asyncio only")
    naive = make_entry(at=datetime(2026, 1, 1, 12, 0))
    with contextlib.ExitStack() as stack:
        if path.startswith("sqlite"):
            storage = open_storage(f"sqlite:///{tmp_path}/n.db", inline=path == "sqlite-inline")
        else:
            postgres_url = request.getfixturevalue("postgres_url")
            schema = stack.enter_context(postgres_schema(postgres_url))
            url = driver_url(postgres_url, path)
            engine = create_async_engine(url) if path == "asyncpg" else sa.create_engine(url)
            storage = SqlAlchemySagaStorage(engine, schema=schema, dispose_engine=True)
            await storage.create_schema()
        async with storage:
            refused = make_new_saga(journal=[naive])
            with pytest.raises(SagaUsageError, match="naive 'at'"):
                await storage.create(refused)
            with pytest.raises(SagaNotFoundError):
                await storage.load(refused.saga_id)
            new = make_new_saga()
            await storage.create(new)
            with pytest.raises(SagaUsageError, match="naive 'at'"):
                await storage.checkpoint(make_checkpoint(new.saga_id, 1, journal=[naive]))
            assert (await storage.load(new.saga_id)).version == 1
            assert len(await storage.history(new.saga_id)) == len(new.journal)


@pytest.mark.parametrize("driver", ["asyncpg", "psycopg"])
async def test_unreachable_database_at_start(driver: str, anyio_backend: str) -> None:
    if driver == "asyncpg" and anyio_backend != "asyncio":
        pytest.skip("asyncpg runs on asyncio only")
    async with open_storage(CLOSED_PORT_URL.format(driver=driver)) as storage:
        with pytest.raises(StorageUnavailableError) as info:
            await storage.create(make_new_saga())
    assert info.value.__cause__ is not None


def test_unknown_driver_names_what_to_install() -> None:
    with pytest.raises(StorageNotFoundError, match=r"nosuchdriver.*supported"):
        open_sqlalchemy_storage("postgresql+nosuchdriver://postgres@127.0.0.1/test")
    with pytest.raises(StorageNotFoundError, match=r"saga-core\[postgres\]"):
        open_storage("postgresql+nosuchdriver://postgres@127.0.0.1/test")


def test_missing_driver_names_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec

    def find_spec(name: str, *args: Any) -> Any:
        return None if name in ("asyncpg", "aiosqlite") else real(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    with pytest.raises(StorageNotFoundError, match=r"asyncpg.*saga-core\[postgres\]"):
        open_storage("postgresql+asyncpg://postgres@127.0.0.1/test")
    with pytest.raises(StorageNotFoundError, match="aiosqlite"):
        open_storage("sqlite+aiosqlite:///x.db")


def test_url_of_another_database_is_refused() -> None:
    with pytest.raises(SagaUsageError, match="sqlite and postgresql"):
        open_sqlalchemy_storage("mysql+pymysql://u@127.0.0.1/db")


async def test_async_engine_on_trio_says_to_use_a_sync_engine(
    tmp_path: Path, anyio_backend: str
) -> None:
    if anyio_backend != "trio":
        pytest.skip("the refusal is for trio")
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path}/t.db")
    async with SqlAlchemySagaStorage(engine) as storage:
        with pytest.raises(SagaUsageError, match="synchronous Engine"):
            await storage.create_schema()


@pytest.mark.parametrize("driver", ["asyncpg", "psycopg"])
@pytest.mark.parametrize("unknown", ["role", "database"])
async def test_an_unknown_role_or_database_is_unavailable_not_a_missing_schema(
    driver: str, unknown: str, postgres_url: str, anyio_backend: str
) -> None:
    """The server refuses the connection: that is not a schema to create, and the message is
    the server's."""
    if driver == "asyncpg" and anyio_backend != "asyncio":
        pytest.skip("asyncpg runs on asyncio only")
    url = sa.make_url(driver_url(postgres_url, driver))
    missing = "saga_no_such_name_19"
    url = url.set(username=missing) if unknown == "role" else url.set(database=missing)
    async with open_storage(url.render_as_string(hide_password=False)) as storage:
        with pytest.raises(StorageUnavailableError) as info:
            await storage.create(make_new_saga())
    assert not isinstance(info.value, StorageSchemaError)
    message = str(info.value)
    assert f'{unknown} "{missing}" does not exist' in message
    assert "create_schema" not in message
    assert info.value.__cause__ is not None
