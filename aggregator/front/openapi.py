"""The contract as an OpenAPI 3.1 document, served at ``GET /openapi.json``.

One entry of ``PATHS`` per route, built from shared pieces (schemas, error responses, security),
so that a new route is one more entry. ``tests/test_openapi.py`` keeps it true: every route of the
app is documented, every example validates against its schema and is what the server answers.
"""

from __future__ import annotations

from typing import Any

from aggregator.front.openapi_schemas import EXAMPLE_EVENT, JSON, MAX_CURSOR, SCHEMAS, ref
from aggregator.front.openapi_search import EVENTS_FILTERS, SEARCH_ERRORS, SUBSCRIBE_FILTERS

ERRORS = {
    "400": "the body is not valid JSON, NDJSON or gzip",
    "401": "a token is configured and the request lacks it or has a wrong one",
    "408": "the body did not arrive within AGGREGATOR_READ_TIMEOUT_SECONDS",
    "413": "the body, the decompressed body or the event count is over its limit",
    "415": "another Content-Type or Content-Encoding",
    "422": "an invalid event or query parameter, or a new topic over AGGREGATOR_MAX_TOPICS; "
    "nothing was stored",
    "429": "the ingest queue is full; resend the same events after Retry-After",
    "503": "the store cannot take writes; nothing was stored; resend after Retry-After",
}
RETRY_AFTER = {"Retry-After": {"schema": {"type": "integer"}, "description": "seconds"}}


def error(status: str, example: dict[str, Any] | None = None) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": ERRORS[status],
        "content": {JSON: {"schema": ref("Error")}},
    }
    if example is not None:
        response["content"][JSON]["example"] = example
    if status in ("429", "503"):
        response["headers"] = RETRY_AFTER
    if status == "401":
        response["headers"] = {"WWW-Authenticate": {"schema": {"type": "string"}}}
    return response


def ok(schema: dict[str, Any], example: Any, **extra: Any) -> dict[str, Any]:
    return {"description": "OK", "content": {JSON: {"schema": schema, "example": example}}, **extra}


def query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "schema": schema,
        "description": description,
    }


READ_ERRORS = {"401": error("401"), "422": error("422"), "503": error("503")}


def shipper_door(summary: str, success: dict[str, Any], media: list[str]) -> dict[str, Any]:
    """A door that speaks a log shipper's protocol (docs/otlp.md, docs/loki.md): its bodies
    and answers are that protocol's, so they are described, not modelled, here."""
    binary = {"schema": {"type": "string", "format": "binary"}}
    described = {"description": "in the protocol's own shape (see the summary's page)"}
    return {
        "post": {
            "summary": summary,
            "security": [{"publishToken": []}, {}],
            "requestBody": {"required": True, "content": dict.fromkeys(media, binary)},
            "responses": {
                **success,
                **{s: described for s in ("400", "413", "415", "500")},
                "401": error("401"),
                **{s: {**described, "headers": RETRY_AFTER} for s in ("429", "503")},
            },
        }
    }


def elastic_bulk(*, index: bool = False) -> dict[str, Any]:
    """``POST`` and ``PUT`` of the Elasticsearch bulk API (docs/elasticsearch.md)."""
    door = shipper_door(
        "Elasticsearch bulk API (docs/elasticsearch.md): NDJSON action and document pairs; "
        "answered per item, not atomic"
        + (", the index from the path unless an action names its own" if index else ""),
        {"200": {"description": "per item 201 created, 200 noop, 409 or 400, in its shape"}},
        ["application/x-ndjson", JSON],
    )
    operation = door["post"]
    if index:
        name = {"name": "index", "in": "path", "required": True, "schema": {"type": "string"}}
        operation = {**operation, "parameters": [name]}
    return {"post": operation, "put": operation}


PATHS: dict[str, Any] = {
    "/publish": {
        "post": {
            "summary": "Publish events; 200 only once all of them are durably committed",
            "security": [{"publishToken": []}, {}],
            "requestBody": {
                "required": True,
                "content": {
                    JSON: {"schema": ref("PublishBody"), "example": [EXAMPLE_EVENT]},
                    "application/x-ndjson": {"schema": {"type": "string"}},
                },
            },
            "responses": {
                "200": ok(ref("PublishResult"), {"accepted": 1, "stored": 1, "duplicates": 0}),
                **{status: error(status) for status in ("400", "401", "408", "413", "415", "422")},
                "429": error("429"),
                "503": error("503"),
            },
        }
    },
    "/v1/logs": shipper_door(
        "OpenTelemetry logs, OTLP/HTTP (docs/otlp.md); 200 with partial_success once committed",
        {"200": {"description": "an ExportLogsServiceResponse, in the request's encoding"}},
        ["application/x-protobuf", JSON],
    ),
    "/loki/api/v1/push": shipper_door(
        "Loki push, protobuf + snappy or JSON (docs/loki.md); 204 once committed",
        {"204": {"description": "every entry is committed or was already stored"}},
        ["application/x-protobuf", JSON],
    ),
    "/_bulk": elastic_bulk(),
    "/{index}/_bulk": elastic_bulk(index=True),
    "/": {
        "get": {
            "summary": "Elasticsearch's handshake (docs/elasticsearch.md): the version document "
            "its clients check before a bulk request; HEAD too",
            "responses": {"200": {"description": "in Elasticsearch's shape"}},
        }
    },
    "/_cat/health": {
        "get": {
            "summary": "Elasticsearch's cluster health line, which rsyslog's omelasticsearch "
            "asks before it resumes: green when /health is 200, red with the reason when 503",
            "responses": {
                s: {"description": f"one line, {colour}", "content": {"text/plain": {}}}
                for s, colour in (("200", "green"), ("503", "red and the reason"))
            },
        }
    },
    "/events": {
        "get": {
            "summary": "Stored events ordered by seq, paged by cursor",
            "security": [{"readToken": []}, {}],
            "parameters": [
                query("topic", {"type": "string"}, "only this topic; all topics without it"),
                query(
                    "limit",
                    {"type": "integer", "minimum": 1, "maximum": MAX_CURSOR},
                    "page size, default 100; above 1000 is taken as 1000",
                ),
                query(
                    "after",
                    {"type": "integer", "minimum": 0, "maximum": MAX_CURSOR},
                    "a seq cursor: only events with a larger seq",
                ),
                query(
                    "offset",
                    {"type": "integer", "minimum": 0, "maximum": 10_000},
                    "skip this many events after the cursor; at most AGGREGATOR_MAX_OFFSET "
                    "(default 10,000, the maximum here): page deeper with after (before with "
                    "order=desc)",
                ),
                *EVENTS_FILTERS,
            ],
            "responses": {
                "200": ok(
                    {"type": "array", "items": ref("StoredEvent")},
                    [{**EXAMPLE_EVENT, "seq": 1, "received_at": "2026-11-21T10:00:00.5Z"}],
                    headers={"Link": {"schema": {"type": "string"}, "description": 'rel="next"'}},
                ),
                **SEARCH_ERRORS,
                **READ_ERRORS,
            },
        }
    },
    "/stats": {
        "get": {
            "summary": "Counters; received = unique_processed + duplicate_dropped",
            "security": [{"readToken": []}, {}],
            "responses": {
                "200": ok(
                    ref("Stats"),
                    {
                        "received": 2,
                        "unique_processed": 1,
                        "duplicate_dropped": 1,
                        "topics": ["auth.login"],
                        "uptime": 4.2,
                    },
                ),
                **READ_ERRORS,
            },
        }
    },
    "/health": {
        "get": {
            "summary": "Whether the store answers and takes writes; never needs a token",
            "security": [],
            "responses": {
                "200": ok(ref("Health"), {"status": "ok"}),
                "503": {
                    "description": "the store cannot take writes or does not answer",
                    "headers": RETRY_AFTER,
                    "content": {
                        JSON: {
                            "schema": ref("Health"),
                            "example": {
                                "status": "unavailable",
                                "reason": "the last transaction failed: database or disk is full",
                            },
                        }
                    },
                },
            },
        }
    },
    "/readyz": {
        "get": {
            "summary": "Readiness probe (Kubernetes): the same check as /health",
            "security": [],
            "responses": {
                "200": ok(ref("Health"), {"status": "ok"}),
                "503": {
                    "description": "the store cannot take writes or does not answer",
                    "headers": RETRY_AFTER,
                    "content": {
                        JSON: {
                            "schema": ref("Health"),
                            "example": {
                                "status": "unavailable",
                                "reason": "the writer is not running",
                            },
                        }
                    },
                },
            },
        }
    },
    "/livez": {
        "get": {
            "summary": "Liveness probe (Kubernetes): the process serves HTTP; no store check",
            "security": [],
            "responses": {"200": ok(ref("Health"), {"status": "ok"})},
        }
    },
    "/topics": {
        "get": {
            "summary": "Per-topic counters, from the same transactions as /stats",
            "security": [{"readToken": []}, {}],
            "responses": {
                "200": ok(
                    {"type": "array", "items": ref("TopicCounts")},
                    [
                        {
                            "topic": "auth.login",
                            "received": 2,
                            "unique_processed": 1,
                            "duplicate_dropped": 1,
                            "last_seq": 1,
                            "stored_now": 1,
                            "expired": 0,
                        }
                    ],
                ),
                **READ_ERRORS,
            },
        }
    },
    "/subscribe": {
        "get": {
            "summary": "Server-Sent Events: stored events after the cursor, then live ones",
            "description": "Each message is `id: <seq>` and `data: <event as in /events>`; "
            "`Last-Event-ID` replaces `after`; heartbeat comments keep it open.",
            "security": [{"readToken": []}, {}],
            "parameters": [
                query("topic", {"type": "string"}, "only this topic; all topics without it"),
                query(
                    "after",
                    {"type": "integer", "minimum": 0, "maximum": MAX_CURSOR},
                    "a seq cursor: only events with a larger seq",
                ),
                *SUBSCRIBE_FILTERS,
            ],
            "responses": {
                **SEARCH_ERRORS,
                "200": {
                    "description": "an endless text/event-stream",
                    "content": {"text/event-stream": {"schema": {"type": "string"}}},
                },
                **READ_ERRORS,
            },
        }
    },
    "/metrics": {
        "get": {
            "summary": "Prometheus text format",
            "security": [{"readToken": []}, {}],
            "responses": {
                "200": {
                    "description": "text/plain; version=0.0.4",
                    "content": {"text/plain": {"schema": {"type": "string"}}},
                },
                "401": error("401"),
                "503": error("503"),
            },
        }
    },
    "/openapi.json": {
        "get": {
            "summary": "This document",
            "security": [],
            "responses": {
                "200": {
                    "description": "OpenAPI 3.1",
                    "content": {JSON: {"schema": {"type": "object"}}},
                }
            },
        }
    },
}


def openapi_document(version: str) -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {"title": "pubsub-aggregator", "version": version},
        "paths": PATHS,
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {
                "publishToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "AGGREGATOR_PUBLISH_TOKEN, when set",
                },
                "readToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "AGGREGATOR_READ_TOKEN, when set",
                },
            },
        },
    }
