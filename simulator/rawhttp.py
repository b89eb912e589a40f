"""A lean HTTP/1.1 keep-alive POST client on a trio socket, for load where httpx's own cost
(~1 ms of CPU per request on trio, measured with py-spy) would make the simulator the bottleneck.

It speaks only what the simulator needs: ``POST`` with a ``Content-Length`` body over plain HTTP,
and a ``Content-Length`` response. Failures are raised as the httpx exceptions the publisher
already classifies (connect errors: not sent; timeouts and broken connections: ambiguous).
"""

from __future__ import annotations

from types import TracebackType
from urllib.parse import urlsplit

import httpx
import trio

READ_SIZE = 65536


class RawClient:
    """One connection, opened on first use and re-opened after a failure."""

    def __init__(
        self, base_url: str, timeout: float, headers: dict[str, str] | None = None
    ) -> None:
        """``headers`` go with every request (e.g. ``Authorization``)."""
        parts = urlsplit(base_url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"the raw client speaks plain http:// only, not {base_url!r}")
        self._host = parts.hostname
        self._port = parts.port or 80
        self._timeout = timeout
        self._host_header = f"Host: {parts.netloc}\r\n".encode() + b"".join(
            f"{k}: {v}\r\n".encode() for k, v in (headers or {}).items()
        )
        self._stream: trio.SocketStream | None = None
        self._buffer = b""

    async def __aenter__(self) -> RawClient:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._stream is not None:
            stream, self._stream = self._stream, None
            await stream.aclose()

    async def post(self, path: str, *, content: bytes, headers: dict[str, str]) -> httpx.Response:
        request = httpx.Request("POST", path)  # for the exceptions' context only
        if self._stream is None:
            try:
                with trio.fail_after(self._timeout):
                    self._stream = await trio.open_tcp_stream(self._host, self._port)
            except trio.TooSlowError:
                raise httpx.ConnectTimeout("connect timed out", request=request) from None
            except OSError as exc:
                raise httpx.ConnectError(str(exc), request=request) from exc
            self._buffer = b""
        head = "".join(f"{k}: {v}\r\n" for k, v in headers.items()).encode()
        message = b"POST %s HTTP/1.1\r\n%s%sContent-Length: %d\r\n\r\n%s" % (
            path.encode(), self._host_header, head, len(content), content,
        )  # fmt: skip
        try:
            with trio.fail_after(self._timeout):
                await self._stream.send_all(message)
                return await self._read_response()
        except trio.TooSlowError:
            await self.aclose()
            raise httpx.ReadTimeout("timed out", request=request) from None
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError, ValueError) as exc:
            await self.aclose()
            raise httpx.RemoteProtocolError(f"connection broken: {exc!r}", request=request) from exc

    async def _fill(self) -> None:
        assert self._stream is not None
        data = await self._stream.receive_some(READ_SIZE)
        if not data:
            raise ValueError("server closed the connection")
        self._buffer += data

    async def _read_response(self) -> httpx.Response:
        while b"\r\n\r\n" not in self._buffer:
            await self._fill()
        head, _, self._buffer = self._buffer.partition(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        status = int(status_line.split(" ", 2)[1])
        headers = [tuple(line.split(":", 1)) for line in header_lines if ":" in line]
        pairs = [(k.strip(), v.strip()) for k, v in headers]
        lowered = {k.lower(): v for k, v in pairs}
        length = int(lowered.get("content-length", "0"))
        while len(self._buffer) < length:
            await self._fill()
        body, self._buffer = self._buffer[:length], self._buffer[length:]
        if lowered.get("connection", "").lower() == "close":
            await self.aclose()
        return httpx.Response(status, headers=pairs, content=body)
