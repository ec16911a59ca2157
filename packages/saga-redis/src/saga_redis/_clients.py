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
from typing import TYPE_CHECKING, Any, NamedTuple

import coredis
from coredis.connection import TCPLocation
from coredis.retry import ConstantRetryPolicy

from saga_core import SagaUsageError

if TYPE_CHECKING:
    from ._options import RedisOptions
    from ._url import RedisTarget

#: Connections a storage's client opens at most (per node on a cluster).
DEFAULT_MAX_CONNECTIONS = 100
#: Seconds to connect (the TCP and TLS connection) before giving up.
DEFAULT_CONNECT_TIMEOUT = 5.0
#: Seconds to wait for one reply, the connection's handshake (HELLO, AUTH, SELECT) included:
#: coredis bounds only the socket's connection by ``connect_timeout``, so without a reply
#: limit a server that accepts and never answers would hold a saga forever.
DEFAULT_COMMAND_TIMEOUT = 10.0
#: Seconds a script waits out a failover of a Sentinel or Cluster deployment before it
#: raises StorageUnavailableError, unless the ``failover_timeout`` option says otherwise
#: (Sentinel's own failover takes a few seconds once the primary is judged down).
DEFAULT_FAILOVER_TIMEOUT = 30.0
#: Shards (hash slots of the indexes) a storage on a cluster uses unless told otherwise: the
#: recovery indexes spread over the masters instead of loading one, and a recovery round
#: reads this many indexes.
CLUSTER_DEFAULT_SHARDS = 16

# What the sentinels themselves are reached with.
_SENTINEL_SETTINGS = frozenset({"connect_timeout", "stream_timeout", "ssl", "ssl_context"})

Client = coredis.Redis[bytes] | coredis.RedisCluster[bytes]

# On one server, a command that lost its connection is sent again, twice at most, after a
# short pause: a write carries a token, so one that had landed is recognised, not applied
# twice. (On Sentinel and Cluster the transport's failover wait does this.)
_RETRY = ConstantRetryPolicy((coredis.exceptions.ConnectionError,), retries=2, delay=0.05)


class OpenableClient(NamedTuple):
    """A client and what opens it."""

    client: Client
    contexts: tuple[AbstractAsyncContextManager[Any], ...]
    """Entered in order to open the client, exited in reverse to close it."""
    failover_seconds: float | None = None
    """How long a script waits out a failover (Sentinel, Cluster); None: no wait."""
    replica_ack: bool = False
    """A write counts once a replica has it too (Sentinel)."""


def build_client(target: RedisTarget, options: RedisOptions) -> OpenableClient:
    """The coredis client for ``target`` with the connection ``options`` (nothing connects
    until it is opened).

    Raises:
        SagaUsageError: the TLS settings cannot be used (a CA bundle that holds no
            certificate, say).
    """
    try:
        return _build(target, options)
    except ssl.SSLError as exc:
        raise SagaUsageError(
            f"the TLS settings of the Redis storage cannot be used ({exc.reason or exc}): "
            f"check ssl_ca_certs (a PEM file of CA certificates) or ssl_context"
        ) from exc


def _build(target: RedisTarget, options: RedisOptions) -> OpenableClient:
    """A target's nodes are the server (single), the seed nodes (cluster: the client learns
    the rest) or the sentinels (sentinel: the client asks them for the primary of
    ``target.service_name``, and again after a failover).
    """
    common: dict[str, Any] = {
        "username": target.username,
        "password": target.password,
        "connect_timeout": options.connect_timeout,
        "stream_timeout": options.command_timeout,
        "max_connections": options.max_connections,
    }
    if target.tls:
        common["ssl"] = True
        common["ssl_check_hostname"] = options.ssl_check_hostname
        if options.ssl_context is not None:
            common["ssl_context"] = options.ssl_context
        if options.ssl_ca_certs is not None:
            common["ssl_ca_certs"] = options.ssl_ca_certs
    if target.kind == "cluster":
        cluster: coredis.RedisCluster[bytes] = coredis.RedisCluster(
            startup_nodes=[TCPLocation(host, port) for host, port in target.nodes],
            max_connections_per_node=True,
            **common,
        )
        return OpenableClient(cluster, (cluster,), options.failover_timeout)
    if target.kind == "sentinel":
        assert target.service_name is not None, "a sentinel URL names its service"
        # The URL's credentials are the primary's; sentinels are reached with the same
        # timeouts and TLS, without them.
        sentinel_kwargs = {key: value for key, value in common.items() if key in _SENTINEL_SETTINGS}
        sentinels: coredis.Sentinel[bytes] = coredis.Sentinel(
            [TCPLocation(host, port) for host, port in target.nodes],
            sentinel_kwargs=sentinel_kwargs,
        )
        # Retries are the transport's failover wait (see CoredisTransport).
        primary = sentinels.primary_for(target.service_name, db=target.db, **common)
        return OpenableClient(
            primary, (sentinels, primary), options.failover_timeout, replica_ack=True
        )
    if target.kind == "unix":
        single: coredis.Redis[bytes] = coredis.Redis(
            unix_socket_path=target.socket_path, db=target.db, retry_policy=_RETRY, **common
        )
    else:
        ((host, port),) = target.nodes
        single = coredis.Redis(host, port, target.db, retry_policy=_RETRY, **common)
    return OpenableClient(single, (single,))
