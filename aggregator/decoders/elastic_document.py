"""One document of a bulk request, as the mapping reads it (docs/elasticsearch.md): its time,
its source, and its content id when the action gives no ``_id``."""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime
from typing import Any

import msgspec

from aggregator.decoders.publish import MAX_TEXT, normalise_timestamp

DEFAULT_SOURCE = "_bulk"
ID_DIGEST_BYTES = 16  # BLAKE2b-128: 32 hex characters


class Doc(msgspec.Struct):
    """The fields of a document the mapping reads; the document itself is kept as received."""

    at_timestamp: Any = msgspec.field(name="@timestamp", default=None)
    timestamp: Any = None
    host: Any = None
    service: Any = None
    agent: Any = None
    host_name: Any = msgspec.field(name="host.name", default=None)
    host_hostname: Any = msgspec.field(name="host.hostname", default=None)
    service_name: Any = msgspec.field(name="service.name", default=None)
    agent_name: Any = msgspec.field(name="agent.name", default=None)


# gc=False: made by the hundred per request, and they hold no cycles.
class Named(msgspec.Struct, gc=False):
    name: str | None = None
    hostname: str | None = None


class TypedDoc(msgspec.Struct, gc=False):
    """The fast path: the usual types of the fields the mapping reads, decoded in C. A document
    whose fields have other types (or none of these) goes to ``Doc``, read field by field."""

    at_timestamp: datetime | int | float | None = msgspec.field(name="@timestamp", default=None)
    timestamp: datetime | int | float | None = None
    host: Named | str | None = None
    service: Named | None = None
    agent: Named | None = None
    host_name: str | None = msgspec.field(name="host.name", default=None)
    host_hostname: str | None = msgspec.field(name="host.hostname", default=None)
    service_name: str | None = msgspec.field(name="service.name", default=None)
    agent_name: str | None = msgspec.field(name="agent.name", default=None)


DOC = msgspec.json.Decoder(Doc)
TYPED_DOC = msgspec.json.Decoder(TypedDoc)
_ANY = msgspec.json.Decoder()
_STAMP = msgspec.json.Decoder(datetime)
_CANONICAL = msgspec.json.Encoder(order="sorted")
# Epoch milliseconds as text: ASCII digits only (str.isdigit() took "١٢٣", Arabic-Indic digits).
_EPOCH_TEXT = re.compile(r"-?[0-9]+")


class Refused(Exception):
    """One item breaks a rule: it gets a 400 with ``reason``; the other items go on."""

    def __init__(self, reason: str, error: str = "document_parsing_exception") -> None:
        super().__init__(reason)
        self.reason, self.error = reason, error


def content_id(document: bytes) -> str:
    """The BLAKE2b-128 hex digest of the document's canonical JSON (keys sorted, compact).
    Refused for a number no double holds (``1e400``): it has no canonical form here."""
    try:
        canonical = _CANONICAL.encode(_ANY.decode(document))
    except msgspec.ValidationError as exc:  # a number out of range (a 500 before)
        raise Refused(
            f"the document has no content id ({exc}): numbers must fit a 64-bit float; "
            "give the action an _id to store it as received"
        ) from None
    return hashlib.blake2b(canonical, digest_size=ID_DIGEST_BYTES).hexdigest()


def odd(text: str) -> bool:
    """False for the usual string (cheap tests); True when the exact rule must be checked."""
    return not text or len(text) > MAX_TEXT or text[0].isspace()


def timestamp_of(doc: TypedDoc | Doc) -> str | None:
    """The normalised time of the document; None when it has none."""
    name, value = "@timestamp", doc.at_timestamp
    if value is None:
        name, value = "timestamp", doc.timestamp
    if value is None:
        return None
    try:
        if isinstance(value, datetime):
            if value.tzinfo is UTC:  # the usual case: msgspec writes it as "…Z", in C
                stamp: str = msgspec.to_builtins(value)
                return stamp
            return normalise_timestamp(value)
        if isinstance(value, str) and not _EPOCH_TEXT.fullmatch(value):
            moment = _STAMP.decode(msgspec.json.encode(value))
        elif isinstance(value, (int, float, str)) and not isinstance(value, bool):
            moment = datetime.fromtimestamp(float(value) / 1000, UTC)  # epoch milliseconds
        else:
            raise ValueError(value)
        return normalise_timestamp(moment)
    except (msgspec.ValidationError, ValueError, OverflowError, OSError):
        got = repr(value)[:100]
        raise Refused(
            f"{name} must be an RFC 3339 date-time such as 2026-11-21T10:00:00Z or epoch "
            f"milliseconds; got {got}"
        ) from None


def source_of(doc: TypedDoc | Doc) -> str | None:
    if doc.__class__ is TypedDoc:  # the usual case, without the generic lookups below
        host = doc.host
        named = host if host.__class__ is Named else None
        if doc.host_name is not None:
            return doc.host_name
        if named is not None and named.name is not None:
            return named.name
        if doc.host_hostname is None and (named is None or named.hostname is None):
            if host.__class__ is str:
                return host
            if doc.service_name is None and doc.service is None and doc.agent_name is None:
                agent = doc.agent
                return DEFAULT_SOURCE if agent is None or agent.name is None else agent.name
    return _any_source(doc)


def _any_source(doc: TypedDoc | Doc) -> str | None:
    """The first of host.name, host.hostname, host, service.name, agent.name; else ``_bulk``.
    A dotted key (``"host.name": …``) counts as the nested one, as Elasticsearch reads it."""
    host, service, agent = doc.host, doc.service, doc.agent
    candidates = (
        doc.host_name if doc.host_name is not None else _field(host, "name"),
        doc.host_hostname if doc.host_hostname is not None else _field(host, "hostname"),
        host if isinstance(host, str) else None,
        doc.service_name if doc.service_name is not None else _field(service, "name"),
        doc.agent_name if doc.agent_name is not None else _field(agent, "name"),
    )
    for value in candidates:
        if value is not None:
            return value if isinstance(value, str) else None
    return DEFAULT_SOURCE


def _field(value: Any, name: str) -> Any:
    if isinstance(value, Named):
        return getattr(value, name)
    return value.get(name) if isinstance(value, dict) else None
