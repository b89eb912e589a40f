"""``POST /loki/api/v1/push``: the Loki push door, answered as Loki answers.

204 with no body once every entry of the push is committed (or found to be a duplicate); 400
with a plain-text reason for a push that cannot be taken, of which nothing is stored (Promtail
and Alloy do not retry it); 429 and 503 with ``Retry-After``, which they retry with backoff.
Routes only: the decoding is ``aggregator/decoders/loki.py``, run by the workers.
"""

from __future__ import annotations

from functools import partial

from quart import Response, request
from quart_trio import QuartTrio

from aggregator.decoders.loki import decode_loki
from aggregator.front.app import RETRY_AFTER_SECONDS, Front, refusal
from aggregator.messages import Accepted

PATH = "/loki/api/v1/push"
PROTOCOL = "loki"


def register_loki_routes(app: QuartTrio, front: Front) -> None:
    @app.post(PATH)
    async def loki_push() -> Response:
        body = await request.get_data(cache=False, as_text=False, parse_form_data=False)
        headers = {name.lower(): value for name, value in request.headers.items()}
        decode = partial(decode_loki, query_topic=request.args.get("topic"))
        outcome = await front.submit(body, headers, decode)
        if isinstance(outcome, Accepted):
            front.metrics.count_published(PROTOCOL, outcome.stored, outcome.duplicates)
            return Response(b"", 204)
        status, error, message = refusal(outcome)
        front.metrics.count_rejected(PROTOCOL, error)
        headers_out = {"Retry-After": str(RETRY_AFTER_SECONDS)} if status in (429, 503) else None
        # Loki's errors are plain text, one line.
        return Response(
            message + "\n", status, headers_out, content_type="text/plain; charset=utf-8"
        )
