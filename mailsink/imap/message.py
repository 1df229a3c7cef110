"""
One message's content as IMAP serves it: CRLF line ends (the Maildir holds LF), and the
file reads behind FETCH, done in a worker thread: sizes and dates (L{measure}), and the
content items of a FETCH response (L{MaildirMessage.render}), made from the message's MIME
tree (L{mailsink.imap.parts}) by L{mailsink.imap.items}.
"""

from __future__ import annotations

import email.utils
import io
import os
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.mail import imap4
from twisted.python.failure import Failure
from zope.interface import implementer

from mailsink.imap.entries import Entry, Moves, find_file, moves_in
from mailsink.imap.flags import flags_of
from mailsink.imap.items import Item, content_item
from mailsink.imap.parts import opaque, tree
from mailsink.imap.uids import UidMap

log = Logger()


def crlf(data: bytes) -> bytes:
    """Line ends as CRLF (the Maildir holds LF; IMAP speaks CRLF)."""
    return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def render_items(parts: Sequence[Any], data: bytes) -> tuple[list[Item], Failure | None]:
    """
    (Worker thread.) The content items C{parts} of a message; should its tree ever fail to
    render, the message is rendered again as one text part with no header fields read
    (and the failure handed back to be logged), so the connection never pays for it.
    """
    try:
        root = tree(data)
        return [content_item(part, data, root) for part in parts], None
    except Exception:
        failure = Failure()
        root = opaque(data)
        return [content_item(part, data, root) for part in parts], failure


Measured = tuple[dict[str, int], dict[str, float], Moves]


def measure(path: str, wanted: list[tuple[str, str, str]], sizes: bool,
            dates: bool) -> tuple[dict[str, int], dict[str, float],
                                  dict[str, tuple[str, str]] | None]:
    """
    (Worker thread.) Sizes (with CRLF line ends) and modification times of messages given
    as (base, sub, name); also the scan made if some had moved.
    """
    found_sizes: dict[str, int] = {}
    found_dates: dict[str, float] = {}
    scanned: dict[str, tuple[str, str]] | None = None
    for base, sub, name in wanted:
        where, scanned = find_file(path, sub, name, base, scanned)
        if where is None:
            found_sizes[base], found_dates[base] = 0, 0.0
            continue
        full = os.path.join(path, *where)
        try:
            if sizes:
                with open(full, "rb") as file:
                    found_sizes[base] = len(crlf(file.read()))
            if dates:
                found_dates[base] = os.stat(full).st_mtime
        except FileNotFoundError:
            found_sizes[base], found_dates[base] = 0, 0.0
    return found_sizes, found_dates, scanned


Loaded = tuple[tuple[str, str] | None, Moves, int, tuple[list[Item], Failure | None], float]


def _load(path: str, sub: str, name: str, base: str, entries: dict[int, Entry],
          parts: Sequence[Any]) -> Loaded:
    """(Worker thread.) Where a message is, the session's messages (C{entries}: read, never
    changed) found moved, its size (CRLF line ends), its content items C{parts} (see
    L{render_items}) and its modification time."""
    where, scanned = find_file(path, sub, name, base, None)
    raw, stamp = b"", 0.0
    if where is not None:
        try:
            with open(os.path.join(path, *where), "rb") as file:
                raw = file.read()
                stamp = os.fstat(file.fileno()).st_mtime
        except FileNotFoundError:
            raw = b""
    data = crlf(raw)
    return where, moves_in(entries, scanned), len(data), render_items(parts, data), stamp


class Home(Protocol):
    """
    What a message asks of the session's mailbox it belongs to
    (L{mailsink.imap.mailbox.MaildirMailbox} is one; the mailbox imports this module, so
    this module names only what it needs).
    """

    path: str
    uid_map: UidMap
    entries: dict[int, Entry]
    run: Callable[..., Deferred[Any]]

    def moved(self, moves: Moves) -> None: ...

    def locate(self, entry: Entry) -> str | None: ...

    def keywords(self) -> dict[str, str]: ...


@implementer(imap4.IMessageFile)
class MaildirMessage:
    """One message file of a session's mailbox, as FETCH (L{mailsink.imap.fetch}) asks."""

    def __init__(self, mailbox: Home, entry: Entry) -> None:
        self._mailbox = mailbox
        self.entry = entry

    def render(self, parts: Sequence[Any]) -> Deferred[list[Item]]:
        """The content items C{parts} of a FETCH (L{render_items}), made in a worker thread."""
        entry = self.entry

        def loaded(found: Loaded) -> list[Item]:
            where, moves, size, (items, failure), stamp = found
            self._mailbox.moved(moves)
            if where is not None:
                entry.sub, entry.name = where
                self._mailbox.uid_map.dates[entry.base] = stamp
            self._mailbox.uid_map.sizes[entry.base] = size
            if failure is not None:
                log.failure("message {base} could not be rendered; sent as one text part",
                            failure, base=entry.base)
            return items

        return self._mailbox.run(_load, self._mailbox.path, entry.sub, entry.name,
                                 entry.base, self._mailbox.entries,
                                 list(parts)).addCallback(loaded)

    def _read(self) -> bytes:
        """The content (CRLF line ends), read on the calling thread."""
        path = self._mailbox.locate(self.entry)
        raw = b""
        if path is not None:
            try:
                with open(path, "rb") as file:
                    raw = file.read()
            except FileNotFoundError:
                raw = b""
        data = crlf(raw)
        self._mailbox.uid_map.sizes[self.entry.base] = len(data)
        return data

    def open(self) -> io.BytesIO:
        return io.BytesIO(self._read())

    def getUID(self) -> int:
        return self.entry.uid

    def getFlags(self) -> list[str]:
        return flags_of(self.entry.name, self._mailbox.keywords())

    def getInternalDate(self) -> str:
        stamp = self._mailbox.uid_map.dates.get(self.entry.base)
        if stamp is None:
            path = self._mailbox.locate(self.entry)
            try:
                stamp = os.stat(path).st_mtime if path else 0.0
            except FileNotFoundError:
                stamp = 0.0
            self._mailbox.uid_map.dates[self.entry.base] = stamp
        return email.utils.formatdate(stamp)

    def getSize(self) -> int:
        size = self._mailbox.uid_map.sizes.get(self.entry.base)
        return len(self._read()) if size is None else size
