"""Text for the operator's terminal: control characters made visible, durations and instants
written short.

Everything a person reads passes through :func:`terminal_text`: stored text (saga names, step
ids, lease owners, errors, park reasons, contexts, signal names) is data, and a control
character in it must be shown, never obeyed by the operator's terminal.
"""

from __future__ import annotations

import logging
import re
from datetime import datetime, timedelta, timezone

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


def format_duration(duration: timedelta) -> str:
    """``duration`` as :func:`parse_duration` reads it, largest units first: ``45s``,
    ``1h30m``, ``2d3h``, ``0.5s``."""
    seconds = duration.total_seconds()
    if seconds < 60 and seconds != int(seconds):
        return f"{seconds:g}s"
    parts = []
    remaining = round(seconds)
    for unit in ("d", "h", "m", "s"):
        count, remaining = divmod(remaining, int(_UNIT_SECONDS[unit]))
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts) or "0s"


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
