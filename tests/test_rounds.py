"""How many rounds of the event loop an answer waits for.

Under load every round runs every other connection's ready task first, so each checkpoint on a
request's path costs a round's worth of the publish work (docs/benchmarks.md, "/events during
ingest"). The count is taken on an idle server, where a round is the request's own steps.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import trio

from tests.conftest import open_server

pytestmark = pytest.mark.trio


class _Rounds(trio.abc.Instrument):
    """Counts the loop's rounds: one per wait for I/O."""

    def __init__(self) -> None:
        self.count = 0

    def before_io_wait(self, timeout: float) -> None:
        self.count += 1


def _whole(answer: bytes) -> bool:
    head, found, body = answer.partition(b"\r\n\r\n")
    length = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
    return bool(found and length and len(body) >= int(length.group(1)))


async def _answer_rounds(port: int, request: bytes) -> tuple[int, bytes]:
    """(rounds from sending ``request`` until its whole answer is read, the answer)."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        rounds = _Rounds()
        trio.lowlevel.add_instrument(rounds)
        try:
            await stream.send_all(request)
            answer = b""
            while not _whole(answer):
                answer += await stream.receive_some(65536)
        finally:
            trio.lowlevel.remove_instrument(rounds)
    return rounds.count, answer


# Measured: /livez 11 and /stats 15 rounds before the sends lost their extra checkpoints and a
# read took its reader without one; 7 and 10 after (one more now and then: a timer of the
# server's own). /stats and /events read the store on a thread.
@pytest.mark.parametrize(("path", "most"), [("/livez", 8), ("/stats", 11), ("/events?topic=t", 11)])
async def test_an_answer_waits_for_few_rounds_of_the_loop(
    tmp_path: Path, path: str, most: int
) -> None:
    """A sized answer is written in two sends (head, body), neither behind an extra checkpoint:
    each send used to add two rounds (a lock taken with a checkpoint, a checkpoint after the
    data), and the empty end of the body a send of its own."""
    with trio.fail_after(30):
        async with open_server(tmp_path) as server:
            request = f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
            await _answer_rounds(server.running.port, request)  # the first pays for imports
            rounds, answer = await _answer_rounds(server.running.port, request)
    assert answer.startswith(b"HTTP/1.1 200 "), answer[:200]
    assert rounds <= most, f"{path} waited for {rounds} rounds of the loop"
