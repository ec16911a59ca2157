"""The ``journal`` column: a saga's step events, stored in its own row as lines of JSON.

Each event is one line, a JSON array ``[step_id, direction, event, attempt, at, error]`` with
``at`` in integer microseconds since the epoch (UTC) and ``error`` a string or null, ended by
``"\\n"``. A write appends its events' lines to the column (``journal || :lines``) in the same
statement that updates the row, so the history is in write order and is written atomically
with the state it belongs to. JSON escapes newlines inside strings, so a line is always one
event.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone

from saga_core import JournalEntry, StepDirection, StepEvent, StorageCorruptedError

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MICROSECOND = timedelta(microseconds=1)
_DIRECTIONS = {direction.value: direction for direction in StepDirection}
_EVENTS = {event.value: event for event in StepEvent}

# A JSON string literal of a str, non-ASCII kept as it is (json's own C function).
_quote = json.encoder.encode_basestring

# The JSON text of each direction and event, by identity: ``member.value`` and hashing a member
# both run Python code, and every write encodes a few of them.
_ACT = StepDirection.ACT
_STARTED = StepEvent.STARTED
_COMPLETED = StepEvent.COMPLETED


def encode_journal(entries: Sequence[JournalEntry]) -> str:
    """The lines that append ``entries`` to a journal column ("" for none)."""
    if not entries:
        return ""
    epoch = _EPOCH
    micro = _MICROSECOND
    quote = _quote
    return "".join(
        [
            f"[{quote(entry.step_id)},"
            f"{_ACT_TEXT if entry.direction is _ACT else _COMPENSATE_TEXT},"
            f"{_event_text(entry.event)},{int(entry.attempt)},{(entry.at - epoch) // micro},"
            f"{_NULL if entry.error is None else quote(entry.error)}]\n"
            for entry in entries
        ]
    )


_ACT_TEXT = '"act"'
_COMPENSATE_TEXT = '"compensate"'
_NULL = "null"


def _event_text(event: StepEvent) -> str:
    if event is _STARTED:
        return '"started"'
    if event is _COMPLETED:
        return '"completed"'
    return _quote(event.value)


def decode_journal(saga_id: object, text: object) -> list[JournalEntry]:
    """The events of a journal column, in write order.

    Raises:
        StorageCorruptedError: the column is not text made of :func:`encode_journal` lines.
    """
    if not isinstance(text, str):
        raise StorageCorruptedError(f"the journal of saga {saga_id} is not text: {text!r}")
    entries = []
    line = ""
    try:
        for line in text.split("\n")[:-1]:
            step_id, direction, event, attempt, at, error = json.loads(line)
            if not (
                isinstance(step_id, str)
                and type(attempt) is int
                and type(at) is int
                and (error is None or isinstance(error, str))
            ):
                raise ValueError("a field has the wrong type")
            entries.append(
                JournalEntry(
                    step_id,
                    _DIRECTIONS[direction],
                    _EVENTS[event],
                    attempt,
                    _EPOCH + timedelta(microseconds=at),
                    error,
                )
            )
    except (ValueError, TypeError, KeyError, OverflowError) as exc:
        raise StorageCorruptedError(
            f"the journal of saga {saga_id} cannot be read at event {len(entries) + 1}: "
            f"{line[:200]!r} ({type(exc).__name__}: {exc}); the row was changed outside "
            "saga-core"
        ) from exc
    if text and not text.endswith("\n"):
        raise StorageCorruptedError(
            f"the journal of saga {saga_id} ends with a partial event: {text[-200:]!r}; the row "
            "was changed outside saga-core"
        )
    return entries
