"""The ``journal`` column: a saga's step events, stored in its own row as lines of JSON.

Each event is one line in saga-core's journal entry form
(:func:`saga_core.storage.encode_journal_entry`: ``[step_id, direction, event, attempt, at,
error]``, ``at`` in integer microseconds since the epoch), ended by ``"\\n"``. A write appends
its events' lines to the column (``journal || :lines``) in the same statement that updates the
row, so the history is in write order and is written atomically with the state it belongs to.
JSON escapes newlines inside strings, so a line is always one event.
"""

from __future__ import annotations

from collections.abc import Sequence
from uuid import UUID

from saga_core import StorageCorruptedError
from saga_core.storage import JournalEntry, decode_journal_entry, encode_journal_entry


def encode_journal(entries: Sequence[JournalEntry]) -> str:
    """The lines that append ``entries`` to a journal column ("" for none).

    Raises:
        SagaUsageError: an entry's ``at`` is a naive datetime.
    """
    if not entries:
        return ""
    return "".join([f"{encode_journal_entry(entry)}\n" for entry in entries])


def decode_journal(saga_id: UUID, text: object) -> list[JournalEntry]:
    """The events of a journal column, in write order.

    Raises:
        StorageCorruptedError: (``saga_id`` set) the column is not text made of
            :func:`encode_journal` lines.
    """
    if not isinstance(text, str):
        raise StorageCorruptedError(
            f"the journal of saga {saga_id} is not text: {text!r:.100}", saga_id=saga_id
        )
    entries = []
    line = ""
    try:
        for line in text.split("\n")[:-1]:
            entries.append(decode_journal_entry(line))
    except (ValueError, RecursionError) as exc:
        reason = "nested too deeply to parse" if isinstance(exc, RecursionError) else exc
        raise StorageCorruptedError(
            f"the journal of saga {saga_id} cannot be read at event {len(entries) + 1}: "
            f"{line[:200]!r} ({reason}); the row was changed outside saga-core",
            saga_id=saga_id,
        ) from exc
    if text and not text.endswith("\n"):
        raise StorageCorruptedError(
            f"the journal of saga {saga_id} ends with a partial event: {text[-200:]!r}; the row "
            "was changed outside saga-core",
            saga_id=saga_id,
        )
    return entries
