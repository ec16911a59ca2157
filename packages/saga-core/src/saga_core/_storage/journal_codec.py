"""A journal entry as one line of JSON, the form the storage plugins keep a saga's history in.

An entry is the JSON array ``[step_id, direction, event, attempt, at, error]``, with a seventh
part ``detail`` when the entry has one: ``direction`` and ``event`` are the enums' values,
``at`` is in integer microseconds since the epoch (UTC), ``error`` and ``detail`` strings or
null. The text holds no line break (JSON escapes those inside
strings), so a store may keep entries one per line of a text column or one per element of a
list. saga-sqlalchemy and saga-redis both store this form; a plugin for another store can too.
"""

from __future__ import annotations

import json
import json.encoder
from datetime import datetime, timedelta, timezone

from saga_core._model.errors import SagaUsageError
from saga_core._model.status import StepDirection, StepEvent

from .protocol import JournalEntry

_UTC = timezone.utc
_EPOCH = datetime(1970, 1, 1, tzinfo=_UTC)
_MICROSECOND = timedelta(microseconds=1)
_DIRECTIONS = {direction.value: direction for direction in StepDirection}
_EVENTS = {event.value: event for event in StepEvent}

#: A str as a JSON string literal, non-ASCII kept as it is (what ``json.dumps`` uses).
_quote = json.encoder.encode_basestring


def encode_journal_entry(entry: JournalEntry) -> str:
    """The JSON text of ``entry`` (one line, no trailing line break).

    Raises:
        SagaUsageError: ``entry.at`` is a naive datetime (its time zone would be a guess).
    """
    at = entry.at
    if at.tzinfo is None or at.utcoffset() is None:
        raise SagaUsageError(
            f"journal entry of step {entry.step_id!r} has a naive 'at' ({at!r}); give it a "
            f"time zone, e.g. datetime.now(timezone.utc)"
        )
    error = "null" if entry.error is None else _quote(entry.error)
    # Written out rather than through json.dumps, which builds an encoder per call: every
    # checkpoint encodes its entries. Same text as json.dumps(..., ensure_ascii=False,
    # separators=(",", ":")); tests/core/test_journal_codec.py pins it. The direction and
    # event are str enums, so each member is its value as a str: quoted as it is (``.value``
    # runs Python code on every read).
    detail = entry.detail
    return (
        f"[{_quote(entry.step_id)},{_quote(entry.direction)},"
        f"{_quote(entry.event)},{int(entry.attempt)},"
        f"{(at - _EPOCH) // _MICROSECOND},{error}"
        f"{'' if detail is None else ',' + _quote(detail)}]"
    )


def decode_journal_entry(text: str | bytes | bytearray) -> JournalEntry:
    """The entry that :func:`encode_journal_entry` wrote as ``text``.

    Raises:
        ValueError: ``text`` is not such an entry (the message says what is wrong); a store
            reports it as :class:`~saga_core.StorageCorruptedError`, naming where it read it.
    """
    try:
        parts = json.loads(text)
        if type(parts) is not list or len(parts) not in (6, 7):
            raise ValueError("not a JSON array of 6 or 7 parts")
        step_id, direction, event, attempt, at, error = parts[:6]
        detail = parts[6] if len(parts) == 7 else None
        if not (
            isinstance(step_id, str)
            and type(attempt) is int
            and type(at) is int
            and (error is None or isinstance(error, str))
            and (detail is None or isinstance(detail, str))
        ):
            raise ValueError("a part has the wrong type")
        return JournalEntry(
            step_id,
            _DIRECTIONS[direction],
            _EVENTS[event],
            attempt,
            _EPOCH + timedelta(microseconds=at),
            error,
            detail,
        )
    except (TypeError, KeyError, OverflowError) as exc:  # an unknown member, a time too far
        raise ValueError(f"{type(exc).__name__}: {exc}") from exc
    except RecursionError as exc:  # JSON nested deeper than the parser recurses
        raise ValueError("JSON nested too deeply") from exc
