"""How many rounds of the event loop an answer waits for.

Under load every round runs every other connection's ready task first, so each checkpoint on a
request's path costs a round's worth of the publish work (docs/benchmarks.md, "/events during
ingest"). The count is taken on an idle server: the rounds in which the request's own tasks
ran, from its send to its whole answer.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import trio

from tests.conftest import open_server

pytestmark = pytest.mark.trio


class _Rounds(trio.abc.Instrument):
    """Counts the loop's rounds in which the request's own tasks ran: the client's, and every
    task spawned since (the connection's, the route's). A round of the server's own timers, or
    one that only waits for a thread, is not the request's: counting those made the figure
    follow the machine's load."""

    def __init__(self) -> None:
        self._ours = {trio.lowlevel.current_task()}
        self._ran = False
        self.counting = False
        self.count = 0

    def task_spawned(self, task: trio.lowlevel.Task) -> None:
        self._ours.add(task)

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        self._ran = self._ran or task in self._ours

    def before_io_wait(self, timeout: float) -> None:
        if self.counting and self._ran:
            self.count += 1
        self._ran = False


def _whole(answer: bytes) -> bool:
    head, found, body = answer.partition(b"\r\n\r\n")
    length = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
    return bool(found and length and len(body) >= int(length.group(1)))


async def _answer_rounds(port: int, request: bytes) -> tuple[int, bytes]:
    """(rounds from sending ``request`` until its whole answer is read, the answer)."""
    rounds = _Rounds()
    trio.lowlevel.add_instrument(rounds)  # before the connection: its tasks are spawned at once
    try:
        async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
            rounds.counting = True
            await stream.send_all(request)
            answer = b""
            while not _whole(answer):
                answer += await stream.receive_some(65536)
    finally:
        trio.lowlevel.remove_instrument(rounds)
    return rounds.count, answer


# Measured (the request's rounds, 20 runs beside a fuzz campaign): /livez 12, /stats and
# /events 15 before the sends lost their extra checkpoints and a read took its reader without
# one; 8–9, 10–11 and 10–11 after (the order trio runs a round's tasks in varies). /stats and
# /events read the store on a thread. With the bare read route: 9–10 for both (12–13 while it
# watched for the client's going at every read, not only at one that waits for a reader).
@pytest.mark.parametrize(
    ("path", "most"), [("/livez", 10), ("/stats", 12), ("/events?topic=t", 12)]
)
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
