"""Optional bearer tokens, checked in front of the app (an ASGI wrapper, so routes stay routes).

``POST /publish`` and the Elasticsearch door (``/``, ``/_bulk``, ``/{index}/_bulk``) need the
publish token, every other route the read token, except the probes
(``/health``, ``/livez``, ``/readyz``) and ``/openapi.json``, which stay open (a load balancer, an
orchestrator and a client generator need no secret).
New routes are guarded by the read token unless listed in ``OPEN_PATHS``. An empty token turns
its check off. Tokens are compared in constant time and never logged. A token is accepted as
``Authorization: Bearer <token>``, ``ApiKey <token>`` (or ``ApiKey`` of the base64 of
``id:token``, the Elasticsearch clients' ``(id, key)`` form) or as the password of ``Basic`` (any
user name): what log shippers can be told to send.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgspec

LOGGER = logging.getLogger(__name__)
OPEN_PATHS = frozenset({"/health", "/livez", "/readyz", "/openapi.json"})
PUBLISH_PATHS = frozenset({"/publish", "/v1/logs", "/loki/api/v1/push"})


@dataclass(frozen=True, slots=True)
class Tokens:
    publish: str = ""
    read: str = ""

    def required(self, path: str) -> tuple[str, str] | None:
        """(token, its setting) that ``path`` needs; None when it needs none."""
        if path in OPEN_PATHS:
            return None
        if path in PUBLISH_PATHS or path in ("/", "/_cat/health") or path.endswith("/_bulk"):
            return (self.publish, "AGGREGATOR_PUBLISH_TOKEN") if self.publish else None
        return (self.read, "AGGREGATOR_READ_TOKEN") if self.read else None


def presented_tokens(headers: list[tuple[bytes, bytes]]) -> list[bytes]:
    """What an ``Authorization`` header may carry as the token (``Bearer <token>``, the password
    of ``Basic``, ``ApiKey <token>`` or ``ApiKey base64(id:token)``, as the Elasticsearch clients
    send an ``(id, key)`` pair); empty without one."""
    for name, value in headers:
        if name.lower() == b"authorization":
            scheme, _, token = value.strip().partition(b" ")
            token = token.strip()
            scheme = scheme.lower()
            if not token or scheme not in (b"basic", b"bearer", b"apikey"):
                return []
            if scheme == b"bearer":
                return [token]
            try:
                pair = base64.b64decode(token, validate=True)
            except binascii.Error:
                pair = b""
            secret = pair.partition(b":")[2]
            if scheme == b"basic":
                return [secret] if secret else []
            return [token, secret] if secret else [token]
    return []


class BearerAuth:
    """ASGI wrapper that answers 401 before the app sees a request without the right token."""

    def __init__(
        self, app: Any, tokens: Tokens, refused: Callable[[str], None] | None = None
    ) -> None:
        self._app = app
        self._tokens = tokens
        self._refused = refused  # told of each 401 with its path (the rejected-requests counter)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            required = self._tokens.required(scope["path"])
            if required is not None:
                token, setting = required
                presented = presented_tokens(scope["headers"])
                expected = token.encode()
                # Every candidate is compared, in constant time each.
                matches = [hmac.compare_digest(candidate, expected) for candidate in presented]
                if not any(matches):
                    if self._refused is not None:
                        self._refused(scope["path"])
                    await _unauthorized(send, scope["path"], setting, bool(presented))
                    return
        await self._app(scope, receive, send)


async def _unauthorized(send: Any, path: str, setting: str, wrong: bool) -> None:
    if wrong:
        message = f"the bearer token for {path} is wrong; send the one set as {setting}"
        challenge = b'Bearer realm="aggregator", error="invalid_token"'
    else:
        message = f"{path} needs 'Authorization: Bearer <token>' with the token set as {setting}"
        challenge = b'Bearer realm="aggregator"'
    # DEBUG: a dashboard without its token would add a line per refresh; the count is in
    # aggregator_publish_rejected_total{reason="unauthorized"} for publishes.
    LOGGER.debug("401 for %s: %s token", path, "wrong" if wrong else "no")
    body = msgspec.json.encode({"error": "unauthorized", "message": message})
    await send(
        {
            "type": "http.response.start",
            "status": 401,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"www-authenticate", challenge),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
