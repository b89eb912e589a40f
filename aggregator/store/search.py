"""Full-text search: the words of an event, the ``q`` syntax, and its forms for each store.

The two stores must give the same results for the same ``q``, so neither store's own text
parser decides what a word is: this module does, once, for both. An event's words are the runs
of letters and digits (Unicode) in its ``event_id`` and its payload's JSON text (keys, strings,
numbers, ``true``/``false``/``null``), case-folded and with accents removed, in order. SQLite
indexes them, joined by spaces, with FTS5's ``ascii`` tokenizer (which splits on ASCII
punctuation and spaces only, so it takes each of our words as it is); PostgreSQL gets a
``tsvector`` literal with the same words at the same positions (no ``to_tsvector``, whose parser
splits differently). A query is parsed here and written out as an FTS5 expression or a
``tsquery`` of quoted words, so neither store ever parses user syntax: a bad ``q`` is refused
here with what is wrong (``QuerySyntaxError``), never as a store's error.

The syntax (docs/search.md): words are ANDed; ``"a phrase"`` matches the words in a row;
``word*`` (or ``"a phr"*``) is a prefix on the last word; ``-word`` / ``-"a phrase"`` excludes;
``OR`` (upper case) separates alternatives, each an AND of terms.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

MAX_QUERY_CHARS = 512
MAX_TERMS = 16
# PostgreSQL limits a tsvector: lexemes under 2 KiB, positions up to 16,383, 256 per lexeme.
# A longer run of letters and digits is split every MAX_WORD characters, on both stores;
# positions past the cap and occurrences past the 256th differ only for phrases (docs/search.md).
MAX_WORD = 200
MAX_POSITION = 16_383
MAX_POSITIONS_PER_WORD = 256
# ... and a tsvector under 1 MiB: an event's words past this many bytes of tsvector (each new
# word 7 bytes and its UTF-8, each occurrence 2) are not indexed, on both stores. Only events
# with a payload above the default 64 KiB limit can reach it.
MAX_INDEX_BYTES = 1_000_000

_WORD = re.compile(rf"[^\W_]{{1,{MAX_WORD}}}")
_ASCII_WORD = re.compile(rf"[a-z0-9]{{1,{MAX_WORD}}}")
# A JSON escape: \uXXXX is the character (a surrogate pair, \uD840\uDC00, is one character
# past U+FFFF, as a JSON parser reads it); every other escape (\n, \", \\, …) is a separator.
_ESCAPE = re.compile(
    r"\\(?:u([dD][89abAB][0-9a-fA-F]{2})\\u([dD][c-fC-F][0-9a-fA-F]{2})|u([0-9a-fA-F]{4})|.)",
    re.DOTALL,
)


class QuerySyntaxError(ValueError):
    """``q`` cannot be searched for; the message says what is wrong and the rule broken."""


def _unescape(match: re.Match[str]) -> str:
    high, low, code = match.groups()
    if high is not None:
        return chr(0x10000 + ((int(high, 16) - 0xD800) << 10) + int(low, 16) - 0xDC00)
    if code is None:
        return " "
    char = chr(int(code, 16))
    return " " if 0xD800 <= ord(char) <= 0xDFFF else char


def words(text: str) -> list[str]:
    """The words of ``text``: letter and digit runs, case-folded, accents removed."""
    if text.isascii():
        return _ASCII_WORD.findall(text.lower())
    # Folded after NFKD too: compatibility forms decompose to capitals (𝐀 → A, ℌ → H), which
    # SQLite's tokenizer would fold and PostgreSQL would not.
    folded = unicodedata.normalize("NFKD", unicodedata.normalize("NFKD", text).casefold())
    stripped = "".join(c for c in folded if not unicodedata.combining(c))
    return _WORD.findall(stripped)


def event_words(event_id: str, payload: str) -> list[str]:
    """The searchable words of an event: its event_id, then its payload's JSON text."""
    if "\\" in payload:
        payload = _ESCAPE.sub(_unescape, payload)
    found = words(event_id) + words(payload)
    if sum(map(len, found)) * 4 + 9 * len(found) <= MAX_INDEX_BYTES:  # at most 4 bytes a char
        return found
    return _within_index_bytes(found)


def _within_index_bytes(found: list[str]) -> list[str]:
    """The first words of ``found`` whose tsvector stays within MAX_INDEX_BYTES."""
    size = 0
    seen: set[str] = set()
    for at, word in enumerate(found):
        if word not in seen:
            seen.add(word)
            size += 7 + len(word.encode())
        size += 2
        if size > MAX_INDEX_BYTES:
            return found[:at]
    return found


def fts_text(event_id: str, payload: str) -> str:
    """What SQLite's FTS5 table holds for an event."""
    return " ".join(event_words(event_id, payload))


def tsvector_literal(event_id: str, payload: str) -> str:
    """The PostgreSQL ``tsvector`` of an event, as text to cast: ``'word':1,4 'other':2``."""
    found = event_words(event_id, payload)
    if len(found) > MAX_POSITIONS_PER_WORD:
        return _capped_tsvector(found)
    positions: dict[str, str] = {}
    for position, word in enumerate(found, start=1):
        at = positions.get(word)
        positions[word] = str(position) if at is None else f"{at},{position}"
    return " ".join([f"'{word}':{at}" for word, at in positions.items()])


def _capped_tsvector(found: list[str]) -> str:
    """A long event within PostgreSQL's limits: positions past MAX_POSITION are that
    position, and each word keeps its first MAX_POSITIONS_PER_WORD positions."""
    positions: dict[str, dict[int, None]] = {}
    for position, word in enumerate(found, start=1):
        at = positions.setdefault(word, {})
        if len(at) < MAX_POSITIONS_PER_WORD:
            at[min(position, MAX_POSITION)] = None
    return " ".join(f"'{word}':{','.join(map(str, at))}" for word, at in positions.items())


@dataclass(frozen=True, slots=True)
class Term:
    """Words that must appear in a row (one word: anywhere); ``prefix``: the last word may be
    any word starting with it; ``negated``: events with it are excluded."""

    words: tuple[str, ...]
    prefix: bool = False
    negated: bool = False


@dataclass(frozen=True, slots=True)
class Query:
    """Alternatives (OR) of groups of terms (AND)."""

    groups: tuple[tuple[Term, ...], ...]
    text: str


_TOKEN = re.compile(r'\s*(?:(-?)"([^"]*)"(\*?)|(\S+))')


def parse(q: str) -> Query:
    """``q`` as a Query; raises QuerySyntaxError naming what is wrong."""
    if len(q) > MAX_QUERY_CHARS:
        raise QuerySyntaxError(f"q is {len(q)} characters long; the limit is {MAX_QUERY_CHARS}")
    if q.count('"') % 2:
        raise QuerySyntaxError('q has an unclosed " (a phrase is "between double quotes")')
    groups: list[list[Term]] = [[]]
    position = 0
    count = 0
    while position < len(q):
        match = _TOKEN.match(q, position)
        if match is None:  # only trailing spaces are left
            break
        position = match.end()
        negated, phrase, star, bare = match.groups()
        if bare == "OR":
            if not groups[-1]:
                raise QuerySyntaxError("q has OR without a term before it (write: a OR b)")
            groups.append([])
            continue
        if bare is not None:
            negated = "-" if bare.startswith("-") and len(bare) > 1 else ""
            text = bare[1:] if negated else bare
            star = "*" if text.endswith("*") else ""
            phrase = text.rstrip("*") if star else text
            if '"' in phrase:
                raise QuerySyntaxError(
                    f'q has a " inside the word {bare!r}; put spaces around a "phrase"'
                )
        found = tuple(words(phrase))
        if not found:
            if star or negated or phrase.strip():
                continue  # only punctuation: nothing to match (like a separator)
            raise QuerySyntaxError('q has an empty phrase ""')
        count += 1
        if count > MAX_TERMS:
            raise QuerySyntaxError(f"q has more than {MAX_TERMS} terms, the limit")
        groups[-1].append(Term(found, prefix=bool(star), negated=bool(negated)))
    if not groups[-1]:
        if len(groups) > 1:
            raise QuerySyntaxError("q ends with OR (write: a OR b)")
        raise QuerySyntaxError("q has no words to search for (letters or digits)")
    for group in groups:
        if all(term.negated for term in group):
            raise QuerySyntaxError(
                "q excludes words without asking for any: each alternative needs a word "
                "that is not -excluded"
            )
    return Query(tuple(tuple(group) for group in groups), q)


def _fts_term(term: Term) -> str:
    return f'"{" ".join(term.words)}"' + (" *" if term.prefix else "")


def fts5_match(query: Query) -> str:
    """The FTS5 MATCH expression: only quoted words and operators."""
    alternatives = []
    for group in query.groups:
        wanted = " AND ".join(_fts_term(t) for t in group if not t.negated)
        unwanted = "".join(f" NOT {_fts_term(t)}" for t in group if t.negated)
        alternatives.append(f"({wanted}{unwanted})")
    return " OR ".join(alternatives)


def _ts_term(term: Term) -> str:
    parts = [f"'{word}'" for word in term.words]
    if term.prefix:
        parts[-1] += ":*"
    joined = " <-> ".join(parts)
    if term.negated:
        return f"!({joined})"
    return f"({joined})" if len(parts) > 1 else joined


def tsquery(query: Query) -> str:
    """The PostgreSQL ``tsquery`` literal: quoted words, so PostgreSQL parses no user syntax."""
    return " | ".join(f"({' & '.join(_ts_term(t) for t in group)})" for group in query.groups)


def _has_term(found: Sequence[str], term: Term) -> bool:
    n = len(term.words)
    for start in range(len(found) - n + 1):
        if all(found[start + i] == w for i, w in enumerate(term.words[:-1])):
            last = found[start + n - 1]
            if last == term.words[-1] or (term.prefix and last.startswith(term.words[-1])):
                return True
    return False


def matches(query: Query, found: Sequence[str]) -> bool:
    """Whether an event with these words (``event_words``) matches: for live streams."""
    return any(
        all(_has_term(found, term) != term.negated for term in group) for group in query.groups
    )
