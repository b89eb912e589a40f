"""``python -m simulator.campaign``: kill the server with SIGKILL K times under load, then prove
that nothing acknowledged was lost and nothing was stored twice.

Each round starts ``python -m aggregator`` on the same data directory, runs concurrent
at-least-once publishers against it (a batch not answered 200 is re-sent as it is, later; new
batches also re-send events already acknowledged), and SIGKILLs the server at a random moment.
After the last kill the server is started once more, every batch still unacknowledged is re-sent
until it is, the server is stopped with SIGTERM, and the store is checked directly.

With ``--retention-bytes`` the server deletes the oldest events as it goes. An acknowledged key
that is no longer stored then counts as lost only if it was first sent after the oldest event
still stored was received: retention deletes oldest first, so such an event cannot have expired.
"""

from __future__ import annotations

import argparse
import math
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import trio

from aggregator.config import Config

Key = tuple[str, str]
Batch = list[dict[str, Any]]


@dataclass
class Load:
    """What the publishers sent and what was acknowledged, across every round."""

    rng: random.Random
    pending: list[Batch] = field(default_factory=list)  # sent, not yet answered 200
    acked: set[Key] = field(default_factory=set)
    acked_list: list[Key] = field(default_factory=list)  # for picking re-sends
    # When each key was first sent (epoch s): its event cannot have been received before that.
    first_sent: dict[Key, float] = field(default_factory=dict)
    sent: set[Key] = field(default_factory=set)
    requests: int = 0
    acked_requests: int = 0
    acked_events: int = 0  # events in 200 answers, duplicates included
    min_acked_events: int = 0  # the last round publishes until this many were acknowledged

    def done(self) -> bool:
        """The last round's publishers stop: nothing pending, and enough acknowledged."""
        return not self.pending and self.acked_events >= self.min_acked_events

    def next_batch(self, size: int) -> Batch:
        if self.pending:
            return self.pending.pop(self.rng.randrange(len(self.pending)))
        keys = [
            (f"t{self.rng.randrange(4)}", f"{self.rng.getrandbits(64):016x}") for _ in range(size)
        ]
        keys += [self.rng.choice(self.acked_list) for _ in range(2) if self.acked_list]
        self.sent.update(keys)
        return [
            {
                "topic": t,
                "event_id": e,
                "timestamp": "2026-11-21T10:00:00Z",
                "source": "campaign",
                "payload": {"n": i},
            }
            for i, (t, e) in enumerate(keys)
        ]

    def sending(self, batch: Batch, now: float) -> None:
        for item in batch:
            self.first_sent.setdefault((item["topic"], item["event_id"]), now)

    def record(self, batch: Batch) -> None:
        self.acked_requests += 1
        self.acked_events += len(batch)
        for item in batch:
            key = (item["topic"], item["event_id"])
            if key not in self.acked:
                self.acked.add(key)
                self.acked_list.append(key)


class Server:
    """One ``python -m aggregator`` process; ``url`` is set once it logs that it listens."""

    def __init__(self, proc: trio.Process) -> None:
        self.proc = proc
        self.url = ""
        self.tail: list[str] = []
        self.ready = trio.Event()

    async def drain_stderr(self) -> None:
        assert self.proc.stderr is not None
        buffer = b""
        async for chunk in self.proc.stderr:
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                text = line.decode(errors="replace")
                self.tail = [*self.tail[-40:], text]
                if not self.url and "listening on " in text:
                    self.url = text.split("listening on ", 1)[1].split()[0]
                    self.ready.set()
        self.ready.set()  # exited


async def start_server(nursery: trio.Nursery, data_dir: Path, retention_bytes: int = 0) -> Server:
    proc = await trio.lowlevel.open_process(
        [sys.executable, "-m", "aggregator", "--port", "0", "--workers", "8",
         "--data-dir", str(data_dir), "--retention-bytes", str(retention_bytes)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    server = Server(proc)
    nursery.start_soon(server.drain_stderr)
    with trio.fail_after(60):
        await server.ready.wait()
    if not server.url:
        raise RuntimeError("the server did not start:\n" + "\n".join(server.tail))
    return server


async def publish(url: str, load: Load, *, batch_size: int, stop_when_done: bool) -> None:
    """One at-least-once publisher: a batch not answered 200 goes back to ``pending``."""
    async with httpx.AsyncClient(base_url=url, timeout=10) as http:
        while not (stop_when_done and load.done()):
            batch = load.next_batch(batch_size)
            acked = False
            try:
                load.requests += 1
                load.sending(batch, time.time())
                response = await http.post("/publish", json=batch)
                if response.status_code == 200:
                    load.record(batch)
                    acked = True
                elif response.status_code not in (429, 503):
                    raise RuntimeError(f"{response.status_code} {response.text}")
            except httpx.TransportError:
                await trio.sleep(0.01)  # the server is gone or restarting: back off a little
            finally:
                if not acked:
                    load.pending.append(batch)


async def run_round(
    data_dir: Path, load: Load, *, clients: int, kill_after: float | None, retention_bytes: int = 0
) -> None:
    """Start the server, load it; SIGKILL it after ``kill_after`` seconds, or (None) re-send
    every pending batch and stop it with SIGTERM."""
    async with trio.open_nursery() as nursery:
        server = await start_server(nursery, data_dir, retention_bytes)
        async with trio.open_nursery() as publishers:
            for _ in range(clients):
                publishers.start_soon(
                    lambda: publish(server.url, load, batch_size=20, stop_when_done=not kill_after)
                )
            if kill_after is not None:
                await trio.sleep(kill_after)
                server.proc.send_signal(signal.SIGKILL)
                publishers.cancel_scope.cancel()
        if kill_after is None:
            server.proc.send_signal(signal.SIGTERM)
        with trio.fail_after(60):
            code = await server.proc.wait()
        expected = -signal.SIGKILL if kill_after is not None else 0
        if code != expected:
            raise RuntimeError(f"server exit code {code}, expected {expected}:\n" +
                               "\n".join(server.tail))  # fmt: skip


@dataclass(frozen=True, slots=True)
class Figures:
    kills: int
    requests: int
    acknowledged_requests: int
    acknowledged_events: int
    distinct_acknowledged: int
    rows: int
    received: int
    unique_processed: int
    duplicate_dropped: int
    lost: int
    doubled: int
    unknown: int
    # Topics whose row in ``topics`` disagrees with the events table (count or last seq), and
    # the events the ``topics`` rows count in all: it must equal ``received``.
    topics_mismatched: int = 0
    topics_received: int = 0
    expired: int = 0  # events deleted by retention (counters.expired)
    expired_keys: int = 0  # acknowledged keys not stored, each sent before the oldest stored

    def violations(self) -> list[str]:
        problems = []
        if self.lost:
            problems.append(f"{self.lost} acknowledged events are not stored")
        if self.doubled:
            problems.append(f"{self.doubled} events are stored twice")
        if self.unknown:
            problems.append(f"{self.unknown} stored events were never sent")
        if self.received != self.unique_processed + self.duplicate_dropped:
            problems.append("received != unique_processed + duplicate_dropped")
        if self.unique_processed - self.expired != self.rows:
            problems.append(
                f"unique_processed {self.unique_processed} - expired {self.expired} "
                f"!= {self.rows} rows"
            )
        if self.received < self.acknowledged_events:
            problems.append("received is less than the events acknowledged")
        if self.topics_mismatched:
            problems.append(f"{self.topics_mismatched} topics disagree with the events table")
        if self.topics_received != self.received:
            problems.append(f"the topics count {self.topics_received} events, not {self.received}")
        return problems


def check(database: Path, load: Load, kills: int) -> Figures:
    """Read the store directly (read-only) and compare it with what was acknowledged."""
    conn = sqlite3.connect(f"{database.resolve().as_uri()}?mode=ro", uri=True)
    try:
        rows = conn.execute("SELECT topic, event_id FROM events").fetchall()
        received, unique, duplicates, expired = conn.execute(
            "SELECT received, unique_processed, duplicate_dropped, expired FROM counters"
        ).fetchone()
        counted = {
            topic: (stored, last_seq)
            for topic, stored, last_seq in conn.execute(
                "SELECT topic, stored - expired, last_seq FROM topics WHERE stored > expired"
            )
        }
        oldest = conn.execute("SELECT received_at FROM events ORDER BY seq LIMIT 1").fetchone()
        actual = {
            topic: (n, last)
            for topic, n, last in conn.execute(
                "SELECT topic, count(*), max(seq) FROM events GROUP BY topic"
            )
        }
        (topics_received,) = conn.execute(
            "SELECT coalesce(sum(stored + duplicates), 0) FROM topics"
        ).fetchone()
    finally:
        conn.close()
    stored = set(rows)
    mismatched = {t for t in counted.keys() | actual.keys() if counted.get(t) != actual.get(t)}
    # Retention deletes oldest first: a missing key first sent after the oldest stored event was
    # received cannot have expired (its event was received later still). A key sent earlier
    # may have expired even if a later re-send was acknowledged (as a duplicate, before the
    # deletion). With nothing stored, every missing key may have.
    horizon = epoch(oldest[0]) if oldest else math.inf
    missing = load.acked - stored
    lost = {key for key in missing if not expired or load.first_sent.get(key, 0.0) > horizon}
    return Figures(
        kills, load.requests, load.acked_requests, load.acked_events, len(load.acked),
        len(rows), received, unique, duplicates,
        lost=len(lost), doubled=len(rows) - len(stored),
        unknown=len(stored - load.sent), topics_mismatched=len(mismatched),
        topics_received=topics_received, expired=expired, expired_keys=len(missing - lost),
    )  # fmt: skip


def epoch(text: str) -> float:
    """A stored time (``YYYY-MM-DDTHH:MM:SS.ffffffZ``) as seconds since the epoch."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


async def run_campaign(
    data_dir: Path, *, kills: int, clients: int, seed: int, max_delay: float,
    retention_bytes: int = 0, min_events: int = 0,
) -> Figures:  # fmt: skip
    load = Load(random.Random(seed), min_acked_events=min_events)
    rounds = [load.rng.uniform(0, max_delay) for _ in range(kills)]
    for kill_after in [*rounds, None]:
        await run_round(data_dir, load, clients=clients, kill_after=kill_after,
                        retention_bytes=retention_bytes)  # fmt: skip
    return check(Config(data_dir=data_dir).database_path, load, kills)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m simulator.campaign", description=__doc__)
    parser.add_argument("--kills", type=int, default=50, help="SIGKILLs (default 50)")
    parser.add_argument("--clients", type=int, default=8, help="concurrent publishers")
    parser.add_argument("--max-delay", type=float, default=2.0,
                        help="each kill comes 0..this many seconds after start-up")  # fmt: skip
    parser.add_argument("--seed", type=int, default=None, help="random seed (printed)")
    parser.add_argument("--data-dir", type=Path, default=None, help="default: a temporary one")
    parser.add_argument("--retention-bytes", type=int, default=0,
                        help="the server's AGGREGATOR_RETENTION_BYTES (0: off)")  # fmt: skip
    parser.add_argument(
        "--min-events",
        type=int,
        default=0,
        help="the last round publishes until this many events were acknowledged in all "
        "(whatever the machine's speed; default 0)",
    )
    args = parser.parse_args(argv)
    seed = random.randrange(2**32) if args.seed is None else args.seed
    with tempfile.TemporaryDirectory(prefix="campaign-") as tmp:
        data_dir = args.data_dir or Path(tmp)
        figures = trio.run(
            lambda: run_campaign(
                data_dir, kills=args.kills, clients=args.clients, seed=seed,
                max_delay=args.max_delay, retention_bytes=args.retention_bytes,
                min_events=args.min_events,
            )
        )  # fmt: skip
    out = sys.stdout
    out.write(f"seed {seed}: {figures.kills} kills survived, {figures.requests} requests\n")
    out.write(
        f"acknowledged: {figures.acknowledged_requests} requests, {figures.acknowledged_events} "
        f"events ({figures.distinct_acknowledged} distinct)\n"
        f"stored: {figures.rows} rows; received {figures.received} = unique_processed "
        f"{figures.unique_processed} + duplicate_dropped {figures.duplicate_dropped}\n"
        f"lost = {figures.lost}, doubled = {figures.doubled}, never sent = {figures.unknown}\n"
        f"retention: {figures.expired} events expired; {figures.expired_keys} acknowledged keys "
        "no longer stored, every one sent before the oldest stored event was received\n"
        f"topics: {figures.topics_mismatched} disagree with the events table, "
        f"they count {figures.topics_received} events received\n"
    )
    problems = figures.violations()
    for problem in problems:
        out.write(f"VIOLATION: {problem}\n")
    raise SystemExit(1 if problems else 0)


if __name__ == "__main__":
    main()
