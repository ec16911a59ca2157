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

# One encoder for every call (json.dumps with options builds one per call); non-ASCII text is
# kept as it is, as the context codec keeps it.
_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def encode_journal(entries: Sequence[JournalEntry]) -> str:
    """The lines that append ``entries`` to a journal column ("" for none)."""
    if not entries:
        return ""
    epoch = _EPOCH
    micro = _MICROSECOND
    lines = [
        _dumps(
            [
                entry.step_id,
                entry.direction.value,
                entry.event.value,
                entry.attempt,
                (entry.at - epoch) // micro,
                entry.error,
            ]
        )
        for entry in entries
    ]
    lines.append("")
    return "\n".join(lines)


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
