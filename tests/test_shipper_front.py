"""Both shipper doors in front of an in-process server: the publish token guards them, and with
the ingest queue full they answer 429 with ``Retry-After`` in their protocol's shape (OTLP: a
``google.rpc.Status``; Loki: a line of text), store nothing, and the same request sent again once
the queue drains is stored once."""

from __future__ import annotations

from pathlib import Path

import cramjam
import pytest
import trio
import trio.testing
from google.rpc.status_pb2 import Status
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs

from aggregator.decoders.proto.loki_push_pb2 import EntryAdapter, PushRequest, StreamAdapter
from tests.conftest import open_server
from tests.support import event

pytestmark = pytest.mark.trio
PROTOBUF = {"Content-Type": "application/x-protobuf"}


def otlp_body() -> bytes:
    record = LogRecord(time_unix_nano=1_796_000_000_000_000_000, body=AnyValue(string_value="o"))
    scope = ScopeLogs(log_records=[record])
    return ExportLogsServiceRequest(
        resource_logs=[ResourceLogs(scope_logs=[scope])]
    ).SerializeToString()


def loki_body() -> bytes:
    entry = EntryAdapter(line="l")
    entry.timestamp.FromNanoseconds(1_796_000_000_000_000_000)
    push = PushRequest(streams=[StreamAdapter(labels='{job="overload"}', entries=[entry])])
    return bytes(cramjam.snappy.compress_raw(push.SerializeToString()))


async def test_a_full_queue_is_429_with_retry_after_and_a_resend_is_stored_once(
    tmp_path: Path,
) -> None:
    async with open_server(tmp_path / "data", workers=1, queue_size=1) as server:
        release = server.lock_out_writer()  # the writer waits: the one worker, then the queue
        statuses: list[int] = []

        async def publish(i: int) -> None:
            statuses.append((await server.publish(event(event_id=str(i)))).status_code)

        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                for i in range(2):
                    nursery.start_soon(publish, i)
                    await trio.testing.wait_all_tasks_blocked()
                otlp = await server.client.post("/v1/logs", content=otlp_body(), headers=PROTOBUF)
                loki = await server.client.post(
                    "/loki/api/v1/push", content=loki_body(), headers=PROTOBUF
                )
                release()
            assert statuses == [200, 200]
            assert (otlp.status_code, otlp.headers["Retry-After"]) == (429, "1")
            status = Status.FromString(otlp.content)
            assert status.code == 8 and "AGGREGATOR_QUEUE_SIZE" in status.message  # exhausted
            assert (loki.status_code, loki.headers["Retry-After"]) == (429, "1")
            assert loki.headers["content-type"].startswith("text/plain")
            assert "AGGREGATOR_QUEUE_SIZE" in loki.text
            assert (await server.stats())["received"] == 2  # nothing of either was stored
            for _ in range(2):  # the shippers' resends: stored once, then a duplicate
                again = await server.client.post("/v1/logs", content=otlp_body(), headers=PROTOBUF)
                assert again.status_code == 200
                pushed = await server.client.post(
                    "/loki/api/v1/push", content=loki_body(), headers=PROTOBUF
                )
                assert pushed.status_code == 204
            stats = await server.stats()
    assert (stats["received"], stats["unique_processed"], stats["duplicate_dropped"]) == (6, 4, 2)


async def test_the_publish_token_guards_both_doors(tmp_path: Path) -> None:
    async with open_server(tmp_path / "data", publish_token="p-token", read_token="r") as server:
        with trio.fail_after(30):
            for path, body, ok in (
                ("/v1/logs", otlp_body(), 200),
                ("/loki/api/v1/push", loki_body(), 204),
            ):
                bare = await server.client.post(path, content=body, headers=PROTOBUF)
                assert bare.status_code == 401
                assert "AGGREGATOR_PUBLISH_TOKEN" in bare.json()["message"]
                wrong = {**PROTOBUF, "Authorization": "Bearer r"}  # the read token
                assert (
                    await server.client.post(path, content=body, headers=wrong)
                ).status_code == 401
                right = {**PROTOBUF, "Authorization": "Bearer p-token"}
                assert (
                    await server.client.post(path, content=body, headers=right)
                ).status_code == ok
            stats = await server.client.get("/stats", headers={"Authorization": "Bearer r"})
    assert stats.json()["unique_processed"] == 2
