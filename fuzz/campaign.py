"""The requests of the server campaign and the oracle that judges each answer.

The decoder in this process is the oracle, and each target's ``expect`` (``fuzz/answers.py``)
says what its door answers for the decoder's outcome: for ``/publish`` a body it turns into
events must be answered 200 with exactly the stored and duplicate counts those events predict
(every key the campaign ever had accepted is remembered), for the bulk API 200 with each item's
201, 200 noop, 409 or 400, for OTLP 200 with partial_success, for Loki 204; a body it rejects
must get the same status and error body in the door's shape; a body over the limit as received
a 413. Every request must be answered (a dropped connection is a
finding), never with a 5xx; ``/stats`` must equal what the accepted publishes predict.
"""

from __future__ import annotations

import gzip
import random
import re
import zlib
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from google.protobuf.message import DecodeError

from fuzz import answers, inputs, targets
from fuzz.contract import Outcome, Violation, check
from fuzz.mutate import hostile_query, mutate
from simulator.procs import Child

GET_ROUTES = ("/events", "/events", "/events", "/stats", "/topics", "/health", "/metrics")
OTHER_PATHS = ("/openapi.json", "/", "/nope", "/events/", "//events", "/publish/x", "/%ff")
INTERNAL = re.compile(r'^aggregator_internal_errors_total\{stage="(\w+)"\} (\S+)$', re.M)
Body = tuple[targets.Target, bytes, Mapping[str, str]]


@dataclass
class Tally:
    """What was sent, what the server must now hold, and what went wrong."""

    sent: Counter[str] = field(default_factory=Counter)
    statuses: Counter[int] = field(default_factory=Counter)
    posts: Counter[str] = field(default_factory=Counter)  # by route: every door is reached
    received: int = 0
    keys: set[tuple[str, str]] = field(default_factory=set)
    topics: set[str] = field(default_factory=set)
    accepted: list[Body] = field(default_factory=list)  # for re-sends
    failures: list[str] = field(default_factory=list)

    @property
    def requests(self) -> int:
        return sum(self.sent.values())

    def stats(self) -> tuple[int, int, int, list[str]]:
        unique = len(self.keys)
        return self.received, unique, self.received - unique, sorted(self.topics)


class Campaign:
    def __init__(self, client: httpx.Client, rng: random.Random, artifacts: Path) -> None:
        self.client = client
        self.rng = rng
        self.artifacts = artifacts
        self.tally = Tally()
        self.last = ""
        self.targets = targets.judged()
        self.seeds: list[Body] = [
            (t, body, headers) for t in self.targets for _, body, headers in inputs.seeds(t)
        ]

    def step(self) -> None:
        roll = self.rng.random()
        if roll < 0.25:
            self.publish("valid", *self.valid())
        elif roll < 0.30 and self.tally.accepted:
            self.publish("resend", *self.rng.choice(self.tally.accepted))
        elif roll < 0.70:
            self.publish("damaged", *self.damaged())
        elif roll < 0.78:
            target, body, _ = self.valid()
            self.publish("wrong-headers", target, body, self.any_headers(target))
        elif roll < 0.95:
            self.get()
        else:
            self.wrong_method()

    def valid(self) -> Body:
        target = self.rng.choice(self.targets)
        if target.fresh is not None and self.rng.random() < 0.8:
            kind, body = target.fresh(self.rng)
            return target, body, target.kinds[kind]
        return self.rng.choice([s for s in self.seeds if s[0] is target])

    def damaged(self) -> Body:
        target, body, headers = self.valid()
        others = [s[1] for s in self.seeds]
        if "gzip" in headers.get("content-encoding", "") and self.rng.random() < 0.5:
            # Broken JSON inside a valid gzip stream, as the decoder sees it.
            body = gzip.compress(mutate(self.rng, _gunzip(body), others), mtime=0)
        else:
            body = mutate(self.rng, body, others)
        if self.rng.random() < 0.2:
            headers = self.any_headers(target)
        return target, body, headers

    def any_headers(self, target: targets.Target) -> Mapping[str, str]:
        sets = [h for h in targets.header_sets(target) if _sendable(h)]
        return self.rng.choice(sets)

    def publish(
        self, action: str, target: targets.Target, body: bytes, headers: Mapping[str, str]
    ) -> None:
        expected = _expect(target, body, headers)
        chunked = self.rng.random() < 0.1
        content: bytes | Iterator[bytes] = _chunks(body, self.rng) if chunked else body
        self.tally.posts[target.route] += 1
        response = self.send(action, "POST", target.route, content=content, headers=headers)
        if response is None:
            return
        problem = self.judge(target, body, headers, expected, response)
        if problem:
            self.fail(f"{action} POST {target.route} {dict(headers)}: {problem}", body)
        elif isinstance(expected, list):
            self.tally.accepted.append((target, body, headers))

    def judge(
        self,
        target: targets.Target,
        body: bytes,
        headers: Mapping[str, str],
        expected: Outcome | Violation | int,
        response: httpx.Response,
    ) -> str | None:
        """None when the answer is the one the target's door gives for the decoder's outcome."""
        status = response.status_code
        if isinstance(expected, Violation):
            return f"the decoder broke its contract here ({expected}); the server said {status}"
        if isinstance(expected, int):
            return None if status == expected else f"expected {expected}, got {status}"
        assert target.expect is not None and target.read is not None  # targets.judged()
        stored: list[bool] = []
        if isinstance(expected, list):
            stored = answers.stored_flags(expected, self.tally.keys)
            new = [r.topic for r, fresh in zip(expected, stored, strict=True) if fresh]
            self.tally.topics.update(new)
            self.tally.received += len(expected)
        want = target.expect(body, headers, targets.LIMITS, expected, stored)
        try:
            got = (
                status,
                target.read(status, response.headers.get("content-type", ""), response.content),
            )
        except (ValueError, KeyError, TypeError, DecodeError) as exc:
            shown = response.content[:200]
            return f"{status} with a body that is not the door's answer ({exc}): {shown!r}"
        if got != want:
            return f"expected {want}, got {got}"[:600]
        return None

    def get(self) -> None:
        path = self.rng.choice(GET_ROUTES + OTHER_PATHS + ("/subscribe",))
        query = hostile_query(self.rng)
        url = path + ("?" + query if query or self.rng.random() < 0.1 else "")
        if path == "/subscribe":
            self.subscribe(url)
            return
        response = self.send("get", "GET", url)
        if response is None:
            return
        if response.status_code != 200 or path in ("/events", "/stats", "/topics", "/health"):
            try:
                response.json()
            except ValueError:
                self.fail(f"GET {url[:300]}: {response.status_code}, body is not JSON")

    def subscribe(self, url: str) -> None:
        """A stream: its first message (or its refusal), then the client goes away."""
        self.tally.sent["subscribe"] += 1
        try:
            with self.client.stream("GET", url) as response:
                next(response.iter_bytes(), b"")
        except httpx.TransportError as exc:
            self.fail(f"GET {url[:300]}: no answer ({type(exc).__name__}: {exc})")
            return
        self.tally.statuses[response.status_code] += 1
        if response.status_code >= 500:
            self.fail(f"GET {url[:300]}: {response.status_code}")

    def wrong_method(self) -> None:
        path = self.rng.choice(("/publish", "/events", "/stats", "/health", "/subscribe"))
        method = self.rng.choice(
            ("PUT", "DELETE", "PATCH", "GET" if path == "/publish" else "POST")
        )
        response = self.send("wrong-method", method, path, content=b"{}")
        if response is not None and response.status_code != 405:
            self.fail(f"{method} {path}: {response.status_code}, expected 405")

    def send(self, action: str, method: str, url: str, **kwargs: Any) -> httpx.Response | None:
        self.tally.sent[action] += 1
        content = kwargs.get("content", b"")
        size = f"{len(content)} bytes" if isinstance(content, bytes) else "chunked"
        this = f"{action} {method} {url[:100]} ({size})"
        try:
            response = self.client.request(method, url, **kwargs)
        except httpx.TransportError as exc:
            self.fail(f"{this}: no answer ({type(exc).__name__}: {exc}); before it: {self.last}")
            return None
        self.last = f"{this} -> {response.status_code}"
        self.tally.statuses[response.status_code] += 1
        if response.status_code >= 500:
            self.fail(f"{this}: {response.status_code} {response.text[:300]}")
            return None
        return response

    def fail(self, what: str, body: bytes = b"") -> None:
        number = self.tally.requests
        if body:
            (self.artifacts / f"http-{number}.body").write_bytes(body)
        self.tally.failures.append(f"request {number}: {what}")

    def check_stats(self) -> None:
        stats = self.client.get("/stats").json()
        got = (
            stats["received"],
            stats["unique_processed"],
            stats["duplicate_dropped"],
            stats["topics"],
        )
        want = self.tally.stats()
        if got[0] != got[1] + got[2]:
            self.fail(f"/stats breaks received = unique_processed + duplicate_dropped: {got}")
        if got != want:
            self.fail(f"/stats {got[:3]} / {len(got[3])} topics, expected {want[:3]}")


def _expect(target: targets.Target, body: bytes, headers: Mapping[str, str]) -> Any:
    """What the server must answer: 413 for a body over the limit as received, else what the
    decoder says (events, or the Rejection), or the Violation if the decoder broke its contract."""
    if len(body) > targets.LIMITS.max_body_bytes:
        return 413
    try:
        return check(target.decode, body, headers, targets.LIMITS, allows_empty=target.allows_empty)
    except Violation as violation:
        return violation


def _gunzip(body: bytes) -> bytes:
    try:
        return gzip.decompress(body)
    except (OSError, EOFError, zlib.error):
        return body


def _chunks(body: bytes, rng: random.Random) -> Iterator[bytes]:
    cut = rng.randint(0, len(body))
    yield body[:cut]
    yield body[cut:]


def _sendable(headers: Mapping[str, str]) -> bool:
    """Header values HTTP can carry (a client refuses NUL and line breaks)."""
    return all(c >= " " and c != "\x7f" for v in headers.values() for c in v)


def final_checks(campaign: Campaign, server: Child) -> None:
    if server.proc.poll() is not None:
        return
    campaign.check_stats()
    health = campaign.client.get("/health")
    if (health.status_code, health.json()) != (200, {"status": "ok"}):
        campaign.fail(f"/health at the end: {health.status_code} {health.text}")
    metrics = campaign.client.get("/metrics").text
    for stage, count in INTERNAL.findall(metrics):
        if float(count):
            campaign.fail(f"aggregator_internal_errors_total{{stage={stage!r}}} is {count}")
    if "Traceback" in "".join(server.lines):
        campaign.fail("the server logged a traceback:\n" + "".join(server.lines)[-3000:])
