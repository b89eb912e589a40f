"""``POST /v1/logs``: the OTLP/HTTP logs door, answered as the OTLP specification says.

200 with an ``ExportLogsServiceResponse`` once the request's records are committed (or found to
be duplicates), in the request's encoding, with ``partial_success`` counting the records that
could not be events; 400 with a ``google.rpc.Status`` for a body that cannot be decoded (not
retried by exporters); 429 and 503 with ``Retry-After``, which exporters retry. Routes only:
the decoding is ``aggregator/decoders/otlp.py``, run by the workers.
"""

from __future__ import annotations

from functools import partial

import msgspec
from google.rpc.status_pb2 import Status
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsPartialSuccess,
    ExportLogsServiceResponse,
)
from quart import Response, request
from quart_trio import QuartTrio

from aggregator.decoders.content import media_type
from aggregator.decoders.otlp import JSON, decode_otlp
from aggregator.decoders.shipper import Refused
from aggregator.front.app import RETRY_AFTER_SECONDS, Front, refusal
from aggregator.messages import Accepted

PATH = "/v1/logs"
PROTOCOL = "otlp"
PROTOBUF_TYPE = "application/x-protobuf"


def register_otlp_routes(app: QuartTrio, front: Front) -> None:
    @app.post(PATH)
    async def otlp_logs() -> Response:
        body = await request.get_data(cache=False, as_text=False, parse_form_data=False)
        headers = {name.lower(): value for name, value in request.headers.items()}
        as_json = media_type(headers) == JSON
        refused = Refused()
        decode = partial(decode_otlp, query_topic=request.args.get("topic"), refused=refused)
        outcome = await front.submit(body, headers, decode)
        if isinstance(outcome, Accepted):
            front.metrics.count_published(
                PROTOCOL, outcome.stored, outcome.duplicates, refused.count
            )
            return _success(refused, as_json=as_json)
        status, error, message = refusal(outcome)
        front.metrics.count_rejected(PROTOCOL, error)
        return _status(status, message, as_json=as_json)


def _success(refused: Refused, *, as_json: bool) -> Response:
    if as_json:
        partial_success = {}
        if refused.count:
            partial_success = {
                "partialSuccess": {
                    "rejectedLogRecords": refused.count,
                    "errorMessage": _refusals(refused),
                }
            }
        return Response(msgspec.json.encode(partial_success), 200, content_type=JSON)
    response = ExportLogsServiceResponse()
    if refused.count:
        response.partial_success.CopyFrom(
            ExportLogsPartialSuccess(
                rejected_log_records=refused.count, error_message=_refusals(refused)
            )
        )
    return Response(response.SerializeToString(), 200, content_type=PROTOBUF_TYPE)


def _refusals(refused: Refused) -> str:
    more = refused.count - len(refused.reasons)
    tail = f"; and {more} more" if more > 0 else ""
    return f"{refused.count} records were not stored: " + "; ".join(refused.reasons) + tail


def _status(status: int, message: str, *, as_json: bool) -> Response:
    """An error as OTLP/HTTP sends it: a ``google.rpc.Status`` in the request's encoding."""
    headers = {"Retry-After": str(RETRY_AFTER_SECONDS)} if status in (429, 503) else None
    code = {400: 3, 413: 8, 415: 3, 429: 8, 500: 13, 503: 14}.get(status, 2)  # gRPC codes
    if as_json:
        body = msgspec.json.encode({"code": code, "message": message})
        return Response(body, status, headers, content_type=JSON)
    encoded = Status(code=code, message=message).SerializeToString()
    return Response(encoded, status, headers, content_type=PROTOBUF_TYPE)
