"""
SEARCH evaluation: the parsed query made ready for Twisted's criteria (L{copy_query}), and
the criteria run over a session's messages in a worker thread (L{search_messages}), each
message read from its file only when a criterion needs it, at most once. Header fields are
compared as text (L{header_texts}) and dates as days (L{sent_day}), whatever a message's
header holds: a malformed one matches or not, it never fails the SEARCH.
"""

from __future__ import annotations

import contextlib
import email.utils
import io
import os
import re
from collections.abc import Callable, Iterable
from typing import Any

from mailsink.imap.entries import Entry, find_file, moves_in
from mailsink.imap.flags import flags_of
from mailsink.imap.message import crlf
from mailsink.imap.parts import MAX_HEADER_BYTES, Field, header_fields, value
from mailsink.imap.uids import UidMap
from mailsink.message.mime_cut import header_end
from mailsink.message.mime_text import decode_words, header_text
from mailsink.tags.keywords import keyword_file

Match = Callable[[int, Any, int, int], bool]
"""Whether a message matches a SEARCH: (sequence number, message, last sequence number,
last UID); called in a worker thread, so it must only read the message it is given."""
Searched = tuple[list[int], dict[str, int], dict[str, float], list[tuple[int, str, str]]]


class _Probe:
    """
    (Worker thread.) A message as SEARCH's criteria see it: read from the file only when
    a criterion needs it, at most once; changes nothing shared (what it learns is
    collected in C{found_sizes}, C{found_dates}, and the C{scanned} of its search).
    """

    __slots__ = ("_data", "_fields", "_search", "entry", "name", "sub")

    def __init__(self, search: _Search, entry: Entry) -> None:
        self._search = search
        self.entry = entry
        self.sub, self.name = entry.sub, entry.name
        self._data: bytes | None = None
        self._fields: list[Field] | None = None

    def _full(self) -> str | None:
        """The message's path, found by one scan of the Maildir if it moved."""
        path = self._search.path
        full = os.path.join(path, self.sub, self.name)
        if os.path.exists(full):
            return full
        where, self._search.scanned = find_file(path, self.sub, self.name, self.entry.base,
                                                self._search.scanned)
        if where is None:
            return None
        self.sub, self.name = where
        return os.path.join(path, *where)

    def _bytes(self) -> bytes:
        if self._data is None:
            full, raw = self._full(), b""
            if full is not None:
                with contextlib.suppress(FileNotFoundError), open(full, "rb") as file:
                    raw = file.read()
            self._data = crlf(raw)
            if self.entry.base not in self._search.sizes:
                self._search.found_sizes[self.entry.base] = len(self._data)
        return self._data

    def getUID(self) -> int:
        return self.entry.uid

    def getFlags(self) -> list[str]:
        return flags_of(self.name, keyword_file(self._search.path).names())

    def getSize(self) -> int:
        size = self._search.sizes.get(self.entry.base)
        if size is None:
            size = self._search.found_sizes.get(self.entry.base)
        if size is None:
            size = len(self._bytes())
        return size

    def getInternalDate(self) -> str:
        base = self.entry.base
        stamp = self._search.dates.get(base)
        if stamp is None:
            stamp = self._search.found_dates.get(base)
        if stamp is None:
            full = self._full()
            try:
                stamp = os.stat(full).st_mtime if full else 0.0
            except FileNotFoundError:
                stamp = 0.0
            self._search.found_dates[base] = stamp
        return email.utils.formatdate(stamp)

    def getHeaders(self, negate: bool, *names: Any) -> dict[str, str]:
        data = self._bytes()
        if self._fields is None:
            head_end = header_end(data, 0, len(data))[0]
            self._fields = header_fields(data, 0, min(head_end, MAX_HEADER_BYTES))
        return header_texts(data, self._fields, negate, names)

    def open(self) -> io.BytesIO:
        return io.BytesIO(self._bytes())

    def getBodyFile(self) -> io.BytesIO:
        _head, sep, body = self._bytes().partition(b"\r\n\r\n")
        return io.BytesIO(body if sep else b"")


class _Search:
    """(Worker thread.) One SEARCH over a session's messages; see L{search_messages}."""

    def __init__(self, path: str, uid_map: UidMap) -> None:
        self.path = path
        self.sizes, self.dates = uid_map.sizes, uid_map.dates  # only read here
        self.found_sizes: dict[str, int] = {}
        self.found_dates: dict[str, float] = {}
        self.scanned: dict[str, tuple[str, str]] | None = None


def search_messages(path: str, uid_map: UidMap, uids: list[int], entries: dict[int, Entry],
                    match: Match, by_uid: bool) -> Searched:
    """
    (Worker thread.) The sequence numbers (or UIDs) of a session's messages (C{uids},
    C{entries}: read, never changed) that C{match}; with the sizes and dates read on the
    way, and (UID, C{sub}, name) of messages found moved by another program.
    """
    search = _Search(path, uid_map)
    last_seq = len(uids)
    last_uid = uids[-1] if uids else 0
    found = []
    for seq, uid in enumerate(uids, 1):
        if match(seq, _Probe(search, entries[uid]), last_seq, last_uid):
            found.append(uid if by_uid else seq)
    return found, search.found_sizes, search.found_dates, moves_in(entries, search.scanned)


def header_texts(data: bytes, fields: list[Field], negate: bool,
                 names: Iterable[str | bytes]) -> dict[str, str]:
    """
    The fields named (or, C{negate}d, the others) as SEARCH compares them: as text, RFC 2047
    words decoded (C{SUBJECT "Grüße"} finds an encoded subject), a name's values joined by
    line ends, names in lower case.
    """
    wanted = {(n.decode("latin-1") if isinstance(n, bytes) else n).lower() for n in names}
    headers: dict[str, str] = {}
    for field in fields:
        if (field.name in wanted) != negate:
            text = decode_words(header_text(value(data, field).decode("ascii", "surrogateescape")))
            headers[field.name] = headers[field.name] + "\n" + text \
                if field.name in headers else text
    return headers


def copy_query(query: Any) -> Any:
    """
    A deep copy of a parsed search query (Twisted's filter consumes it), with words as
    text (Twisted compares them with header text); sequence sets stay bytes.
    """
    copied: list[Any] = []
    for item in query:
        # A word after a text key (or after HEADER's field name) is text even when it looks
        # like a sequence set: SUBJECT 2024, HEADER X-Priority 1.
        text_follows = bool(copied) and (str(copied[-1]).upper() in _TEXT_KEYS or (
            len(copied) > 1 and str(copied[-2]).upper() == "HEADER"))
        if isinstance(item, list):
            copied.append(copy_query(item))
        elif isinstance(item, bytes) and (text_follows or not _SEQUENCE_SET.fullmatch(item)):
            copied.append(item.decode("utf-8", "replace"))
        else:
            copied.append(item)
    return copied


_SEQUENCE_SET = re.compile(rb"[0-9*:,]+")
_TEXT_KEYS = frozenset({"BCC", "BODY", "CC", "FROM", "HEADER", "KEYWORD", "SUBJECT", "TEXT",
                        "TO", "UNKEYWORD", "LARGER", "SMALLER"})


def needle(value: Any) -> bytes:
    """A SEARCH string as lower-case bytes, to look for in lower-cased content."""
    text = value if isinstance(value, bytes) else str(value).encode("utf-8")
    return text.lower()


def sent_day(message: Any) -> tuple[int, int, int]:
    """
    (Year, month, day) of a message's C{Date:} field in its own time zone, as SENTBEFORE,
    SENTON and SENTSINCE compare it (RFC 3501 §6.4.4); the day it arrived when the field is
    missing or unreadable (as Dovecot does), never an error that fails the whole SEARCH.
    """
    declared = message.getHeaders(False, "date").get("date", "").split("\n")[0]
    try:
        parsed = email.utils.parsedate_tz(declared)
    except Exception:  # the standard library's date parser has raised on odd input
        parsed = None
    if parsed is None:
        parsed = email.utils.parsedate_tz(message.getInternalDate())
    year, month, day = parsed[:3] if parsed else (1970, 1, 1)
    return year, month, day

