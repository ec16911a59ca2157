"""How the CLI shows sagas: text tables and timelines for people, JSON documents for scripts."""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

from ._storage import JournalEntry, SagaRecord
from ._worker import RecoveryReport

_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhd])")
_UNIT_SECONDS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_ERROR_WIDTH = 60


def parse_duration(text: str) -> timedelta:
    """Parse ``30s``, ``15m``, ``2h``, ``1d`` or a sum such as ``1h30m`` into a timedelta.

    Raises:
        ValueError: the text is not such a duration.
    """
    compact = text.strip().lower()
    parts = _DURATION.findall(compact)
    if not compact or "".join(number + unit for number, unit in parts) != compact:
        raise ValueError(f"not a duration: {text!r} (use e.g. 30s, 15m, 2h, 1d or 1h30m)")
    return timedelta(seconds=sum(float(number) * _UNIT_SECONDS[unit] for number, unit in parts))


def iso(moment: datetime | None) -> str | None:
    """``moment`` as ISO 8601 in UTC (``2025-01-31T12:00:00.123456+00:00``), or None."""
    return None if moment is None else moment.astimezone(timezone.utc).isoformat()


def short_time(moment: datetime | None) -> str:
    """``moment`` in UTC to the second, for tables (``2025-01-31 12:00:00Z``)."""
    if moment is None:
        return "-"
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")


def first_line(text: str | None, width: int = _ERROR_WIDTH) -> str:
    """The first line of ``text``, cut to ``width`` characters ("-" for none)."""
    if not text:
        return "-"
    line = text.splitlines()[0] if text.splitlines() else text
    return line if len(line) <= width else line[: width - 3] + "..."


def describe_lease(record: SagaRecord, now: datetime) -> str:
    """``owner until 12:00:00Z`` (``(expired)`` once past), or ``-`` for no lease."""
    if record.lease_owner is None:
        return "-"
    if record.lease_expires_at is None:
        return record.lease_owner
    expired = " (expired)" if record.lease_expires_at <= now else ""
    return f"{record.lease_owner} until {short_time(record.lease_expires_at)}{expired}"


def record_json(record: SagaRecord, *, with_context: bool) -> dict[str, Any]:
    """A saga record as a JSON object (the context decoded when ``with_context``)."""
    data: dict[str, Any] = {
        "saga_id": str(record.saga_id),
        "saga_name": record.saga_name,
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
        }
        for entry in entries
    ]


def sagas_table(records: Sequence[SagaRecord], now: datetime) -> str:
    """The ``list`` table: one row per saga, columns aligned."""
    header = (
        "ID",
        "NAME",
        "STATUS",
        "VERSION",
        "CURSOR",
        "ATTEMPTS",
        "PARKED",
        "UPDATED",
        "LEASE",
        "ERROR",
    )
    rows = [
        (
            str(record.saga_id),
            record.saga_name,
            record.status.value,
            str(record.version),
            str(record.cursor),
            str(record.attempts),
            "yes" if record.parked else "no",
            short_time(record.updated_at),
            describe_lease(record, now),
            first_line(record.error),
        )
        for record in records
    ]
    return _table([header, *rows])


def saga_report(record: SagaRecord, entries: Sequence[JournalEntry], now: datetime) -> str:
    """The ``show`` text: the state block, the context as JSON, the journal as a timeline."""
    state = [
        ("status", record.status.value + (" (parked)" if record.parked else "")),
        ("version", str(record.version)),
        ("cursor", str(record.cursor)),
        ("next step", record.next_step or "-"),
        ("applied", ", ".join(record.applied) or "-"),
        ("lease", describe_lease(record, now)),
        ("attempts", str(record.attempts)),
        ("parked", "yes" if record.parked else "no"),
        ("created", short_time(record.created_at)),
        ("updated", short_time(record.updated_at)),
        ("error", record.error or "-"),
    ]
    width = max(len(label) for label, _ in state) + 1
    lines = [f"saga {record.saga_id} ({record.saga_name})"]
    for label, value in state:
        value_lines = value.splitlines() or [""]
        lines.append(f"  {label + ':':<{width}} {value_lines[0]}")
        lines.extend(f"  {'':<{width}} {more}" for more in value_lines[1:])
    lines.append("")
    lines.append("context:")
    context = decoded_context(record)
    text = context if isinstance(context, str) else json.dumps(context, indent=2, sort_keys=True)
    lines.extend("  " + line for line in text.splitlines())
    lines.append("")
    lines.append(f"journal ({len(entries)} entries):")
    if entries:
        lines.extend("  " + line for line in timeline(entries).splitlines())
    else:
        lines.append("  (empty)")
    return "\n".join(lines)


def timeline(entries: Sequence[JournalEntry]) -> str:
    """The journal as aligned lines: offset, step, direction, event, attempt, error."""
    start = entries[0].at
    rows = [
        (
            f"+{(entry.at - start).total_seconds():.3f}s",
            entry.step_id,
            entry.direction.value,
            entry.event.value,
            f"attempt {entry.attempt}",
            first_line(entry.error, width=200) if entry.error else "",
        )
        for entry in entries
    ]
    return _table(rows)


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
