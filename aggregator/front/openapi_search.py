"""The search parameters of ``GET /events`` and ``GET /subscribe`` in the OpenAPI document
(``openapi.py``), and the responses only they give."""

from __future__ import annotations

from typing import Any

from aggregator.front.openapi_schemas import JSON, MAX_CURSOR, ref


def query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "schema": schema, "description": description}


TIME = {"type": "string", "format": "date-time"}
SOURCE = query("source", {"type": "string"}, "only events of this source (exact)")
Q = query(
    "q",
    {"type": "string", "maxLength": 512},
    'full-text search of the payload and event_id (docs/search.md): words (AND), "a phrase", '
    "prefix*, -excluded, OR; needs AGGREGATOR_SEARCH=on (400 otherwise)",
)
EVENTS_FILTERS = [
    SOURCE,
    query("since", TIME, "only events whose timestamp is at or after this (RFC 3339)"),
    query("until", TIME, "only events whose timestamp is before this (RFC 3339)"),
    Q,
    query(
        "order",
        {"type": "string", "enum": ["asc", "desc"]},
        "asc: oldest first (the default); desc: newest first, paged with before",
    ),
    query(
        "before",
        {"type": "integer", "minimum": 1, "maximum": MAX_CURSOR},
        "a seq cursor: only events with a smaller seq (the next page of order=desc)",
    ),
]
SUBSCRIBE_FILTERS = [SOURCE, Q]
SEARCH_ERRORS = {
    "400": {
        "description": "q was given but the full-text index is off (AGGREGATOR_SEARCH)",
        "content": {JSON: {"schema": ref("Error")}},
    },
}
