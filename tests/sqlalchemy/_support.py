"""Helpers shared by the SQLAlchemy storage tests: databases of their own, cleaned up after."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager

import anyio
import sqlalchemy as sa

from saga_sqlalchemy import SqlAlchemySagaStorage
from saga_sqlalchemy._sqlite_inline import SqliteInline
from saga_sqlalchemy._write_paths import SqliteWritePath


def unique_name(prefix: str = "saga_t") -> str:
    """A schema or table name no other test run uses."""
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


def driver_url(postgres_url: str, driver: str) -> str:
    """``postgres_url`` with ``driver`` (``asyncpg``, ``psycopg``) as its SQLAlchemy driver."""
    rest = postgres_url.split("://", 1)[1]
    return f"postgresql+{driver}://{rest}"


@contextmanager
def postgres_schema(postgres_url: str) -> Iterator[str]:
    """A fresh PostgreSQL schema, dropped with everything in it afterwards."""
    name = unique_name()
    engine = sa.create_engine(driver_url(postgres_url, "psycopg"), poolclass=sa.pool.NullPool)
    try:
        with engine.begin() as connection:
            connection.exec_driver_sql(f'CREATE SCHEMA "{name}"')
        yield name
    finally:
        with engine.begin() as connection:
            connection.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
        engine.dispose()


async def outcomes_of(calls: Sequence[Callable[[], Awaitable[object]]]) -> list[Exception | None]:
    """Run ``calls`` all at once (so that their writes may share batches); return the
    exception each one raised, or None, in their order."""
    outcomes: list[Exception | None] = [None] * len(calls)

    async def one(index: int) -> None:
        try:
            await calls[index]()
        except Exception as exc:
            outcomes[index] = exc

    async with anyio.create_task_group() as tg:
        for index in range(len(calls)):
            tg.start_soon(one, index)
    return outcomes


def sqlite_path(storage: object) -> SqliteWritePath:
    """The write path of a storage on SQLite through the stdlib driver."""
    assert isinstance(storage, SqlAlchemySagaStorage)
    path = storage._path
    assert isinstance(path, SqliteWritePath)
    return path


def inline_of(storage: object) -> SqliteInline | None:
    """The inline connection of a storage on SQLite through the stdlib driver (or None)."""
    return sqlite_path(storage).inline


#: The saga table's columns of durable waits (added with the signals table and the waiting
#: index).
WAIT_COLUMNS = ("wake_at", "waiting_for", "deadline_at", "cancel_reason")


def without_parent_id(saga: str) -> list[str]:
    """The statements that turn the tables of this version into those of the version before
    child sagas, rows kept: no ``parent_id`` column. ``saga`` is the saga table's SQL name."""
    return [f"ALTER TABLE {saga} DROP COLUMN parent_id"]


def without_durable_waits(saga: str, name: Callable[[str], str]) -> list[str]:
    """The statements that turn the tables of this version into those of the version before
    durable waits, rows kept: no signals table, no waiting index, none of
    :data:`WAIT_COLUMNS`, and (that version came before child sagas too) no ``parent_id``.
    ``saga`` is the saga table's SQL name, ``name`` qualifies another object's name as the
    saga table's is."""
    return [
        f"DROP TABLE {name('saga_signals')}",
        f"DROP INDEX {name('ix_saga_waiting')}",
        *(f"ALTER TABLE {saga} DROP COLUMN {column}" for column in WAIT_COLUMNS),
        *without_parent_id(saga),
    ]
