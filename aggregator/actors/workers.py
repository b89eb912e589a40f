"""The worker actors: decode and validate a raw submission, hand it to the writer, relay the answer.

N workers bound the publish requests being validated or committed at once; group commit can merge
at most N requests into one transaction. A bug met while handling one submission answers that
submission (``Internal``, a 500) and the worker goes on: one request never ends the process.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Sequence

import trio

from aggregator.incidents import Incidents
from aggregator.messages import (
    Detail,
    EventRecord,
    Internal,
    Limits,
    PublishOutcome,
    Rejection,
    Submission,
    Unavailable,
    WriteOutcome,
    WriteRequest,
)

THREAD_BODY_BYTES = 64 * 1024  # bodies from this size are decoded off the event loop
LATE = Unavailable("the shutdown grace period ended before the request was processed")


class TopicBudget:
    """The topics the store holds (at start-up, and every one admitted since) and their limit
    (``AGGREGATOR_MAX_TOPICS``). Each topic costs a row of the per-topic counters, a line of
    /stats and of /topics: without a bound, one client made 300,000 topics in 6 s and /stats
    65 MB. A request that would take the count over the limit is refused whole (422); events of
    topics already known are always admitted. Checked and reserved in one step on the trio
    thread, so concurrent requests cannot overshoot; a reservation whose commit then fails
    stays counted (a topic at most per failed request, until the next start)."""

    def __init__(self, known: Iterable[str], limit: int) -> None:
        self._known = set(known)
        self.limit = limit

    @property
    def count(self) -> int:
        return len(self._known)

    def admit(self, events: Sequence[EventRecord]) -> Rejection | None:
        new: dict[str, int] = {}  # a new topic -> the index of its first event
        for index, record in enumerate(events):
            if record.topic not in self._known and record.topic not in new:
                new[record.topic] = index
        if not new:
            return None
        if len(self._known) + len(new) > self.limit:
            rule = (
                f"a new topic would take the store over {self.limit} topics, the limit "
                "(AGGREGATOR_MAX_TOPICS); publish to an existing topic"
            )
            return Rejection(
                422,
                "too_many_topics",
                f"{len(self._known)} topics are stored and this request adds {len(new)}: {rule}; "
                "nothing of the request was stored",
                [Detail(index, "topic", rule) for index in new.values()],
            )
        self._known.update(new)
        return None


async def run_worker(
    inbox: trio.MemoryReceiveChannel[Submission],
    writer: trio.MemorySendChannel[WriteRequest],
    limits: Limits,
    *,
    incidents: Incidents | None = None,
    cutoff: trio.Event | None = None,
    decode_threads: trio.CapacityLimiter | None = None,
    topics: TopicBudget | None = None,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve submissions until ``inbox`` closes; then close this worker's end of ``writer``.

    Once ``cutoff`` is set (the shutdown grace is over), what is still queued is answered 503
    without being stored: its client gets that answer before the connections close, never a cut
    connection for events that were then committed."""
    incidents = Incidents() if incidents is None else incidents
    cutoff = trio.Event() if cutoff is None else cutoff
    threads = trio.CapacityLimiter(1) if decode_threads is None else decode_threads
    budget = TopicBudget((), 2**62) if topics is None else topics
    async with inbox, writer:
        task_status.started()
        async for submission in inbox:
            outcome = await _process(submission, writer, limits, incidents, cutoff, threads, budget)
            # The client may have gone away; a committed request stays committed.
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                submission.reply.send_nowait(outcome)


async def _process(
    submission: Submission,
    writer: trio.MemorySendChannel[WriteRequest],
    limits: Limits,
    incidents: Incidents,
    cutoff: trio.Event,
    threads: trio.CapacityLimiter,
    topics: TopicBudget,
) -> PublishOutcome:
    if cutoff.is_set():
        return LATE
    try:
        if len(submission.body) < THREAD_BODY_BYTES:
            events = submission.decode(submission.body, submission.headers, limits)
        else:
            # A large body takes milliseconds to seconds of CPU (gzip, JSON): on a thread of
            # its own, requests and probes go on meanwhile (the GIL is shared, not held).
            events = await trio.to_thread.run_sync(
                submission.decode, submission.body, submission.headers, limits, limiter=threads
            )
    except Rejection as rejection:
        return rejection
    except Exception as exc:  # a decoder bug: a decoder may only return events or reject
        media = submission.headers.get("content-type")
        what = f"decoding a {len(submission.body)}-byte body ({media}) with {submission.decode}"
        return Internal("decode", incidents.record("decode", exc, what))
    if cutoff.is_set():  # the grace ended while this one was decoded
        return LATE
    refused = topics.admit(events)
    if refused is not None:
        return refused
    reply_send, reply_recv = trio.open_memory_channel[WriteOutcome](1)
    try:
        async with reply_recv:
            await writer.send(WriteRequest(events, reply_send))
            return await reply_recv.receive()
    except Exception as exc:  # e.g. the writer closed without answering: a commit is unknown
        what = f"waiting for the commit of {len(events)} events"
        request_id = incidents.record("worker", exc, what)
        return Internal("worker", request_id, stored_nothing=False)
