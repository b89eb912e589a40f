"""What every HTTP door's decoder shares: the media type, and the body's content encoding.

A body is limited twice (AGGREGATOR_MAX_BODY_BYTES): as received, by the front, and once
decompressed, here, so that a small gzip body cannot expand without bound.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping

from aggregator.messages import Rejection

# A gzip body may be several members (concatenated files); more than this is an attack, not
# a shipper (each member costs a zlib stream).
MAX_GZIP_MEMBERS = 1000
GZIP_FEED = 64 * 1024  # bytes of compressed input given to zlib at a time


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
    return _gunzip(body, limit)


def _gunzip(body: bytes, limit: int) -> bytes:
    """Every member of a gzip body, walked by offset. zlib copies the input left over after a
    member (``unused_data``): fed the whole rest each time, a body of many tiny members cost
    quadratic time (a 4 MiB body of 20-byte empty members held the event loop for 31 s). Fed in
    pieces of ``GZIP_FEED`` bytes, each copy is bounded, and so is the number of members."""
    out = bytearray()
    view = memoryview(body)
    offset = members = start = 0  # start: where the member being read began
    try:
        while offset < len(body):  # a gzip file may hold several members
            start = offset
            members += 1
            if members > MAX_GZIP_MEMBERS:
                raise Rejection(
                    413,
                    "too_large",
                    f"the gzip body has more than {MAX_GZIP_MEMBERS} members, the limit; "
                    "compress the body as one member",
                )
            stream = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
            while not stream.eof:
                if offset >= len(body):
                    raise Rejection(400, "malformed", "the gzip body is truncated")
                piece = view[offset : offset + GZIP_FEED]
                # At most one byte over the limit: enough to know it is over.
                out += stream.decompress(piece, limit + 1 - len(out))
                if len(out) > limit:
                    raise Rejection(
                        413,
                        "too_large",
                        f"the decompressed body is over {limit} bytes, "
                        "the limit (AGGREGATOR_MAX_BODY_BYTES)",
                    )
                # Under the limit zlib took the whole piece, but what follows the member's end.
                offset += len(piece) - len(stream.unused_data)
    except zlib.error as exc:
        if start > 0:  # what follows a whole member is not another one
            raise Rejection(
                400,
                "malformed",
                f"the body is not valid gzip: {start} bytes of gzip, then "
                f"{len(body) - start} bytes "
                f"that are not another gzip member ({exc}); send the gzip data alone",
            ) from None
        raise Rejection(400, "malformed", f"the body is not valid gzip: {exc}") from None
    return bytes(out)
