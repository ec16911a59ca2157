"""Helpers shared by the saga-redis tests: key clean-up, and a TCP proxy that can cut Redis off."""

from __future__ import annotations

import anyio
import anyio.abc
import redis


def purge(url: str, prefix: str) -> int:
    """Delete every key under ``prefix`` in the database of ``url``; return how many."""
    client = redis.Redis.from_url(url)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
        return len(keys)
    finally:
        client.close()


def keys_under(url: str, prefix: str) -> list[str]:
    """The keys under ``prefix``, sorted, as text."""
    client = redis.Redis.from_url(url, decode_responses=True)
    try:
        return sorted(client.scan_iter(match=f"{prefix}*", count=1000))
    finally:
        client.close()


def url_with_port(url: str, port: int) -> str:
    """``url`` (``redis://127.0.0.1:6379/14``) pointed at another local port, same database."""
    database = url.rsplit("/", 1)[1] if url.count("/") >= 3 else "0"
    return f"redis://127.0.0.1:{port}/{database}"


_EVALSHA = b"$7\r\nEVALSHA\r\n"


class TcpProxy:
    """Forwards connections from a loopback port to the Redis server, until told otherwise.

    :meth:`cut` drops every open connection (as a server restart does) and keeps accepting new
    ones; :meth:`stop` also stops listening, so Redis becomes unreachable through the proxy.
    :attr:`evalsha` counts the ``EVALSHA`` commands sent through it.
    """

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self.connections = 0
        self.evalsha = 0
        self._serving = anyio.CancelScope()
        self._pairs: set[anyio.CancelScope] = set()

    async def start(self, task_group: anyio.abc.TaskGroup) -> int:
        """Listen on a free loopback port (returned) and serve in ``task_group``."""
        listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
        self.port = listener.extra(anyio.abc.SocketAttribute.local_port)
        task_group.start_soon(self._serve, listener)
        return self.port

    async def _serve(self, listener: anyio.abc.Listener[anyio.abc.SocketStream]) -> None:
        with self._serving:
            async with listener:
                await listener.serve(self._forward)

    async def _forward(self, client: anyio.abc.SocketStream) -> None:
        self.connections += 1
        scope = anyio.CancelScope()
        self._pairs.add(scope)
        try:
            with scope:
                async with (
                    client,
                    await anyio.connect_tcp(*self.target) as upstream,
                    anyio.create_task_group() as pumps,
                ):
                    pumps.start_soon(self._pump, client, upstream, pumps.cancel_scope, True)
                    pumps.start_soon(self._pump, upstream, client, pumps.cancel_scope, False)
        finally:
            self._pairs.discard(scope)

    async def _pump(
        self,
        source: anyio.abc.SocketStream,
        sink: anyio.abc.SocketStream,
        pair: anyio.CancelScope,
        to_server: bool,
    ) -> None:
        tail = b""
        try:
            async for chunk in source:
                if to_server:
                    # A command's name is a bulk string: "$7\r\nEVALSHA\r\n". The tail keeps a
                    # name split between two chunks countable.
                    seen = tail + chunk
                    self.evalsha += seen.count(_EVALSHA) - tail.count(_EVALSHA)
                    tail = seen[-len(_EVALSHA) :]
                await sink.send(chunk)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            pass
        pair.cancel()

    def cut(self) -> None:
        """Drop every open connection; new ones are still accepted."""
        for scope in list(self._pairs):
            scope.cancel()

    def stop(self) -> None:
        """Drop every connection and stop listening."""
        self.cut()
        self._serving.cancel()
