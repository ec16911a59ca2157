"""Batch reads: the records in a recovery scan's or a listing's reply, each decoded on its own.

The ``SCAN`` and ``LIST`` scripts (:mod:`._scripts`) answer with ``id, fields`` pairs: a
record's ``HGETALL`` reply, or, for a member whose record the script cannot read (a hash
without a valid ``head``, a key of another type), that key's Redis type as a string. The
storage decodes the pairs through :func:`saga_core.storage.read_records`, so that a damaged
record is reported and set aside while every other record is served; this module says how one
pair becomes a record or a :class:`~saga_core.StorageCorruptedError` naming its saga.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

from saga_core import SagaRecord, SagaStatus, StorageCorruptedError

from ._keys import KeyLayout
from ._records import decode_record, pairs
from ._replies import foreign_type, not_a_record

#: One ``id, fields`` pair of a script's reply, as the client returned it.
Row = tuple[Any, Any]


def reply_rows(reply: Sequence[Any], first: int) -> list[Row]:
    """The ``id, fields`` pairs of ``reply`` from its element ``first`` on."""
    return [(reply[at], reply[at + 1]) for at in range(first, len(reply) - 1, 2)]


def is_unreadable(row: Row) -> bool:
    """Whether the script could not read the row's record (its type stands for its fields):
    such a record was not claimed."""
    return isinstance(row[1], (bytes, str))


def row_decoder(layout: KeyLayout, stem: str, index: str) -> Callable[[Row], SagaRecord]:
    """A function decoding one row of a reply read from the sorted set ``index``, whose
    records' keys are ``stem`` followed by the id.

    It raises :class:`~saga_core.StorageCorruptedError` for a row that is not a saga record,
    with ``saga_id`` set whenever the member is a saga id.
    """

    def decode(row: Row) -> SagaRecord:
        raw_id, fields = row
        sid = raw_id.decode(errors="replace") if isinstance(raw_id, bytes) else str(raw_id)
        try:
            saga_id = UUID(sid)
        except ValueError as exc:
            raise StorageCorruptedError(
                f"the Redis sorted set {index!r} holds {sid!r}, which is not a saga id; it "
                f"was not written by saga-redis. Remove that member (ZREM)"
            ) from exc
        key = stem + sid
        if isinstance(fields, bytes):
            fields = fields.decode(errors="replace")
        if fields == "hash":
            raise not_a_record(key, saga_id)
        if isinstance(fields, str):
            raise foreign_type(key, fields, layout, saga_id)
        return decode_record(saga_id, key, pairs(fields))

    return decode


def oldest(records: list[SagaRecord], limit: int) -> list[SagaRecord]:
    """The ``limit`` records of ``records`` updated first, oldest first."""
    return heapq.nsmallest(limit, records, key=lambda record: record.updated_at)


def _due_order(record: SagaRecord) -> tuple[datetime, datetime]:
    wake = record.wake_at
    due = wake if wake is not None and record.status is SagaStatus.WAITING else record.updated_at
    return due, record.created_at


def earliest_due(records: list[SagaRecord], limit: int) -> list[SagaRecord]:
    """The ``limit`` records of ``records`` due first, earliest first: a WAITING saga is due at
    its wake time, any other at its last update; ties by creation time."""
    return heapq.nsmallest(limit, records, key=_due_order)
