"""How the CLI shows sagas: text tables and timelines for people, JSON documents for scripts.

Everything a person reads passes through :func:`terminal_text`: stored text (saga names, step
ids, lease owners, errors, park reasons, contexts) is data, and a control character in it must
be shown, never obeyed by the operator's terminal. JSON documents are left exact: ``json.dumps``
escapes what JSON requires, and a script gets the stored text unchanged.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

from saga_core._runtime.worker import RecoveryReport
from saga_core._storage.protocol import JournalEntry, SagaRecord

_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhd])")
_UNIT_SECONDS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_ERROR_WIDTH = 60

# What a terminal acts on or reorders instead of showing: the C0 controls (ESC starts escape
# sequences, BEL ends an OSC one, CR rewrites the line), DEL, the C1 controls (U+009B is a
# one-character CSI), the Unicode line and paragraph separators, and the bidi controls (marks,
# embeddings, overrides, isolates), which change the order in which the text is read. Lone
# surrogates are there too: no terminal encoding can write them.
_TERMINAL_UNSAFE = re.compile(
    "[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069\ud800-\udfff]"
)
_SHORT_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
_LINE_BREAK = re.compile(r"\r?\n")


def terminal_text(text: str) -> str:
    """``text`` safe to print on a terminal, on one line: every control character (C0, DEL,
    C1), line or paragraph separator, bidi control and lone surrogate is shown as its
    backslash escape (``\\x1b``, ``\\x9b``, ``\\u202e``, ``\\n``); everything else is kept.

    A backslash already in the text is kept as it is, so ``\\x1b`` may also be those four
    characters as stored; ``--json`` gives the exact text.
    """
    if text.isascii() and text.isprintable():  # the usual case: nothing to escape
        return text
    return _TERMINAL_UNSAFE.sub(_visible_escape, text)


def terminal_lines(text: str) -> list[str]:
    """``text`` split at its line breaks (``\\n`` or ``\\r\\n``), each line made safe by
    :func:`terminal_text`: for multi-line values shown as several lines."""
    return [terminal_text(line) for line in _LINE_BREAK.split(text)]


def _visible_escape(match: re.Match[str]) -> str:
    character = match.group()
    if character in _SHORT_ESCAPES:
        return _SHORT_ESCAPES[character]
    code = ord(character)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


class TerminalLogFormatter(logging.Formatter):
    """A log formatter for a terminal: the message on one line and a traceback line by line,
    each line made safe by :func:`terminal_text`.

    Log messages carry stored text (park reasons, errors, saga names) as their arguments.
    """

    def format(self, record: logging.LogRecord) -> str:
        # A copy: other handlers of the same record (a file, a test's capture) keep the exact
        # message.
        safe = logging.makeLogRecord(record.__dict__)
        safe.msg, safe.args = terminal_text(record.getMessage()), None
        return "\n".join(terminal_lines(super().format(safe)))


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
    """The first line of ``text``, made safe by :func:`terminal_text` and cut to ``width``
    characters ("-" for none)."""
    if not text:
        return "-"
    line = terminal_lines(text)[0]
    return line if len(line) <= width else line[: width - 3] + "..."


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
    """A saga record as a JSON object (the context decoded when ``with_context``)."""
    data: dict[str, Any] = {
        "saga_id": str(record.saga_id),
        "saga_name": record.saga_name,
        "saga_version": record.saga_version,
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
    """The ``list`` table: one row per saga, columns aligned.

    The ``SAGA_VERSION`` column (after ``NAME``) is shown when a listed saga runs on a
    definition version other than 1, the version every saga has unless its class says
    otherwise; ``VERSION`` is the record's write counter.
    """
    versioned = any(record.saga_version != 1 for record in records)
    header = (
        "ID",
        "NAME",
        *(("SAGA_VERSION",) if versioned else ()),
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
            terminal_text(record.saga_name),
            *((str(record.saga_version),) if versioned else ()),
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
    """The ``show`` text: the state block, the context as JSON, the journal as a timeline.

    ``saga version`` is the definition version the saga runs on (``Saga.version``);
    ``version`` the record's write counter (compare-and-set).

    Stored text is made safe by :func:`terminal_text`; only the error keeps its line breaks.
    """
    state = [
        ("status", [record.status.value + (" (parked)" if record.parked else "")]),
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
    """The journal as aligned lines: offset, step, direction, event, attempt, error."""
    start = entries[0].at
    rows = [
        (
            f"+{(entry.at - start).total_seconds():.3f}s",
            terminal_text(entry.step_id),
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
