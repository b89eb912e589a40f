"""The one contract of every wire decoder, as a checker both fuzzers share.

A decoder returns well-formed events or raises ``Rejection`` with a 4xx status and a message;
nothing else may leave it (issue 18: an exception that escaped a decoder stopped the server), and
the same input decodes the same way every time. ``check`` runs a decoder twice on one input and
raises ``Violation`` naming the rule broken; every field rule is the contract's (CONTRACT.md,
"The event").
"""

from __future__ import annotations

import json
import re
import traceback
from collections.abc import Mapping
from datetime import datetime
from typing import Any, TypeAlias

from aggregator.messages import Decoder, Detail, EventRecord, Limits, Rejection

MAX_TEXT = 255
TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{6})?Z", re.ASCII)

Outcome: TypeAlias = list[EventRecord] | Rejection


class Violation(Exception):
    """A decoder broke its contract on one input; ``signature`` says where, for de-duplication."""

    def __init__(self, message: str, signature: str) -> None:
        super().__init__(message)
        self.signature = signature


def check(
    decode: Decoder,
    body: bytes,
    headers: Mapping[str, str],
    limits: Limits,
    *,
    allows_empty: bool = False,
) -> Outcome:
    """Decode twice; the outcome if both obey the contract and agree, else ``Violation``."""
    first = _run(decode, body, headers, limits, allows_empty)
    second = _run(decode, body, headers, limits, allows_empty)
    if _comparable(first) != _comparable(second):
        raise Violation(
            f"not deterministic: {_describe(first)} then {_describe(second)}", "nondeterministic"
        )
    return first


def _run(
    decode: Decoder, body: bytes, headers: Mapping[str, str], limits: Limits, allows_empty: bool
) -> Outcome:
    try:
        events = decode(body, headers, limits)
    except Rejection as rejection:
        _check_rejection(rejection)
        return rejection
    except Exception as exc:
        where = traceback.extract_tb(exc.__traceback__)[-1]
        raise Violation(
            f"raised {type(exc).__name__}: {exc} (at {where.filename}:{where.lineno}); "
            "only Rejection may leave a decoder",
            f"{type(exc).__name__}@{where.filename}:{where.lineno}",
        ) from exc
    _check_events(events, limits, allows_empty)
    return events


def _check_rejection(rejection: Rejection) -> None:
    problems = []
    if not (isinstance(rejection.status, int) and 400 <= rejection.status <= 499):
        problems.append(f"status {rejection.status!r} is not a 4xx")
    if rejection.status == 429 or rejection.retry_after is not None:
        problems.append("a decoder cannot say 'retry later': the input itself is wrong")
    if not (isinstance(rejection.error, str) and rejection.error):
        problems.append(f"error kind {rejection.error!r} is empty")
    if not (isinstance(rejection.message, str) and rejection.message.strip()):
        problems.append(f"message {rejection.message!r} is empty")
    details = rejection.details
    if details is not None and not (
        isinstance(details, list)
        and all(
            isinstance(d, Detail)
            and (d.index is None or (isinstance(d.index, int) and d.index >= 0))
            and isinstance(d.message, str)
            and d.message
            for d in details
        )
    ):
        problems.append(f"details {details!r} are not well-formed")
    if problems:
        raise Violation("bad Rejection: " + "; ".join(problems), "rejection:" + problems[0][:40])


def _check_events(events: Any, limits: Limits, allows_empty: bool) -> None:
    if not isinstance(events, list):
        raise Violation(f"returned {type(events).__name__}, not a list", "not-a-list")
    if not events and not allows_empty:
        raise Violation("returned no event; an empty request must be a Rejection", "empty")
    if len(events) > limits.max_batch_events:
        raise Violation(
            f"returned {len(events)} events, over max_batch_events {limits.max_batch_events}",
            "batch-limit",
        )
    for index, record in enumerate(events):
        problem = record_problem(record, limits)
        if problem:
            raise Violation(f"event {index}: {problem}: {record!r}", problem.split(" ", 1)[0])


def record_problem(record: Any, limits: Limits) -> str | None:
    """What is wrong with one decoded event, by the contract's rules; None when it is fine."""
    if type(record) is not EventRecord:
        return f"type {type(record).__name__} is not EventRecord"
    for name in EventRecord._fields:
        value = getattr(record, name)
        if type(value) is not str:
            return f"{name} is {type(value).__name__}, not str"
        try:
            value.encode("utf-8")  # the store binds it as UTF-8 text
        except UnicodeEncodeError:
            return f"{name} is not encodable as UTF-8 (a lone surrogate)"
    topic, event_id, timestamp, source, payload = record
    for name, value in (("topic", topic), ("event_id", event_id), ("source", source)):
        if not 1 <= len(value) <= MAX_TEXT:
            return f"{name} has {len(value)} characters, not 1–{MAX_TEXT}"
    if any(c.isspace() or c < " " or "\x7f" <= c <= "\x9f" for c in topic):
        return "topic has whitespace or a control character"
    if event_id.isspace():
        return "event_id is blank"
    if source.isspace():
        return "source is blank"
    if not TIMESTAMP.fullmatch(timestamp):
        return f"timestamp {timestamp!r} is not YYYY-MM-DDTHH:MM:SS[.ffffff]Z"
    try:
        datetime.fromisoformat(timestamp[:-1])
    except ValueError:
        return f"timestamp {timestamp!r} is not a real date-time"
    if len(payload.encode("utf-8")) > limits.max_payload_bytes:
        return f"payload is over max_payload_bytes {limits.max_payload_bytes}"
    if not _is_json_object(payload):
        return "payload is not the text of a JSON object"
    return None


def _is_json_object(text: str) -> bool:
    """RFC 8259 grammar, any number's size: Python's json, without its NaN and Infinity."""
    try:
        return isinstance(json.loads(text, parse_constant=_not_json), dict)
    except (ValueError, RecursionError):
        return False


def _not_json(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def _comparable(outcome: Outcome) -> Any:
    if isinstance(outcome, Rejection):
        details = tuple(outcome.details) if outcome.details is not None else None
        return ("rejection", outcome.status, outcome.error, outcome.message, details)
    return ("events", tuple(outcome))


def _describe(outcome: Outcome) -> str:
    if isinstance(outcome, Rejection):
        return f"{outcome.status} {outcome.message!r}"
    return f"{len(outcome)} events"
