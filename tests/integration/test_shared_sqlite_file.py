"""Several processes opening one fresh SQLite file at once (as the crash tests' children first
did): the storage creates its tables on first use, but the check-then-create is not safe
against another process creating them in between; the loser's first call fails with
StorageUnavailableError ("table ... already exists") instead of using the tables.

Reproduced deterministically in one process: just before this storage's CREATE TABLE, another
connection (standing in for the other process) creates the tables.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from saga_core import open_storage
from saga_sqlalchemy import SqlAlchemySagaStorage, define_tables

pytestmark = pytest.mark.anyio

NAMES = {"table": "shared_saga"}


async def test_first_use_while_another_process_creates_the_tables(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    storage = open_storage(url, **NAMES)
    assert isinstance(storage, SqlAlchemySagaStorage)
    fired: list[bool] = []

    def other_process_creates_them_first(target: Any, connection: Any, **kw: Any) -> None:
        if not fired:
            fired.append(True)
            other = sa.create_engine(url)
            define_tables(sa.MetaData(), **NAMES).metadata.create_all(other)
            other.dispose()

    saga_table = storage.table
    sa.event.listen(saga_table, "before_create", other_process_creates_them_first)
    async with storage:
        assert await storage.list_sagas(limit=1) == []
    assert fired
