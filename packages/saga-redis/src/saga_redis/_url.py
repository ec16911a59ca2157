"""Redis URLs: ``redis://[[user]:password@]host[:port][/db]``, ``rediss://`` for TLS."""

from __future__ import annotations

from typing import NamedTuple
from urllib.parse import parse_qs, unquote, urlsplit

from saga_core import SagaUsageError

DEFAULT_PORT = 6379
#: The highest database number accepted: Redis numbers its databases with a C int.
MAX_DB = 2**31 - 1

_DIGITS = frozenset("0123456789")
# What a message says instead of a part of a URL that holds credentials.
_HIDDEN = "a value not shown (the URL holds credentials)"


class RedisAddress(NamedTuple):
    """Where and how to connect, parsed from a ``redis://`` or ``rediss://`` URL."""

    host: str
    port: int
    db: int
    username: str | None
    password: str | None
    tls: bool

    def describe(self) -> str:
        """``host:port/db`` for messages; never the credentials."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'rediss' if self.tls else 'redis'}://{host}:{self.port}/{self.db}"


def parse_redis_url(url: str) -> RedisAddress:
    """Parse ``redis://[[user]:password@]host[:port][/db]`` (``rediss://`` for TLS).

    The port is 1 to 65535 and the database 0 to 2**31 - 1, both in ASCII digits; the only
    query parameter is ``db``, given once. Percent-escapes in the user name and password
    must decode as UTF-8.

    Raises:
        SagaUsageError: not such a URL, saying which part is wrong. The message never
            repeats the password: a part of the URL is quoted only when the URL holds no
            ``@`` (a password with an unescaped ``/``, ``?`` or ``#`` spills into the parts
            after it).
    """
    if not isinstance(url, str):
        raise SagaUsageError(f"a Redis URL is a str, got {type(url).__qualname__}")
    try:
        parts = urlsplit(url)
    except ValueError:  # an unbalanced '[' or ']' around an IPv6 host
        raise SagaUsageError(
            "the Redis URL is malformed (an IPv6 host goes in brackets, as in "
            "redis://[::1]:6379/0; escape '[' and ']' in a password as %5B and %5D)"
        ) from None
    scheme = parts.scheme.lower()
    if scheme not in ("redis", "rediss"):
        raise SagaUsageError(
            f"a Redis storage URL starts with redis:// or rediss://, not {scheme!r}: e.g. "
            f"'redis://127.0.0.1:6379/0'"
        )
    port = _port(parts.netloc, url)
    query = parse_qs(parts.query, keep_blank_values=True)
    unknown = sorted(query.keys() - {"db"})
    if unknown or parts.fragment:
        what = "a #fragment"
        if unknown:
            what = "other parameters" if "@" in url else repr(unknown)
        raise SagaUsageError(
            f"the Redis URL may only carry a 'db' query parameter, not {what}; pass connection "
            f"settings as keyword arguments (max_connections, connect_timeout, command_timeout, "
            f"ssl_context)"
        )
    if len(query.get("db", ())) > 1:
        raise SagaUsageError("the Redis URL gives the 'db' query parameter more than once")
    path = parts.path.strip("/")
    db_text = query["db"][0] if "db" in query else (path or "0")
    db = _number(db_text, MAX_DB)
    if db is None:
        raise SagaUsageError(
            f"the Redis URL's database must be a number from 0 to {MAX_DB} written in the "
            f"digits 0-9, as in redis://host:6379/0, got {_quoted(db_text, url)}"
        )
    return RedisAddress(
        host=_host(parts.hostname),
        port=port,
        db=db,
        username=_credential("user name", parts.username),
        password=_credential("password", parts.password),
        tls=scheme == "rediss",
    )


def _number(digits: str, highest: int) -> int | None:
    """``digits`` as an int if it is 0 to ``highest`` in ASCII digits, else None. (``int()``
    and ``str.isdigit()`` also take other scripts' digits, superscripts among them.)"""
    if not digits or len(digits) > len(str(highest)) or not _DIGITS.issuperset(digits):
        return None
    number = int(digits)
    return number if number <= highest else None


def _quoted(part: object, url: str) -> str:
    """``part`` of ``url`` quoted for a message, unless the URL holds credentials."""
    return _HIDDEN if "@" in url else repr(part)


def _port(netloc: str, url: str) -> int:
    """The port of ``netloc`` (``[user[:password]@]host[:port]``), 6379 when none is given.

    Read here rather than by ``urlsplit``'s ``port``, whose error repeats the text (perhaps
    the tail of a password with an unescaped ``/``) and which takes port 0."""
    host_port = netloc.rpartition("@")[2]
    if host_port.startswith("["):  # [IPv6]:port
        rest = host_port.partition("]")[2]
        port_text = rest[1:] if rest.startswith(":") else rest
    else:
        port_text = host_port.partition(":")[2]
    if not port_text:
        return DEFAULT_PORT
    port = _number(port_text, 65535)
    if not port:  # None, or 0: not a port a server listens on
        hint = ""
        if "@" in url:
            hint = " (escape '/', '?', '#' and '@' in a password as %2F, %3F, %23 and %40)"
        raise SagaUsageError(
            f"the Redis URL's port must be a number from 1 to 65535 written in the digits 0-9, "
            f"got {_quoted(port_text, url)}{hint}"
        )
    return port


def _host(hostname: str | None) -> str:
    """The host to connect to: ``localhost`` when none is given; a name that cannot be
    written in DNS's ASCII form (IDNA) is refused now rather than at the first connection."""
    if not hostname:
        return "localhost"
    if not hostname.isascii():
        try:
            hostname.encode("idna")
        except UnicodeError:
            raise SagaUsageError(
                "the Redis URL's host is not a valid host name (it cannot be encoded for DNS)"
            ) from None
    return hostname


def _credential(what: str, value: str | None) -> str | None:
    """The user name or password, percent-escapes decoded; escapes that are not UTF-8 would
    change the credential silently, so they are refused."""
    if value is None:
        return None
    if what == "user name" and not value:
        return None
    try:
        decoded = unquote(value, errors="strict")
        decoded.encode()
    except UnicodeError:
        raise SagaUsageError(
            f"the Redis URL's {what} is not UTF-8 text (check its %-escapes); Redis "
            f"credentials in a URL are UTF-8"
        ) from None
    return decoded
