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
from collections import deque
from collections.abc import Sequence
from typing import Any

import anyio
import anyio.abc
from anyio.lowlevel import RunVar

from saga_core import SagaStorageError, SagaUsageError, StorageUnavailableError

from ._url import RedisAddress

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


def asyncio_is_running() -> bool:
    """True when the calling task runs on an asyncio event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def pack(args: Sequence[str | int]) -> bytes:
    """Encode one command as a RESP array of bulk strings (text as UTF-8)."""
    return pack_command(b"", 0, args)


def pack_command(head: bytes, head_count: int, args: Sequence[str | int]) -> bytes:
    """Encode a command whose first ``head_count`` bulk strings are already encoded in
    ``head``, followed by ``args``.

    The arguments are framed as text and encoded once: a command is mostly short ASCII
    arguments, and this costs about a third less than encoding each one.
    """
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


class _AsyncioStream:
    """The two calls :class:`RespConnection` makes, on asyncio's own streams.

    On asyncio this saves about a quarter of each round trip compared with anyio's socket
    stream (which pauses and resumes reading around every receive); trio uses anyio's.
    """

    __slots__ = ("_reader", "_writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer

    async def send(self, data: bytes) -> None:
        writer = self._writer
        if writer.is_closing():
            raise anyio.ClosedResourceError
        writer.write(data)
        if writer.transport.get_write_buffer_size():
            await writer.drain()

    async def receive(self, max_bytes: int) -> bytes:
        data = await self._reader.read(max_bytes)
        if not data:
            raise anyio.EndOfStream
        return data

    async def aclose(self) -> None:
        self._writer.transport.abort()


class RespConnection:
    """One connection: send a command, read its reply. Not shared by concurrent tasks."""

    __slots__ = ("_buffer", "_stream")

    def __init__(self, stream: anyio.abc.ByteStream | _AsyncioStream) -> None:
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
        stream = self._stream
        if isinstance(stream, _AsyncioStream):
            await stream.aclose()
        else:
            await anyio.aclose_forcefully(stream)


class _LoopConnections:
    """The pool's connections on one event loop (streams belong to the loop that made them)."""

    __slots__ = ("idle", "opened", "waiters")

    def __init__(self) -> None:
        self.idle: list[RespConnection] = []
        self.opened = 0
        self.waiters: deque[anyio.Event] = deque()


class RespPool:
    """Connections to one Redis server, opened on demand and reused, at most
    ``max_connections`` at a time per event loop."""

    def __init__(
        self,
        address: RedisAddress,
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
        if ssl_context is not None and not address.tls:
            raise SagaUsageError("ssl_context is given but the URL is not rediss:// (TLS)")
        self.address = address
        self._max = max_connections
        self._connect_timeout = connect_timeout
        self._command_timeout = command_timeout
        self._ssl_context = ssl_context
        self._connections: RunVar[_LoopConnections] = RunVar("saga_redis_connections")
        self._closed = False

    def _here(self) -> _LoopConnections:
        try:
            return self._connections.get()
        except LookupError:
            state = _LoopConnections()
            self._connections.set(state)
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
        reused = bool(state.idle)
        connection = state.idle.pop() if reused else await self._open(state)
        try:
            return await self._request(state, connection, packed)
        except StorageUnavailableError:
            if not reused:
                raise
        # The reused connection was dead: so are the other idle ones, most likely.
        await self._drop_idle(state)
        return await self._request(state, await self._open(state), packed)

    async def _request(
        self, state: _LoopConnections, connection: RespConnection, packed: bytes
    ) -> Any:
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

    async def _open(self, state: _LoopConnections) -> RespConnection:
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

    async def _connect(self) -> RespConnection:
        address = self.address
        where = address.describe()
        try:
            with anyio.fail_after(self._connect_timeout):
                connection = RespConnection(await self._stream())
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

    async def _stream(self) -> anyio.abc.ByteStream | _AsyncioStream:
        address = self.address
        context = None
        if address.tls:
            context = self._ssl_context or ssl.create_default_context()
        if asyncio_is_running():
            reader, writer = await asyncio.open_connection(
                address.host,
                address.port,
                ssl=context,
                server_hostname=address.host if context else None,
                limit=_RECEIVE_SIZE,
            )
            sock = writer.get_extra_info("socket")
            if sock is not None:
                # One small command per round trip: do not let Nagle's algorithm hold it.
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return _AsyncioStream(reader, writer)
        if context is not None:
            return await anyio.connect_tcp(
                address.host, address.port, ssl_context=context, tls_hostname=address.host
            )
        return await anyio.connect_tcp(address.host, address.port)

    async def _handshake(self, connection: RespConnection) -> None:
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

    async def _discard(self, state: _LoopConnections, connection: RespConnection) -> None:
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
