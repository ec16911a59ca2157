"""PostgreSQL: a whole batch of creates and checkpoints in ONE statement (one round trip).

The statement takes every write as arrays (``unnest``), inserts the new sagas
(``ON CONFLICT DO NOTHING``), applies the checkpoints as one compare-and-set ``UPDATE ... FROM``
(each appending its journal lines to its row) and returns the ids it wrote; a refused write is
diagnosed by a second query, only when there is one. Run outside an explicit transaction, the
statement is its own transaction: a checkpoint costs one round trip and one commit, and a
group-commit batch of a hundred sagas costs the same.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Dialect

from saga_core import (
    SagaAlreadyExistsError,
    SagaError,
    SagaFinishedError,
    SagaNotFoundError,
    SagaVersionConflictError,
)
from saga_core.storage import Checkpoint, NewSaga

from ._journal import encode_journal
from ._operations import Commit, Write
from ._rows import encode_applied
from ._schema import SagaTables

_TERMINAL_VALUES = ("completed", "compensated")

#: The middle of both batch statements (this module's and the asyncpg one's): create the new
#: sagas, apply the compare-and-set checkpoints, and name what was written. Their inputs come
#: in CTEs ``new_sagas`` and ``changes``, however each driver sends them.
#:
#: ``{changed_ids}`` is the checkpointed saga ids again: a text parameter cast to ``uuid[]``
#: in a sub-select. Matching the rows through ``saga_id = ANY(...)`` lets PostgreSQL find them
#: by primary key: joined only to ``changes`` (estimated at 100 rows, whatever the batch
#: holds) it scanned the whole table as long as the table was small enough for a scan to look
#: cheaper, at milliseconds per batch growing with the table (measured: 9 ms for 50 writes at
#: 20,000 sagas, 2 ms by key). The sub-select is computed once, before the scan (an InitPlan),
#: and the planner cannot see its length, so it does not weigh one index probe per id against
#: a scan of a small table; without it, a scan that was chosen anyway parsed the whole array
#: again for every row it read.
BATCH_WRITES = """), inserted AS (
    INSERT INTO {saga} (saga_id, saga_name, status, version, "cursor", applied, context, error,
                        created_at, updated_at, lease_owner, lease_expires_at, next_step,
                        journal)
    SELECT n.saga_id, n.saga_name, 'running', 1, 0, '[]', n.context, NULL, now(), now(),
           n.owner, now() + make_interval(secs => n.lease), n.next_step, n.journal
    FROM new_sagas AS n
    ON CONFLICT (saga_id) DO NOTHING
    RETURNING saga_id
), updated AS (
    UPDATE {saga} AS s
    SET status = c.status, version = s.version + 1, "cursor" = c."cursor",
        applied = c.applied, context = c.context, error = c.error, updated_at = now(),
        lease_owner = c.owner, lease_expires_at = now() + make_interval(secs => c.lease),
        next_step = c.next_step, journal = s.journal || c.journal
    FROM changes AS c
    WHERE s.saga_id = ANY(CAST((SELECT {changed_ids}) AS uuid[]))
      AND s.saga_id = c.saga_id AND s.version = c.expected
      AND s.status NOT IN ('completed', 'compensated')
    RETURNING s.saga_id
)
SELECT saga_id FROM inserted UNION ALL SELECT saga_id FROM updated
"""

_TEMPLATE = (
    """
WITH new_sagas AS (
    SELECT * FROM unnest(
        CAST(:n_id AS uuid[]), CAST(:n_name AS text[]), CAST(:n_context AS text[]),
        CAST(:n_owner AS text[]), CAST(:n_lease AS float8[]), CAST(:n_next_step AS text[]),
        CAST(:n_journal AS text[])
    ) AS n(saga_id, saga_name, context, owner, lease, next_step, journal)
), changes AS (
    SELECT * FROM unnest(
        CAST(:c_id AS uuid[]), CAST(:c_expected AS int[]), CAST(:c_status AS text[]),
        CAST(:c_cursor AS int[]), CAST(:c_applied AS text[]), CAST(:c_context AS text[]),
        CAST(:c_error AS text[]), CAST(:c_owner AS text[]), CAST(:c_lease AS float8[]),
        CAST(:c_next_step AS text[]), CAST(:c_journal AS text[])
    ) AS c(saga_id, expected, status, "cursor", applied, context, error, owner, lease,
           next_step, journal)
"""
    + BATCH_WRITES
)

# One write alone (the common case when sagas run one at a time): simpler statements that
# PostgreSQL plans faster. A refused checkpoint returns no row and is diagnosed afterwards.
_CHECKPOINT_ONE = """
UPDATE {saga}
SET status = :c_status, version = version + 1, "cursor" = :c_cursor, applied = :c_applied,
    context = :c_context, error = :c_error, updated_at = now(), lease_owner = :c_owner,
    lease_expires_at = now() + make_interval(secs => CAST(:c_lease AS float8)),
    next_step = :c_next_step, journal = journal || :c_journal
WHERE saga_id = :c_id AND version = :c_expected AND status NOT IN ('completed', 'compensated')
RETURNING version
"""
_CREATE_ONE = """
INSERT INTO {saga} (saga_id, saga_name, status, version, "cursor", applied, context, error,
                    created_at, updated_at, lease_owner, lease_expires_at, next_step, journal)
VALUES (:n_id, :n_name, 'running', 1, 0, '[]', :n_context, NULL, now(), now(), :n_owner,
        now() + make_interval(secs => CAST(:n_lease AS float8)), :n_next_step, :n_journal)
ON CONFLICT (saga_id) DO NOTHING
RETURNING version
"""
_DIAGNOSE_ONE = "SELECT status, version FROM {saga} WHERE saga_id = :c_id"
_DIAGNOSE_MANY = (
    "SELECT saga_id, status, version FROM {saga} WHERE saga_id = ANY(CAST(:ids AS uuid[]))"
)

_ARRAYS = (
    "n_id",
    "n_name",
    "n_context",
    "n_owner",
    "n_lease",
    "n_next_step",
    "n_journal",
    "c_id",
    "c_expected",
    "c_status",
    "c_cursor",
    "c_applied",
    "c_context",
    "c_error",
    "c_owner",
    "c_lease",
    "c_next_step",
    "c_journal",
)


class PostgresBatch:
    """The one-statement writes of one storage's tables."""

    def __init__(self, tables: SagaTables, dialect: Dialect) -> None:
        quote = dialect.identifier_preparer.format_table
        names = {"saga": quote(tables.saga)}
        self.text = sa.text(
            _TEMPLATE.format(changed_ids="CAST(CAST(:c_ids AS text) AS uuid[])", **names)
        )
        self.checkpoint_one = sa.text(_CHECKPOINT_ONE.format(**names))
        self.create_one = sa.text(_CREATE_ONE.format(**names))
        self.diagnose_one = sa.text(_DIAGNOSE_ONE.format(**names))
        self.diagnose_many = sa.text(_DIAGNOSE_MANY.format(**names))

    def statement_for(self, writes: Sequence[Write]) -> sa.TextClause:
        """The statement that writes ``writes``: a single-write one for one write."""
        if len(writes) != 1:
            return self.text
        return self.create_one if isinstance(writes[0], NewSaga) else self.checkpoint_one

    def parameters_for(self, writes: Sequence[Write]) -> dict[str, Any]:
        """The parameters of :meth:`statement_for`."""
        if len(writes) != 1:
            return self.parameters(writes)
        (write,) = writes
        if isinstance(write, Checkpoint):
            terminal = write.status.is_terminal
            lease = None if terminal else write.lease_seconds
            return {
                "c_id": write.saga_id,
                "c_expected": write.expected_version,
                "c_status": write.status.value,
                "c_cursor": write.cursor,
                "c_applied": encode_applied(write.applied),
                "c_context": write.context,
                "c_error": storable_error(write.error),
                "c_owner": None if lease is None else write.lease_owner,
                "c_lease": None if lease is None else float(lease),
                "c_next_step": write.next_step,
                "c_journal": encode_journal(write.journal),
            }
        return {
            "n_id": write.saga_id,
            "n_name": write.saga_name,
            "n_context": write.context,
            "n_owner": write.lease_owner,
            "n_lease": float(write.lease_seconds),
            "n_next_step": write.next_step,
            "n_journal": encode_journal(write.journal),
        }

    def single_outcome(self, write: Write, written: bool, found: Any) -> SagaError | None:
        """The refusal of a single write from its statement's result and, when it wrote
        nothing, the stored ``(status, version)`` (None when there is no such saga)."""
        if written:
            return None
        return refusal(write, None if found is None else (found[0], found[1]))

    @staticmethod
    def parameters(writes: Sequence[Write]) -> dict[str, Any]:
        """The statement's parameters for ``writes`` (at most one write per saga): arrays, and
        the checkpointed ids as a ``uuid[]`` text literal."""
        p: dict[str, Any] = {name: [] for name in _ARRAYS}
        for write in writes:
            if isinstance(write, Checkpoint):
                terminal = write.status.is_terminal
                lease = None if terminal else write.lease_seconds
                p["c_id"].append(write.saga_id)
                p["c_expected"].append(write.expected_version)
                p["c_status"].append(write.status.value)
                p["c_cursor"].append(write.cursor)
                p["c_applied"].append(encode_applied(write.applied))
                p["c_context"].append(write.context)
                p["c_error"].append(storable_error(write.error))
                p["c_owner"].append(None if lease is None else write.lease_owner)
                p["c_lease"].append(None if lease is None else float(lease))
                p["c_next_step"].append(write.next_step)
                p["c_journal"].append(encode_journal(write.journal))
            else:
                p["n_id"].append(write.saga_id)
                p["n_name"].append(write.saga_name)
                p["n_context"].append(write.context)
                p["n_owner"].append(write.lease_owner)
                p["n_lease"].append(float(write.lease_seconds))
                p["n_next_step"].append(write.next_step)
                p["n_journal"].append(encode_journal(write.journal))
        p["c_ids"] = "{" + ",".join(str(saga_id) for saga_id in p["c_id"]) + "}"
        return p

    @staticmethod
    def outcomes(
        writes: Sequence[Write], written: set[UUID], found: dict[UUID, tuple[str, int]]
    ) -> list[SagaError | None]:
        """Each write's refusal (None when it was written) from the ids the batch statement
        wrote and, for the others, the stored ``(status, version)`` by saga id (an id missing
        from ``found`` has no saga)."""
        return [
            None if write.saga_id in written else refusal(write, found.get(write.saga_id))
            for write in writes
        ]

    @staticmethod
    def refused_checkpoints(writes: Sequence[Write], written: set[UUID]) -> list[UUID]:
        """Ids of the checkpoints the batch did not write: the ones to diagnose."""
        return [
            write.saga_id
            for write in writes
            if write.saga_id not in written and isinstance(write, Checkpoint)
        ]

    def write_batch(
        self, connection: Connection, commit: Commit, writes: Sequence[Write]
    ) -> list[SagaError | None]:
        """Run the writes through SQLAlchemy (any PostgreSQL driver), then commit."""
        statement = self.statement_for(writes)
        rows = connection.execute(statement, self.parameters_for(writes)).all()
        if len(writes) == 1:
            stored = None
            if not rows and isinstance(writes[0], Checkpoint):
                stored = connection.execute(self.diagnose_one, {"c_id": writes[0].saga_id}).first()
            outcomes = [self.single_outcome(writes[0], bool(rows), stored)]
        else:
            written = {row[0] for row in rows}
            found: dict[UUID, tuple[str, int]] = {}
            refused = self.refused_checkpoints(writes, written)
            if refused:
                for saga_id, status, version in connection.execute(
                    self.diagnose_many, {"ids": refused}
                ):
                    found[saga_id] = (status, version)
            outcomes = self.outcomes(writes, written, found)
        if any(outcome is None for outcome in outcomes):
            commit()
        return outcomes


def storable_error(error: str | None) -> str | None:
    """``error`` as PostgreSQL can store it: its text type cannot hold a NUL character, which
    an exception's message may contain; each one is written as the six characters ``\\u0000``
    instead, so that the rest of the message (and the write) is kept."""
    if error is None or "\x00" not in error:
        return error
    return error.replace("\x00", "\\u0000")


def refusal(write: Write, found: tuple[str, int] | None) -> SagaError:
    saga_id = write.saga_id
    if isinstance(write, NewSaga):
        return SagaAlreadyExistsError(
            f"saga {saga_id} already exists; start the saga with a new id, or recover the "
            f"existing one"
        )
    if found is None:
        return SagaNotFoundError(f"no saga with id {saga_id} in storage")
    status, version = found
    if status in _TERMINAL_VALUES:
        return SagaFinishedError(
            f"saga {saga_id} is {status}, a final state that is never written again"
        )
    return SagaVersionConflictError(
        f"saga {saga_id} is at version {version}, not the expected {write.expected_version}: "
        f"another runner wrote it; stop without writing"
    )
