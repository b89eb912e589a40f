"""The worker actors: decode and validate a raw submission, hand it to the writer, relay the answer.

N workers bound the publish requests being validated or committed at once; group commit can merge
at most N requests into one transaction.
"""

from __future__ import annotations

import contextlib

import trio

from aggregator.messages import (
    Limits,
    PublishOutcome,
    Submission,
    WriteOutcome,
    WriteRequest,
)
from aggregator.validation import decode_publish
from aggregator.wire import Rejection


async def run_worker(
    inbox: trio.MemoryReceiveChannel[Submission],
    writer: trio.MemorySendChannel[WriteRequest],
    limits: Limits,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve submissions until ``inbox`` closes; then close this worker's end of ``writer``."""
    async with inbox, writer:
        task_status.started()
        async for submission in inbox:
            outcome = await _process(submission, writer, limits)
            # The client may have gone away; a committed request stays committed.
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                submission.reply.send_nowait(outcome)


async def _process(
    submission: Submission, writer: trio.MemorySendChannel[WriteRequest], limits: Limits
) -> PublishOutcome:
    try:
        events = decode_publish(
            submission.body, submission.content_type, submission.content_encoding, limits
        )
    except Rejection as rejection:
        return rejection
    reply_send, reply_recv = trio.open_memory_channel[WriteOutcome](1)
    async with reply_recv:
        await writer.send(WriteRequest(events, reply_send))
        return await reply_recv.receive()
