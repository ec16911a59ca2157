"""The saga definition's version: stored by every write path's create, single or batched,
kept by checkpoints, declared in the Alembic metadata, and checked at create."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

import saga_sqlalchemy
from saga_core import SagaUsageError, open_storage
from saga_core.storage import Checkpoint, NewSaga
from saga_core.testing import make_checkpoint, make_new_saga
from saga_sqlalchemy import SqlAlchemySagaStorage
from saga_sqlalchemy._split import write_splitting

from ._support import driver_url, postgres_schema

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["sqlite-inline", "sqlite-threads", "aiosqlite", "asyncpg", "psycopg"])
async def storage(
    request: pytest.FixtureRequest, tmp_path: Path, anyio_backend: str
) -> AsyncIterator[SqlAlchemySagaStorage]:
    """A storage on each write path."""
    kind = str(request.param)
    if kind in ("aiosqlite", "asyncpg") and anyio_backend != "asyncio":
        pytest.skip(f"{kind} runs on asyncio only")
    if kind.startswith("sqlite"):
        inline = kind == "sqlite-inline"
        opened = open_storage(f"sqlite:///{tmp_path}/v.db", inline=inline)
        assert isinstance(opened, SqlAlchemySagaStorage)
        async with opened:
            yield opened
        return
    if kind == "aiosqlite":
        engine: Any = create_async_engine(f"sqlite+aiosqlite:///{tmp_path}/v.db")
        async with SqlAlchemySagaStorage(engine, dispose_engine=True) as core:
            await core.create_schema()
            yield core
        return
    postgres_url = request.getfixturevalue("postgres_url")
    url = driver_url(postgres_url, kind)
    with postgres_schema(postgres_url) as schema:
        engine = (
            create_async_engine(url, pool_size=2)
            if kind == "asyncpg"
            else sa.create_engine(url, pool_size=2)
        )
        async with SqlAlchemySagaStorage(engine, schema=schema, dispose_engine=True) as pg:
            await pg.create_schema()
            yield pg


async def test_a_batch_of_creates_stores_each_sagas_version(
    storage: SqlAlchemySagaStorage,
) -> None:
    sagas = [make_new_saga(saga_version=version) for version in (1, 2, 7)]
    await storage.create(sagas[0])
    # One transaction, as group commit sends overlapping writes.
    batch: list[NewSaga | Checkpoint] = [make_checkpoint(sagas[0].saga_id, 1), *sagas[1:]]
    assert await write_splitting(storage._path, batch) == [None, None, None]
    assert [(await storage.load(s.saga_id)).saga_version for s in sagas] == [1, 2, 7]
    # A batch of checkpoints keeps them.
    later: list[NewSaga | Checkpoint] = [
        make_checkpoint(s.saga_id, version) for s, version in zip(sagas, (2, 1, 1), strict=True)
    ]
    assert await write_splitting(storage._path, later) == [None, None, None]
    listed = {record.saga_id: record.saga_version for record in await storage.list_sagas()}
    assert [listed[s.saga_id] for s in sagas] == [1, 2, 7]


@pytest.mark.parametrize("version", [0, -1, True, 2.0, "2"])
async def test_a_saga_version_that_is_not_a_positive_int_is_refused(
    tmp_path: Path, version: Any
) -> None:
    async with open_storage(f"sqlite:///{tmp_path}/v.db") as opened:
        new = make_new_saga(saga_version=version)
        with pytest.raises(SagaUsageError, match="saga_version must be an int >= 1"):
            await opened.create(new)
        assert await opened.list_sagas() == []


def test_the_alembic_metadata_has_the_column() -> None:
    for metadata in (saga_sqlalchemy.metadata, saga_sqlalchemy.Base.metadata):
        column = metadata.tables["saga"].c.saga_version
        assert isinstance(column.type, sa.Integer)
        assert column.nullable is False
        assert column.server_default is not None
        assert str(getattr(column.server_default, "arg", "")) == "1"
    custom = saga_sqlalchemy.define_tables(sa.MetaData(), table="orders_saga", schema="s")
    assert "saga_version" in custom.saga.c
