"""Tables of the version whose journal was a table of its own (``saga_journal``, a row per
event): refused until migrated; the README's migration moves every event into the ``journal``
column, in order, and the history reads back exactly as it was written."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from uuid import UUID

import pytest
import sqlalchemy as sa

from saga_core import StepDirection, StepEvent, StorageSchemaError
from saga_core.storage import JournalEntry
from saga_core.testing import DEFAULT_OWNER, make_checkpoint, make_new_saga
from saga_sqlalchemy import SqlAlchemySagaStorage

from ._readme import apply_upgrade
from ._support import driver_url, postgres_schema, without_durable_waits

pytestmark = pytest.mark.anyio

#: The journal table as the earlier version created it (timestamps as the saga table's).
OLD_JOURNAL = """
CREATE TABLE {journal} (
    saga_id {uuid} NOT NULL, version INTEGER NOT NULL, position INTEGER NOT NULL,
    step_id TEXT NOT NULL, direction VARCHAR(16) NOT NULL, event VARCHAR(16) NOT NULL,
    attempt INTEGER NOT NULL, at {timestamp} NOT NULL, error TEXT,
    PRIMARY KEY (saga_id, version, position)
)
"""

_BASE = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)

#: Events of every kind, with text that needs escaping, microseconds and a failure.
ENTRIES = [
    JournalEntry("steps.Reserve", StepDirection.ACT, StepEvent.STARTED, 1, _BASE),
    JournalEntry(
        "steps.Reserve",
        StepDirection.ACT,
        StepEvent.FAILED,
        1,
        _BASE + timedelta(microseconds=123_457),
        'TimeoutError: "slow"\nline two é',
    ),
    JournalEntry("steps.Reserve", StepDirection.ACT, StepEvent.STARTED, 2, _BASE + timedelta(1)),
    JournalEntry("steps.Reserve", StepDirection.ACT, StepEvent.COMPLETED, 2, _BASE + timedelta(2)),
    JournalEntry(
        "steps.Pay", StepDirection.COMPENSATE, StepEvent.COMPLETED, 1, _BASE + timedelta(3)
    ),
]


@dataclass
class Database:
    url: str
    schema: str | None

    @property
    def dialect(self) -> str:
        return sa.make_url(self.url).get_backend_name()

    def name(self, table: str) -> str:
        return table if self.schema is None else f'"{self.schema}".{table}'

    def run(self, *statements: str) -> None:
        engine = sa.create_engine(self.url, poolclass=sa.pool.NullPool)
        try:
            with engine.begin() as connection:
                for statement in statements:
                    connection.exec_driver_sql(statement)
        finally:
            engine.dispose()

    def storage(self) -> SqlAlchemySagaStorage:
        engine = sa.create_engine(self.url, poolclass=sa.pool.NullPool)
        return SqlAlchemySagaStorage(engine, schema=self.schema, dispose_engine=True)


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    if request.param == "sqlite":
        yield Database(f"sqlite:///{tmp_path}/old.db", None)
        return
    postgres_url = request.getfixturevalue("postgres_url")
    with postgres_schema(postgres_url) as schema:
        yield Database(driver_url(postgres_url, "psycopg"), schema)


async def _old_layout(database: Database) -> tuple[UUID, UUID]:
    """Two sagas stored the earlier way: one with ENTRIES in ``saga_journal`` (written by
    two checkpoints), one without any; returns their ids."""
    async with database.storage() as storage:
        await storage.create_schema()
        with_events, without = make_new_saga(), make_new_saga()
        await storage.create(with_events)
        await storage.create(without)
        await storage.checkpoint(make_checkpoint(with_events.saga_id, 1, cursor=1))
        await storage.checkpoint(make_checkpoint(with_events.saga_id, 2, cursor=1))
    postgres = database.dialect == "postgresql"
    journal = database.name("saga_journal")
    rows = []
    for index, entry in enumerate(ENTRIES):
        version, position = (2, index) if index < 2 else (3, index - 2)
        micros = (entry.at - datetime(1970, 1, 1, tzinfo=timezone.utc)) // timedelta(microseconds=1)
        rows.append(
            {
                "saga_id": with_events.saga_id if postgres else with_events.saga_id.hex,
                "version": version,
                "position": position,
                "step_id": entry.step_id,
                "direction": entry.direction.value,
                "event": entry.event.value,
                "attempt": entry.attempt,
                "at": entry.at if postgres else micros,
                "error": entry.error,
            }
        )
    database.run(
        *without_durable_waits(database.name("saga"), database.name),
        f"ALTER TABLE {database.name('saga')} DROP COLUMN journal",
        OLD_JOURNAL.format(
            journal=journal,
            uuid="uuid" if postgres else "CHAR(32)",
            timestamp="TIMESTAMP WITH TIME ZONE" if postgres else "BIGINT",
        ),
    )
    engine = sa.create_engine(database.url, poolclass=sa.pool.NullPool)
    try:
        with engine.begin() as connection:
            columns = ", ".join(rows[0])
            values = ", ".join(f":{name}" for name in rows[0])
            connection.execute(
                sa.text(f"INSERT INTO {journal} ({columns}) VALUES ({values})"), rows
            )
    finally:
        engine.dispose()
    return with_events.saga_id, without.saga_id


async def test_the_old_layout_is_refused_until_migrated(database: Database) -> None:
    with_events, _ = await _old_layout(database)
    async with database.storage() as storage:
        with pytest.raises(StorageSchemaError, match="journal"):
            await storage.history(with_events)


async def test_the_migration_keeps_every_event_in_order(database: Database) -> None:
    with_events, without = await _old_layout(database)
    apply_upgrade(database.url, database.schema)
    async with database.storage() as storage:
        await storage.check_schema()
        assert await storage.history(with_events) == ENTRIES
        assert await storage.history(without) == []
        # New writes append after the migrated events.
        await storage.checkpoint(
            make_checkpoint(
                with_events,
                3,
                cursor=2,
                journal=[ENTRIES[0]._replace(step_id="steps.Ship")],
            )
        )
        history = await storage.history(with_events)
        assert history == [*ENTRIES, ENTRIES[0]._replace(step_id="steps.Ship")]


#: The earlier layouts the README's upgrade starts from: the columns each lacked besides
#: ``journal``, and the recovery index it had (``{saga}``: the table; ``{false}``: false as
#: the dialect writes it).
EARLIER = {
    "before-parked": (
        ("attempts", "parked", "next_step"),
        "CREATE INDEX ix_saga_recoverable ON {saga} (status, lease_expires_at)",
    ),
    "before-next-step": (
        ("next_step",),
        "CREATE INDEX ix_saga_recoverable ON {saga} (status, lease_expires_at) "
        "WHERE parked = {false}",
    ),
}


def _index_definition(database: Database, schema: str | None, index: str) -> str:
    """How the database itself describes an index of ``schema``'s saga table (or the signals
    table's definition, on SQLite), with the schema's name taken out."""
    engine = sa.create_engine(database.url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as connection:
            if database.dialect == "sqlite":
                query = f"SELECT sql FROM sqlite_master WHERE name = '{index}'"
            else:
                query = (
                    f"SELECT indexdef FROM pg_indexes WHERE schemaname = '{schema}' "
                    f"AND indexname = '{index}'"
                )
            definition = str(connection.exec_driver_sql(query).scalar_one())
    finally:
        engine.dispose()
    return " ".join(definition.replace(f"{schema}.", "").split())


@pytest.mark.parametrize("earlier", sorted(EARLIER))
async def test_the_readme_upgrade_makes_the_table_of_this_version(
    database: Database, earlier: str
) -> None:
    """From each earlier layout, the README's three steps give the columns, the journal and
    the very recovery index that ``create_schema`` makes."""
    with_events, without = await _old_layout(database)
    lacking, index = EARLIER[earlier]
    saga = database.name("saga")
    false = "false" if database.dialect == "postgresql" else "0"
    database.run(
        f"DROP INDEX {database.name('ix_saga_active')}",
        *(f"ALTER TABLE {saga} DROP COLUMN {column}" for column in lacking),
        index.format(saga=saga, false=false),
    )
    async with database.storage() as storage:
        with pytest.raises(StorageSchemaError):
            await storage.check_schema()

    apply_upgrade(database.url, database.schema)

    async with database.storage() as storage:
        await storage.check_schema()
        assert await storage.history(with_events) == ENTRIES
        record = await storage.claim(without, owner=DEFAULT_OWNER, lease_seconds=60.0)
        assert (record.attempts, record.parked, record.next_step) == (1, False, None)
    engine = sa.create_engine(database.url, poolclass=sa.pool.NullPool)
    try:
        indexes = sa.inspect(engine).get_indexes("saga", schema=database.schema)
    finally:
        engine.dispose()
    assert sorted((i["name"], i["column_names"]) for i in indexes) == [
        ("ix_saga_active", ["status"]),
        ("ix_saga_waiting", ["lease_owner", "wake_at"]),
    ]
    # The same indexes as a table made by this version has.
    names = ("ix_saga_active", "ix_saga_waiting")
    upgraded = [_index_definition(database, database.schema, name) for name in names]
    if database.dialect == "sqlite":
        fresh = Database(database.url.replace("old.db", "fresh.db"), None)
        async with fresh.storage() as storage:
            await storage.create_schema()
        assert upgraded == [_index_definition(fresh, None, name) for name in names]
    else:
        postgres_url = database.url
        with postgres_schema(postgres_url) as schema:
            async with Database(postgres_url, schema).storage() as storage:
                await storage.create_schema()
            assert upgraded == [_index_definition(database, schema, name) for name in names]
