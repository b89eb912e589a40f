"""What each door answers for a decoder's outcome: the server campaign's oracle, per target.

``expect(body, headers, outcome, stored)`` predicts the status and the answer's body (as
``read`` gives it back) from the outcome the decoder gave in the campaign's own process and,
for accepted events, whether each one is new to the server (``stored``; the campaign remembers
every key accepted). ``read(status, content_type, content)`` turns a response into the same
form. Written from each door's page (docs/elasticsearch.md, otlp.md, loki.md) and without
calling the routes' code, so a route that answers otherwise is a finding too; where a page
gives no exact text (OTLP's ``error_message``, its gRPC codes) the route's wording is copied
here, and a change to it fails the campaign until this module follows.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from google.rpc.status_pb2 import Status
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse

from aggregator.decoders.content import media_type
from aggregator.decoders.elastic import BulkItems, decode_bulk
from aggregator.decoders.otlp import decode_otlp
from aggregator.decoders.shipper import Refused
from aggregator.messages import EventRecord, Limits, Rejection
from fuzz.contract import Outcome

Reply = tuple[int, Any]

# The bulk target's URL index (/fuzz/_bulk) and a fixed time of receipt: the contract requires
# the same answer twice, and a document without a time takes the time of receipt.
BULK_INDEX = "fuzz"
RECEIVED = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def decode_bulk_request(
    body: bytes, headers: Mapping[str, str], limits: Limits, *, out: BulkItems | None = None
) -> list[EventRecord]:
    """``decode_bulk`` as the route at ``/fuzz/_bulk`` binds it (a fixed time of receipt)."""
    out = BulkItems() if out is None else out
    return decode_bulk(body, headers, limits, url_index=BULK_INDEX, out=out, now=RECEIVED)


def read_json(status: int, content_type: str, content: bytes) -> Any:
    return json.loads(content)


def expect_publish(
    body: bytes, headers: Mapping[str, str], limits: Limits, outcome: Outcome, stored: list[bool]
) -> Reply:
    if isinstance(outcome, Rejection):
        want: dict[str, Any] = {"error": outcome.error, "message": outcome.message}
        if outcome.details is not None:
            want["details"] = [
                {"index": d.index, "field": d.field, "message": d.message} for d in outcome.details
            ]
        return outcome.status, want
    new = sum(stored)
    return 200, {"accepted": len(outcome), "stored": new, "duplicates": len(outcome) - new}


# docs/elasticsearch.md: the whole request's errors in Elasticsearch's words.
_ES_TYPES = {
    "too_large": "content_too_long_exception",
    "malformed": "parse_exception",
    "unsupported_media_type": "media_type_header_exception",
}


def read_bulk(status: int, content_type: str, content: bytes) -> Any:
    answer = json.loads(content)
    if isinstance(answer, dict):
        answer.pop("took", None)  # milliseconds: not predictable
    return answer


def expect_bulk(
    body: bytes, headers: Mapping[str, str], limits: Limits, outcome: Outcome, stored: list[bool]
) -> Reply:
    if isinstance(outcome, Rejection):
        cause = {"type": _ES_TYPES.get(outcome.error, outcome.error), "reason": outcome.message}
        return outcome.status, {"error": {"root_cause": [cause], **cause}, "status": outcome.status}
    out = BulkItems()
    decode_bulk_request(body, headers, limits, out=out)  # for the per-item answers
    items: list[tuple[str, str | None, str | None, int | None, str, str]]
    if out.actions:  # every item became an event: item i is event i
        items = [(a, e.topic, e.event_id, i, "", "") for i, (a, e) in enumerate(
            zip(out.actions, outcome, strict=True))]  # fmt: skip
    else:
        items = [(i.action, i.index, i.id, i.event, i.error, i.reason) for i in out.items]
    answers = []
    for action, index, event_id, event, error, reason in items:
        head: dict[str, Any] = {"_index": index, "_id": event_id}
        if event is None:
            head.update(status=400, error={"type": error, "reason": reason})
        elif stored[event]:
            head.update(_version=1, result="created", status=201)
        elif action == "create":  # a create of a stored key: 409
            conflict = (
                f"[{event_id}]: version conflict, document already exists (current version "
                "[1]); events are stored once, the first copy is kept"
            )
            error_body = {"type": "version_conflict_engine_exception", "reason": conflict}
            head.update(status=409, error={**error_body, "index": index})
        else:  # an index of a stored key: nothing written, the first copy kept
            head.update(_version=1, result="noop", status=200)
        answers.append({action: head})
    errors = any(a[next(iter(a))]["status"] >= 400 for a in answers)
    return 200, {"errors": errors, "items": answers}


# The gRPC code a google.rpc.Status carries for each HTTP status (else 2, UNKNOWN).
_GRPC_CODES = {400: 3, 413: 8, 415: 3}


def read_otlp(status: int, content_type: str, content: bytes) -> Any:
    """("json" | "protobuf", what it says): (rejected, message) for a 200, (code, message)
    for an error."""
    if content_type.split(";")[0].strip() == "application/json":
        answer = json.loads(content)
        if status != 200:
            return "json", (answer["code"], answer["message"])
        partial = answer.get("partialSuccess", {})
        return "json", (partial.get("rejectedLogRecords", 0), partial.get("errorMessage", ""))
    if status != 200:
        error = Status.FromString(content)
        return "protobuf", (error.code, error.message)
    response = ExportLogsServiceResponse.FromString(content)
    partial_success = response.partial_success
    return "protobuf", (partial_success.rejected_log_records, partial_success.error_message)


def expect_otlp(
    body: bytes, headers: Mapping[str, str], limits: Limits, outcome: Outcome, stored: list[bool]
) -> Reply:
    encoding = "json" if media_type(headers) == "application/json" else "protobuf"
    if isinstance(outcome, Rejection):
        return outcome.status, (encoding, (_GRPC_CODES.get(outcome.status, 2), outcome.message))
    refused = Refused()
    decode_otlp(body, headers, limits, refused=refused)  # for partial_success
    message = ""
    if refused.count:
        more = refused.count - len(refused.reasons)
        message = (
            f"{refused.count} records were not stored: "
            + "; ".join(refused.reasons)
            + (f"; and {more} more" if more > 0 else "")
        )
    return 200, (encoding, (refused.count, message))


def read_text(status: int, content_type: str, content: bytes) -> Any:
    return content.decode("utf-8")


def expect_loki(
    body: bytes, headers: Mapping[str, str], limits: Limits, outcome: Outcome, stored: list[bool]
) -> Reply:
    """204 with no body for a push taken whole; the refusal as one line of plain text."""
    if isinstance(outcome, Rejection):
        return outcome.status, outcome.message + "\n"
    return 204, ""


def stored_flags(events: Sequence[EventRecord], known: set[tuple[str, str]]) -> list[bool]:
    """Per event: new to the server (and now known), as the writer's transaction decides."""
    flags = []
    for record in events:
        key = (record.topic, record.event_id)
        flags.append(key not in known)
        known.add(key)
    return flags
