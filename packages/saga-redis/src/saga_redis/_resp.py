"""A small Redis client on anyio streams: RESP2 framing, a connection pool, nothing else.

The storage needs four commands (``EVALSHA``, ``SCRIPT LOAD``, ``AUTH``, ``SELECT``) one at a
time per connection. Speaking them directly over an anyio byte stream runs natively on asyncio
and on trio (no worker threads), and costs about half of a general-purpose client's round
trip, which matters when every step of a saga waits for one (see the README's figures).
Anything beyond that (Sentinel, Cluster, client-side caching) is for a redis-py client passed
to ``RedisSagaStorage(client)``.

Transport failures raise :class:`~saga_core.StorageUnavailableError` with the cause chained;
a server's error reply comes back as a :class:`ServerReplyError` value for the caller to judge.
"""

from __future__ import annotations

import asyncio
import math
import socket
import ssl
import sys
import typing
from collections import deque
from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any

import anyio
import anyio.abc
from anyio.lowlevel import RunVar

from saga_core import SagaStorageError, SagaUsageError, StorageUnavailableError

from ._url import RedisTarget

DEFAULT_MAX_CONNECTIONS = 100
DEFAULT_CONNECT_TIMEOUT = 5.0
_RECEIVE_SIZE = 65536
# What a stream raises when the peer is gone or the connection is unusable.
_TRANSPORT_ERRORS = (
    OSError,
    anyio.BrokenResourceError,
    anyio.ClosedResourceError,
    anyio.EndOfStream,
    ssl.SSLError,
)


class ServerReplyError(Exception):
    """An error reply from the server (``-ERR ...``, ``-NOSCRIPT ...``); the connection is
    still usable."""


def _running_loop() -> object | None:
    """The running asyncio loop or trio run (its token), cheaply; ``None`` for others."""
    loop = asyncio._get_running_loop()
    if loop is not None:
        return loop
    trio = sys.modules.get("trio")
    if trio is not None:
        try:
            token: object = trio.lowlevel.current_trio_token()
        except RuntimeError:
            return None
        return token
    return None


def asyncio_is_running() -> bool:
    """True when the calling task runs on an asyncio event loop."""
    return asyncio._get_running_loop() is not None


def pack(args: Sequence[str | int]) -> bytes:
    """Encode one command as a RESP array of bulk strings (text as UTF-8)."""
    return pack_command(b"", 0, args)


# "$<n>\r\n", the start of a bulk string of n bytes, and "*<n>\r\n", of an array of n items,
# for the sizes most arguments and commands have.
_BULK = tuple(f"${size}\r\n" for size in range(1024))
_ARRAY = tuple(b"*%d\r\n" % count for count in range(64))


def pack_command(head: bytes, head_count: int, args: Sequence[str | int]) -> bytes:
    """Encode a command whose first ``head_count`` bulk strings are already encoded in
    ``head``, followed by ``args``.

    The arguments are framed as one text and encoded once: a command is mostly short ASCII
    arguments, whose lengths in characters are their lengths in bytes. Other commands (an
    ``int`` argument, non-ASCII text, a long argument) take the general path.
    """
    try:
        text = "\r\n".join([_BULK[len(arg)] + arg for arg in args])  # type: ignore[arg-type,operator]
        array = _ARRAY[head_count + len(args)]
    except (TypeError, IndexError):  # an int, a long argument, many arguments
        return _pack_general(head, head_count, args)
    if not text.isascii():
        return _pack_general(head, head_count, args)
    if not args:
        return array + head
    return b"".join((array, head, text.encode(), b"\r\n"))


def _pack_general(head: bytes, head_count: int, args: Sequence[str | int]) -> bytes:
    parts: list[str] = []
    append = parts.append
    for arg in args:
        if isinstance(arg, str):
            size = len(arg) if arg.isascii() else len(arg.encode())
            append(f"${size}\r\n{arg}\r\n")
        else:
            digits = str(int(arg))
            append(f"${len(digits)}\r\n{digits}\r\n")
    count = b"*%d\r\n" % (head_count + len(args))
    return b"".join((count, head, "".join(parts).encode()))


class _Incomplete(Exception):
    """The buffer does not hold a whole reply yet."""


def _parse(buffer: bytearray, pos: int) -> tuple[Any, int]:
    """Parse one reply starting at ``pos``; return it and the position after it."""
    end = buffer.find(b"\r\n", pos)
    if end < 0:
        raise _Incomplete
    kind = buffer[pos]
    if kind == 36:  # $ bulk string
        size = int(buffer[pos + 1 : end])
        if size < 0:
            return None, end + 2
        stop = end + 2 + size
        if len(buffer) < stop + 2:
            raise _Incomplete
        return bytes(buffer[end + 2 : stop]), stop + 2
    if kind == 58:  # : integer
        return int(buffer[pos + 1 : end]), end + 2
    if kind == 42:  # * array
        count = int(buffer[pos + 1 : end])
        if count < 0:
            return None, end + 2
        pos = end + 2
        items = []
        for _ in range(count):
            item, pos = _parse(buffer, pos)
            items.append(item)
        return items, pos
    if kind == 43:  # + simple string
        return bytes(buffer[pos + 1 : end]), end + 2
    if kind == 45:  # - error
        return ServerReplyError(buffer[pos + 1 : end].decode(errors="replace")), end + 2
    raise SagaStorageError(
        f"the Redis server sent a reply this client does not understand (type byte "
        f"{bytes([kind])!r}); is the URL pointing at a Redis server?"
    )


class Connection(typing.Protocol):
    """One connection: send a command, read its reply. Not shared by concurrent tasks."""

    async def request(self, packed: bytes) -> Any:
        """Send one packed command and return its reply (an error reply as a value)."""
        ...

    async def aclose(self) -> None:
        """Close the connection at once (a reply still expected is dropped)."""
        ...


class _AsyncioConnection(asyncio.Protocol):
    """A connection on asyncio's own transport, as its protocol: the reply's bytes go straight
    from ``data_received`` into the buffer the request parses.

    About a quarter of a round trip's Python cheaper than asyncio's streams (which this
    replaced), and those were as much cheaper than anyio's socket stream (which pauses and
    resumes reading around every receive). A request does not wait for the write buffer to
    drain: it waits for the reply, which comes after the whole command was sent.
    """

    __slots__ = ("_buffer", "_loop", "_lost", "_transport", "_waiter")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._buffer = bytearray()
        self._transport: asyncio.Transport | None = None
        self._waiter: asyncio.Future[None] | None = None
        # Why the connection is gone (the error, or EndOfStream), once it is.
        self._lost: BaseException | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        self._wake()

    def eof_received(self) -> bool:
        self._gone(anyio.EndOfStream())
        return False  # let the transport close itself

    def connection_lost(self, exc: Exception | None) -> None:
        self._gone(exc if exc is not None else anyio.EndOfStream())

    def _gone(self, why: BaseException) -> None:
        if self._lost is None:
            self._lost = why
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    async def request(self, packed: bytes) -> Any:
        transport = self._transport
        if transport is None or transport.is_closing() or self._lost is not None:
            raise anyio.ClosedResourceError
        transport.write(packed)
        buffer = self._buffer
        while True:
            if buffer:
                try:
                    reply, used = _parse(buffer, 0)
                except _Incomplete:
                    pass
                else:
                    del buffer[:used]
                    return reply
            lost = self._lost
            if lost is not None:
                raise lost
            waiter = self._waiter = self._loop.create_future()
            await waiter

    async def aclose(self) -> None:
        if self._transport is not None:
            self._transport.abort()


class RespConnection:
    """A connection on an anyio byte stream (trio, and any backend but asyncio)."""

    __slots__ = ("_buffer", "_stream")

    def __init__(self, stream: anyio.abc.ByteStream) -> None:
        self._stream = stream
        self._buffer = bytearray()

    async def request(self, packed: bytes) -> Any:
        """Send one packed command and return its reply (an error reply as a value)."""
        await self._stream.send(packed)
        buffer = self._buffer
        while True:
            if buffer:
                try:
                    reply, used = _parse(buffer, 0)
                except _Incomplete:
                    pass
                else:
                    del buffer[:used]
                    return reply
            buffer += await self._stream.receive(_RECEIVE_SIZE)

    async def aclose(self) -> None:
        await anyio.aclose_forcefully(self._stream)


class _LoopConnections:
    """The pool's connections on one event loop (streams belong to the loop that made them)."""

    __slots__ = ("idle", "opened", "waiters")

    def __init__(self) -> None:
        self.idle: list[Connection] = []
        self.opened = 0
        self.waiters: deque[anyio.Event] = deque()


class RespPool:
    """Connections to one Redis server, opened on demand and reused, at most
    ``max_connections`` at a time per event loop."""

    def __init__(
        self,
        url: tuple[RedisTarget, Mapping[str, str]],
        *,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        connect_timeout: float | None = DEFAULT_CONNECT_TIMEOUT,
        command_timeout: float | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        if (
            isinstance(max_connections, bool)
            or not isinstance(max_connections, int)
            or (max_connections < 1)
        ):
            raise SagaUsageError(f"max_connections must be an int >= 1, got {max_connections!r}")
        for name, value in (
            ("connect_timeout", connect_timeout),
            ("command_timeout", command_timeout),
        ):
            if value is not None and (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not math.isfinite(value)
                or value <= 0
            ):
                raise SagaUsageError(f"{name} must be None or seconds > 0, got {value!r}")
        if ssl_context is not None and not isinstance(ssl_context, ssl.SSLContext):
            raise SagaUsageError(f"ssl_context must be an ssl.SSLContext, got {ssl_context!r}")
        address, query = url
        # This pool speaks to one server over TCP, and from_url passes options as keyword
        # arguments only, until the storage's client is replaced.
        if address.kind != "single":
            raise SagaUsageError(
                f"RedisSagaStorage.from_url opens redis:// and rediss:// URLs only, for now; "
                f"for {address.kind} URLs pass a redis-py client to RedisSagaStorage(client)"
            )
        if query:
            raise SagaUsageError(
                "RedisSagaStorage.from_url takes storage options as keyword arguments only, "
                "for now; the URL's query may only carry 'db'"
            )
        if ssl_context is not None and not address.tls:
            raise SagaUsageError("ssl_context is given but the URL is not rediss:// (TLS)")
        self.address = address
        self._max = max_connections
        self._connect_timeout = connect_timeout
        self._command_timeout = command_timeout
        self._ssl_context = ssl_context
        self._connections: RunVar[_LoopConnections] = RunVar("saga_redis_connections")
        # The event loop last seen and its connections: looking them up in the RunVar costs
        # more than a round trip's own Python. One tuple, read and replaced whole, so that
        # loops in other threads never see another loop's half.
        self._last: tuple[object, _LoopConnections] | None = None
        self._closed = False

    def _here(self) -> _LoopConnections:
        loop = _running_loop()
        last = self._last
        if last is not None and last[0] is loop and loop is not None:
            return last[1]
        try:
            state = self._connections.get()
        except LookupError:
            state = _LoopConnections()
            self._connections.set(state)
        if loop is not None:
            self._last = (loop, state)
        return state

    async def execute(self, packed: bytes) -> Any:
        """Send one packed command on a pooled connection and return its reply.

        A connection that fails is closed. If it was a reused connection (the server may have
        restarted since it was last used), the command is sent once more on a new one: the
        storage's writes carry a token that makes a repeated write harmless.

        Raises:
            StorageUnavailableError: Redis cannot be reached, or did not answer in time.
        """
        state = self._here()
        idle = state.idle
        if idle and self._command_timeout is None:
            # The common case, without the coroutine of _request: an idle connection, no
            # time limit. The same steps as _request's.
            connection = idle.pop()
            try:
                reply = await connection.request(packed)
            except BaseException as exc:
                await self._discard(state, connection)
                if not isinstance(exc, _TRANSPORT_ERRORS):
                    raise
            else:
                if self._closed:  # closed while this command was in flight
                    await self._discard(state, connection)
                    return reply
                idle.append(connection)
                if state.waiters:
                    state.waiters.popleft().set()
                return reply
        else:
            reused = bool(idle)
            connection = idle.pop() if reused else await self._open(state)
            try:
                return await self._request(state, connection, packed)
            except StorageUnavailableError:
                if not reused:
                    raise
        # The reused connection was dead: so are the other idle ones, most likely.
        await self._drop_idle(state)
        return await self._request(state, await self._open(state), packed)

    async def _request(self, state: _LoopConnections, connection: Connection, packed: bytes) -> Any:
        try:
            if self._command_timeout is None:
                reply = await connection.request(packed)
            else:
                with anyio.fail_after(self._command_timeout):
                    reply = await connection.request(packed)
        except BaseException as exc:
            # Cancelled or failed between sending and reading: the reply may still come, so the
            # connection cannot serve another command.
            await self._discard(state, connection)
            if isinstance(exc, _TRANSPORT_ERRORS):
                raise StorageUnavailableError(
                    f"lost the connection to Redis at {self.address.describe()} "
                    f"({type(exc).__name__}: {exc}); whether the last command ran is unknown"
                ) from exc
            raise
        if self._closed:  # closed while this command was in flight
            await self._discard(state, connection)
            return reply
        state.idle.append(connection)
        if state.waiters:
            state.waiters.popleft().set()
        return reply

    async def _open(self, state: _LoopConnections) -> Connection:
        while state.opened >= self._max:
            if state.idle:
                return state.idle.pop()
            waiter = anyio.Event()
            state.waiters.append(waiter)
            try:
                await waiter.wait()
            finally:
                if waiter in state.waiters:
                    state.waiters.remove(waiter)
            if state.idle:
                return state.idle.pop()
        state.opened += 1
        try:
            return await self._connect()
        except BaseException:
            state.opened -= 1
            if state.waiters:
                state.waiters.popleft().set()
            raise

    async def _connect(self) -> Connection:
        address = self.address
        where = address.describe()
        try:
            with anyio.fail_after(self._connect_timeout):
                connection = await self._connection()
                try:
                    await self._handshake(connection)
                except BaseException:
                    await connection.aclose()
                    raise
        except SagaStorageError:
            raise
        except _TRANSPORT_ERRORS as exc:
            raise StorageUnavailableError(
                f"cannot connect to Redis at {where} ({type(exc).__name__}: {exc}); is it "
                f"running, and is the URL right?"
            ) from exc
        return connection

    async def _connection(self) -> Connection:
        address = self.address
        context = None
        if address.tls:
            context = self._ssl_context or ssl.create_default_context()
        [(host, port)] = address.nodes
        loop = asyncio._get_running_loop()
        if loop is not None:
            _, protocol = await loop.create_connection(
                partial(_AsyncioConnection, loop),
                host,
                port,
                ssl=context,
                server_hostname=host if context else None,
            )
            transport = protocol._transport
            sock = transport.get_extra_info("socket") if transport is not None else None
            if sock is not None:
                # One small command per round trip: do not let Nagle's algorithm hold it.
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return protocol
        if context is not None:
            stream: anyio.abc.ByteStream = await anyio.connect_tcp(
                host, port, ssl_context=context, tls_hostname=host
            )
        else:
            stream = await anyio.connect_tcp(host, port)
        return RespConnection(stream)

    async def _handshake(self, connection: Connection) -> None:
        address = self.address
        where = address.describe()
        if address.password is not None:
            auth: tuple[str, ...] = ("AUTH", address.password)
            if address.username:
                auth = ("AUTH", address.username, address.password)
            reply = await connection.request(pack(auth))
            if isinstance(reply, ServerReplyError):
                raise StorageUnavailableError(
                    f"Redis at {where} refused the credentials in the URL ({reply})"
                )
        if address.db:
            reply = await connection.request(pack(("SELECT", address.db)))
            if isinstance(reply, ServerReplyError):
                raise SagaUsageError(
                    f"Redis at {where} cannot select database {address.db} ({reply})"
                )

    async def _discard(self, state: _LoopConnections, connection: Connection) -> None:
        state.opened -= 1
        if state.waiters:
            state.waiters.popleft().set()
        await connection.aclose()

    async def _drop_idle(self, state: _LoopConnections) -> None:
        idle, state.idle = state.idle, []
        for connection in idle:
            await self._discard(state, connection)

    async def aclose(self) -> None:
        """Close the idle connections of the current event loop (those of a loop that has
        ended went with it); connections in use close when their command is done."""
        self._closed = True
        try:
            state = self._connections.get()
        except LookupError:
            return
        await self._drop_idle(state)
