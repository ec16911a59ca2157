"""The tables a SQL saga storage uses, and the checks that the database holds them.

``saga`` holds one row per saga, its history included: the ``journal`` column holds the saga's
step events as lines of JSON, in write order (see ``_journal``). A checkpoint is then one row
written, not a row and a journal row per event in a second table: one b-tree page on SQLite
(where each page costs a frame in the WAL), one tuple on PostgreSQL (no index entries to
insert, and the update can stay on its page). ``<table>_signals`` holds the signals delivered
to each saga, pending or consumed (a consumed one stays, so a retried delivery of its id is
still known as a duplicate).

Timestamps are ``TIMESTAMP WITH TIME ZONE`` on PostgreSQL and integer microseconds since the
epoch (UTC) elsewhere: SQLite has no timestamp type, and integers compare and round-trip
exactly to the microsecond.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase

from saga_core import SagaUsageError

#: The default table name.
DEFAULT_TABLE = "saga"

# Portable, unquoted-safe identifiers: a letter or underscore, then letters, digits and
# underscores, at most 63 characters (PostgreSQL's limit; index names append a suffix and
# are shortened by us, see index_name).
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MICROSECOND = timedelta(microseconds=1)


def check_identifier(value: object, what: str) -> str:
    """Return ``value`` if it is a valid table or schema name, else raise SagaUsageError."""
    if not isinstance(value, str) or _IDENTIFIER.fullmatch(value) is None:
        raise SagaUsageError(
            f"{what} must be an identifier (a letter or '_' then letters, digits or '_', at most "
            f"63 characters), got {value!r}"
        )
    return value


def to_micros(value: datetime) -> int:
    """Microseconds since the epoch of an aware datetime (exact)."""
    return (value - _EPOCH) // _MICROSECOND


def from_micros(value: int) -> datetime:
    """The aware UTC datetime of microseconds since the epoch (exact)."""
    return _EPOCH + timedelta(microseconds=value)


class UtcTimestamp(sa.types.TypeDecorator[datetime]):
    """An aware UTC datetime: ``timestamptz`` on PostgreSQL, integer microseconds elsewhere."""

    impl = sa.BigInteger
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> sa.types.TypeEngine[Any]:
        if dialect.name == "postgresql":
            return dialect.type_descriptor(postgresql.TIMESTAMP(timezone=True))
        return dialect.type_descriptor(sa.BigInteger())

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> Any:
        if value is None or dialect.name == "postgresql":
            return value
        return to_micros(value)

    def process_result_value(self, value: Any, dialect: Dialect) -> Any:
        """The aware UTC datetime of a stored value; a stored value that is not a timestamp
        (a hand edit on SQLite, which keeps any value in any column) is returned as it is, so
        that the reader of its row reports that row alone: a fetch that raised would fail
        every row of the result."""
        if value is None:
            return None
        if isinstance(value, datetime):
            return value.astimezone(timezone.utc)
        if type(value) is not int:
            return value
        try:
            return from_micros(value)
        except OverflowError:
            return value


def not_parked(saga: sa.Table) -> sa.ColumnElement[bool]:
    """``parked = false``, as the recovery index and scans write it."""
    return saga.c.parked == sa.false()


#: The statuses recovery acts on, as stored.
RECOVERABLE_STATUSES = ("running", "compensating", "failed")


def recoverable_terms(saga: sa.Table) -> sa.ColumnElement[bool]:
    """``status IN ('running', 'compensating', 'failed') AND parked = false``: the predicate
    of the recovery index and of the queries that read it, the same text in both.

    The statuses are written into the statement, not sent as parameters: a planner uses a
    partial index only where the query's own text shows that the index holds every row it
    wants, and ``status IN (?, ?, ?)`` does not (SQLite then scanned the whole table, finished
    sagas included; PostgreSQL plans with the values at hand, but a plan it made once for any
    values could not use the index either).
    """
    statuses = [sa.literal_column(f"'{value}'", sa.String()) for value in RECOVERABLE_STATUSES]
    return sa.and_(saga.c.status.in_(statuses), not_parked(saga))


#: The stored status of a WAITING saga.
WAITING = "waiting"


def waiting_terms(saga: sa.Table) -> sa.ColumnElement[bool]:
    """``status = 'waiting' AND parked = false``: the predicate of the waiting index and of
    the queries that read it (the status written into the statement, as in
    :func:`recoverable_terms`)."""
    waiting = sa.literal_column(f"'{WAITING}'", sa.String())
    return sa.and_(saga.c.status == waiting, not_parked(saga))


class SagaTables(NamedTuple):
    """The tables of one storage, in its :class:`sqlalchemy.MetaData`."""

    metadata: sa.MetaData
    saga: sa.Table
    signals: sa.Table


#: The characters of a text column that MySQL and MariaDB index (4 bytes each in utf8mb4,
#: within the 767 bytes of an index key in their oldest row format).
_MYSQL_KEY_CHARACTERS = 191

#: The longest identifier PostgreSQL keeps whole (it cuts longer ones to this length).
MAX_IDENTIFIER = 63


def index_name(table: str, suffix: str) -> str:
    """The name of the table's index ``suffix``: ``ix_<table>_<suffix>`` when that fits in
    :data:`MAX_IDENTIFIER` characters (the name every existing table's index has).

    A longer one keeps the table name's beginning and ends with 16 hex digits of a hash of
    the whole table name: two tables whose names share their first characters still get
    different index names (cut to the same length, they collided: PostgreSQL then refused the
    second table's index, SQLite skipped it). A short name always ends with ``_<suffix>``, a
    long one with hex digits, which ``suffix`` is not made of: they never meet either.
    """
    name = f"ix_{table}_{suffix}"
    if len(name) <= MAX_IDENTIFIER:
        return name
    digest = hashlib.sha256(table.encode("utf-8")).hexdigest()[:16]
    keep = MAX_IDENTIFIER - len(f"ix___{suffix}_{digest}") + 1
    return f"ix_{table[:keep]}_{suffix}_{digest}"


def define_tables(
    metadata: sa.MetaData, *, table: str = DEFAULT_TABLE, schema: str | None = None
) -> SagaTables:
    """Add the saga table to ``metadata`` under the given (validated) name and schema.

    Raises:
        SagaUsageError: a name is not an identifier.
    """
    check_identifier(table, "table")
    if schema is not None:
        check_identifier(schema, "schema")
    saga = sa.Table(
        table,
        metadata,
        sa.Column("saga_id", sa.Uuid(), primary_key=True),
        sa.Column("saga_name", sa.Text(), nullable=False),
        # The saga definition's version the saga started on (recovery runs it on that one).
        # A server default, so a migration can add it to a table that has rows: they read as 1.
        sa.Column("saga_version", sa.Integer(), nullable=False, server_default=sa.text("1")),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("cursor", sa.Integer(), nullable=False),
        sa.Column("applied", sa.Text(), nullable=False),
        sa.Column("context", sa.Text(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", UtcTimestamp(), nullable=False),
        sa.Column("updated_at", UtcTimestamp(), nullable=False),
        sa.Column("lease_owner", sa.Text(), nullable=True),
        sa.Column("lease_expires_at", UtcTimestamp(), nullable=True),
        # Id of the step at the cursor (None past the last step); recovery refuses a saga
        # whose step at that position changed. Nullable, so a migration can add it as is.
        sa.Column("next_step", sa.Text(), nullable=True),
        # Recovery bookkeeping. Server defaults, so the write path never names them (a new
        # saga gets 0 and false) and a migration can add them to a table that has rows.
        sa.Column("attempts", sa.Integer(), nullable=False, server_default=sa.text("0")),
        sa.Column("parked", sa.Boolean(), nullable=False, server_default=sa.false()),
        # The step events, one line of JSON each, appended by every write (see _journal).
        sa.Column("journal", sa.Text(), nullable=False, server_default=""),
        # Durable waits. Nullable, so a migration adds them as they are: a saga stored before
        # reads as one that never waited, has no deadline and was never cancelled.
        # WAITING only: when the saga is due (NULL: on a signal only), and the signal it
        # waits for.
        sa.Column("wake_at", UtcTimestamp(), nullable=True),
        sa.Column("waiting_for", sa.Text(), nullable=True),
        sa.Column("deadline_at", UtcTimestamp(), nullable=True),
        # Set once by request_cancel; every checkpoint's WHERE reads it (see _rules).
        sa.Column("cancel_reason", sa.Text(), nullable=True),
        # The saga that started this one as a child (a SubSaga node), stored by its create and
        # never changed. Nullable, so a migration adds it as it is: a saga stored before reads
        # as one without a parent. Not a foreign key: a create does not lock the parent's row.
        sa.Column("parent_id", sa.Uuid(), nullable=True),
        schema=schema,
    )
    # Recovery scans (list_recoverable, claim_recoverable) and list_sagas by lease owner
    # read this index: the sagas that are not finished and not parked (finished ones pile
    # up, parked ones have no lease; both would otherwise be scanned and skipped by every
    # claim). The queries say the same terms (:func:`recoverable_terms`), so that the
    # planners (PostgreSQL's and SQLite's) may use it.
    # Only ``status`` is indexed, and it changes only when a saga finishes or starts to
    # compensate: a checkpoint that keeps the status (most of them) changes no indexed column,
    # so PostgreSQL updates the row in place (a HOT update, no index entry written) and SQLite
    # leaves the index pages alone.
    sa.Index(
        index_name(table, "active"),
        saga.c.status,
        postgresql_where=recoverable_terms(saga),
        sqlite_where=recoverable_terms(saga),
    )
    # The WAITING sagas, by lease owner then wake time: a claim of due waits reads the range
    # ``lease_owner IS NULL AND wake_at <= now`` (the unleased ones, which is nearly all of
    # them) in wake order and stops at its limit, however many sagas wait for later; the few
    # leased ones (claimed, not yet resumed) are a range of their own, which finds those whose
    # lease expired and the sagas of one owner (list_sagas(lease_owner=...)). A checkpoint of
    # a saga that does not wait keeps ``wake_at`` NULL and its lease owner: it changes no
    # column of this index (PostgreSQL's update stays HOT) and, outside its predicate, SQLite
    # writes none of its pages.
    sa.Index(
        index_name(table, "waiting"),
        saga.c.lease_owner,
        saga.c.wake_at,
        postgresql_where=waiting_terms(saga),
        sqlite_where=waiting_terms(saga),
        # MySQL and MariaDB index a text column by a prefix only (no partial indexes there).
        mysql_length={"lease_owner": _MYSQL_KEY_CHARACTERS},
        mariadb_length={"lease_owner": _MYSQL_KEY_CHARACTERS},
    )
    signals = sa.Table(
        signals_table_name(table),
        metadata,
        sa.Column(
            "saga_id",
            sa.Uuid(),
            sa.ForeignKey(saga.c.saga_id, ondelete="CASCADE"),
            primary_key=True,
        ),
        # MySQL and MariaDB cannot make a key of a TEXT column: a bounded one there.
        sa.Column(
            "signal_id",
            sa.Text().with_variant(sa.String(_MYSQL_KEY_CHARACTERS), "mysql", "mariadb"),
            primary_key=True,
        ),
        # Delivery order within the saga (1, 2, ...): timestamps of one instant would tie.
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("delivered_at", UtcTimestamp(), nullable=False),
        sa.Column("consumed", sa.Boolean(), nullable=False, server_default=sa.false()),
        schema=schema,
    )
    return SagaTables(metadata, saga, signals)


def signals_table_name(table: str) -> str:
    """The name of the signals table of saga table ``table``: ``<table>_signals``, or, when
    that would pass :data:`MAX_IDENTIFIER` characters, shortened as index names are."""
    name = f"{table}_signals"
    if len(name) <= MAX_IDENTIFIER:
        return name
    digest = hashlib.sha256(table.encode("utf-8")).hexdigest()[:16]
    keep = MAX_IDENTIFIER - len(f"__signals_{digest}") + 1
    return f"{table[:keep]}_signals_{digest}"


def work_channel(tables: SagaTables) -> str:
    """The PostgreSQL ``NOTIFY`` channel on which the storage of ``tables`` says that work
    became due: ``<schema>.<table>:work`` (``<table>:work`` without a schema), so storages
    of different tables never wake each other, or, when that would pass
    :data:`MAX_IDENTIFIER` bytes (PostgreSQL would cut it), ``saga_work_`` and a digest."""
    saga = tables.saga
    qualified = saga.name if saga.schema is None else f"{saga.schema}.{saga.name}"
    name = f"{qualified}:work"
    if len(name.encode("utf-8")) <= MAX_IDENTIFIER:
        return name
    return f"saga_work_{hashlib.sha256(qualified.encode('utf-8')).hexdigest()[:32]}"


#: The default tables' metadata: add it to Alembic's ``target_metadata``.
metadata = sa.MetaData()
DEFAULT_TABLES = define_tables(metadata)


class Base(DeclarativeBase):
    """Declarative base whose ``metadata`` holds the default saga table (for Alembic)."""

    metadata = metadata


def schema_probes(tables: SagaTables) -> list[sa.Select[Any]]:
    """Queries that read every column of the tables and return no row: they fail exactly
    when a table or a column is missing."""
    return [
        sa.select(*table.columns).where(sa.false()).limit(1)
        for table in (tables.saga, tables.signals)
    ]


def create_tables(
    tables: SagaTables, connection: sa.Connection, commit: Callable[[], None], schema: str | None
) -> None:
    """Create the tables (and their PostgreSQL schema) if missing, then check that existing
    ones have every column; commit.

    Raises:
        sqlalchemy.exc.DBAPIError: the driver's error (a missing column among them).
    """
    if (
        schema is not None
        and connection.dialect.name == "postgresql"
        and not connection.dialect.has_schema(connection, schema)
    ):
        connection.execute(sa.schema.CreateSchema(schema, if_not_exists=True))
    saga = tables.saga
    if connection.dialect.has_table(connection, saga.name, schema=saga.schema):
        # An existing saga table of an older version is refused before anything is created
        # next to it (SQLite runs DDL outside the transaction: a signals table made here
        # would stay, half a migration).
        connection.execute(schema_probes(tables)[0]).all()
    try:
        tables.metadata.create_all(connection)
    except sa.exc.DBAPIError as exc:
        # Another process created the table between create_all's check and its CREATE
        # (several processes opening a fresh database at once): use them.
        if "already exists" not in str(exc.orig).lower():
            raise
        connection.rollback()
    # create_all skips a table that exists: check that one has every column.
    for probe in schema_probes(tables):
        connection.execute(probe).all()
    commit()


def drop_tables(tables: SagaTables, connection: sa.Connection, commit: Callable[[], None]) -> None:
    """Drop the tables if they exist; commit."""
    tables.metadata.drop_all(connection)
    commit()
