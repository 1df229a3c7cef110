"""
One message's content as IMAP serves it: CRLF line ends (the Maildir holds LF), MIME parts
for BODY[...] and BODYSTRUCTURE, and the file reads behind FETCH, done in a worker thread:
sizes and dates (L{measure}), and content (L{MaildirMessage.preload}).
"""

from __future__ import annotations

import email
import email.message
import email.policy
import email.utils
import io
import os
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred, succeed
from twisted.mail import imap4
from zope.interface import implementer

from mailsink.imap.entries import Entry, Moves, find_file, moves_in
from mailsink.imap.flags import flags_of

if TYPE_CHECKING:
    from mailsink.imap.mailbox import MaildirMailbox


def crlf(data: bytes) -> bytes:
    """Line ends as CRLF (the Maildir holds LF; IMAP speaks CRLF)."""
    return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def parse(data: bytes) -> Part:
    """The MIME tree of a message given with CRLF line ends."""
    _head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        body = b""
    message = email.message_from_bytes(data.replace(b"\r\n", b"\n"),
                                       policy=email.policy.compat32)
    return Part(message, body)


class Part:
    """A MIME part of a message: headers and body over C{email.message.Message}."""

    def __init__(self, message: email.message.Message, raw_body: bytes | None = None) -> None:
        self.message = message
        self._raw_body = raw_body

    def getHeaders(self, negate: bool, *names: Any) -> dict[str, str]:
        wanted = {(n.decode("ascii", "replace") if isinstance(n, bytes) else n).lower()
                  for n in names}
        headers: dict[str, str] = {}
        for key, value in self.message.items():
            lower = key.lower()
            if (lower in wanted) != negate:
                headers.setdefault(lower, str(value))
        if not negate and names and wanted == {"content-type"} and not headers:
            headers["content-type"] = "text/plain; charset=us-ascii"
        return headers

    def _body(self) -> bytes:
        if self._raw_body is not None:
            return self._raw_body
        if self.message.is_multipart():
            text = self.message.as_bytes(policy=email.policy.compat32)
            body = text.partition(b"\n\n")[2]
        else:
            payload = self.message.get_payload()
            body = payload.encode("ascii", "surrogateescape") \
                if isinstance(payload, str) else b""
        return crlf(body)

    def getBodyFile(self) -> io.BytesIO:
        return io.BytesIO(self._body())

    def getSize(self) -> int:
        return len(self._body())

    def isMultipart(self) -> bool:
        return self.message.is_multipart()

    def getSubPart(self, part: int) -> Part:
        payload = self.message.get_payload()
        if not isinstance(payload, list) or not 0 <= part < len(payload):
            raise IndexError(part)
        sub: Any = payload[part]
        return Part(sub)


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


Loaded = tuple[tuple[str, str] | None, Moves, bytes, Part, float]


def _load(path: str, sub: str, name: str, base: str, entries: dict[int, Entry]) -> Loaded:
    """(Worker thread.) Where a message is, the session's messages (C{entries}: read, never
    changed) found moved, its content (CRLF line ends), its parsed MIME tree and its
    modification time."""
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
    return where, moves_in(entries, scanned), data, parse(data), stamp


@implementer(imap4.IMessage, imap4.IMessageFile)
class MaildirMessage:
    """One message file; its content is read when first asked for, then kept."""

    def __init__(self, mailbox: MaildirMailbox, entry: Entry) -> None:
        self._mailbox = mailbox
        self.entry = entry
        self._data: bytes | None = None
        self._top: Part | None = None

    def _bytes(self) -> bytes:
        if self._data is None:
            path = self._mailbox.locate(self.entry)
            raw = b""
            if path is not None:
                try:
                    with open(path, "rb") as file:
                        raw = file.read()
                except FileNotFoundError:
                    raw = b""
            self._data = crlf(raw)
            self._mailbox.uid_map.sizes[self.entry.base] = len(self._data)
        return self._data

    def preload(self) -> Deferred[None]:
        """Read and parse the content in a worker thread (before a FETCH writes it)."""
        if self._data is not None and self._top is not None:
            return succeed(None)
        entry = self.entry

        def loaded(found: Loaded) -> None:
            where, moves, data, part, stamp = found
            self._mailbox.moved(moves)
            if where is not None:
                entry.sub, entry.name = where
            self._data, self._top = data, part
            self._mailbox.uid_map.sizes[entry.base] = len(data)
            if where is not None:
                self._mailbox.uid_map.dates[entry.base] = stamp

        return self._mailbox.run(_load, self._mailbox.path, entry.sub, entry.name,
                                 entry.base, self._mailbox.entries).addCallback(loaded)

    def _part(self) -> Part:
        if self._top is None:
            self._top = parse(self._bytes())
        return self._top

    def open(self) -> io.BytesIO:
        return io.BytesIO(self._bytes())

    def getUID(self) -> int:
        return self.entry.uid

    def getFlags(self) -> list[str]:
        return flags_of(self.entry.name)

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
        if size is None:
            kept = self._data is not None
            size = len(self._bytes())
            if not kept:
                self._data = None  # asked only for the size: keep no content
        return size

    def getHeaders(self, negate: bool, *names: Any) -> dict[str, str]:
        return self._part().getHeaders(negate, *names)

    def getBodyFile(self) -> io.BytesIO:
        return self._part().getBodyFile()

    def isMultipart(self) -> bool:
        return self._part().isMultipart()

    def getSubPart(self, part: int) -> Part:
        return self._part().getSubPart(part)
