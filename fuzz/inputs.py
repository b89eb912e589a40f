"""One fuzz input as bytes: which headers a body is sent with, then the body.

The first byte picks the headers: ``b & 0x3f`` indexes the target's header sets (its seed kinds,
then the hostile ones), one index past them means "free headers": the content type and content
encoding are the input's first two lines, so the fuzzer mutates header values too. Bit 7 asks
the harness to wrap the body itself, so that the fuzzer works on what is inside a valid stream:
in the target's framing when the content type is the framed one (Loki: snappy around protobuf),
then in gzip when the headers say gzip (bit 6: as two gzip members). Seeds keep their bytes as
they are (bits 6 and 7 clear).
"""

from __future__ import annotations

import gzip
from collections.abc import Iterator, Mapping
from pathlib import Path

from fuzz.targets import Target, header_sets, kind_of

COMPRESS = 0x80
SPLIT = 0x40


def encode(target: Target, kind: str, body: bytes) -> bytes:
    return bytes([list(target.kinds).index(kind)]) + body


def decode(target: Target, data: bytes) -> tuple[bytes, Mapping[str, str]]:
    """The body and headers (lower-case names) an input stands for."""
    if not data:
        return b"", {}
    selector, rest = data[0], data[1:]
    sets = header_sets(target)
    index = (selector & 0x3F) % (len(sets) + 1)
    if index == len(sets):
        content_type, _, rest = rest.partition(b"\n")
        encoding, _, rest = rest.partition(b"\n")
        headers = {"content-type": content_type.decode("latin-1")}
        if encoding:
            headers["content-encoding"] = encoding.decode("latin-1")
        return rest, headers
    headers = dict(sets[index])
    framed = target.framed
    if selector & COMPRESS and framed and headers.get("content-type") == framed[0]:
        rest = framed[1](rest)
    if selector & COMPRESS and "gzip" in headers.get("content-encoding", ""):
        if selector & SPLIT:
            half = len(rest) // 2
            rest = _gzip(rest[:half]) + _gzip(rest[half:])
        else:
            rest = _gzip(rest)
    return rest, headers


def _gzip(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)


def seeds(target: Target) -> Iterator[tuple[Path, bytes, Mapping[str, str]]]:
    """Each seed file of ``target``: its path, body and the headers its kind names."""
    for path in sorted(target.seeds.iterdir()):
        if path.is_file():
            yield path, path.read_bytes(), target.kinds[kind_of(path)]


def regressions(target: Target) -> Iterator[tuple[Path, bytes, Mapping[str, str]]]:
    """Each input that once broke (or nearly broke) ``target``'s contract, with its headers."""
    if target.regressions.is_dir():
        for path in sorted(target.regressions.iterdir()):
            if path.is_file():
                yield path, path.read_bytes(), target.kinds[kind_of(path)]


def write_corpus(target: Target, into: Path) -> int:
    """The seeds and regressions as fuzz inputs, one file each; how many were written."""
    count = 0
    for path, body, _ in [*seeds(target), *regressions(target)]:
        (into / f"{path.parent.parent.name}-{path.name}").write_bytes(
            encode(target, kind_of(path), body)
        )
        count += 1
    return count
