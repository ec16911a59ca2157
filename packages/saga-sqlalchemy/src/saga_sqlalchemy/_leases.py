"""The storage's writes of leases and the dead-letter state: claims, renewals, parking.

Each is a function of a synchronous connection (a runner calls it, see ``_runner``) and one
transaction. A claim bumps the saga's version (the fence every later write of a former owner
fails on), counts the attempt and sets the lease; renewing and parking are conditional on the
lease's owner. The hot-path writes (creates and checkpoints) are elsewhere: ``_write_paths``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from saga_core import SagaRecord, StorageCorruptedError
from saga_core.storage import describe_error, read_records

from ._core import Commit, CoreSql, begin_immediate
from ._outcomes import TERMINAL_VALUES, claim_refusal, not_found, not_owned
from ._reads import Reads
from ._rows import record_from_row
from ._schema import not_parked


class LeaseWrites:
    """The lease and dead-letter statements of one storage."""

    def __init__(self, sql: CoreSql, reads: Reads) -> None:
        self._sql = sql
        self._reads = reads
        saga = sql.tables.saga
        c = saga.c
        returning = sql.update_returning
        lease_values = {
            "version": c.version + 1,
            "attempts": c.attempts + 1,
            "lease_owner": sa.bindparam("b_owner"),
            "lease_expires_at": sql.expires,
            "updated_at": sql.now,
        }
        # A claim takes an unfinished saga that is not parked and whose lease is free or
        # already the claimer's; a forced claim (an operator taking over from a runner known
        # to be dead) takes it whoever holds the lease.
        claimable = sa.and_(
            c.saga_id == sa.bindparam("b_id"),
            c.status.not_in(TERMINAL_VALUES),
            not_parked(saga),
        )
        forced = sa.update(saga).where(claimable).values(**lease_values)
        claim = forced.where(sa.or_(reads.free, c.lease_owner == sa.bindparam("b_owner")))
        self._claim = claim.returning(*sql.record_columns) if returning else claim
        self._claim_forced = forced.returning(*sql.record_columns) if returning else forced
        self._claim_many = sa.update(saga).where(sql.among_ids(c.saga_id)).values(**lease_values)
        self._claim_many_returning = self._claim_many.returning(
            c.saga_id, c.version, c.attempts, c.updated_at, c.lease_expires_at
        )
        self._load_many = sa.select(*sql.record_columns).where(sql.among_ids(c.saga_id))
        # Writes of the lease's owner (renew_lease, park): one conditional UPDATE each; a
        # parked or released saga has no owner, so it never matches.
        owned = sa.and_(
            c.saga_id == sa.bindparam("b_id"),
            c.lease_owner == sa.bindparam("b_owner"),
            c.status.not_in(TERMINAL_VALUES),
        )
        self._renew = sql.returning_id(
            sa.update(saga).where(owned).values(lease_expires_at=sql.expires)
        )
        # What parking writes: the dead-letter flag, the reason, no lease, a new version.
        parked = {
            "parked": True,
            "error": sa.bindparam("b_reason"),
            "lease_owner": None,
            "lease_expires_at": None,
            "version": c.version + 1,
            "updated_at": sql.now,
        }
        self._park = sql.returning_id(sa.update(saga).where(owned).values(**parked))
        # A damaged row a recovery claim met (locked by it, leased to nobody in particular).
        self._park_damaged_row = (
            sa.update(saga)
            .where(c.saga_id == sa.bindparam("b_id"), c.status.not_in(TERMINAL_VALUES))
            .values(**parked)
        )
        unpark = (
            sa.update(saga)
            .where(c.saga_id == sa.bindparam("b_id"), c.parked == sa.true())
            .values(parked=False, attempts=0, updated_at=sql.now)
        )
        self._unpark = unpark.returning(*sql.record_columns) if returning else unpark

    def claim(
        self,
        connection: Connection,
        commit: Commit,
        saga_id: UUID,
        owner: str,
        lease_seconds: float,
        force: bool,
    ) -> SagaRecord:
        """Lease one saga to ``owner``, whoever holds its lease when ``force`` is set (see
        ``SagaStorage.claim``)."""
        sql = self._sql
        params = sql.clock(lease_seconds)
        params.update(b_id=saga_id, b_owner=owner)
        result = connection.execute(self._claim_forced if force else self._claim, params)
        row: Any
        if sql.update_returning:
            row = result.first()
        else:
            row = None
            if result.rowcount == 1:
                row = connection.execute(sql.load, {"b_id": saga_id}).first()
        if row is None:
            found = connection.execute(sql.diagnose, {"b_ids": [saga_id]}).first()
            raise claim_refusal(saga_id, found, forced=force)
        record = self._reads.with_signals(connection, [record_from_row(row)])[0]
        commit()
        return record

    def claim_recoverable(
        self,
        connection: Connection,
        commit: Commit,
        owner: str,
        lease_seconds: float,
        limit: int,
    ) -> list[SagaRecord]:
        """Claim up to ``limit`` recoverable sagas (stalled ones and due WAITING ones),
        earliest due first; concurrent callers never get the same saga (row locks skipped on
        PostgreSQL, one writer on SQLite).

        The chosen rows are read (and locked) first: a row that cannot be decoded is parked
        in the same transaction, with the decode error as the reason (so no claim meets it
        again until an operator repairs and unparks it), and only the others are claimed.
        """
        if limit <= 0:
            return []
        sql = self._sql
        if sql.is_sqlite:
            begin_immediate(connection)
        params = sql.clock(lease_seconds)
        params["b_owner"] = owner
        chosen = self._reads.due_first(lock=True)
        read = read_records(
            connection.execute(chosen, {**params, "b_limit": limit}), record_from_row
        )
        if read.corrupt:
            self._park_damaged(connection, read.corrupt)
        records = read.records
        if records:
            records = self._lease_to(connection, records, owner, params)
            records = self._reads.with_signals(connection, records)
        if records or read.corrupt:
            commit()
        return records

    def _lease_to(
        self,
        connection: Connection,
        records: list[SagaRecord],
        owner: str,
        params: dict[str, Any],
    ) -> list[SagaRecord]:
        """Lease the (locked) sagas of ``records`` to ``owner``; return them as claimed."""
        ids = [record.saga_id for record in records]
        if not self._sql.update_returning:
            connection.execute(self._claim_many, {**params, "b_ids": ids})
            rows = {row[0]: row for row in connection.execute(self._load_many, {"b_ids": ids})}
            return [record_from_row(rows[saga_id]) for saga_id in ids]
        claimed = {
            row[0]: row
            for row in connection.execute(self._claim_many_returning, {**params, "b_ids": ids})
        }
        result = []
        for record in records:
            _, version, attempts, updated_at, expires = claimed[record.saga_id]
            result.append(
                record._replace(
                    version=version,
                    attempts=attempts,
                    updated_at=updated_at,
                    lease_owner=owner,
                    lease_expires_at=expires,
                )
            )
        return result

    def _park_damaged(
        self, connection: Connection, errors: Sequence[StorageCorruptedError]
    ) -> None:
        """Park the (locked) sagas whose rows could not be decoded, each with its error as the
        reason, as :meth:`park` does: parked, no lease, a new version."""
        params = self._sql.clock(None)
        for error in errors:
            if error.saga_id is None:  # not this storage's decode errors: they name the saga
                continue
            connection.execute(
                self._park_damaged_row,
                {**params, "b_id": error.saga_id, "b_reason": describe_error(error)},
            )

    def renew_lease(
        self,
        connection: Connection,
        commit: Commit,
        saga_id: UUID,
        owner: str,
        lease_seconds: float,
    ) -> None:
        """Extend ``owner``'s lease; nothing else changes (see ``SagaStorage.renew_lease``)."""
        params = self._sql.clock(lease_seconds)
        params.update(b_id=saga_id, b_owner=owner)
        if not self._sql.matched(connection.execute(self._renew, params)):
            raise self._not_owned(connection, saga_id, owner, "renew its lease")
        commit()

    def park(
        self, connection: Connection, commit: Commit, saga_id: UUID, owner: str, reason: str
    ) -> None:
        """Move a saga leased to ``owner`` to the dead-letter state (``SagaStorage.park``)."""
        params = self._sql.clock(None)
        params.update(b_id=saga_id, b_owner=owner, b_reason=reason)
        if not self._sql.matched(connection.execute(self._park, params)):
            raise self._not_owned(connection, saga_id, owner, "park it")
        commit()

    def unpark(self, connection: Connection, commit: Commit, saga_id: UUID) -> SagaRecord:
        """Take a parked saga out of the dead-letter state and return its record; return the
        record of a saga that is not parked unchanged (``SagaStorage.unpark``)."""
        sql = self._sql
        params = sql.clock(None)
        params["b_id"] = saga_id
        result = connection.execute(self._unpark, params)
        row: Any = None
        if sql.update_returning:
            row = result.first()
        updated = row is not None or (not sql.update_returning and result.rowcount == 1)
        if row is None:
            row = connection.execute(sql.load, {"b_id": saga_id}).first()
            if row is None:
                raise not_found(saga_id)
        record = self._reads.with_signals(connection, [record_from_row(row)])[0]
        if updated:
            commit()
        return record

    def _not_owned(
        self, connection: Connection, saga_id: UUID, owner: str, action: str
    ) -> Exception:
        found = connection.execute(self._sql.diagnose, {"b_ids": [saga_id]}).first()
        return not_owned(saga_id, found, owner, action)
