"""Deterministic event generation: every event and every batch is a pure function of the seed.

Positions. The run is a sequence of send positions ``p = 0, 1, 2, …``; batch ``j`` holds positions
``[j·B, (j+1)·B)``. Position ``p`` re-sends an earlier event exactly when
``⌊(p+1)·r⌋ > ⌊p·r⌋`` (``r`` the duplicate ratio), so the first ``n`` positions hold exactly
``⌊n·r⌋`` re-sends and ``n − ⌊n·r⌋`` distinct keys; a fresh position takes the next key number.

Keys. Key ``k`` always encodes to the same bytes (topic, event_id, timestamp, payload), so a re-send
is byte-for-byte the event sent before, as a real at-least-once publisher would send it.

Re-sends, chosen per batch from a seeded RNG among those available:
- ``in_batch``: a key already placed earlier in the same request;
- ``cross_client``: a key of one of the previous ``C − 1`` batches, which belong to the other
  clients (batch ``j`` goes to client ``j mod C``) and are typically in flight at the same time;
- ``earlier``: a key of one of this client's own earlier batches, re-sent later.
"""

from __future__ import annotations

import gzip
import hashlib
import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from simulator.config import Options

SOURCE = "simulator"
KINDS = ("in_batch", "cross_client", "earlier")
UUID7_BASE_MS = 1_790_000_000_000  # 2026-09; uuid7 ids increase with the key number
EARLIER_BATCHES = 4  # how far back (in own batches) an "earlier" re-send reaches


@dataclass(frozen=True, slots=True)
class Batch:
    """One publish request, encoded once: re-sending it sends the same bytes."""

    index: int
    client: int
    key_ids: tuple[int, ...]  # the key of each event, in request order
    body: bytes
    in_batch: int
    cross_client: int
    earlier: int

    @property
    def size(self) -> int:
        return len(self.key_ids)

    @property
    def resends(self) -> int:
        return self.in_batch + self.cross_client + self.earlier


def distinct_keys(key_lists: Iterable[tuple[int, ...]]) -> int:
    """Distinct keys among batches' ``key_ids``: what the store should newly hold after them."""
    return len({k for keys in key_lists for k in keys})


class Generator:
    """The events and batches of one run; stateless after construction."""

    def __init__(
        self,
        *,
        seed: int,
        total: int,
        batch: int,
        clients: int,
        dup_ratio: float,
        topics: int,
        id_style: str,
        payload_bytes: int,
        fmt: str = "json",
        gzip_body: bool = False,
    ) -> None:
        self.seed = seed
        self.total = total  # 0: unbounded (a duration-bound run)
        self.batch_size = batch
        self.clients = clients
        self.dup_ratio = dup_ratio
        self.id_style = id_style
        self.fmt = fmt
        self.gzip = gzip_body
        self._salt = hashlib.blake2b(str(seed).encode(), digest_size=8).digest()
        self._tag = self._salt.hex()[:8]
        self._topics = [f"sim.{self._tag[:4]}.t{i}" for i in range(topics)]
        # {"k":<n>,"pad":"…"}: about payload_bytes of JSON text
        self._pad = (self._salt.hex() * (payload_bytes // 16 + 1))[: max(payload_bytes - 22, 1)]

    @classmethod
    def from_options(cls, options: Options, seed: int) -> Generator:
        return cls(
            seed=seed,
            total=options.events,
            batch=options.batch,
            clients=options.concurrency,
            dup_ratio=options.dup_ratio,
            topics=options.topics,
            id_style=options.id_style,
            payload_bytes=options.payload_bytes,
            fmt=options.format,
            gzip_body=options.gzip,
        )

    # -- positions and keys -------------------------------------------------------------------

    def resends_before(self, position: int) -> int:
        return int(position * self.dup_ratio)

    def keys_before(self, position: int) -> int:
        """Distinct keys among the first ``position`` sends."""
        return position - self.resends_before(position)

    @property
    def distinct_total(self) -> int:
        """Distinct keys of the whole run (a count-bound run)."""
        return self.keys_before(self.total)

    @property
    def batch_count(self) -> int:
        return -(-self.total // self.batch_size) if self.total else 0

    def _batch_keys(self, index: int) -> range:
        """The fresh keys that batch ``index`` introduces."""
        start = index * self.batch_size
        end = start + self.batch_size
        if self.total:
            end = min(end, self.total)
        return range(self.keys_before(start), self.keys_before(end))

    def event_id(self, key: int) -> str:
        if self.id_style == "seq":
            return f"{self._tag}-{key:012d}"
        digest = hashlib.blake2b(key.to_bytes(8, "little"), digest_size=16, key=self._salt).digest()
        value = int.from_bytes(digest, "big")
        if self.id_style == "uuid7":
            value = ((UUID7_BASE_MS + key) << 80) | (value & ((1 << 80) - 1))
            version = 7
        else:
            version = 4
        value = (value & ~(0xF << 76)) | (version << 76)  # version nibble
        value = (value & ~(0x3 << 62)) | (0x2 << 62)  # RFC 4122 variant
        h = f"{value:032x}"
        return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"

    def key(self, key: int) -> tuple[str, str]:
        """``(topic, event_id)`` of key number ``key``: the identity the aggregator dedups on."""
        return self._topics[key % len(self._topics)], self.event_id(key)

    def event(self, key: int) -> bytes:
        topic, event_id = self.key(key)
        ms = key % 86_400_000
        stamp = (
            f"2026-11-21T{ms // 3_600_000:02d}:{ms // 60_000 % 60:02d}:"
            f"{ms // 1000 % 60:02d}.{ms % 1000:03d}Z"
        )
        return (
            f'{{"topic":"{topic}","event_id":"{event_id}","timestamp":"{stamp}",'
            f'"source":"{SOURCE}","payload":{{"k":{key},"pad":"{self._pad}"}}}}'
        ).encode()

    # -- batches ------------------------------------------------------------------------------

    def batch(self, index: int) -> Batch | None:
        """Batch number ``index``, or None past the end of a count-bound run."""
        start = index * self.batch_size
        if self.total and start >= self.total:
            return None
        end = start + self.batch_size
        if self.total:
            end = min(end, self.total)
        rng = random.Random(f"{self.seed}:{index}")
        fresh = iter(self._batch_keys(index))
        keys: list[int] = []
        kinds = dict.fromkeys(KINDS, 0)
        for position in range(start, end):
            if self.resends_before(position + 1) > self.resends_before(position):
                kind, key = self._pick_resend(index, keys, rng)
                kinds[kind] += 1
                keys.append(key)
            else:
                keys.append(next(fresh))
        return Batch(index, index % self.clients, tuple(keys), self._encode(keys), **kinds)

    def _pick_resend(self, index: int, so_far: list[int], rng: random.Random) -> tuple[str, int]:
        options: list[tuple[str, range | list[int]]] = []
        if so_far:
            options.append(("in_batch", so_far))
        if index and self.clients > 1:  # one of the previous C − 1 batches: another client's
            other = self._batch_keys(rng.randrange(max(index - self.clients + 1, 0), index))
            if other:
                options.append(("cross_client", other))
        if index >= self.clients:  # one of this client's own earlier batches
            back = rng.randrange(1, min(EARLIER_BATCHES, index // self.clients) + 1)
            own = self._batch_keys(index - back * self.clients)
            if own:
                options.append(("earlier", own))
        if not options:  # e.g. one client, the batch so far all re-sends: any earlier key
            return "earlier", rng.randrange(self.keys_before(index * self.batch_size))
        kind, pool = rng.choice(options)
        return kind, pool[rng.randrange(len(pool))]

    def _encode(self, keys: list[int]) -> bytes:
        events = [self.event(k) for k in keys]
        if self.fmt == "ndjson":
            body = b"\n".join(events) + b"\n"
        elif len(events) == 1:
            body = events[0]
        else:
            body = b"[" + b",".join(events) + b"]"
        return gzip.compress(body, compresslevel=1, mtime=0) if self.gzip else body

    def batches_for(self, client: int) -> Iterator[Batch]:
        """Client ``client``'s batches in order: numbers ``client, client + C, …``."""
        index = client
        while (batch := self.batch(index)) is not None:
            yield batch
            index += self.clients

    @property
    def content_type(self) -> str:
        return "application/x-ndjson" if self.fmt == "ndjson" else "application/json"
