"""Driving the writer actor from a test: a request and its answer, and a group of them.

Group commit only shows when requests already wait in the inbox as the writer takes the first;
a test cannot time that with real clients, so it queues them all before the writer starts.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Mapping
from typing import TypeVar

import trio
import trio.testing

from aggregator.messages import EventRecord, WriteOutcome, WriteRequest

K = TypeVar("K")


async def write(
    inbox: trio.MemorySendChannel[WriteRequest], events: list[EventRecord]
) -> WriteOutcome:
    reply_send, reply_recv = trio.open_memory_channel[WriteOutcome](1)
    await inbox.send(WriteRequest(events, reply_send))
    return await reply_recv.receive()


async def write_as_one_group(
    nursery: trio.Nursery,
    requests: Mapping[K, list[EventRecord]],
    writer: Callable[[trio.MemoryReceiveChannel[WriteRequest]], Awaitable[object]],
    *,
    in_order: bool = False,
) -> tuple[trio.MemorySendChannel[WriteRequest], dict[K, WriteOutcome]]:
    """Each of ``requests`` is written by its own task, and ``writer`` starts in ``nursery`` on
    their inbox only once all of them wait in it: it meets them as one group. Returns once each
    is answered: the inbox, still open for what the test writes next (the test closes it), and
    the outcomes by key. ``in_order``: each waits before the next is written, so the group is
    in the keys' order; otherwise it is in the order trio's scheduler runs the tasks."""
    send, recv = trio.open_memory_channel[WriteRequest](math.inf)  # none waits at the door
    outcomes: dict[K, WriteOutcome] = {}

    async def publisher(key: K, events: list[EventRecord]) -> None:
        outcomes[key] = await write(send, events)

    async with trio.open_nursery() as publishers:
        for key, events in requests.items():
            publishers.start_soon(publisher, key, events)
            if in_order:
                await trio.testing.wait_all_tasks_blocked()
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(writer, recv)
    return send, outcomes
