"""The coredis clients a storage opened from a URL talks through: one server (over TCP or a
unix socket), a Redis Cluster, or the primary a set of Sentinels names.

coredis is anyio-native (asyncio and trio without threads) and follows structured
concurrency: a client's connections live inside its ``async with`` block. :func:`build_client`
therefore returns the client with the context managers that open it, in the order to enter
them; the storage enters them when it is entered itself (``async with storage:``).
"""

from __future__ import annotations

import ssl
from contextlib import AbstractAsyncContextManager
from typing import Any, Literal, NamedTuple

import coredis
from coredis.retry import ConstantRetryPolicy

#: Connections a storage's client opens at most (per node on a cluster).
DEFAULT_MAX_CONNECTIONS = 100
#: Seconds to connect (and authenticate) before giving up.
DEFAULT_CONNECT_TIMEOUT = 5.0

Kind = Literal["single", "unix", "cluster", "sentinel"]
Client = coredis.Redis[bytes] | coredis.RedisCluster[bytes]

# A command that lost its connection is sent again, twice at most, after a short pause: a
# write carries a token, so one that had landed is recognised, not applied twice.
_RETRY = ConstantRetryPolicy((coredis.exceptions.ConnectionError,), retries=2, delay=0.05)


class OpenableClient(NamedTuple):
    """A client and what opens it."""

    client: Client
    contexts: tuple[AbstractAsyncContextManager[Any], ...]
    """Entered in order to open the client, exited in reverse to close it."""


def build_client(
    *,
    kind: Kind,
    nodes: tuple[tuple[str, int], ...],
    socket_path: str | None,
    db: int,
    username: str | None,
    password: str | None,
    tls: bool,
    service_name: str | None,
    max_connections: int,
    connect_timeout: float | None,
    command_timeout: float | None,
    ssl_context: ssl.SSLContext | None,
) -> OpenableClient:
    """The coredis client for a deployment (nothing connects until it is opened).

    ``nodes`` are the server (single), the seed nodes (cluster) or the sentinels (sentinel);
    ``service_name`` the primary the sentinels monitor. ``command_timeout`` bounds the wait
    for one reply (None: no limit).
    """
    common: dict[str, Any] = {
        "username": username,
        "password": password,
        "connect_timeout": connect_timeout,
        "stream_timeout": command_timeout,
        "max_connections": max_connections,
        "retry_policy": _RETRY,
    }
    if tls:
        common["ssl"] = True
        if ssl_context is not None:
            common["ssl_context"] = ssl_context
    if kind == "cluster":
        cluster: coredis.RedisCluster[bytes] = coredis.RedisCluster(
            startup_nodes=[coredis.connection.TCPLocation(host, port) for host, port in nodes],
            max_connections_per_node=True,
            **common,
        )
        return OpenableClient(cluster, (cluster,))
    if kind == "sentinel":
        assert service_name is not None, "a sentinel URL names its service"
        # The URL's credentials are the primary's; sentinels are reached with the same
        # timeouts and TLS, without them.
        sentinel_kwargs = {
            key: value
            for key, value in common.items()
            if key in ("connect_timeout", "stream_timeout", "ssl", "ssl_context")
        }
        sentinels: coredis.Sentinel[bytes] = coredis.Sentinel(
            [(host, port) for host, port in nodes], sentinel_kwargs=sentinel_kwargs
        )
        primary = sentinels.primary_for(service_name, db=db, **common)
        return OpenableClient(primary, (sentinels, primary))
    if kind == "unix":
        single: coredis.Redis[bytes] = coredis.Redis(unix_socket_path=socket_path, db=db, **common)
    else:
        ((host, port),) = nodes
        single = coredis.Redis(host, port, db, **common)
    return OpenableClient(single, (single,))
