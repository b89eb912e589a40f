"""The aggregator's HTTP API as the TUI uses it, over an injected ``httpx.AsyncClient``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from tui.data.models import (
    Event,
    Health,
    ProtocolError,
    Stats,
    TopicRow,
    parse_events,
    parse_stats,
    parse_topics,
)

# A stream has no overall deadline; a silent one (the server sends a heartbeat comment every 15 s
# by default) is given up after READ seconds and reopened.
STREAM_TIMEOUT = httpx.Timeout(10.0, read=60.0)


def open_http(
    url: str,
    *,
    token: str = "",
    timeout: float = 5.0,
    transport: httpx.AsyncBaseTransport | None = None,
) -> httpx.AsyncClient:
    """The dashboard's HTTP client; with a ``token``, every request carries
    ``Authorization: Bearer <token>`` (the server's ``AGGREGATOR_READ_TOKEN``)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.AsyncClient(base_url=url, timeout=timeout, headers=headers, transport=transport)


class ServerError(Exception):
    """The server answered with an error status."""

    def __init__(self, path: str, status: int, message: str) -> None:
        super().__init__(f"{path}: HTTP {status} {message}".rstrip())
        self.status = status


@dataclass(frozen=True, slots=True)
class SearchPage:
    events: list[Event]  # newest first
    before: int | None  # the cursor of the next (older) page; None: this was the last


@dataclass(frozen=True, slots=True)
class EventPage:
    events: list[Event]
    more: bool  # the server has further events after this page (a ``Link: rel="next"``)


def describe(exc: BaseException) -> str:
    """A one-line description of a failed request, for the status bar."""
    if isinstance(exc, ServerError | ProtocolError):
        return str(exc)
    if isinstance(exc, httpx.TimeoutException):
        return f"timed out ({type(exc).__name__})"
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class AggregatorClient:
    """One method per endpoint; raises ``httpx.HTTPError``, ``ServerError`` or ``ProtocolError``.

    The ``httpx.AsyncClient`` (with its ``base_url``) belongs to the caller, which closes it.
    """

    def __init__(self, http: httpx.AsyncClient) -> None:
        self.http = http

    @property
    def url(self) -> str:
        return str(self.http.base_url).rstrip("/")

    async def _get(self, path: str, params: dict[str, Any] | None = None) -> httpx.Response:
        return await self.http.get(path, params=params)

    @staticmethod
    def _json(response: httpx.Response, path: str) -> Any:
        try:
            return response.json()
        except ValueError as exc:
            raise ProtocolError(f"{path}: the answer is not JSON") from exc

    def _check(self, response: httpx.Response, path: str) -> Any:
        if response.status_code != 200:
            message = ""
            try:
                body = response.json()
            except ValueError:
                body = None
            if isinstance(body, dict):
                message = str(body.get("message") or body.get("reason") or "")
            raise ServerError(path, response.status_code, message or response.reason_phrase)
        return self._json(response, path)

    async def health(self) -> Health:
        response = await self._get("/health")
        if response.status_code == 503:
            body = self._json(response, "/health")
            reason = body.get("reason") if isinstance(body, dict) else None
            return Health(False, str(reason or "unavailable"))
        self._check(response, "/health")
        return Health(True)

    async def stats(self) -> Stats:
        return parse_stats(self._check(await self._get("/stats"), "/stats"))

    async def topics(self) -> list[TopicRow] | None:
        """Per-topic counts, or ``None`` when this server has no ``GET /topics``."""
        response = await self._get("/topics")
        if response.status_code in (404, 405):
            return None
        return parse_topics(self._check(response, "/topics"))

    async def events(
        self, *, topic: str | None, after: int | None = None, offset: int = 0, limit: int = 100
    ) -> EventPage:
        params: dict[str, Any] = {"limit": limit}
        if topic is not None:
            params["topic"] = topic
        if after is not None:
            params["after"] = after
        if offset:
            params["offset"] = offset
        response = await self._get("/events", params)
        events = parse_events(self._check(response, "/events"))
        return EventPage(events, more="next" in response.links)

    async def search(self, filters: Mapping[str, str], *, before: int | None = None,
                     limit: int = 100) -> SearchPage:  # fmt: skip
        """A page of ``GET /events`` newest first with ``filters`` (``q``, ``source``,
        ``since``, ``topic``), older than ``before``; ``ServerError`` carries the server's
        message (a 422 for a bad query, a 400 when search is off)."""
        params: dict[str, Any] = {**filters, "order": "desc", "limit": limit}
        if before is not None:
            params["before"] = before
        response = await self._get("/events", params)
        events = parse_events(self._check(response, "/events"))
        more = "next" in response.links and bool(events)
        return SearchPage(events, events[-1].seq if more else None)

    async def subscribe(
        self, *, topic: str | None, after: int, filters: Mapping[str, str] | None = None
    ) -> httpx.Response | None:
        """Opens ``GET /subscribe`` from ``after`` (also as ``Last-Event-ID``, which a server
        prefers on a reconnect), with the search ``filters`` (``q``, ``source``) if any; the
        open response, whose body the caller reads and closes, or ``None`` when this server has
        no ``/subscribe``."""
        params: dict[str, Any] = {**(filters or {}), "after": after}
        if topic is not None:
            params["topic"] = topic
        headers = {"Accept": "text/event-stream", "Last-Event-ID": str(after)}
        request = self.http.build_request(
            "GET", "/subscribe", params=params, headers=headers, timeout=STREAM_TIMEOUT
        )
        response = await self.http.send(request, stream=True)
        if response.status_code == 200:
            return response
        try:
            await response.aread()
        finally:
            await response.aclose()
        if response.status_code in (404, 405):
            return None
        self._check(response, "/subscribe")
        raise ServerError("/subscribe", response.status_code, response.reason_phrase)
