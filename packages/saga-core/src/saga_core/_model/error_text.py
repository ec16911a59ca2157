"""The text stored for an error: always storable by every storage, and bounded in length.

Every error text the library writes (a journal entry's ``error``, a record's ``error``, a park
reason) is made here, once, so every storage receives the same bytes and none can refuse them:
an exception's message may hold lone surrogates (from ``os.fsdecode``, subprocess output, file
names), which UTF-8 cannot encode, or NUL characters, which PostgreSQL text cannot hold.
"""

from __future__ import annotations

import re

#: The most characters an error text holds; a longer one is cut and says how much was cut.
MAX_ERROR_TEXT_LENGTH = 2000

# What no storage can be trusted to keep: lone surrogates and NUL.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def storable_text(text: str, *, limit: int = MAX_ERROR_TEXT_LENGTH) -> str:
    """``text`` as every storage can store it: lone surrogates and NUL characters replaced by
    their backslash escapes (``\\udcff``, ``\\x00``), and at most ``limit`` characters (a
    longer text is cut and ends with ``"... [N more characters]"``)."""
    if not text.isascii() or "\x00" in text:
        text = _UNSTORABLE.sub(_escape, text)
    if len(text) > limit:
        # The marker's count is at most len(text), so this cut leaves room for the marker.
        kept = max(limit - len(f"... [{len(text)} more characters]"), 0)
        text = f"{text[:kept]}... [{len(text) - kept} more characters]"
    return text


def describe_error(error: BaseException) -> str:
    """``"ExceptionType: message"`` as stored in the journal and a record's error: storable
    (see :func:`storable_text`) and at most :data:`MAX_ERROR_TEXT_LENGTH` characters. An
    exception whose ``str()`` raises is described by its type and that failure."""
    try:
        message = str(error)
    except Exception as exc:  # a user's exception with a broken __str__ must not stop a rollback
        message = f"<str() failed: {type(exc).__name__}>"
    return storable_text(f"{type(error).__name__}: {message}")
