"""The JSON schemas and examples of the OpenAPI document (``aggregator/front/openapi.py``)."""

from __future__ import annotations

from typing import Any

from aggregator.decoders.publish import MAX_TEXT, TOPIC_PATTERN

JSON = "application/json"
MAX_CURSOR = 2**63 - 1


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def text(pattern: str = r"\S") -> dict[str, Any]:
    return {"type": "string", "minLength": 1, "maxLength": MAX_TEXT, "pattern": pattern}


EXAMPLE_EVENT = {
    "topic": "auth.login",
    "event_id": "7f1c0e9a",
    "timestamp": "2026-11-21T10:00:00Z",
    "source": "auth-service",
    "payload": {"user": "u123", "ok": True},
}
SCHEMAS: dict[str, Any] = {
    "Event": {
        "type": "object",
        "additionalProperties": False,
        "required": ["topic", "event_id", "timestamp", "source"],
        "properties": {
            "topic": text(TOPIC_PATTERN),
            "event_id": text(),
            "timestamp": {"type": "string", "format": "date-time"},
            "source": text(),
            "payload": {"type": "object", "description": "at most AGGREGATOR_MAX_PAYLOAD_BYTES"},
        },
    },
    "StoredEvent": {
        "type": "object",
        "required": ["topic", "event_id", "timestamp", "source", "payload", "seq", "received_at"],
        "properties": {
            "topic": {"type": "string"},
            "event_id": {"type": "string"},
            "timestamp": {"type": "string", "format": "date-time"},
            "source": {"type": "string"},
            "payload": {"type": "object"},
            "seq": {"type": "integer", "minimum": 1},
            "received_at": {"type": "string", "format": "date-time"},
        },
    },
    "PublishBody": {
        "oneOf": [
            ref("Event"),
            {"type": "array", "minItems": 1, "items": ref("Event")},
            {
                "type": "object",
                "additionalProperties": False,
                "required": ["events"],
                "properties": {"events": {"type": "array", "minItems": 1, "items": ref("Event")}},
            },
        ]
    },
    "PublishResult": {
        "type": "object",
        "required": ["accepted", "stored", "duplicates"],
        "properties": {
            k: {"type": "integer", "minimum": 0} for k in ("accepted", "stored", "duplicates")
        },
    },
    "Stats": {
        "type": "object",
        "required": ["received", "unique_processed", "duplicate_dropped", "topics", "uptime"],
        "properties": {
            "received": {"type": "integer", "minimum": 0},
            "unique_processed": {"type": "integer", "minimum": 0},
            "duplicate_dropped": {"type": "integer", "minimum": 0},
            "topics": {"type": "array", "items": {"type": "string"}},
            "uptime": {"type": "number", "minimum": 0},
        },
    },
    "Health": {
        "type": "object",
        "required": ["status"],
        "properties": {
            "status": {"enum": ["ok", "unavailable"]},
            "reason": {"type": "string"},
        },
    },
    "TopicCounts": {
        "type": "object",
        "required": [
            "topic",
            "received",
            "unique_processed",
            "duplicate_dropped",
            "last_seq",
            "stored_now",
            "expired",
        ],
        "properties": {
            "topic": {"type": "string"},
            **{
                k: {"type": "integer", "minimum": 0}
                for k in (
                    "received",
                    "unique_processed",
                    "duplicate_dropped",
                    "last_seq",
                    "stored_now",
                    "expired",
                )
            },
        },
    },
    "Error": {
        "type": "object",
        "required": ["error", "message"],
        "properties": {
            "error": {"type": "string"},
            "message": {"type": "string"},
            "details": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["index", "field", "message"],
                    "properties": {
                        "index": {"type": ["integer", "null"]},
                        "field": {"type": ["string", "null"]},
                        "message": {"type": "string"},
                    },
                },
            },
        },
    },
}
