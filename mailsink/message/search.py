"""
The search syntax (Mailpit's, see C{shared/mailpit-api.md}): text to a small AST, and the
AST to an SQLite C{WHERE} clause with parameters.

Grammar, all case-insensitive, terms separated by white space and all required to match:

  - C{word} matches anywhere in From, To, Cc, Bcc, Reply-To, Subject, the snippet and the
    Message-ID; C{"a phrase"} likewise, spaces included (an unclosed quote runs to the end);
  - C{from: to: cc: bcc: reply-to: subject: message-id:} then a word or a C{"phrase"}:
    that field contains it; C{addressed:} any of the five address fields; C{tag:} one of
    the tags equals it;
  - C{is:read}, C{is:unread}, C{has:attachment} (or C{has:attachments});
  - C{larger:2M}, C{smaller:100K}: the stored size, with K, M, G as powers of 1024 (a
    trailing B is allowed, decimals too);
  - C{before:YYYY-MM-DD}, C{after:YYYY-MM-DD}: received before that day began, or after
    it began (UTC);
  - C{-} or C{!} before any term negates it.

Parsing never fails: a term that does not fit (C{larger:lots}, C{is:starred}, C{x:y}) is a
plain word, so it matches literally. Bounds keep the SQL small: at most L{MAX_TERMS} terms
(later ones are dropped) and L{MAX_VALUE} characters a value (longer ones are cut).

Every user value reaches SQLite as a bound parameter; C{LIKE} patterns escape C{%}, C{_}
and the escape character itself, with C{ESCAPE '\\'}.

L{matches} answers the same question for one message in memory, without SQLite: the web
API's waiting requests test each new message with it before they ask the index again.
"""

from __future__ import annotations

import calendar
import re
import time
from collections.abc import Mapping
from typing import Any, TypeAlias

import attrs

MAX_TERMS = 100
MAX_VALUE = 1000

ADDRESS_COLUMNS = ("from_lc", "to_lc", "cc_lc", "bcc_lc", "replyto_lc")
TEXT_COLUMNS = (*ADDRESS_COLUMNS, "subject_lc", "snippet_lc", "msgid_lc")
"""The lower-cased columns a plain word or phrase is looked for in."""

FIELD_COLUMNS: dict[str, tuple[str, ...]] = {
    "from": ("from_lc",),
    "to": ("to_lc",),
    "cc": ("cc_lc",),
    "bcc": ("bcc_lc",),
    "reply-to": ("replyto_lc",),
    "addressed": ADDRESS_COLUMNS,
    "subject": ("subject_lc",),
    "message-id": ("msgid_lc",),
}
TAG_SEPARATOR = "\n"
"""C{tags_lc} holds the tags lower-cased, each between two of these (C{"\\na\\nb\\n"})."""

_FLAGS = {("is", "read"): "read", ("is", "unread"): "unread",
          ("has", "attachment"): "attachment", ("has", "attachments"): "attachment"}
_SIZE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)([kmg]?)b?")
_DATE = re.compile(r"(\d{4})-(\d{2})-(\d{2})")
_MAX_SIZE = 2**62


@attrs.frozen
class Text:
    """A lower-cased word or phrase, in one field (C{"from"}, C{"tag"}, ...) or anywhere."""

    value: str
    field: str = ""


@attrs.frozen
class Flag:
    """C{"read"}, C{"unread"} or C{"attachment"}."""

    name: str


@attrs.frozen
class Size:
    """Larger (C{larger=True}) or smaller than C{limit} bytes."""

    larger: bool
    limit: int


@attrs.frozen
class Received:
    """Received before (C{before=True}) or after C{moment} (seconds since the epoch)."""

    before: bool
    moment: float


@attrs.frozen
class Not:
    """The negation of one term."""

    term: Term


Term: TypeAlias = "Text | Flag | Size | Received | Not"


@attrs.frozen
class Query:
    """All terms must match; no terms matches everything."""

    terms: tuple[Term, ...] = ()


def parse(text: str) -> Query:
    """The AST of C{text}; never raises."""
    terms: list[Term] = []
    for negated, quoted, token in _tokens(text):
        if len(terms) >= MAX_TERMS:
            break
        term = _term(token, quoted)
        if term is not None:
            terms.append(Not(term) if negated else term)
    return Query(tuple(terms))


def _tokens(text: str) -> list[tuple[bool, bool, str]]:
    """(negated, starts with a quote, raw token with its quotes) for each term."""
    found: list[tuple[bool, bool, str]] = []
    i, end = 0, len(text)
    while i < end and len(found) <= MAX_TERMS:
        if text[i].isspace():
            i += 1
            continue
        negated = text[i] in "-!"
        if negated:
            i += 1
        start = i
        while i < end and not text[i].isspace():
            if text[i] == '"':
                close = text.find('"', i + 1)
                i = end if close < 0 else close + 1
            else:
                i += 1
        token = text[start:i]
        found.append((negated, token.startswith('"'), token))
    return found


def _term(token: str, quoted: bool) -> Term | None:
    key, colon, rest = token.partition(":")
    key = key.lower()
    if not quoted and colon:
        value = _unquote(rest)
        if key in FIELD_COLUMNS or key == "tag":
            return Text(_cut(value.lower()), key) if value else None
        flag = _FLAGS.get((key, value.lower()))
        if flag is not None:
            return Flag(flag)
        if key in ("larger", "smaller"):
            size = _size(value)
            if size is not None:
                return Size(key == "larger", size)
        if key in ("before", "after"):
            moment = _day(value)
            if moment is not None:
                return Received(key == "before", moment)
    value = _unquote(token)
    return Text(_cut(value.lower())) if value else None


def _unquote(value: str) -> str:
    return value.replace('"', "")


def _cut(value: str) -> str:
    return value[:MAX_VALUE]


def _size(value: str) -> int | None:
    match = _SIZE.fullmatch(value.lower())
    if match is None:
        return None
    power = " kmg".index(match.group(2) or " ")
    return int(min(float(match.group(1)) * 1024**power, _MAX_SIZE))


def _day(value: str) -> float | None:
    match = _DATE.fullmatch(value)
    if match is None:
        return None
    try:
        moment = time.strptime(value, "%Y-%m-%d")
    except ValueError:
        return None
    return float(calendar.timegm(moment))


# To SQL.


def to_sql(query: Query) -> tuple[str, list[Any]]:
    """A C{WHERE} condition (C{"1"} for an empty query) and its parameters, in order."""
    if not query.terms:
        return "1", []
    params: list[Any] = []
    parts = [f"({_sql(term, params)})" for term in query.terms]
    return " AND ".join(parts), params


def where(text: str) -> tuple[str, list[Any]]:
    """L{parse} then L{to_sql}."""
    return to_sql(parse(text))


def like_pattern(value: str) -> str:
    """A C{LIKE} pattern (with C{ESCAPE '\\'}) matching C{value} anywhere."""
    escaped = value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _sql(term: Term, params: list[Any]) -> str:
    if isinstance(term, Not):
        return f"NOT ({_sql(term.term, params)})"
    if isinstance(term, Text):
        if term.field == "tag":
            params.append(like_pattern(f"{TAG_SEPARATOR}{term.value}{TAG_SEPARATOR}"))
            return "tags_lc LIKE ? ESCAPE '\\'"
        columns = FIELD_COLUMNS.get(term.field, TEXT_COLUMNS)
        pattern = like_pattern(term.value)
        params.extend([pattern] * len(columns))
        return " OR ".join(f"{column} LIKE ? ESCAPE '\\'" for column in columns)
    if isinstance(term, Flag):
        return {"read": "read = 1", "unread": "read = 0",
                "attachment": "attachments > 0"}[term.name]
    if isinstance(term, Size):
        params.append(term.limit)
        return "size > ?" if term.larger else "size < ?"
    params.append(term.moment)
    return "created < ?" if term.before else "created >= ?"


# In memory.


def matches(query: Query, row: Mapping[str, Any]) -> bool:
    """
    Whether a message whose index columns hold C{row} satisfies C{query}, as L{to_sql}'s
    condition says in SQLite. C{row} maps the lower-cased text columns (L{TEXT_COLUMNS} and
    C{tags_lc}), C{read}, C{attachments}, C{size} and C{created} to their values.
    """
    return all(_matches(term, row) for term in query.terms)


def _matches(term: Term, row: Mapping[str, Any]) -> bool:
    if isinstance(term, Not):
        return not _matches(term.term, row)
    if isinstance(term, Text):
        if term.field == "tag":
            return _like(row["tags_lc"], f"{TAG_SEPARATOR}{term.value}{TAG_SEPARATOR}")
        columns = FIELD_COLUMNS.get(term.field, TEXT_COLUMNS)
        return any(_like(row[column], term.value) for column in columns)
    if isinstance(term, Flag):
        return {"read": bool(row["read"]), "unread": not row["read"],
                "attachment": row["attachments"] > 0}[term.name]
    if isinstance(term, Size):
        return bool(row["size"] > term.limit if term.larger else row["size"] < term.limit)
    return bool(row["created"] < term.moment if term.before else row["created"] >= term.moment)


def _like(text: str, value: str) -> bool:
    """
    C{text LIKE like_pattern(value)} as SQLite runs it: both are C strings there, so each
    ends at its first NUL, and a pattern cut short that way has lost its closing C{%}.
    """
    text = text.partition("\0")[0]
    value, nul, _ = value.partition("\0")
    return text.endswith(value) if nul else value in text
