"""Mutants that behave exactly like the original: no test can tell them apart, so the score
leaves them out. Each is recognised by the change it makes (the lines before and after), not by
mutmut's number for it, which shifts whenever the file changes.
"""

from __future__ import annotations

import re

# SQLite reads keywords and identifiers in any case: ``"BEGIN IMMEDIATE"`` → ``"begin
# immediate"`` runs the same statement. (Only statements with no quoted text in them.)
SQL = re.compile(r"^(BEGIN|COMMIT|ROLLBACK|SELECT|PRAGMA|INSERT|UPDATE|DELETE|ORDER BY)\b", re.I)
STRING = re.compile(r"([\"'])(.*?)\1")

WRITER = "aggregator/actors/writer.py"
SQLITE = "aggregator/store/sqlite.py"
ZIP = "for request, (stored, duplicates) in zip(batch, result.counts, strict=True):"
STRICT = "the store returns one count per batch: strict= only asserts what holds"
SUFFIX = 'got = str(exc).removesuffix(" - at `$`")'
NO_SUFFIX = "msgspec names no path for a top-level value: there is never a suffix to remove"
URI = "this SQLite is built with URI file names on: the URI opens read-only either way"
# (path, before, after, why): changes that are equivalent for a reason of their own.
BY_CHANGE: list[tuple[str, str, str, str]] = [
    (WRITER, ZIP, ZIP.replace("strict=True", "strict=None"), STRICT),
    (WRITER, ZIP, ZIP.replace("strict=True", "strict=False"), STRICT),
    (WRITER, ZIP, ZIP.replace("strict=True", ""), STRICT),
    (
        WRITER,
        "while size < max_events:",
        "while size <= max_events:",
        "no request has 0 events: at size == max_events the next one never fits",
    ),
    (
        WRITER,
        "return True",
        "return False",
        "after a good commit last_error is None, and probe_bytes is read only while it is set",
    ),
    (
        "aggregator/actors/workers.py",
        "reply_send, reply_recv = trio.open_memory_channel[WriteOutcome](1)",
        "reply_send, reply_recv = trio.open_memory_channel[WriteOutcome](2)",
        "the writer sends exactly one reply per request",
    ),
    (
        SQLITE,
        "topics.append((topic, new, sent - new, last or 0))",
        "topics.append((topic, new, sent - new, last or 1))",
        "last is None only for a topic with no new row, which has a last_seq of at least 1",
    ),
    (
        SQLITE,
        "_migrate(conn, path, version)",
        "_migrate(conn, None, version)",
        "the path is used only in the log line",
    ),
    (
        SQLITE,
        'conn.execute(f"PRAGMA synchronous = {synchronous.upper()}")',
        'conn.execute(f"PRAGMA synchronous = {synchronous.lower()}")',
        "SQLite reads pragma values in any case",
    ),
    (SQLITE, "uri=True,", "uri=None,", URI),
    (SQLITE, "uri=True,", "uri=False,", URI),
    (SQLITE, "uri=True,", "", URI),
    (
        SQLITE,
        "isolation_level=None,",
        "",
        "the reader only SELECTs (no implicit BEGIN) and brackets counters() itself",
    ),
    (
        "aggregator/decoders/publish.py",
        SUFFIX,
        SUFFIX.replace("removesuffix", "removeprefix"),
        NO_SUFFIX,
    ),
    (
        "aggregator/decoders/publish.py",
        SUFFIX,
        SUFFIX.replace(" - at", "XX - at").replace('`$`")', '`$`XX")'),
        NO_SUFFIX,
    ),
    ("aggregator/decoders/publish.py", SUFFIX, SUFFIX.replace(" - at", " - AT"), NO_SUFFIX),
    (
        "aggregator/store/base.py",
        "def f(self, retention: Retention, max_events: int, *, reclaim: bool = False) -> Upkeep:",
        "def f(self, retention: Retention, max_events: int, *, reclaim: bool = True) -> Upkeep:",
        "a Protocol's default is never used: a call takes the implementation's",
    ),
    (
        "aggregator/decoders/syslog_framing.py",
        "begun = bool(self._buffer) and not (self._skip_count or self._skip_line)",
        "begun = bool(self._buffer) and not (self._skip_count and self._skip_line)",
        "the buffer is empty while a frame is skipped (feed discards it): the buffer decides",
    ),
    (
        "aggregator/decoders/syslog.py",
        "if close > 0:",
        "if close >= 0:",
        "the search starts after the '[' at end >= 0: a found ']' is at 1 or more",
    ),
    (
        "aggregator/decoders/syslog.py",
        'day, clock = stamp[4:6].strip(), stamp[7:].split(":")',
        'day, clock = stamp[4:7].strip(), stamp[7:].split(":")',
        "stamp[6] must be a space (checked next), which strip() removes",
    ),
    (
        "aggregator/decoders/publish.py",
        'message, _, path = str(exc).partition(" - at `$.")',
        'message, _, path = str(exc).rpartition(" - at `$.")',
        "msgspec appends one path, once: the text occurs at most once",
    ),
    (
        WRITER,
        "probe_seconds: float = 1.0,",
        "probe_seconds: float = 2.0,",
        "a default the service never uses: it always passes AGGREGATOR_PROBE_SECONDS",
    ),
]


def _strings(line: str) -> list[str]:
    return [match.group(2) for match in STRING.finditer(line)]


def why_equivalent(path: str, before: str, after: str) -> str | None:
    """Why the change from ``before`` to ``after`` cannot change behaviour; None if it can."""
    if before != after and before.lower() == after.lower():
        changed = [
            old for old, new in zip(_strings(before), _strings(after), strict=False) if old != new
        ]
        if changed and all(SQL.match(text) and "'" not in text for text in changed):
            return "SQL keywords and names are case-insensitive"
    for where, old, new, why in BY_CHANGE:
        if where == path and old == before and new == after:
            return why
    return None
