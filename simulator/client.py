"""The at-least-once sender: POST a batch until the aggregator acknowledges it or retries run out.

Outcomes of one attempt, as the contract defines them:
- 200: committed (or found duplicate); ``accepted/stored/duplicates`` come back. Done.
- 429 and 503: nothing of the request was stored. Resend after ``Retry-After``.
- another 5xx, a timeout after the request was written, a dropped connection: the attempt may or
  may not have committed (*ambiguous*). Resend; the aggregator drops what it already has. An
  ambiguous attempt that did commit counts its events in ``received`` once more.
- a connection that could not be opened (connect error or connect/pool timeout): not sent.
- another 4xx: the request itself is wrong; resending cannot help, so it is abandoned at once.
- 401 and 403: the credentials are wrong, for every request of the run alike; ``Refused`` is
  raised, and the run stops.
"""

from __future__ import annotations

import email.utils
import logging
import random
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Protocol

import httpx
import msgspec
import trio

from simulator.generator import Batch

LOGGER = logging.getLogger(__name__)
NOT_STORED = (429, 503)
REFUSED = (401, 403)


class Refused(Exception):
    """The server refused the request's credentials (401/403): change the request (the token),
    not a reason to retry."""

    def __init__(self, path: str, status: int, message: str) -> None:
        super().__init__(f"{path} answered {status}: {message}")
        self.path = path
        self.status = status


class Poster(Protocol):
    """What the publisher needs of an HTTP client: ``httpx.AsyncClient`` or ``RawClient``."""

    async def post(
        self, url: str, *, content: bytes, headers: dict[str, str]
    ) -> httpx.Response: ...


PosterFactory = Callable[[], AbstractAsyncContextManager[Poster]]


class Ack(msgspec.Struct):
    accepted: int
    stored: int
    duplicates: int


_ACK = msgspec.json.Decoder(Ack)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    retries: int = 8
    base: float = 0.05
    cap: float = 2.0

    def backoff(self, attempt: int, rng: random.Random, retry_after: float | None) -> float:
        """Delay before re-send number ``attempt`` (1-based): exponential, "equal jitter"
        (half fixed, half random, so it never collapses to zero), never shorter than the
        server's ``Retry-After``."""
        ceiling: float = min(self.cap, self.base * 2.0 ** (attempt - 1))
        delay = ceiling / 2 + rng.uniform(0, ceiling / 2)
        return max(delay, retry_after or 0.0)


@dataclass(frozen=True, slots=True)
class Delivery:
    """What became of one batch."""

    batch: Batch
    acked: bool
    attempts: int
    stored: int  # as the 200 said (0 when not acked)
    duplicates: int
    ambiguous_events: int  # events of attempts whose outcome is unknown (may have committed)
    latency: float  # seconds of the successful attempt (0 when not acked)
    failures: tuple[str, ...]  # what each failed attempt ran into: "429", "timeout", …
    error: str | None  # why it was abandoned, or what was wrong with its acknowledgement


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """``Retry-After`` as delay-seconds or an HTTP date; None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - (time.time() if now is None else now), 0.0)


def response_message(response: httpx.Response) -> str:
    """The server's ``message`` (its JSON error body), else the start of the body."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        return str(body["message"])
    return response.text[:200]


class Publisher:
    """Sends batches over one ``httpx.AsyncClient``; the sleep, the RNG and the clock are injected
    so tests can run the backoff without waiting."""

    def __init__(
        self,
        http: Poster,
        policy: RetryPolicy,
        *,
        content_type: str = "application/json",
        gzip: bool = False,
        rng: random.Random | None = None,
        sleep: Callable[[float], Awaitable[None]] = trio.sleep,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self._http = http
        self._policy = policy
        self._headers = {"Content-Type": content_type}
        if gzip:
            self._headers["Content-Encoding"] = "gzip"
        self._rng = rng or random.Random()
        self._sleep = sleep
        self._clock = clock

    async def publish(self, batch: Batch) -> Delivery:
        failures: list[str] = []
        ambiguous = 0
        attempt = 0
        while True:
            attempt += 1
            retry_after: float | None = None
            started = self._clock()
            try:
                response = await self._http.post(
                    "/publish", content=batch.body, headers=self._headers
                )
            except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
                failures.append(type(exc).__name__)  # never reached the server
            except httpx.TransportError as exc:  # read/write timeout, dropped connection
                failures.append(type(exc).__name__)
                ambiguous += batch.size
            else:
                status = response.status_code
                if status == 200:
                    ack = _ACK.decode(response.content)
                    wrong = (
                        ack.accepted != batch.size or ack.stored + ack.duplicates != ack.accepted
                    )
                    return Delivery(
                        batch, True, attempt, ack.stored, ack.duplicates, ambiguous,
                        self._clock() - started, tuple(failures),
                        f"acknowledged {ack} for {batch.size} events" if wrong else None,
                    )  # fmt: skip
                if status in REFUSED:
                    raise Refused("/publish", status, response_message(response))
                failures.append(str(status))
                if status < 500 and status not in NOT_STORED:
                    return self._abandon(
                        batch, attempt, failures, ambiguous, f"{status}: {response.text[:200]}"
                    )
                if status not in NOT_STORED:
                    ambiguous += batch.size
                retry_after = retry_after_seconds(response.headers.get("Retry-After"))
            if attempt > self._policy.retries:
                return self._abandon(batch, attempt, failures, ambiguous, "retries exhausted")
            await self._sleep(self._policy.backoff(attempt, self._rng, retry_after))

    @staticmethod
    def _abandon(
        batch: Batch, attempts: int, failures: list[str], ambiguous: int, why: str
    ) -> Delivery:
        LOGGER.warning("batch %d abandoned after %d attempts: %s", batch.index, attempts, why)
        return Delivery(batch, False, attempts, 0, 0, ambiguous, 0.0, tuple(failures), why)
