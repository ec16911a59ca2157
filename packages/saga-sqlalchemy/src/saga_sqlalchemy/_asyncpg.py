"""PostgreSQL through asyncpg's own connection: the writes as asyncpg takes them.

Same statements as ``_postgres`` (one statement per write or per group-commit batch, its own
transaction, one round trip), with parameters built for asyncpg's binary protocol at the
lowest Python cost:

* a single write sends scalars only (its journal lines are one text), so no array is encoded
  (asyncpg checks every element of an array parameter);
* a batch sends three texts: the creates and the checkpoints as JSON, read back with
  ``json_to_recordset`` (one ``json.dumps`` instead of a dozen arrays of up to a hundred
  elements), and the checkpointed ids as a ``uuid[]`` literal (see ``_postgres``).

Text round-trips exactly through JSON: contexts and journal lines stay byte for byte.
"""

from __future__ import annotations

import json
import json.encoder
import math
from collections.abc import Sequence
from typing import Any

from sqlalchemy.engine import Dialect

from saga_core import SagaStatus, SagaUsageError
from saga_core.storage import Checkpoint, NewSaga

from ._journal import encode_journal
from ._outcomes import Outcome, Stored, Write, refusal, stored
from ._postgres import (
    CHECKPOINT_FIELDS,
    CREATE_FIELDS,
    Placeholder,
    batch,
    batch_outcomes,
    checkpoint_values,
    compare_and_set,
    create,
    create_values,
    diagnose,
    diagnose_many,
    found_by_id,
    refused_checkpoints,
    storable_error,
)
from ._rows import encode_applied
from ._rules import running_lease
from ._schema import SagaTables

# (No ON CONFLICT on a single create: a speculative insertion costs the server more than a
# plain one, on every create; a taken id is the primary key's unique violation instead, see
# write_one. No RETURNING either: whether a single write wrote is in its command tag,
# "INSERT 0 1" or "UPDATE 1", which the server sends anyway; a returned row costs a row
# description and a data row to send and decode, ~2% of a write measured one at a time.)
_UNIQUE_VIOLATION = "23505"

#: The batch's inputs as two JSON texts, read back with ``json_to_recordset``.
_JSON_INPUTS = """new_sagas AS (
    SELECT * FROM json_to_recordset($1::json)
        AS n(saga_id uuid, saga_name text, saga_version int, context text, owner text,
             lease float8, next_step text, journal text)
), changes AS (
    SELECT * FROM json_to_recordset($2::json)
        AS c(saga_id uuid, expected int, status text, "cursor" int, applied text,
             context text, error text, owner text, lease float8, next_step text,
             journal text)
)"""


def _numbered(fields: tuple[str, ...]) -> Placeholder:
    """``$n`` for each field, numbered in ``fields`` order (the lease cast to float8)."""

    def value(name: str) -> str:
        number = fields.index(name) + 1
        return f"${number}::float8" if name == "lease" else f"${number}"

    return value


# A JSON string literal of a str, non-ASCII kept as it is (json's own C function).
_quote = json.encoder.encode_basestring
_NULL = "null"
# Each status's stored word (reading ``.value`` off an Enum member runs Python code).
_STATUS_TEXT = {status: status._value_ for status in SagaStatus}


def _owner_text(owner: str | None) -> str:
    # A lease without an owner is refused before any write is built; "null" is never sent
    # for a lease that is set.
    return _NULL if owner is None else _quote(owner)


def _float_text(value: float | None) -> str:
    """A JSON number for ``value`` (a finite float: lease seconds are checked as such)."""
    if value is None:
        return _NULL
    number = float(value)
    if not math.isfinite(number):
        raise SagaUsageError(f"lease_seconds must be a finite number of seconds, got {value!r}")
    return repr(number)


class AsyncpgWrites:
    """The SQL of one storage's writes as asyncpg takes it (``$n`` parameters)."""

    def __init__(self, tables: SagaTables, dialect: Dialect) -> None:
        saga = dialect.identifier_preparer.format_table(tables.saga)
        # The checkpointed ids travel once more as a text array literal, built from the strings
        # the JSON needs anyway (see BATCH_WRITES for why the statement wants them).
        self.batch_sql = batch(saga, _JSON_INPUTS, "$3::text::uuid[]")
        self.checkpoint_sql = compare_and_set(saga, _numbered(CHECKPOINT_FIELDS))
        self.create_sql = create(saga, _numbered(CREATE_FIELDS))
        self.diagnose_sql = diagnose(saga, "$1")
        self.diagnose_many_sql = diagnose_many(saga, "$1::uuid[]")

    def single(self, write: Write) -> tuple[str, list[Any]]:
        """The statement and arguments of one write (in ``CHECKPOINT_FIELDS`` or
        ``CREATE_FIELDS`` order): its command tag ends in " 1" if it wrote, " 0" if it
        matched nothing."""
        if isinstance(write, Checkpoint):
            return self.checkpoint_sql, list(checkpoint_values(write))
        return self.create_sql, list(create_values(write))

    @staticmethod
    def batch_args(writes: Sequence[Write]) -> tuple[str, str, str]:
        """The arguments of :attr:`batch_sql` for ``writes`` (at most one per saga): the
        creates and the checkpoints as JSON texts, and the checkpointed ids as a ``uuid[]``
        literal.

        The JSON is written directly (each value is a number, a fixed word, or a string
        quoted by json's own C function): ``json.dumps`` of a dict per write cost more than
        everything else in a batch's Python time. Ids are sent as 32 hex digits, which
        PostgreSQL reads as a uuid.
        """
        quote = _quote
        creates: list[str] = []
        changes: list[str] = []
        changed_ids: list[str] = []
        for write in writes:
            saga_id = write.saga_id.hex
            if isinstance(write, Checkpoint):
                status = write.status
                leased = not status.is_terminal and write.lease_seconds is not None
                changed_ids.append(saga_id)
                error = storable_error(write.error)
                next_step = write.next_step
                changes.append(
                    f'{{"saga_id":"{saga_id}","expected":{int(write.expected_version)},'
                    f'"status":"{_STATUS_TEXT[status]}","cursor":{int(write.cursor)},'
                    f'"applied":{quote(encode_applied(write.applied))},'
                    f'"context":{quote(write.context)},'
                    f'"error":{_NULL if error is None else quote(error)},'
                    f'"owner":{_owner_text(write.lease_owner) if leased else _NULL},'
                    f'"lease":{_float_text(write.lease_seconds) if leased else _NULL},'
                    f'"next_step":{_NULL if next_step is None else quote(next_step)},'
                    f'"journal":{quote(encode_journal(write.journal))}}}'
                )
            else:
                next_step = write.next_step
                owner, seconds = running_lease(write)
                creates.append(
                    f'{{"saga_id":"{saga_id}","saga_name":{quote(write.saga_name)},'
                    f'"saga_version":{int(write.saga_version)},'
                    f'"context":{quote(write.context)},"owner":{quote(owner)},'
                    f'"lease":{_float_text(seconds)},'
                    f'"next_step":{_NULL if next_step is None else quote(next_step)},'
                    f'"journal":{quote(encode_journal(write.journal))}}}'
                )
        return (
            "[" + ",".join(creates) + "]",
            "[" + ",".join(changes) + "]",
            "{" + ",".join(changed_ids) + "}",
        )

    async def write_one(self, driver: Any, write: Write) -> Outcome:
        """Write ``write`` alone on asyncpg's connection ``driver`` (its own transaction);
        return its refusal, or None when it was written."""
        sql, args = self.single(write)
        try:
            if (await driver.execute(sql, *args)).endswith(" 1"):
                return None
        except Exception as exc:
            # A create whose id is taken (the statement, its own transaction, wrote nothing).
            if isinstance(write, NewSaga) and getattr(exc, "sqlstate", None) == _UNIQUE_VIOLATION:
                return refusal(write, None)
            raise
        found = None
        if isinstance(write, Checkpoint):
            found = await driver.fetchrow(self.diagnose_sql, write.saga_id)
        return refusal(write, stored(found))

    async def write(self, driver: Any, writes: Sequence[Write]) -> list[Outcome]:
        """Write ``writes`` on asyncpg's connection ``driver``, outside any transaction (the
        statement is its own transaction); return each write's refusal."""
        if len(writes) == 1:
            return [await self.write_one(driver, writes[0])]
        rows = await driver.fetch(self.batch_sql, *self.batch_args(writes))
        if len(rows) == len(writes):  # each write returns its row when, and only when, written
            return [None] * len(writes)
        written = {row[0] for row in rows}
        found: dict[Any, Stored] = {}
        refused = refused_checkpoints(writes, written)
        if refused:
            found = found_by_id(await driver.fetch(self.diagnose_many_sql, refused))
        return batch_outcomes(writes, written, found)
