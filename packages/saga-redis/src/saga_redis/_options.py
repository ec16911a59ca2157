"""The Redis storage's options: one table, read from a URL's query or from keyword arguments.

Each option may be given as a query parameter (text: ``?key_prefix=shop:&shards=16``) or as a
keyword argument (a typed value, or text that reads as the query form, which is what the CLI's
``--option key=value`` passes), except ``ssl_context``, a keyword only. Giving one in both
places is fine when the values agree. :func:`resolve_url` reads a URL and the keyword
arguments together; :func:`resolve_options` merges the options alone.
"""

from __future__ import annotations

import math
import os
import re
import ssl
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

from saga_core import SagaUsageError

from ._arguments import (
    DEFAULT_MAX_JOURNAL_ENTRIES,
    DEFAULT_RETAIN_FINISHED_SECONDS,
    journal_cap_arg,
    retention_arg,
)
from ._clients import (
    DEFAULT_COMMAND_TIMEOUT,
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_FAILOVER_TIMEOUT,
    DEFAULT_MAX_CONNECTIONS,
)
from ._keys import DEFAULT_KEY_PREFIX, KeyLayout, validate_key_prefix
from ._url import RedisTarget, ascii_number, may_quote, parse_redis_url

# Seconds in the query: ASCII digits with an optional fraction (``float()`` would also take
# other scripts' digits, signs, exponents, "inf" and "nan").
_SECONDS = re.compile(r"[0-9]+(?:\.[0-9]*)?|\.[0-9]+")
_LARGEST_INT = 2**63 - 1
# The options only TLS connections use.
_TLS_OPTIONS = ("ssl_context", "ssl_ca_certs", "ssl_check_hostname")


class RedisOptions(NamedTuple):
    """Every storage option, resolved: the given value or its default."""

    key_prefix: str
    shards: int | None
    """None: the storage chooses for the deployment kind."""
    retain_finished_seconds: float | None
    """None: finished sagas are kept forever."""
    max_journal_entries: int | None
    """None: every journal entry is kept."""
    max_connections: int
    connect_timeout: float | None
    command_timeout: float | None
    failover_timeout: float
    ssl_context: ssl.SSLContext | None
    ssl_ca_certs: str | None
    ssl_check_hostname: bool


class _Option(NamedTuple):
    """One row of the table: how an option reads from text and from a typed value."""

    default: Any
    expect: str
    """What a valid value is, for messages."""
    read_text: Callable[[str], Any] | None
    """Text (a query value) to a value, raising ValueError; None for a keyword-only option."""
    read_value: Callable[[Any], Any]
    """A keyword argument's value to the option's value, raising ValueError or TypeError."""
    check: Callable[[Any], object] | None = None
    """A further check of the value that raises SagaUsageError (the storage's own rule)."""


def _nullable(read: Callable[[str], Any]) -> Callable[[str], Any]:
    def read_or_none(text: str) -> Any:
        return None if text.lower() == "none" else read(text)

    return read_or_none


def _whole_text(text: str) -> int:
    number = ascii_number(text, _LARGEST_INT)
    if number is None:
        raise ValueError(text)
    return number


def _seconds_text(text: str) -> float:
    if _SECONDS.fullmatch(text) is None:
        raise ValueError(text)
    return float(text)


def _flag_text(text: str) -> bool:
    lowered = text.lower()
    if lowered not in ("true", "false"):
        raise ValueError(text)
    return lowered == "true"


def _whole(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(value)
    return value


def _seconds(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(value)
    return float(value)


def _flag(value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError(value)
    return value


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(value)
    return value


def _or_none(read: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def read_or_none(value: Any) -> Any:
        return None if value is None else read(value)

    return read_or_none


def _context(value: Any) -> ssl.SSLContext | None:
    if value is not None and not isinstance(value, ssl.SSLContext):
        raise TypeError(value)
    return value


def _at_least_one(name: str) -> Callable[[Any], None]:
    def check(value: Any) -> None:
        if value < 1:
            raise SagaUsageError(f"{name} must be an int >= 1, got {value!r}")

    return check


def _limit(name: str) -> Callable[[Any], None]:
    def check(value: Any) -> None:
        if value is not None and not (math.isfinite(value) and value > 0):
            raise SagaUsageError(f"{name} must be None or seconds > 0, got {value!r}")

    return check


def _positive(name: str) -> Callable[[Any], None]:
    def check(value: Any) -> None:
        if not (math.isfinite(value) and value > 0):
            raise SagaUsageError(f"{name} must be seconds > 0, got {value!r}")

    return check


def _shards(value: Any) -> None:
    if value is not None:
        KeyLayout(DEFAULT_KEY_PREFIX, value)  # the layout's own rule for the shard count


def _ca_file(value: Any) -> None:
    if value is not None and not os.path.isfile(value):
        raise SagaUsageError(f"ssl_ca_certs names no file: {value!r}")


_SECONDS_OR_NONE = "a number of seconds > 0, or none"

#: The options, by name.
OPTIONS: dict[str, _Option] = {
    "key_prefix": _Option(
        DEFAULT_KEY_PREFIX,
        "1 to 100 characters among letters, digits and '_.:/-', starting with a letter or "
        "digit (braces would break the cluster hash tags)",
        str,
        _text,
        validate_key_prefix,
    ),
    "shards": _Option(
        None,
        "a whole number from 1 to 16384, or none (the storage chooses)",
        _nullable(_whole_text),
        _or_none(_whole),
        _shards,
    ),
    "retain_finished_seconds": _Option(
        DEFAULT_RETAIN_FINISHED_SECONDS,
        f"{_SECONDS_OR_NONE} (keep finished sagas forever)",
        _nullable(_seconds_text),
        _or_none(_seconds),
        retention_arg,
    ),
    "max_journal_entries": _Option(
        DEFAULT_MAX_JOURNAL_ENTRIES,
        "a whole number >= 1, or none (keep every entry)",
        _nullable(_whole_text),
        _or_none(_whole),
        journal_cap_arg,
    ),
    "max_connections": _Option(
        DEFAULT_MAX_CONNECTIONS,
        "a whole number >= 1",
        _whole_text,
        _whole,
        _at_least_one("max_connections"),
    ),
    "connect_timeout": _Option(
        DEFAULT_CONNECT_TIMEOUT,
        f"{_SECONDS_OR_NONE} (no limit)",
        _nullable(_seconds_text),
        _or_none(_seconds),
        _limit("connect_timeout"),
    ),
    "command_timeout": _Option(
        DEFAULT_COMMAND_TIMEOUT,
        f"{_SECONDS_OR_NONE} (no limit)",
        _nullable(_seconds_text),
        _or_none(_seconds),
        _limit("command_timeout"),
    ),
    "failover_timeout": _Option(
        DEFAULT_FAILOVER_TIMEOUT,
        "a number of seconds > 0 (Sentinel and Cluster URLs only)",
        _seconds_text,
        _seconds,
        _positive("failover_timeout"),
    ),
    "ssl_context": _Option(None, "an ssl.SSLContext, or None", None, _context),
    "ssl_ca_certs": _Option(
        None, "the path of a file of CA certificates (PEM)", str, _or_none(_text), _ca_file
    ),
    "ssl_check_hostname": _Option(True, "true or false", _flag_text, _flag),
}

_QUERY_NAMES = ("db", *(name for name, option in OPTIONS.items() if option.read_text))


def resolve_options(
    query: Mapping[str, str], kwargs: Mapping[str, Any], *, quote_query: bool = False
) -> RedisOptions:
    """Merge the URL's query parameters (``db`` taken out) and the keyword arguments.

    Args:
        query: the query parameters :func:`._url.parse_redis_url` returned.
        kwargs: the keyword arguments; a text value for an option of another type reads as
            in the query (``"16"``, ``"none"``, ``"false"``).
        quote_query: whether messages may quote the query's names and values (only when the
            URL holds no credentials, see :func:`._url.may_quote`).

    Raises:
        SagaUsageError: an unknown option (the message lists the accepted ones), a value that
            is not of the option's type or breaks its rule (for a query value, the message
            names the option and not the value unless ``quote_query``), an option given in
            the query and as a keyword argument with different values, or ``ssl_context``
            together with ``ssl_ca_certs`` or ``ssl_check_hostname``.
    """
    _refuse_unknown(query, kwargs, quote_query)
    values: dict[str, Any] = {name: option.default for name, option in OPTIONS.items()}
    from_query = {name: _from_query(name, text, quote_query) for name, text in query.items()}
    from_kwargs = {name: _from_keyword(name, value) for name, value in kwargs.items()}
    contradicting = sorted(
        name
        for name in from_query.keys() & from_kwargs.keys()
        if from_query[name] != from_kwargs[name]
    )
    if contradicting:
        raise SagaUsageError(
            f"options that contradict the URL: {', '.join(contradicting)} given in the URL's "
            f"query and as keyword arguments with different values; give each once"
        )
    values.update(from_query)
    values.update(from_kwargs)
    if values["ssl_context"] is not None and any(
        name in from_query or name in from_kwargs for name in _TLS_OPTIONS[1:]
    ):
        raise SagaUsageError(
            "ssl_context is given with ssl_ca_certs or ssl_check_hostname: set the CA "
            "certificates and the host name check on the context instead"
        )
    return RedisOptions(**values)


def resolve_url(url: str, kwargs: Mapping[str, Any]) -> tuple[RedisTarget, RedisOptions]:
    """Read a Redis URL and the keyword options that come with it: the target, and every
    option resolved by :func:`resolve_options`.

    Raises:
        SagaUsageError: the URL is not a Redis URL (see :func:`._url.parse_redis_url`), an
            option is wrong (see :func:`resolve_options`), or a TLS option
            (``ssl_context``, ``ssl_ca_certs``, ``ssl_check_hostname``) comes with a URL
            that is not TLS (``rediss://``, ``rediss+cluster://``, ``rediss+sentinel://``),
            or ``failover_timeout`` with a URL of one server (nothing fails over).
    """
    target, query = parse_redis_url(url)
    options = resolve_options(query, kwargs, quote_query=may_quote(url))
    if target.kind in ("single", "unix") and "failover_timeout" in (query.keys() | kwargs.keys()):
        raise SagaUsageError(
            "failover_timeout given, but the URL names one server, which has no failover to "
            "wait out: use it with a redis+sentinel:// or redis+cluster:// URL, or drop it"
        )
    if not target.tls:
        given = [
            name
            for name in _TLS_OPTIONS
            if name in query or (name in kwargs and kwargs[name] is not None)
        ]
        if given:
            raise SagaUsageError(
                f"{', '.join(given)} given, but the URL is not TLS: use a rediss:// (or "
                f"rediss+cluster://, rediss+sentinel://) URL, or drop the TLS options"
            )
    return target, options


def _refuse_unknown(query: Mapping[str, str], kwargs: Mapping[str, Any], quote: bool) -> None:
    unknown = sorted(kwargs.keys() - OPTIONS.keys())
    if unknown:
        raise SagaUsageError(
            f"unknown Redis storage option(s) {', '.join(unknown)}; accepted: "
            f"{', '.join(OPTIONS)} (the database goes in the URL)"
        )
    unknown = sorted(query.keys() - _QUERY_NAMES)
    if not unknown:
        return
    if unknown == ["ssl_context"]:
        raise SagaUsageError(
            "ssl_context cannot be given in the URL: pass an ssl.SSLContext as a keyword "
            "argument, or use ssl_ca_certs and ssl_check_hostname in the URL"
        )
    what = repr(unknown) if quote else "parameters not shown (the URL holds credentials)"
    raise SagaUsageError(
        f"the Redis URL's query has unknown options, {what}; accepted in the query: "
        f"{', '.join(_QUERY_NAMES)}"
    )


def _from_query(name: str, text: str, quote: bool) -> Any:
    option = OPTIONS[name]
    assert option.read_text is not None  # keyword-only options were refused already
    try:
        value = option.read_text(text)
    except ValueError:
        got = f", got {text!r}" if quote else ""
        raise SagaUsageError(
            f"the Redis URL's {name} option must be {option.expect}{got}"
        ) from None
    if option.check is not None:
        try:
            option.check(value)
        except SagaUsageError:
            if quote:
                raise
            # Not chained: the storage's message quotes the value.
            raise SagaUsageError(
                f"the Redis URL's {name} option is invalid: it must be {option.expect}"
            ) from None
    return value


def _from_keyword(name: str, value: Any) -> Any:
    option = OPTIONS[name]
    read_text = option.read_text
    try:
        if isinstance(value, str) and read_text is not None and read_text is not str:
            resolved = read_text(value)
        else:
            resolved = option.read_value(value)
    except (ValueError, TypeError):
        raise SagaUsageError(f"{name} must be {option.expect}, got {value!r}") from None
    if option.check is not None:
        option.check(resolved)
    return resolved
