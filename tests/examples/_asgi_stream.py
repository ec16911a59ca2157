"""An httpx transport that streams an ASGI app's responses as the app sends them, and
disconnects when the client closes one: what an ASGI server does, in-process.

``httpx.ASGITransport`` hands a response over only once the app has finished it, so it can
neither read a server-sent-events stream that waits for something the test does next, nor
disconnect halfway. Also here: a reader for server-sent events.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Any

import anyio
import anyio.lowlevel
import httpx
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectReceiveStream

Message = MutableMapping[str, Any]
ASGIApp = Callable[
    [
        MutableMapping[str, Any],
        Callable[[], Awaitable[Message]],
        Callable[[Message], Awaitable[None]],
    ],
    Awaitable[None],
]


class StreamingASGITransport(httpx.AsyncBaseTransport):
    """Runs each request's app call as a task of ``task_group``; the response is returned at
    ``http.response.start`` and its body streams as the app sends it. Closing the response
    (leaving ``client.stream(...)``) sends ``http.disconnect`` to the app, as a server does
    when the peer goes away (ASGI spec 2.3: the app listens for it, and what it sends after
    that is dropped)."""

    def __init__(self, app: ASGIApp, task_group: TaskGroup) -> None:
        self._app = app
        self._task_group = task_group
        self.running = 0
        """App calls not finished yet (a stream ends when its client disconnects)."""
        self._idle = anyio.Event()

    async def wait_idle(self) -> None:
        """Return once every app call has finished."""
        if self.running:
            await self._idle.wait()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        body = await request.aread()
        scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "method": request.method,
            "scheme": request.url.scheme,
            "path": request.url.path,
            "raw_path": request.url.raw_path.split(b"?")[0],
            "query_string": request.url.query,
            "root_path": "",
            "headers": [(name.lower(), value) for name, value in request.headers.raw],
            "client": ("127.0.0.1", 50000),
            "server": (request.url.host, request.url.port or 80),
        }
        to_client, from_app = anyio.create_memory_object_stream[Message](math.inf)
        disconnected = anyio.Event()
        request_sent = False

        async def receive() -> Message:
            nonlocal request_sent
            if not request_sent:
                request_sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            await disconnected.wait()
            return {"type": "http.disconnect"}

        async def send(message: Message) -> None:
            # Before spec 2.4 a server drops what is sent after the client went away.
            if not disconnected.is_set():
                to_client.send_nowait(message)  # never blocks: the buffer is unbounded
            await anyio.lowlevel.checkpoint()

        async def call_app() -> None:
            if not self.running:
                self._idle = anyio.Event()
            self.running += 1
            try:
                with to_client:
                    await self._app(scope, receive, send)
            finally:
                self.running -= 1
                if not self.running:
                    self._idle.set()

        self._task_group.start_soon(call_app)
        try:
            start = await from_app.receive()
        except anyio.EndOfStream:
            raise AssertionError("the app ended without sending a response") from None
        assert start["type"] == "http.response.start", start
        return httpx.Response(
            start["status"],
            headers=list(start.get("headers", [])),
            stream=_ResponseBody(from_app, disconnected),
            request=request,
        )


class _ResponseBody(httpx.AsyncByteStream):
    def __init__(
        self, messages: MemoryObjectReceiveStream[Message], disconnected: anyio.Event
    ) -> None:
        self._messages = messages
        self._disconnected = disconnected

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for message in self._messages:
            if message["type"] != "http.response.body":
                continue
            chunk = message.get("body", b"")
            if chunk:
                yield chunk
            if not message.get("more_body", False):
                return

    async def aclose(self) -> None:
        self._disconnected.set()
        self._messages.close()


@dataclasses.dataclass(frozen=True)
class ServerSentEvent:
    """One event of a ``text/event-stream``: its ``id:``, ``event:`` and ``data:`` fields."""

    data: str
    id: str | None = None
    event: str | None = None


async def server_sent_events(
    response: httpx.Response,
) -> AsyncGenerator[ServerSentEvent, None]:
    """The events of a streamed ``text/event-stream`` response, as they arrive."""
    buffer = ""
    async for text in response.aiter_text():
        buffer += text
        while "\n\n" in buffer:
            block, buffer = buffer.split("\n\n", 1)
            fields: dict[str, str] = {}
            for line in block.splitlines():
                name, _, value = line.partition(":")
                value = value.removeprefix(" ")
                if name == "data" and "data" in fields:  # one data line per line of text
                    fields["data"] += "\n" + value
                elif name:  # a line starting with ":" is a comment
                    fields[name] = value
            if "data" in fields:
                yield ServerSentEvent(fields["data"], fields.get("id"), fields.get("event"))
