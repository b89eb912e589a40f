"""A small Server-Sent Events reader for the tests: messages as (id, data) and comments."""

from __future__ import annotations

import contextlib
import json
import socket
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode, urlsplit

import h11
import trio


@dataclass
class Message:
    id: int | None
    data: dict[str, Any] | None
    comments: list[str] = field(default_factory=list)


def parse_block(block: str) -> Message:
    """One SSE message (the lines between blank lines), as the EventSource spec reads it."""
    message = Message(None, None)
    data: list[str] = []
    for line in block.split("\n"):
        if line.startswith(":"):
            message.comments.append(line[1:].strip())
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "id":
            message.id = int(value)
        elif name == "data":
            data.append(value)
    if data:
        message.data = json.loads("\n".join(data))
    return message


class SSEParser:
    """Feed text as it arrives; take the complete messages."""

    def __init__(self) -> None:
        self._buffer = ""

    def feed(self, text: str) -> list[Message]:
        self._buffer += text.replace("\r\n", "\n")
        *blocks, self._buffer = self._buffer.split("\n\n")
        return [parse_block(block) for block in blocks if block]


class EventStream:
    """A ``GET /subscribe`` over a bare trio socket, decoded with h11 (httpx's streaming
    iterators are nested async generators that are hard to close deterministically)."""

    def __init__(self, url: str, *, receive_buffer: int | None = None) -> None:
        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.target = parts.path + (f"?{parts.query}" if parts.query else "")
        self.sock = trio.socket.socket()
        if receive_buffer is not None:  # a small window: not reading stalls the server
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        self.conn = h11.Connection(h11.CLIENT)
        self.parser = SSEParser()
        self.response: h11.Response | None = None
        self.body = b""  # the body of a response that is not a stream
        self._ready: deque[Message] = deque()

    async def connect(self, headers: dict[str, str] | None = None) -> None:
        await self.sock.connect((self.host, self.port))
        request = h11.Request(
            method="GET",
            target=self.target,
            headers=[("Host", self.host), *(headers or {}).items()],
        )
        data = self.conn.send(request) + self.conn.send(h11.EndOfMessage())
        while data:
            data = data[await self.sock.send(data) :]
        while True:
            item = await self._next()
            if isinstance(item, h11.Response):
                self.response = item
                return

    async def _next(self) -> Any:
        while True:
            item = self.conn.next_event()
            if item is not h11.NEED_DATA:
                return item
            self.conn.receive_data(await self.sock.recv(65536))

    async def next(self) -> Message:
        """The next message; ``EOFError`` when the server ended the stream."""
        while not self._ready:
            item = await self._next()
            if isinstance(item, h11.Data):
                self._ready.extend(self.parser.feed(bytes(item.data).decode()))
            elif isinstance(item, h11.EndOfMessage | h11.ConnectionClosed):
                raise EOFError
        return self._ready.popleft()

    async def events(self, count: int) -> list[Message]:
        """The next ``count`` event messages (comments skipped)."""
        events: list[Message] = []
        while len(events) < count:
            message = await self.next()
            if message.id is not None:
                events.append(message)
        return events

    async def rest(self) -> list[Message]:
        """Every message until the server ends the stream."""
        rest: list[Message] = []
        with contextlib.suppress(EOFError):
            while True:
                rest.append(await self.next())
        return rest

    def close(self) -> None:
        self.sock.close()


@asynccontextmanager
async def open_stream(
    base_url: str,
    headers: dict[str, str] | None = None,
    receive_buffer: int | None = None,
    **params: Any,
) -> AsyncIterator[EventStream]:
    """``GET /subscribe`` with ``params``; the stream is checked to be SSE and open."""
    query = urlencode({k: v for k, v in params.items() if v is not None})
    stream = EventStream(f"{base_url}/subscribe?{query}", receive_buffer=receive_buffer)
    try:
        await stream.connect(headers)
        assert stream.response is not None and stream.response.status_code == 200
        content_type = dict(stream.response.headers)[b"content-type"]
        assert content_type.startswith(b"text/event-stream")
        opening = await stream.next()
        assert "subscribed" in opening.comments
        yield stream
    finally:
        stream.close()
