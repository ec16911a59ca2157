"""The storage's reads: a saga by id, its journal, lists, and the schema check.

Each is a function of a synchronous connection (a runner calls it, see ``_runner``) and
writes nothing. A row that cannot be decoded fails a read by id with
``StorageCorruptedError``; lists skip it (logged by saga-core's ``read_records``).
"""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from saga_core import SagaRecord, SagaStatus
from saga_core.storage import JournalEntry, read_records

from ._core import Commit, CoreSql
from ._journal import decode_journal
from ._outcomes import not_found
from ._rows import record_from_row
from ._schema import recoverable_terms, schema_probes


class Reads:
    """The read statements of one storage."""

    def __init__(self, sql: CoreSql) -> None:
        self._sql = sql
        c = sql.tables.saga.c
        self._history = sa.select(c.journal).where(c.saga_id == sa.bindparam("b_id"))
        #: No live lease: none was taken, or it has expired.
        self.free = sa.or_(
            c.lease_owner.is_(None), c.lease_expires_at.is_(None), c.lease_expires_at <= sql.now
        )
        #: Sagas recovery may take: unfinished, not parked, and with no live lease.
        self.recoverable = sa.and_(recoverable_terms(sql.tables.saga), self.free)
        #: The order recovery takes them in: oldest update first.
        self.recoverable_order = (c.updated_at, c.created_at, c.saga_id)
        #: Sagas whose lease names ``b_owner``, live or expired. Only an unfinished saga that
        #: is not parked holds a lease (every write that finishes, releases or parks a saga
        #: clears it), so the recovery index's terms change nothing in the result; they let
        #: the database read that index of the active sagas instead of the whole table,
        #: finished sagas included (``lease_owner`` has no index of its own: see the README).
        self.leased_to = sa.and_(
            c.lease_owner == sa.bindparam("b_owner"), recoverable_terms(sql.tables.saga)
        )

    def load(self, connection: Connection, commit: Commit, saga_id: UUID) -> SagaRecord:
        row = connection.execute(self._sql.load, {"b_id": saga_id}).first()
        if row is None:
            raise not_found(saga_id)
        return record_from_row(row)

    def history(self, connection: Connection, commit: Commit, saga_id: UUID) -> list[JournalEntry]:
        row = connection.execute(self._history, {"b_id": saga_id}).first()
        if row is None:
            raise not_found(saga_id)
        return decode_journal(saga_id, row[0])

    def list_recoverable(
        self, connection: Connection, commit: Commit, limit: int
    ) -> list[SagaRecord]:
        if limit <= 0:
            return []
        query = (
            sa.select(*self._sql.record_columns)
            .where(self.recoverable)
            .order_by(*self.recoverable_order)
            .limit(limit)
        )
        result = connection.execute(query, self._sql.clock(None))
        return read_records(result, record_from_row).records

    def list_sagas(
        self,
        connection: Connection,
        commit: Commit,
        status: SagaStatus | None,
        saga_name: str | None,
        parked: bool | None,
        updated_before: datetime | None,
        lease_owner: str | None,
        limit: int,
    ) -> list[SagaRecord]:
        """Up to ``limit`` sagas matching every filter given, oldest update first."""
        if limit <= 0:
            return []
        c = self._sql.tables.saga.c
        query = sa.select(*self._sql.record_columns)
        if status is not None:
            query = query.where(c.status == status.value)
        if saga_name is not None:
            query = query.where(c.saga_name == saga_name)
        if parked is not None:
            query = query.where(c.parked == (sa.true() if parked else sa.false()))
        if updated_before is not None:
            query = query.where(c.updated_at < updated_before)
        if lease_owner is not None:
            query = query.where(self.leased_to)
        query = query.order_by(*self.recoverable_order).limit(limit)
        params = {} if lease_owner is None else {"b_owner": lease_owner}
        return read_records(connection.execute(query, params), record_from_row).records

    def check_schema(self, connection: Connection, commit: Commit) -> None:
        """Raise the driver's error when the table or one of its columns is missing."""
        for probe in schema_probes(self._sql.tables):
            connection.execute(probe).all()
