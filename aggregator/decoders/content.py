"""What every HTTP door's decoder shares: the media type, and the body's content encoding.

A body is limited twice (AGGREGATOR_MAX_BODY_BYTES): as received, by the front, and once
decompressed, here, so that a small gzip body cannot expand without bound.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping

from aggregator.messages import Rejection


def media_type(headers: Mapping[str, str]) -> str:
    """The Content-Type without its parameters, lower case; ``""`` when there is none."""
    return headers.get("content-type", "").split(";", 1)[0].strip().lower()


def unsupported_media_type(media: str, accepted: str) -> Rejection:
    return Rejection(
        415,
        "unsupported_media_type",
        f"Content-Type {media!r} is not accepted; send {accepted}",
    )


def decode_content(body: bytes, headers: Mapping[str, str], limit: int) -> bytes:
    """The body as its Content-Encoding (none or gzip) says; at most ``limit`` bytes."""
    encoding = headers.get("content-encoding", "").strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding not in ("gzip", "x-gzip"):
        raise Rejection(
            415,
            "unsupported_media_type",
            f"Content-Encoding {encoding!r} is not accepted; send "
            "'Content-Encoding: gzip' or no Content-Encoding",
        )
    out = bytearray()
    rest = body
    try:
        while rest:  # a gzip file may hold several members
            stream = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
            out += stream.decompress(rest, limit + 1 - len(out))
            if len(out) > limit:
                raise Rejection(
                    413,
                    "too_large",
                    f"the decompressed body is over {limit} bytes, "
                    "the limit (AGGREGATOR_MAX_BODY_BYTES)",
                )
            if not stream.eof:
                raise Rejection(400, "malformed", "the gzip body is truncated")
            rest = stream.unused_data
    except zlib.error as exc:
        if out and len(rest) < len(body):  # what follows a whole member is not another one
            where = len(body) - len(rest)
            raise Rejection(
                400,
                "malformed",
                f"the body is not valid gzip: {where} bytes of gzip, then {len(rest)} bytes "
                f"that are not another gzip member ({exc}); send the gzip data alone",
            ) from None
        raise Rejection(400, "malformed", f"the body is not valid gzip: {exc}") from None
    return bytes(out)
