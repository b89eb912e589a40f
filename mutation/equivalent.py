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
ZIP = "batch, result.counts, result.stored_flags, strict=True"
STRICT = "the store returns one count and one list of flags per batch: strict= only asserts it"
WORKERS = "aggregator/actors/workers.py"
LIMITER = "threads = trio.CapacityLimiter(1) if decode_threads is None else decode_threads"
ONE_AT_A_TIME = (
    "a worker decodes one body at a time: a limiter of its own, of 1 or 2 threads, or trio's "
    "default one never makes it wait (the service always passes decode_threads)"
)
BUDGET = "budget = TopicBudget((), 2**62) if topics is None else topics"
NO_LIMIT = "no store holds 2**62 topics: a limit that large or larger is no limit"
SUFFIX = 'got = str(exc).removesuffix(" - at `$`")'
NO_SUFFIX = "msgspec names no path for a top-level value: there is never a suffix to remove"
URI = "this SQLite is built with URI file names on: the URI opens read-only either way"
SYSLOG = "aggregator/decoders/syslog.py"
FIND = 'end = text.find(">", 1, 5)'
FROM_0 = "text[0] is '<' or the message is refused: a '>' is never found at 0"
FROM_2 = "a '>' at 1 leaves no digits; found later, the digits hold that '>': refused alike"
FOUND_AT_1 = "searched from 1, find() returns -1 or at least 1: never 0"
PRIORITY = 'if not text.startswith("<") or end < 0 or not (digits.isascii() and digits.isdigit()):'
FRAMING = "aggregator/decoders/syslog_framing.py"
SKIP_FIND = "newline = _trailer(buffer, pos, end)"
AT_0 = "the skipped line's end is looked for at the start of a feed, where pos is 0"
LINE_FIND = "newline = _trailer(buffer, pos + self._scanned if pos == 0 else pos, end)"
TO_THE_END = "end is len(buffer) (feed searches all it holds): None searches to the end as well"
SCANNED_1 = (
    "_scanned is read only where a line starts at pos 0, and a line's first byte is never an LF "
    "or NUL (those are skipped between frames): searched from 1, it ends at the same byte"
)
CONTENT = "aggregator/decoders/content.py"
MEDIA = 'return headers.get("content-type", "").split(";", 1)[0].strip().lower()'
FIRST_PART = "[0] is what comes before the first ';', however many splits follow it"
INFLATE = "out += stream.decompress(piece, limit + 1 - len(out))"
NEWLINE = (
    "a frame's first byte is never an LF (skipped between frames): a line's LF is at pos + 1 "
    "or later, so never at 0 (only where a feed starts after a skipped line can it be at 0, "
    "and there the same change is killed)"
)
SKIPPING = "skipping = self._skip_count or self._skip_line"
EMPTY = "while a frame is skipped the buffer is empty: `not rest` returns [] all the same"
TRUNCATED = "if count is not None and count >= 0:"
NO_ZERO = "a count never starts with 0: it is -1 (digits so far), None, or 1 or more"
DIGITS = "while digit < end and digit - pos <= MAX_COUNT_DIGITS and buffer[digit] in _DIGITS:"
IDENTIFY = 'conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)'
PROBE_BYTES = (
    "only a failed commit sets last_error before a probe, and it sets probe_bytes too: the "
    "first value is never read"
)
PUBLISH = "aggregator/decoders/publish.py"
TYPED_Z = 'if stamp[-1:] != "Z" or zero_offset:'
RECHECKED = (
    "every typed event's stamp is then re-read from the body, 'Z' ones too: a stamp msgspec "
    "wrote with 'Z' was given as Z or with a zero offset (which zero_offset sends to the check "
    "anyway), never with another colonless offset, so the check finds nothing: only the cost "
    "differs (msgspec keeps a repeated key's last copy, as the re-read dict does)"
)
UTC_STAMP = 'if stamp[-1:] != "Z":  # an offset other than UTC\'s, or none'
RENORMALISED = (
    "a stamp msgspec wrote with 'Z' is of a UTC datetime, whose normalise_timestamp is the same "
    "text (microseconds as six digits, none when 0): recomputing it changes only the cost"
)
WHERE = 'where = "the body"'
NO_INDEX = (
    "every detail of a /publish body names its event (index is set by each check): the branch "
    "for a detail without an index is never taken"
)
OFFSET_TEXT = (
    "return f\"the offset needs a colon, as in +07:00; got {text.decode(errors='replace')!r}\""
)
UTF8_TEXT = (
    "the timestamp's text was read as a date-time by msgspec: ASCII, so the error handler is "
    "never called (Python looks an error handler up only on an error)"
)
CLOSE = 'close = rest.find("]", end) if rest[end : end + 1] == "[" else -1'
# (path, before, after, why): changes that are equivalent for a reason of their own.
BY_CHANGE: list[tuple[str, str, str, str]] = [
    (
        SQLITE,
        "and sqlite_retention.used_bytes(self._conn) > retention.max_bytes",
        "and sqlite_retention.used_bytes(self._conn) >= retention.max_bytes",
        "they differ only at used bytes equal to the limit with keys over a 16th of it and no "
        "bucket due: keys (16 B each) of under half as many events as are stored would then "
        "outweigh the store's 16th, i.e. under 128 B per stored event; the smallest take ~137",
    ),
    (WRITER, ZIP, ZIP.replace("strict=True", "strict=None"), STRICT),
    (WRITER, ZIP, ZIP.replace("strict=True", "strict=False"), STRICT),
    (WRITER, f"{ZIP} ):", ZIP.replace("strict=True", "):"), STRICT),
    (
        WORKERS,
        LIMITER,
        LIMITER.replace("(1) if decode_threads is None", "(2) if decode_threads is None"),
        ONE_AT_A_TIME,
    ),
    (
        WORKERS,
        LIMITER,
        LIMITER.replace("if decode_threads is None", "if (decode_threads is None) and False"),
        ONE_AT_A_TIME,
    ),
    (WORKERS, BUDGET, BUDGET.replace("2**62", "2**63"), NO_LIMIT),
    (WORKERS, BUDGET, BUDGET.replace("2**62", "3**62"), NO_LIMIT),
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
        WORKERS,
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
        "self._next_bucket = (bucket + 1) % len(self._recent.buckets)",
        "self._next_bucket = (bucket - 1) % len(self._recent.buckets)",
        "downwards visits every bucket once a round as upwards does; no step depends on order",
    ),
    (
        SQLITE,
        "self._merge(bucket, sweep=False)",
        "self._merge(bucket, sweep=None)",
        "sweep is only tested for truth (sqlite_keys.merge), and None is false like False",
    ),
    (
        SQLITE,
        "self._merge(bucket, sweep=False)",
        "self._merge(bucket, sweep=True)",
        "a sweep at close deletes only keys of expired events, which no lookup can match (the "
        "index is joined with the events): it changes when space is reclaimed, not what is found",
    ),
    (
        SQLITE,
        "migrate(conn, path, version)",
        "migrate(conn, None, version)",
        "migrate uses the path only in its log lines",
    ),
    (
        SQLITE,
        "if self._search_upto >= last_seq:",
        "if self._search_upto > last_seq:",
        "at upto == last_seq the build step finds no event and sets upto to its own value: SQLite "
        "writes no page for an identical row, so the extra transaction commits nothing (no WAL "
        "frame, no sync) and says there is no more",
    ),
    (
        SQLITE,
        "by_age = replace(retention, max_bytes=0) if sweep_first else retention",
        "by_age = replace(retention, max_bytes=None) if sweep_first else retention",
        "by_age's max_bytes is only tested for truth (sqlite_retention.due and _count), and None "
        "is false like 0",
    ),
    (
        SQLITE,
        "and sqlite_keys.unswept_bytes(self._conn) > retention.max_bytes // 16",
        "and sqlite_keys.unswept_bytes(self._conn) > retention.max_bytes / 16",
        "unswept_bytes is an integer, and an integer is more than x exactly when it is more than "
        "x rounded down",
    ),
    (
        SQLITE,
        "if time.monotonic() < self._bound_retry_at:",
        "if time.monotonic() <= self._bound_retry_at:",
        "the retry time is 0.0 or a monotonic reading plus 1 s: the clock equals it only at "
        "that very nanosecond",
    ),
    (
        SQLITE,
        "self._bound_retry_at = 0.0  # time.monotonic() before which _bound_wal does not try",
        "self._bound_retry_at = 1.0  # time.monotonic() before which _bound_wal does not try",
        "time.monotonic() counts from boot (CLOCK_MONOTONIC): no store opens in the first "
        "second after boot, so the first commit tries either way",
    ),
    (
        SQLITE,
        'conn.execute(f"PRAGMA synchronous = {synchronous.upper()}")',
        'conn.execute(f"PRAGMA synchronous = {synchronous.lower()}")',
        "SQLite reads pragma values in any case",
    ),
    (SQLITE, IDENTIFY, IDENTIFY.replace(", uri=True)", ", )"), URI),
    (SQLITE, IDENTIFY, IDENTIFY.replace("uri=True", "uri=False"), URI),
    (SQLITE, IDENTIFY, IDENTIFY.replace("uri=True", "uri=None"), URI),
    (
        SQLITE,
        "tally = topics.get(record.topic) or topics.setdefault(record.topic, [0, 0, 0])",
        "tally = topics.get(None) or topics.setdefault(record.topic, [0, 0, 0])",
        "setdefault returns the topic's tally when it has one, as get did",
    ),
    (
        SQLITE,
        "tally = topics.get(record.topic) or topics.setdefault(record.topic, [0, 0, 0])",
        "tally = topics.get(record.topic) or topics.setdefault(record.topic, [0, 0, 1])",
        "a tally with no stored event this commit is a known topic's, whose last_seq is at "
        "least 1 already: max() keeps it",
    ),
    (
        SQLITE,
        "self._next_bucket = 0",
        "self._next_bucket = 1",
        "the round of buckets starts elsewhere: each is still visited once a round",
    ),
    (
        SQLITE,
        'synchronous: str = "full",',
        'synchronous: str = "FULL",',
        "both connections upper() it: SQLite reads pragma values in any case anyway",
    ),
    (
        WRITER,
        "probe_bytes = 0",
        "probe_bytes = None",
        PROBE_BYTES,
    ),
    (WRITER, "probe_bytes = 0", "probe_bytes = 1", PROBE_BYTES),
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
        SYSLOG,
        'text = frame.decode("utf-8", "replace")',
        'text = frame.decode("UTF-8", "replace")',
        "Python's codec names are case-insensitive",
    ),
    (SYSLOG, FIND, FIND.replace("1, 5", "None, 5"), FROM_0),
    (SYSLOG, FIND, FIND.replace("1, 5", "2, 5"), FROM_2),
    (SYSLOG, PRIORITY, PRIORITY.replace("end < 0", "end <= 0"), FOUND_AT_1),
    (SYSLOG, PRIORITY, PRIORITY.replace("end < 0", "end < 1"), FOUND_AT_1),
    (
        FRAMING,
        "self._skip_line = False  # discarding an oversized line up to its LF",
        "self._skip_line = None  # discarding an oversized line up to its LF",
        "_skip_line is only ever tested for truth, and None is false like False",
    ),
    (FRAMING, SKIP_FIND, SKIP_FIND.replace("pos, end", "None, end"), AT_0),
    (FRAMING, SKIP_FIND, SKIP_FIND.replace("pos, end", "pos, None"), TO_THE_END),
    (FRAMING, LINE_FIND, LINE_FIND.replace(", end)", ", None)"), TO_THE_END),
    (
        FRAMING,
        LINE_FIND,
        LINE_FIND.replace("if pos == 0", "if (pos == 0) or True"),
        "_scanned is 0 but at a feed's first search for a line's end, which is at pos 0 (it is "
        "reset after each search, set only when the feed stops on a partial line)",
    ),
    (
        FRAMING,
        'newline = buffer.find(b"\\n", pos, end)',
        'newline = buffer.find(b"\\n", pos, None)',
        TO_THE_END,
    ),
    (
        FRAMING,
        'newline = buffer.find(b"\\n", pos, end)',
        'newline = buffer.find(b"\\n", pos, )',
        TO_THE_END,
    ),
    (FRAMING, "self._scanned = 0", "self._scanned = 1", SCANNED_1),
    (CONTENT, MEDIA, MEDIA.replace('";", 1)', '";", )'), FIRST_PART),
    (CONTENT, MEDIA, MEDIA.replace('";", 1)', '";", 2)'), FIRST_PART),
    (
        CONTENT,
        INFLATE,
        INFLATE.replace("limit + 1", "limit + 2"),
        "asked for two bytes over the room left, not one: over the limit is refused alike (the "
        "answer names the limit, not the size), under it zlib reaches neither cap",
    ),
    (
        CONTENT,
        "if start > 0:  # what follows a whole member is not another one",
        "if start > 1:  # what follows a whole member is not another one",
        "start is 0 or where a whole member ended, and a gzip member is at least 18 bytes",
    ),
    (
        FRAMING,
        "pos = end",
        "pos = None",
        "break follows: del buffer[:None] clears the buffer as del buffer[:end] does",
    ),
    (FRAMING, "if newline < 0:", "if newline <= 0:", NEWLINE),
    (FRAMING, "if newline < 0:", "if newline < 1:", NEWLINE),
    (FRAMING, SKIPPING, "skipping = None", EMPTY),
    (FRAMING, SKIPPING, "skipping = self._skip_count and self._skip_line", EMPTY),
    (FRAMING, TRUNCATED, TRUNCATED.replace("count >= 0", "count > 0"), NO_ZERO),
    (FRAMING, TRUNCATED, TRUNCATED.replace("count >= 0", "count >= 1"), NO_ZERO),
    (
        FRAMING,
        DIGITS,
        DIGITS.replace("<= MAX_COUNT_DIGITS", "< MAX_COUNT_DIGITS"),
        "stopped at nine digits, a tenth is still not the space a count needs: not a count "
        "either way; nine then the end of the buffer wait for more either way",
    ),
    (
        "aggregator/decoders/publish.py",
        'message, _, path = str(exc).partition(" - at `$.")',
        'message, _, path = str(exc).rpartition(" - at `$.")',
        "msgspec appends one path, once: the text occurs at most once",
    ),
    (PUBLISH, "ndjson = False", "ndjson = None", "ndjson is only tested for truth"),
    (PUBLISH, TYPED_Z, TYPED_Z.replace("[-1:]", "[+1:]"), RECHECKED),
    (PUBLISH, TYPED_Z, TYPED_Z.replace("[-1:]", "[-2:]"), RECHECKED),
    (PUBLISH, TYPED_Z, TYPED_Z.replace('"Z"', '"XXZXX"'), RECHECKED),
    (PUBLISH, TYPED_Z, TYPED_Z.replace('"Z"', '"z"'), RECHECKED),
    (PUBLISH, UTC_STAMP, UTC_STAMP.replace("[-1:]", "[+1:]"), RENORMALISED),
    (PUBLISH, UTC_STAMP, UTC_STAMP.replace("[-1:]", "[-2:]"), RENORMALISED),
    (PUBLISH, UTC_STAMP, UTC_STAMP.replace('"Z"', '"XXZXX"'), RENORMALISED),
    (PUBLISH, UTC_STAMP, UTC_STAMP.replace('"Z"', '"z"'), RENORMALISED),
    (
        PUBLISH,
        'raise RuntimeError(f"{len(items)} events decoded but {len(records)} kept, '
        'no problem named")',
        "raise RuntimeError(None)",
        "a guard no body reaches: each event is either kept or named in details (its message is "
        "for the developer who breaks that)",
    ),
    (PUBLISH, WHERE, "where = None", NO_INDEX),
    (PUBLISH, WHERE, 'where = "XXthe bodyXX"', NO_INDEX),
    (PUBLISH, WHERE, 'where = "THE BODY"', NO_INDEX),
    (
        PUBLISH,
        "text = bytes(raw).strip(b'\"')",
        "text = bytes(raw).strip(b'XX\"XX')",
        "the text is a JSON string msgspec read as a date-time: quotes at both ends, and inside "
        "them it starts with a digit or a backslash and ends with a digit, Z, z or a hex digit "
        "of an escape, never an X",
    ),
    (PUBLISH, OFFSET_TEXT, OFFSET_TEXT.replace("'replace'", "'XXreplaceXX'"), UTF8_TEXT),
    (PUBLISH, OFFSET_TEXT, OFFSET_TEXT.replace("'replace'", "'REPLACE'"), UTF8_TEXT),
    (
        PUBLISH,
        'payload = str(event.payload, "utf-8")  # msgspec has checked the UTF-8',
        'payload = str(event.payload, "UTF-8")  # msgspec has checked the UTF-8',
        "Python's codec names are case-insensitive",
    ),
    (
        SYSLOG,
        'return text[4:5] == "-" and text[:4].isascii() and text[:4].isdigit()',
        'return text[4:5] == "-" and text[:5].isascii() and text[:4].isdigit()',
        "text[4:5] == '-' is checked first: text[:5] is text[:4] and that ASCII '-'",
    ),
    (
        SYSLOG,
        CLOSE,
        CLOSE.replace("else -1", "else -2"),
        "close is only compared with > 0: -1 and -2 both mean no PID",
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
