"""How the CLI shows sagas: text tables and timelines for people, JSON documents for scripts.

Text for people passes every stored value through :func:`~saga_core._cli.text.terminal_text`
(see :mod:`saga_core._cli.text`). JSON documents are left exact: ``json.dumps`` escapes what
JSON requires, and a script gets the stored text unchanged.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from saga_core._model.status import SagaStatus
from saga_core._runtime.worker import RecoveryReport
from saga_core._storage.protocol import JournalEntry, SagaRecord

from .children import Child, children_rows
from .text import first_line, iso, short_time, terminal_lines, terminal_text
from .waiting import (
    describe_deadline,
    describe_wait,
    describe_wake,
    signal_rows,
    signals_json,
    wait_json,
)

_CANCEL_WIDTH = 40


def describe_lease(record: SagaRecord, now: datetime) -> str:
    """``owner until 12:00:00Z`` (``(expired)`` once past), or ``-`` for no lease."""
    if record.lease_owner is None:
        return "-"
    owner = terminal_text(record.lease_owner)
    if record.lease_expires_at is None:
        return owner
    expired = " (expired)" if record.lease_expires_at <= now else ""
    return f"{owner} until {short_time(record.lease_expires_at)}{expired}"


def record_json(record: SagaRecord, *, with_context: bool) -> dict[str, Any]:
    """A saga record as a JSON object. With ``with_context``, the context and the pending
    signals' payloads are there too, decoded (``list`` leaves them out: they may be large).

    ``wait`` is what a WAITING saga waits for (``{"kind": "signal" | "sleep" | "start" |
    "child", "name": ...}``), else null; ``signals`` are the pending signals, in delivery
    order; ``parent_id`` is the saga that started it as its child, else null.
    """
    data: dict[str, Any] = {
        "saga_id": str(record.saga_id),
        "saga_name": record.saga_name,
        "saga_version": record.saga_version,
        "parent_id": None if record.parent_id is None else str(record.parent_id),
        "status": record.status.value,
        "version": record.version,
        "cursor": record.cursor,
        "next_step": record.next_step,
        "applied": list(record.applied),
        "attempts": record.attempts,
        "parked": record.parked,
        "error": record.error,
        "created_at": iso(record.created_at),
        "updated_at": iso(record.updated_at),
        "lease_owner": record.lease_owner,
        "lease_expires_at": iso(record.lease_expires_at),
        "wait": wait_json(record),
        "waiting_for": record.waiting_for,
        "wake_at": iso(record.wake_at),
        "deadline_at": iso(record.deadline_at),
        "cancel_reason": record.cancel_reason,
        "signals": signals_json(record.signals, with_payload=with_context),
    }
    if with_context:
        data["context"] = decoded_context(record)
    return data


def decoded_context(record: SagaRecord) -> Any:
    """The stored context as a JSON value; its raw text if it is not valid JSON."""
    try:
        return json.loads(record.context)
    except ValueError:
        return record.context


def journal_json(entries: Sequence[JournalEntry]) -> list[dict[str, Any]]:
    """Journal entries as JSON objects, each with its offset from the first entry."""
    start = entries[0].at if entries else None
    return [
        {
            "at": iso(entry.at),
            "offset_seconds": (entry.at - start).total_seconds() if start else 0.0,
            "step_id": entry.step_id,
            "direction": entry.direction.value,
            "event": entry.event.value,
            "attempt": entry.attempt,
            "error": entry.error,
            "detail": entry.detail,
        }
        for entry in entries
    ]


def sagas_table(records: Sequence[SagaRecord], now: datetime) -> str:
    """The ``list`` table: one row per saga, columns aligned.

    Some columns are shown only when a listed saga needs them: ``SAGA_VERSION`` (after
    ``NAME``) when a saga runs on a definition version other than 1, the version every saga
    has unless its class says otherwise (``VERSION`` is the record's write counter);
    ``PARENT`` (then) when a saga is the child of another (``-`` for the others);
    ``WAITING_FOR`` and ``WAKES`` (after ``STATUS``) when a saga is WAITING; ``DEADLINE`` when
    a saga has one; ``CANCEL`` (the reason) when a cancel was requested.
    """
    columns: list[tuple[str, Callable[[SagaRecord], str]]] = [
        ("ID", lambda r: str(r.saga_id)),
        ("NAME", lambda r: terminal_text(r.saga_name)),
    ]
    if any(record.saga_version != 1 for record in records):
        columns.append(("SAGA_VERSION", lambda r: str(r.saga_version)))
    if any(record.parent_id is not None for record in records):
        columns.append(("PARENT", lambda r: "-" if r.parent_id is None else str(r.parent_id)))
    columns.append(("STATUS", lambda r: r.status.value))
    if any(record.status is SagaStatus.WAITING for record in records):
        columns.append(("WAITING_FOR", describe_wait))
        columns.append(("WAKES", lambda r: describe_wake(r, now)))
    columns += [
        ("VERSION", lambda r: str(r.version)),
        ("CURSOR", lambda r: str(r.cursor)),
        ("ATTEMPTS", lambda r: str(r.attempts)),
        ("PARKED", lambda r: "yes" if r.parked else "no"),
        ("UPDATED", lambda r: short_time(r.updated_at)),
    ]
    if any(record.deadline_at is not None for record in records):
        columns.append(("DEADLINE", lambda r: describe_deadline(r, now)))
    columns.append(("LEASE", lambda r: describe_lease(r, now)))
    if any(record.cancel_reason is not None for record in records):
        columns.append(("CANCEL", lambda r: first_line(r.cancel_reason, _CANCEL_WIDTH)))
    columns.append(("ERROR", lambda r: first_line(r.error)))
    header = tuple(name for name, _ in columns)
    return _table([header, *(tuple(cell(record) for _, cell in columns) for record in records)])


def saga_report(
    record: SagaRecord,
    entries: Sequence[JournalEntry],
    now: datetime,
    children: Sequence[Child] = (),
) -> str:
    """The ``show`` text: the state block, the child sagas, the pending signals, the context
    as JSON, the journal as a timeline.

    ``saga version`` is the definition version the saga runs on (``Saga.version``);
    ``version`` the record's write counter (compare-and-set). ``waiting for`` and ``wakes``
    are shown for a WAITING saga, ``parent`` for a child saga, ``deadline`` for a saga that
    has one, ``cancel`` once a cancel was requested; the ``children`` (each with its id and
    status, or ``not started``) when given; the pending signals when there are some.

    Stored text is made safe by :func:`terminal_text`; only the error and the cancel's reason
    keep their line breaks.
    """
    status = record.status.value + (" (parked)" if record.parked else "")
    state: list[tuple[str, list[str]]] = [("status", [status])]
    if record.status is SagaStatus.WAITING:
        state.append(("waiting for", [describe_wait(record)]))
        state.append(("wakes", [describe_wake(record, now, long=True)]))
    if record.parent_id is not None:
        state.append(("parent", [str(record.parent_id)]))
    if record.deadline_at is not None:
        state.append(("deadline", [describe_deadline(record, now, long=True)]))
    if record.cancel_reason is not None:
        state.append(("cancel", terminal_lines(f"requested: {record.cancel_reason}")))
    state += [
        ("version", [str(record.version) + " (write counter)"]),
        ("cursor", [str(record.cursor)]),
        ("next step", [terminal_text(record.next_step or "-")]),
        ("applied", [", ".join(terminal_text(step) for step in record.applied) or "-"]),
        ("lease", [describe_lease(record, now)]),
        ("saga version", [str(record.saga_version)]),
        ("attempts", [str(record.attempts)]),
        ("parked", ["yes" if record.parked else "no"]),
        ("created", [short_time(record.created_at)]),
        ("updated", [short_time(record.updated_at)]),
        ("error", terminal_lines(record.error or "-")),
    ]
    width = max(len(label) for label, _ in state) + 1
    lines = [f"saga {record.saga_id} ({terminal_text(record.saga_name)})"]
    for label, value_lines in state:
        lines.append(f"  {label + ':':<{width}} {value_lines[0]}")
        lines.extend(f"  {'':<{width}} {more}" for more in value_lines[1:])
    if children:
        lines.append("")
        lines.append(f"children ({len(children)}):")
        table = _table([("NODE", "ID", "SAGA", "STATUS"), *children_rows(children)])
        lines.extend("  " + line for line in table.splitlines())
    if record.signals:
        lines.append("")
        lines.append(f"pending signals ({len(record.signals)}):")
        table = _table([("NAME", "ID", "DELIVERED"), *signal_rows(record.signals)])
        lines.extend("  " + line for line in table.splitlines())
    lines.append("")
    lines.append("context:")
    context = decoded_context(record)
    text = context if isinstance(context, str) else json.dumps(context, indent=2, sort_keys=True)
    # json.dumps escapes the C0 controls in strings but not DEL; a context that is not JSON
    # is raw stored text.
    lines.extend("  " + line for line in terminal_lines(text))
    lines.append("")
    lines.append(f"journal ({len(entries)} entries):")
    if entries:
        lines.extend("  " + line for line in timeline(entries).splitlines())
    else:
        lines.append("  (empty)")
    return "\n".join(lines)


def timeline(entries: Sequence[JournalEntry]) -> str:
    """The journal as aligned lines: offset, step (``(saga)`` for the saga's own events),
    direction, event, attempt, then the error or the detail (who claimed it, how it ended,
    which signal a wait took, until when it waits)."""
    start = entries[0].at
    rows = [
        (
            f"+{(entry.at - start).total_seconds():.3f}s",
            terminal_text(entry.step_id) if entry.step_id else "(saga)",
            entry.direction.value,
            entry.event.value,
            f"attempt {entry.attempt}",
            _note(entry),
        )
        for entry in entries
    ]
    return _table(rows)


def _note(entry: JournalEntry) -> str:
    """What a timeline line says after the attempt: the error, else the detail."""
    if entry.error:
        return first_line(entry.error, width=200)
    if entry.detail:
        return terminal_text(entry.detail)
    return ""


def report_json(report: RecoveryReport) -> dict[str, int]:
    """A :class:`RecoveryReport` as a JSON object."""
    return dataclasses.asdict(report)


def report_text(report: RecoveryReport) -> str:
    """A :class:`RecoveryReport` as one line: ``claimed 3: completed 2, compensated 1, ...``."""
    counts = report_json(report)
    claimed = counts.pop("claimed")
    details = ", ".join(f"{name} {count}" for name, count in counts.items())
    return f"claimed {claimed}: {details}"


def _table(rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )
