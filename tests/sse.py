"""A small Server-Sent Events reader for the tests: messages as (id, data) and comments."""

from __future__ import annotations

import contextlib
import json
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx


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
    """Messages of one open ``/subscribe`` response, pulled one at a time."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self._chunks = response.aiter_text()
        self._parser = SSEParser()
        self._ready: deque[Message] = deque()

    async def next(self) -> Message:
        """The next message; ``StopAsyncIteration`` when the server ended the stream."""
        while not self._ready:
            self._ready.extend(self._parser.feed(await self._chunks.__anext__()))
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
        with contextlib.suppress(StopAsyncIteration):
            while True:
                rest.append(await self.next())
        return rest

    async def aclose(self) -> None:
        await self._chunks.aclose()  # type: ignore[attr-defined]


@asynccontextmanager
async def open_stream(
    client: httpx.AsyncClient, headers: dict[str, str] | None = None, **params: Any
) -> AsyncIterator[EventStream]:
    """``GET /subscribe`` with ``params``; the stream is checked to be SSE and open."""
    async with client.stream("GET", "/subscribe", params=params, headers=headers) as response:
        assert response.status_code == 200, await response.aread()
        assert response.headers["content-type"].startswith("text/event-stream")
        stream = EventStream(response)
        try:
            opening = await stream.next()
            assert "subscribed" in opening.comments
            yield stream
        finally:
            await stream.aclose()
