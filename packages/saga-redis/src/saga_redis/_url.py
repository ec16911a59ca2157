"""Redis URLs: which deployment to connect to, and the storage options in the query.

=========================================================================  =================
URL                                                                        deployment
=========================================================================  =================
``redis://[[user]:password@]host[:port][/db]``                             one server
``unix://[[user]:password@]/path/to/redis.sock[?db=N]``                    one server, local
``redis+cluster://[[user]:password@]host:port[,host:port...]``             Redis Cluster
``redis+sentinel://[[user]:password@]host:port[,host:port...]/name[/db]``  Sentinel
=========================================================================  =================

``rediss://``, ``rediss+cluster://`` and ``rediss+sentinel://`` are the same over TLS. This
module only reads the URL: the query's storage options are checked by :mod:`._options`.
"""

from __future__ import annotations

import ipaddress
import os
from typing import Literal, NamedTuple
from urllib.parse import quote, unquote, urlsplit

from saga_core import SagaUsageError

DEFAULT_PORT = 6379
#: The port of a sentinel named without one.
DEFAULT_SENTINEL_PORT = 26379
#: The highest database number accepted: Redis numbers its databases with a C int.
MAX_DB = 2**31 - 1

Kind = Literal["single", "unix", "cluster", "sentinel"]

#: Each URL scheme: the deployment kind it names and whether it speaks TLS.
SCHEMES: dict[str, tuple[Kind, bool]] = {
    "redis": ("single", False),
    "rediss": ("single", True),
    "unix": ("unix", False),
    "redis+cluster": ("cluster", False),
    "rediss+cluster": ("cluster", True),
    "redis+sentinel": ("sentinel", False),
    "rediss+sentinel": ("sentinel", True),
}

_DIGITS = frozenset("0123456789")
# What a message says instead of a part of a URL that holds credentials.
_HIDDEN = "a value not shown (the URL holds credentials)"
_ESCAPES = "escape '/', '?', '#' and '@' in a password as %2F, %3F, %23 and %40"


class RedisTarget(NamedTuple):
    """Where to connect, parsed from a URL (no storage options)."""

    kind: Kind
    nodes: tuple[tuple[str, int], ...]
    """single: one ``(host, port)``; cluster: the seed nodes; sentinel: the sentinels;
    unix: ``()``."""
    socket_path: str | None
    """The Unix socket's path (unix only)."""
    db: int
    """The database number; always 0 for a cluster."""
    username: str | None
    password: str | None
    tls: bool
    service_name: str | None
    """The name the sentinels know the primary by (sentinel only)."""

    def describe(self) -> str:
        """The URL without its credentials or options, for messages: ``redis://host:6379/0``,
        ``unix:///run/redis.sock?db=0``, ``redis+cluster://h1:7000,h2:7001``,
        ``redis+sentinel://h1:26379,h2:26379/mymaster/0``."""
        if self.kind == "unix":
            return f"unix://{quote(self.socket_path or '')}?db={self.db}"
        scheme = "rediss" if self.tls else "redis"
        if self.kind != "single":
            scheme = f"{scheme}+{self.kind}"
        hosts = ",".join(
            f"[{host}]:{port}" if ":" in host else f"{host}:{port}" for host, port in self.nodes
        )
        if self.kind == "cluster":
            return f"{scheme}://{hosts}"
        if self.kind == "sentinel":
            return f"{scheme}://{hosts}/{quote(self.service_name or '', safe='')}/{self.db}"
        return f"{scheme}://{hosts}/{self.db}"


def parse_redis_url(url: str) -> tuple[RedisTarget, dict[str, str]]:
    """Parse a Redis URL (see the module's table) into its target and its query parameters.

    The port is 1 to 65535 and the database 0 to 2**31 - 1, both in ASCII digits; ``?db=N``
    wins over a database in the path. An IPv6 host goes in brackets (``[::1]:6379``). A host
    without a port is on 6379, a sentinel on 26379. Percent-escapes in the user name,
    password, socket path, service name and query must decode as UTF-8. The query
    parameters other than ``db`` are returned as given (each at most once, decoded); their
    names and values are :func:`._options.resolve_options`'s to judge.

    Raises:
        SagaUsageError: not such a URL, saying which part is wrong: an unknown scheme, a bad
            port, host or database, a cluster URL without nodes or with a database other
            than 0, a sentinel URL without a service name, a ``unix://`` path that does not
            exist, an ``@`` after the host (a password with an unescaped ``/``, ``?`` or
            ``#``). The message never repeats the password: a part of the URL is quoted only
            when the URL holds no ``@``.
    """
    if not isinstance(url, str):
        raise SagaUsageError(f"a Redis URL is a str, got {type(url).__qualname__}")
    try:
        parts = urlsplit(url)
    except ValueError:  # an unbalanced '[' or ']' around an IPv6 host
        raise _malformed() from None
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise SagaUsageError(
            f"a Redis storage URL starts with {', '.join(f'{s}://' for s in SCHEMES)}; not "
            f"{_quoted(scheme, url)}: e.g. 'redis://127.0.0.1:6379/0'"
        )
    kind, tls = SCHEMES[scheme]
    if "@" in parts.path + parts.query + parts.fragment:
        # The '@' that ends the credentials is after the host: the password holds a '/', '?'
        # or '#' that ended the host part early, and the "path" may be the password's tail.
        raise SagaUsageError(
            f"the Redis URL has an '@' after its host; {_ESCAPES} (and '@' in a path or "
            f"query as %40)"
        )
    if parts.fragment:
        raise SagaUsageError("the Redis URL may not carry a #fragment")
    userinfo, _, hosts = parts.netloc.rpartition("@")
    query = _query(parts.query, url)
    nodes: tuple[tuple[str, int], ...] = ()
    socket_path = service_name = path_db = None
    if kind == "unix":
        socket_path = _socket_path(hosts, parts.path, url)  # the path holds no database
    elif kind == "sentinel":
        nodes = _nodes(hosts, scheme, kind, url)
        service_name, path_db = _service(parts.path, url)
    else:
        if kind == "single" and "," in hosts:
            raise SagaUsageError(
                f"a {scheme}:// URL names one server; for several, use {scheme}+cluster:// or "
                f"{scheme}+sentinel://"
            )
        if kind == "single":
            nodes = (_node(hosts, DEFAULT_PORT, url, empty_host="localhost"),)
        else:
            nodes = _nodes(hosts, scheme, kind, url)
        path_db = parts.path.strip("/") or None
    db_text = query.pop("db", None)
    db = _db((path_db or "0") if db_text is None else db_text, url)
    if kind == "cluster" and db != 0:
        raise SagaUsageError(
            f"a Redis Cluster has only database 0; drop the database from the {scheme}:// URL"
        )
    target = RedisTarget(
        kind=kind,
        nodes=nodes,
        socket_path=socket_path,
        db=db,
        username=_credential("user name", parts.username if userinfo else None),
        password=_credential("password", parts.password if userinfo else None),
        tls=tls,
        service_name=service_name,
    )
    return target, query


def ascii_number(digits: str, highest: int) -> int | None:
    """``digits`` as an int if it is 0 to ``highest`` in ASCII digits, else None. (``int()``
    and ``str.isdigit()`` also take other scripts' digits, superscripts among them.)"""
    if not digits or len(digits) > len(str(highest)) or not _DIGITS.issuperset(digits):
        return None
    number = int(digits)
    return number if number <= highest else None


def may_quote(url: str) -> bool:
    """Whether a message may quote parts of ``url``: only when it holds no credentials (no
    ``@``; a password with an unescaped ``/``, ``?`` or ``#`` spills into the parts after the
    host)."""
    return "@" not in url


def _quoted(part: object, url: str) -> str:
    """``part`` of ``url`` quoted for a message, unless the URL holds credentials."""
    return repr(part) if may_quote(url) else _HIDDEN


def _malformed() -> SagaUsageError:
    return SagaUsageError(
        "the Redis URL is malformed (an IPv6 host goes in brackets, as in "
        "redis://[::1]:6379/0; escape '[' and ']' in a password as %5B and %5D)"
    )


def _db(text: str, url: str) -> int:
    db = ascii_number(text, MAX_DB)
    if db is None:
        raise SagaUsageError(
            f"the Redis URL's database must be a number from 0 to {MAX_DB} written in the "
            f"digits 0-9, as in redis://host:6379/0, got {_quoted(text, url)}"
        )
    return db


def _query(text: str, url: str) -> dict[str, str]:
    """The query's parameters, percent-escapes decoded (``+`` stays ``+``), each at most once."""
    found: dict[str, str] = {}
    for pair in text.split("&"):
        if not pair:
            continue
        raw_name, _, raw_value = pair.partition("=")
        name = _decoded(raw_name, "query")
        if name in found:
            raise SagaUsageError(
                f"the Redis URL gives the {_quoted(name, url)} query parameter more than once"
            )
        found[name] = _decoded(raw_value, "query")
    return found


def _decoded(text: str, what: str) -> str:
    """``text`` with its percent-escapes decoded; escapes that are not UTF-8 would change it
    silently, so they are refused."""
    try:
        decoded = unquote(text, errors="strict")
        decoded.encode()
    except UnicodeError:
        raise SagaUsageError(
            f"the Redis URL's {what} is not UTF-8 text (check its %-escapes)"
        ) from None
    return decoded


def _nodes(hosts: str, scheme: str, kind: Kind, url: str) -> tuple[tuple[str, int], ...]:
    """The ``host[:port]`` list of a cluster or sentinel URL (at least one)."""
    if kind == "cluster":
        what, example = "nodes", f"{scheme}://10.0.0.1:7000,10.0.0.2:7000"
    else:
        what, example = "sentinels", f"{scheme}://10.0.0.1:26379,10.0.0.2:26379/mymaster"
    if not hosts:
        raise SagaUsageError(f"the {scheme}:// URL names no {what}: list them, as in {example}")
    default_port = DEFAULT_PORT if kind == "cluster" else DEFAULT_SENTINEL_PORT
    nodes = []
    for text in hosts.split(","):
        if not text:
            raise SagaUsageError(
                f"the {scheme}:// URL's list of {what} has an empty entry; separate them with "
                f"one comma, as in {example}"
            )
        nodes.append(_node(text, default_port, url, empty_host=None))
    return tuple(nodes)


def _node(text: str, default_port: int, url: str, *, empty_host: str | None) -> tuple[str, int]:
    """``host[:port]`` or ``[ipv6][:port]`` as ``(host, port)``; an empty host is
    ``empty_host``, or refused when that is None.

    Read here rather than by ``urlsplit``'s ``hostname`` and ``port``, which see a single
    host, and whose port error repeats the text (perhaps the tail of a password) and which
    takes port 0."""
    if text.startswith("["):  # [IPv6]:port
        host, bracket, rest = text[1:].partition("]")
        if not bracket:
            raise _malformed()
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise _malformed() from None
        port_text = rest[1:] if rest.startswith(":") else rest
    else:
        host, _, port_text = text.partition(":")
    if not host:
        if empty_host is None:
            raise SagaUsageError(
                f"the Redis URL names a node without its host, got {_quoted(text, url)}"
            )
        host = empty_host
    if not port_text:
        return _host(host), default_port
    port = ascii_number(port_text, 65535)
    if not port:  # None, or 0: not a port a server listens on
        hint = "" if may_quote(url) else f" ({_ESCAPES})"
        raise SagaUsageError(
            f"the Redis URL's port must be a number from 1 to 65535 written in the digits 0-9, "
            f"got {_quoted(port_text, url)}{hint}"
        )
    return _host(host), port


def _host(hostname: str) -> str:
    """The host, lower-cased; a name that cannot be written in DNS's ASCII form (IDNA) is
    refused now rather than at the first connection."""
    hostname = hostname.lower()
    if not hostname.isascii():
        try:
            hostname.encode("idna")
        except UnicodeError:
            raise SagaUsageError(
                "the Redis URL's host is not a valid host name (it cannot be encoded for DNS)"
            ) from None
    return hostname


def _socket_path(hosts: str, path: str, url: str) -> str:
    """The socket path of a ``unix://`` URL, which must exist."""
    if hosts:
        raise SagaUsageError(
            "a unix:// URL names no host, only the socket's absolute path (three slashes): "
            "unix:///run/redis/redis.sock, or unix://:password@/run/redis/redis.sock"
        )
    socket_path = _decoded(path, "socket path")
    if not socket_path.startswith("/"):
        raise SagaUsageError(
            "a unix:// URL names the socket's absolute path, as in unix:///run/redis/redis.sock"
        )
    if not os.path.exists(socket_path):
        raise SagaUsageError(
            f"the socket path of the Redis URL, {_quoted(socket_path, url)}, does not exist: is "
            f"Redis running, with its 'unixsocket' setting pointing there?"
        )
    return socket_path


def _service(path: str, url: str) -> tuple[str, str | None]:
    """The service name and the database text (None when absent) of a sentinel URL's path."""
    segments = path.strip("/").split("/")
    if not segments[0]:
        raise SagaUsageError(
            "a Sentinel URL names the primary the sentinels monitor after the hosts, as in "
            "redis+sentinel://10.0.0.1:26379,10.0.0.2:26379/mymaster (and /db after it)"
        )
    if len(segments) > 2:
        raise SagaUsageError(
            f"a Sentinel URL's path is /service_name or /service_name/db, got {_quoted(path, url)}"
        )
    return _decoded(segments[0], "service name"), segments[1] if len(segments) == 2 else None


def _credential(what: str, value: str | None) -> str | None:
    """The user name or password, percent-escapes decoded (an empty user name is none)."""
    if value is None or (what == "user name" and not value):
        return None
    return _decoded(value, what)
