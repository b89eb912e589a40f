"""Unexpected failures met while handling one request (or one read of the live tail).

The rule (docs/reliability.md, "Fault isolation"): a bug met while handling one request answers
that request alone — 500 ``{"error": "internal"}`` naming a request id — and the actor goes on
with the next one. Each incident is logged once, with its traceback and that id, and counted by
stage in ``aggregator_internal_errors_total{stage}``. Only a writer whose connection is in an
unknown state stops the process (``StoreBroken``): it must not guess.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable

LOGGER = logging.getLogger(__name__)
# Where an incident can happen; the metric's label values, fixed so they cannot grow.
STAGES = ("decode", "worker", "writer", "tail", "subscribe", "route", "connection")


class Incidents:
    """Logs and counts incidents; ``count`` is told each one's stage (the metric)."""

    def __init__(self, count: Callable[[str], None] | None = None) -> None:
        self._count = count

    def record(self, stage: str, exc: BaseException, what: str) -> str:
        """Log ``exc`` once with its traceback; the new request id that names it."""
        request_id = secrets.token_hex(6)
        LOGGER.error(
            "internal error in %s (request id %s) while %s", stage, request_id, what, exc_info=exc
        )
        if self._count is not None:
            self._count(stage)
        return request_id


def internal_message(request_id: str, stored_nothing: bool) -> str:
    """The message of a 500: what happened to the request, and that resending is safe."""
    stored = (
        "nothing of the request was stored"
        if stored_nothing
        else "the request may or may not have been stored"
    )
    return (
        f"the server met an internal error (request id {request_id}, in its log); {stored}, "
        "and resending it is safe (duplicates are dropped)"
    )
