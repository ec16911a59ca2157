"""Redis URLs: ``redis://[[user]:password@]host[:port][/db]``, ``rediss://`` for TLS."""

from __future__ import annotations

from typing import NamedTuple
from urllib.parse import parse_qs, unquote, urlsplit

from saga_core import SagaUsageError

DEFAULT_PORT = 6379


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

    Raises:
        SagaUsageError: not such a URL. The message never repeats the URL (it may hold a
            password).
    """
    if not isinstance(url, str):
        raise SagaUsageError(f"a Redis URL is a str, got {type(url).__qualname__}")
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("redis", "rediss"):
        raise SagaUsageError(
            f"a Redis storage URL starts with redis:// or rediss://, not {scheme!r}: e.g. "
            f"'redis://127.0.0.1:6379/0'"
        )
    try:
        port = parts.port or DEFAULT_PORT
    except ValueError as exc:
        raise SagaUsageError(f"the Redis URL's port is invalid ({exc})") from None
    query = parse_qs(parts.query, keep_blank_values=True)
    unknown = sorted(query.keys() - {"db"})
    if unknown or parts.fragment:
        raise SagaUsageError(
            f"the Redis URL may only carry a 'db' query parameter, not {unknown or '#fragment'}; "
            f"pass connection settings as keyword arguments (max_connections, connect_timeout, "
            f"command_timeout, ssl_context)"
        )
    path = parts.path.strip("/")
    db_text = query["db"][0] if "db" in query else (path or "0")
    if not db_text.isdigit():
        raise SagaUsageError(
            f"the Redis URL's database must be a number, as in redis://host:6379/0, got {db_text!r}"
        )
    return RedisAddress(
        host=parts.hostname or "localhost",
        port=port,
        db=int(db_text),
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password is not None else None,
        tls=scheme == "rediss",
    )
