"""PostgreSQL's creates and checkpoints: each statement defined once, for every driver.

A create is ``INSERT``, a checkpoint is the compare-and-set ``UPDATE ... WHERE saga_id = id AND
version = expected AND status NOT IN (final states) AND (not cancelled, or not moving
forward)``, which bumps the version and appends the journal lines. Both store a saga that does
not wait (no ``wake_at``, ``waiting_for`` or deadline) and has no parent: the writes that use
durable waits, and the creates of child sagas, are ``_waits``'s. Each is written below once, as
a template whose values are rendered three ways: named parameters (``:c_status``, SQLAlchemy's
``text`` on any driver), numbered ones (``$3``, asyncpg's own connection, see ``_asyncpg``), or
the columns of a batch's rows (one statement for a whole group-commit batch: the creates and
checkpoints arrive as rows of the CTEs ``new_sagas`` and ``changes``, however each driver sends
them).

Run outside an explicit transaction, a statement is its own transaction: a write costs one
round trip and one commit, and a batch of a hundred writes costs the same.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any
from uuid import UUID

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Dialect

from saga_core.storage import Checkpoint, NewSaga

from ._core import Commit
from ._journal import encode_journal
from ._outcomes import Outcome, Stored, Write, refusal, stored
from ._rows import encode_applied
from ._rules import cancel_guard, running_lease
from ._schema import SagaTables

#: A checkpoint's values, in the order of its numbered parameters and of a batch's columns.
CHECKPOINT_FIELDS = (
    "saga_id",
    "expected",
    "status",
    "cursor",
    "applied",
    "context",
    "error",
    "owner",
    "lease",
    "next_step",
    "journal",
)
#: A create's values, likewise.
CREATE_FIELDS = (
    "saga_id",
    "saga_name",
    "saga_version",
    "context",
    "owner",
    "lease",
    "next_step",
    "journal",
)

#: The compare-and-set of a checkpoint. ``{match}`` finds the row; ``{source}`` is empty or
#: the batch's ``FROM changes AS c``.
_COMPARE_AND_SET = """UPDATE {saga} AS s
SET status = {status}, version = s.version + 1, "cursor" = {cursor}, applied = {applied},
    context = {context}, error = {error}, updated_at = now(), lease_owner = {owner},
    lease_expires_at = now() + make_interval(secs => {lease}), next_step = {next_step},
    journal = s.journal || {journal}, wake_at = NULL, waiting_for = NULL
{source}WHERE {match} AND s.version = {expected}
  AND s.status NOT IN ('completed', 'compensated')
  AND {guard}"""

#: The INSERT of a new saga; ``{start}``/``{end}`` make its values a ``VALUES (...)`` row or
#: a ``SELECT`` of the batch's ``new_sagas``.
_CREATE = """INSERT INTO {saga} (saga_id, saga_name, saga_version, status, version, "cursor",
    applied, context, error, created_at, updated_at, lease_owner, lease_expires_at,
    next_step, journal)
{start}{saga_id}, {saga_name}, {saga_version}, 'running', 1, 0, '[]', {context}, NULL, now(),
    now(), {owner}, now() + make_interval(secs => {lease}), {next_step}, {journal}{end}"""

#: A batch: the inputs (``{inputs}``: the CTEs ``new_sagas`` and ``changes``), then the
#: creates and the checkpoints, naming the sagas written.
#:
#: ``{changed_ids}`` is the checkpointed saga ids again, as a text cast to ``uuid[]`` in a
#: sub-select. Matching the rows through ``saga_id = ANY(...)`` lets PostgreSQL find them by
#: primary key: joined only to ``changes`` (estimated at 100 rows, whatever the batch holds) it
#: scanned the whole table as long as the table was small enough for a scan to look cheaper,
#: at milliseconds per batch growing with the table (measured: 9 ms for 50 writes at 20,000
#: sagas, 2 ms by key). The sub-select is computed once, before the scan (an InitPlan), and
#: the planner cannot see its length, so it does not weigh one index probe per id against a
#: scan of a small table.
_BATCH = """WITH {inputs}, inserted AS (
{create}
    ON CONFLICT (saga_id) DO NOTHING
    RETURNING saga_id
), updated AS (
{checkpoint}
    RETURNING s.saga_id
)
SELECT saga_id FROM inserted UNION ALL SELECT saga_id FROM updated"""

_DIAGNOSE = "SELECT status, version, cancel_reason FROM {saga} WHERE saga_id = {id}"
_DIAGNOSE_MANY = (
    "SELECT saga_id, status, version, cancel_reason FROM {saga} WHERE saga_id = ANY({ids})"
)

#: A parameter's text (its cast included) by field name.
Placeholder = Callable[[str], str]


def _row_column(name: str) -> str:
    return f"s.{_quoted(name)}"


def _checkpoint(saga: str, source: str, match: str, fields: dict[str, str]) -> str:
    guard = cancel_guard(fields["status"], fields["cursor"], _row_column)
    return _COMPARE_AND_SET.format(saga=saga, source=source, match=match, guard=guard, **fields)


def compare_and_set(saga: str, value: Placeholder) -> str:
    """The checkpoint of one saga, its values given by ``value``."""
    fields = {name: value(name) for name in CHECKPOINT_FIELDS if name != "saga_id"}
    return _checkpoint(saga, "", f"s.saga_id = {value('saga_id')}", fields)


def create(saga: str, value: Placeholder) -> str:
    """The create of one saga, its values given by ``value``."""
    fields = {name: value(name) for name in CREATE_FIELDS}
    return _CREATE.format(saga=saga, start="VALUES (", end=")", **fields)


def batch(saga: str, inputs: str, changed_ids: str) -> str:
    """The statement that writes a whole batch from the CTEs of ``inputs``."""
    changes = {name: f"c.{_quoted(name)}" for name in CHECKPOINT_FIELDS if name != "saga_id"}
    match = f"s.saga_id = ANY(CAST((SELECT {changed_ids}) AS uuid[])) AND s.saga_id = c.saga_id"
    checkpoint = _checkpoint(saga, "FROM changes AS c\n", match, changes)
    new = {name: f"n.{_quoted(name)}" for name in CREATE_FIELDS}
    insert = _CREATE.format(saga=saga, start="SELECT ", end="\nFROM new_sagas AS n", **new)
    return _BATCH.format(inputs=inputs, create=insert, checkpoint=checkpoint)


def diagnose(saga: str, placeholder: str) -> str:
    """The stored ``(status, version, cancel_reason)`` of one saga."""
    return _DIAGNOSE.format(saga=saga, id=placeholder)


def diagnose_many(saga: str, placeholder: str) -> str:
    """The stored ``(saga_id, status, version, cancel_reason)`` of the sagas of a
    ``uuid[]``."""
    return _DIAGNOSE_MANY.format(saga=saga, ids=placeholder)


def _quoted(name: str) -> str:
    return '"cursor"' if name == "cursor" else name


def found_by_id(rows: Iterable[Sequence[Any]]) -> dict[UUID, Stored]:
    """The rows of :func:`diagnose_many` by saga id."""
    return {row[0]: (row[1], row[2], row[3]) for row in rows}


def storable_error(error: str | None) -> str | None:
    """``error`` as PostgreSQL can store it: its text type cannot hold a NUL character, which
    an exception's message may contain; each one is written as the six characters ``\\u0000``
    instead, so that the rest of the message (and the write) is kept."""
    if error is None or "\x00" not in error:
        return error
    return error.replace("\x00", "\\u0000")


def refused_checkpoints(writes: Sequence[Write], written: set[UUID]) -> list[UUID]:
    """Ids of the checkpoints a batch did not write: the ones to diagnose."""
    return [
        write.saga_id
        for write in writes
        if write.saga_id not in written and isinstance(write, Checkpoint)
    ]


def batch_outcomes(
    writes: Sequence[Write], written: set[UUID], found: dict[UUID, Stored]
) -> list[Outcome]:
    """Each write's refusal (None when it was written) from the ids the batch statement
    wrote and, for the others, the stored ``(status, version, cancel_reason)`` by saga id
    (an id missing from ``found`` has no saga)."""
    return [
        None if write.saga_id in written else refusal(write, found.get(write.saga_id))
        for write in writes
    ]


# --- through SQLAlchemy (any PostgreSQL driver) ---------------------------------------------

#: The batch's inputs as arrays, one per column.
_ARRAY_INPUTS = """new_sagas AS (
    SELECT * FROM unnest(
        CAST(:n_saga_id AS uuid[]), CAST(:n_saga_name AS text[]),
        CAST(:n_saga_version AS int[]), CAST(:n_context AS text[]), CAST(:n_owner AS text[]),
        CAST(:n_lease AS float8[]), CAST(:n_next_step AS text[]), CAST(:n_journal AS text[])
    ) AS n(saga_id, saga_name, saga_version, context, owner, lease, next_step, journal)
), changes AS (
    SELECT * FROM unnest(
        CAST(:c_saga_id AS uuid[]), CAST(:c_expected AS int[]), CAST(:c_status AS text[]),
        CAST(:c_cursor AS int[]), CAST(:c_applied AS text[]), CAST(:c_context AS text[]),
        CAST(:c_error AS text[]), CAST(:c_owner AS text[]), CAST(:c_lease AS float8[]),
        CAST(:c_next_step AS text[]), CAST(:c_journal AS text[])
    ) AS c(saga_id, expected, status, "cursor", applied, context, error, owner, lease,
           next_step, journal)
)"""


def _named(prefix: str) -> Placeholder:
    def value(name: str) -> str:
        return f"CAST(:{prefix}lease AS float8)" if name == "lease" else f":{prefix}{name}"

    return value


def checkpoint_values(write: Checkpoint) -> tuple[Any, ...]:
    """A checkpoint's values in :data:`CHECKPOINT_FIELDS` order."""
    lease = None if write.status.is_terminal else write.lease_seconds
    return (
        write.saga_id,
        write.expected_version,
        write.status.value,
        write.cursor,
        encode_applied(write.applied),
        write.context,
        storable_error(write.error),
        None if lease is None else write.lease_owner,
        None if lease is None else float(lease),
        write.next_step,
        encode_journal(write.journal),
    )


def create_values(write: NewSaga) -> tuple[Any, ...]:
    """A create's values in :data:`CREATE_FIELDS` order."""
    owner, seconds = running_lease(write)
    return (
        write.saga_id,
        write.saga_name,
        int(write.saga_version),
        write.context,
        owner,
        float(seconds),
        write.next_step,
        encode_journal(write.journal),
    )


class PostgresBatch:
    """One storage's PostgreSQL writes through SQLAlchemy (named parameters)."""

    def __init__(self, tables: SagaTables, dialect: Dialect) -> None:
        saga = dialect.identifier_preparer.format_table(tables.saga)
        self.text = sa.text(batch(saga, _ARRAY_INPUTS, "CAST(CAST(:c_ids AS text) AS uuid[])"))
        self.checkpoint_one = sa.text(compare_and_set(saga, _named("c_")) + "\nRETURNING s.version")
        self.create_one = sa.text(
            create(saga, _named("n_")) + "\nON CONFLICT (saga_id) DO NOTHING\nRETURNING version"
        )
        self.diagnose_one = sa.text(diagnose(saga, ":c_saga_id"))
        self.diagnose_many = sa.text(diagnose_many(saga, "CAST(:ids AS uuid[])"))

    @staticmethod
    def parameters(writes: Sequence[Write]) -> dict[str, Any]:
        """The batch statement's parameters for ``writes`` (at most one write per saga):
        arrays, and the checkpointed ids as a ``uuid[]`` text literal."""
        p: dict[str, list[Any]] = {f"c_{name}": [] for name in CHECKPOINT_FIELDS}
        p.update({f"n_{name}": [] for name in CREATE_FIELDS})
        for write in writes:
            if isinstance(write, Checkpoint):
                for name, value in zip(CHECKPOINT_FIELDS, checkpoint_values(write), strict=True):
                    p[f"c_{name}"].append(value)
            else:
                for name, value in zip(CREATE_FIELDS, create_values(write), strict=True):
                    p[f"n_{name}"].append(value)
        params: dict[str, Any] = dict(p)
        params["c_ids"] = "{" + ",".join(str(saga_id) for saga_id in p["c_saga_id"]) + "}"
        return params

    def write_batch(
        self, connection: Connection, commit: Commit, writes: Sequence[Write]
    ) -> list[Outcome]:
        """Run the writes in one statement (one write: its own simpler statement, which
        PostgreSQL plans faster), then commit if any was written."""
        if len(writes) == 1:
            outcomes = [self._write_one(connection, writes[0])]
        else:
            rows = connection.execute(self.text, self.parameters(writes)).all()
            written = {row[0] for row in rows}
            found: dict[UUID, Stored] = {}
            refused = refused_checkpoints(writes, written)
            if refused:
                found = found_by_id(connection.execute(self.diagnose_many, {"ids": refused}))
            outcomes = batch_outcomes(writes, written, found)
        if any(outcome is None for outcome in outcomes):
            commit()
        return outcomes

    def _write_one(self, connection: Connection, write: Write) -> Outcome:
        if isinstance(write, Checkpoint):
            values = checkpoint_values(write)
            params = {f"c_{n}": v for n, v in zip(CHECKPOINT_FIELDS, values, strict=True)}
            if connection.execute(self.checkpoint_one, params).first() is not None:
                return None
            found = connection.execute(self.diagnose_one, {"c_saga_id": write.saga_id}).first()
            return refusal(write, stored(found))
        values = create_values(write)
        params = {f"n_{n}": v for n, v in zip(CREATE_FIELDS, values, strict=True)}
        if connection.execute(self.create_one, params).first() is not None:
            return None
        return refusal(write, None)
