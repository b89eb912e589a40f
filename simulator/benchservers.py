"""Reference servers for the benchmark, each run as its own process:

- ``null``: a raw trio socket server speaking just enough HTTP/1.1 (keep-alive, Content-Length) to
  answer every POST with 200 without storing anything: the simulator's own ceiling.
- ``asgi``: a bare ASGI app on hypercorn's trio worker, same answer: the HTTP floor of the stack.

Both answer ``{"accepted": N, "stored": N, "duplicates": 0}`` with N the events in the body, and log
``listening on http://127.0.0.1:PORT`` to stderr.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import hypercorn.config
import hypercorn.trio
import trio

LOGGER = logging.getLogger(__name__)
Scope = dict[str, Any]
Message = dict[str, Any]


def answer(body: bytes) -> bytes:
    n = max(body.count(b'"topic"'), 1)
    return b'{"accepted":%d,"stored":%d,"duplicates":0}' % (n, n)


async def bare_app(
    scope: Scope,
    receive: Callable[[], Awaitable[Message]],
    send: Callable[[Message], Awaitable[None]],
) -> None:
    if scope["type"] == "lifespan":
        while (message := await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            break
    body = answer(b"".join(chunks))
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def serve_asgi(port: int) -> None:
    config = hypercorn.config.Config()
    config.bind = [f"127.0.0.1:{port}"]
    config.accesslog = None
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(hypercorn.trio.serve, bare_app, config)
        LOGGER.info("listening on %s", binds[0])


async def _handle_null(stream: trio.SocketStream) -> None:
    buffer = b""
    async with stream:
        while True:
            while b"\r\n\r\n" not in buffer:
                data = await stream.receive_some(65536)
                if not data:
                    return
                buffer += data
            head, _, buffer = buffer.partition(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            while len(buffer) < length:
                data = await stream.receive_some(65536)
                if not data:
                    return
                buffer += data
            body, buffer = buffer[:length], buffer[length:]
            reply = answer(body)
            await stream.send_all(
                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                b"content-length: %d\r\n\r\n%s" % (len(reply), reply)
            )


async def serve_null(port: int) -> None:
    listeners = await trio.open_tcp_listeners(port, host="127.0.0.1")
    LOGGER.info("listening on http://127.0.0.1:%d", listeners[0].socket.getsockname()[1])
    await trio.serve_listeners(_handle_null, listeners)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m simulator.benchservers")
    parser.add_argument("kind", choices=("null", "asgi"))
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level="INFO", format="%(message)s", stream=sys.stderr)
    trio.run(serve_null if args.kind == "null" else serve_asgi, args.port)


if __name__ == "__main__":
    main()
