"""
A Maildir as an IMAP INBOX for C{twisted.mail.imap4}: the account, the mailbox (one per
selecting session, each with its own view of sequence numbers), and the messages.

Flags live only in the Maildir file names (C{:2,FLAGS}): C{\\Seen} is C{S}, C{\\Deleted}
C{T}, C{\\Flagged} C{F}, C{\\Answered} C{R}, C{\\Draft} C{D}; setting flags renames the
file into C{cur/}. UIDs come from a L{UidMap} kept in the state folder.
"""

from __future__ import annotations

import bisect
import contextlib
import email
import email.message
import email.policy
import email.utils
import io
import os
import time
from collections.abc import Iterable
from typing import Any

from twisted.mail import imap4
from zope.interface import implementer

from mailsink.imap.uids import UidMap, base_name

FLAG_LETTERS = {"\\Seen": "S", "\\Deleted": "T", "\\Flagged": "F", "\\Answered": "R",
                "\\Draft": "D"}
LETTER_FLAGS = {letter: flag for flag, letter in FLAG_LETTERS.items()}
SYSTEM_FLAGS = tuple(FLAG_LETTERS)
INBOX = "INBOX"


def flags_of(name: str) -> list[str]:
    """The IMAP flags a Maildir file name carries (letters after C{:2,})."""
    info = name.partition(":2,")[2]
    return [LETTER_FLAGS[c] for c in sorted(info) if c in LETTER_FLAGS]


def scan(path: str) -> dict[str, tuple[str, str]]:
    """Base name to (C{cur} or C{new}, file name) for every message in the Maildir."""
    found: dict[str, tuple[str, str]] = {}
    for sub in ("new", "cur"):
        try:
            entries = os.scandir(os.path.join(path, sub))
        except FileNotFoundError:
            continue
        with entries:
            for entry in entries:
                name = entry.name
                if name.startswith("."):
                    continue
                found[base_name(name)] = (sub, name)
    return found


class Entry:
    """One message as a session knows it."""

    __slots__ = ("base", "name", "sub", "uid")

    def __init__(self, uid: int, base: str, sub: str, name: str) -> None:
        self.uid = uid
        self.base = base
        self.sub = sub
        self.name = name


@implementer(imap4.IAccount)
class MaildirAccount:
    """A user's view: one mailbox, INBOX, backed by one Maildir."""

    def __init__(self, path: str, user: str, uid_map: UidMap) -> None:
        self.path = path
        self.user = user
        self.uid_map = uid_map

    def _mailbox(self) -> MaildirMailbox:
        return MaildirMailbox(self.path, self.uid_map)

    def listMailboxes(self, ref: str, wildcard: str) -> list[tuple[str, Any]]:
        pattern = (ref or "") + (wildcard or "")
        if not pattern:
            return []
        if imap4.wildcardToRegexp(pattern, "/").match(INBOX) or \
                imap4.wildcardToRegexp(pattern.upper(), "/").match(INBOX):
            return [(INBOX, _MailboxInfo())]
        return []

    def select(self, name: str, rw: bool = True) -> MaildirMailbox | None:
        if name.upper() != INBOX:
            return None
        mailbox = self._mailbox()
        mailbox.writeable = bool(rw)
        mailbox.refresh()
        return mailbox

    def isSubscribed(self, name: str) -> bool:
        return name.upper() == INBOX

    def subscribe(self, name: str) -> bool:
        if name.upper() != INBOX:
            raise imap4.MailboxException("No such mailbox")
        return True

    def unsubscribe(self, name: str) -> bool:
        raise imap4.MailboxException("INBOX stays subscribed")

    def addMailbox(self, name: str, mbox: Any = None) -> bool:
        raise imap4.MailboxException("Only INBOX exists here")

    def create(self, pathspec: str) -> bool:
        raise imap4.MailboxException("Only INBOX exists here")

    def delete(self, name: str) -> bool:
        raise imap4.MailboxException("INBOX cannot be deleted")

    def rename(self, oldname: str, newname: str) -> bool:
        raise imap4.MailboxException("INBOX cannot be renamed")


class _MailboxInfo:
    def getFlags(self) -> list[str]:
        return ["\\HasNoChildren"]

    def getHierarchicalDelimiter(self) -> str:
        return "/"


@implementer(imap4.IMailbox, imap4.ICloseableMailbox)
class MaildirMailbox:
    """INBOX as one session sees it: sequence numbers change only when told to it."""

    writeable = True

    def __init__(self, path: str, uid_map: UidMap) -> None:
        self.path = path
        self.uid_map = uid_map
        self.uids: list[int] = []
        self.entries: dict[int, Entry] = {}
        self.recent = 0
        self.listeners: list[Any] = []
        self._scanned_stamps: tuple[int, ...] | None = None

    # Keeping up with the disk.

    def refresh(self) -> tuple[list[int], dict[int, list[str]], int]:
        """
        Rescan the Maildir. Returns the sequence numbers expunged (in the order to report
        them: highest first), flags changed by others (new sequence number to flags), and
        the number of messages that exist when new ones arrived (else 0).
        """
        stamps = self._stamps()
        if stamps is not None and stamps == self._scanned_stamps:
            return [], {}, 0  # neither folder changed since the last scan
        on_disk = scan(self.path)
        self._scanned_stamps = stamps
        known = self.uid_map.lookup()
        fresh = [base for base in on_disk if base not in known]
        if fresh:
            self.uid_map.assign(fresh)
            known = self.uid_map.by_base
        seen = set()
        expunged: list[int] = []
        changed: dict[int, list[str]] = {}
        for seq in range(len(self.uids), 0, -1):
            uid = self.uids[seq - 1]
            entry = self.entries[uid]
            where = on_disk.get(entry.base)
            if where is None or known.get(entry.base) != uid:
                expunged.append(seq)
                del self.entries[uid]
                del self.uids[seq - 1]
                continue
            seen.add(entry.base)
            if where[1] != entry.name or where[0] != entry.sub:
                if flags_of(where[1]) != flags_of(entry.name):
                    changed[uid] = flags_of(where[1])
                entry.sub, entry.name = where
        added = sorted((known[base], base) for base in on_disk
                       if base not in seen and base in known)
        last = self.uids[-1] if self.uids else 0
        for uid, base in added:
            sub, name = on_disk[base]
            self.entries[uid] = Entry(uid, base, sub, name)
            if uid > last:
                self.uids.append(uid)
                last = uid
            else:
                bisect.insort(self.uids, uid)
            if sub == "new":
                self.recent += 1
        by_seq = {self.sequence(uid): flags for uid, flags in changed.items()}
        return expunged, by_seq, len(self.uids) if added else 0

    def _stamps(self) -> tuple[int, ...] | None:
        """
        The folders' modification times, or None when they are too recent to trust
        (a change in the same clock tick as the last scan would leave them equal).
        """
        stamps = []
        for sub in ("new", "cur"):
            try:
                stamps.append(os.stat(os.path.join(self.path, sub)).st_mtime_ns)
            except FileNotFoundError:
                stamps.append(0)
        if time.time_ns() - max(stamps) < 2_000_000_000:
            return None
        return tuple(stamps)

    def sequence(self, uid: int) -> int:
        """The sequence number of C{uid} (0 when this session does not hold it)."""
        index = bisect.bisect_left(self.uids, uid)
        if index < len(self.uids) and self.uids[index] == uid:
            return index + 1
        return 0

    # IMailboxInfo / IMailbox.

    def getFlags(self) -> list[str]:
        return list(SYSTEM_FLAGS)

    def getHierarchicalDelimiter(self) -> str:
        return "/"

    def getUIDValidity(self) -> int:
        return self.uid_map.validity

    def getUIDNext(self) -> int:
        return max(self.uid_map.next_uid, (self.uids[-1] + 1) if self.uids else 1)

    def getUID(self, message: int) -> int:
        return self.uids[message - 1]

    def getMessageCount(self) -> int:
        return len(self.uids)

    def getRecentCount(self) -> int:
        return self.recent

    def getUnseenCount(self) -> int:
        return sum(1 for e in self.entries.values() if "S" not in e.name.partition(":2,")[2])

    def isWriteable(self) -> bool:
        return self.writeable

    def destroy(self) -> None:
        raise imap4.MailboxException("INBOX cannot be deleted")

    def requestStatus(self, names: Iterable[str]) -> dict[str, int]:
        values = {"MESSAGES": self.getMessageCount, "RECENT": self.getRecentCount,
                  "UIDNEXT": self.getUIDNext, "UIDVALIDITY": self.getUIDValidity,
                  "UNSEEN": self.getUnseenCount}
        status = {}
        for name in names:
            name = name.upper()
            if name not in values:
                raise imap4.MailboxException(f"Unknown STATUS item {name}")
            status[name] = values[name]()
        return status

    def addListener(self, listener: Any) -> None:
        self.listeners.append(listener)

    def removeListener(self, listener: Any) -> None:
        if listener in self.listeners:
            self.listeners.remove(listener)

    def close(self) -> None:
        self.listeners = []

    def addMessage(self, message: Any, flags: Iterable[str] = (), date: Any = None) -> Any:
        raise imap4.MailboxException("APPEND is not supported; deliver by SMTP")

    def expunge(self) -> list[int]:
        """Unlink every \\Deleted message; their sequence numbers, highest first."""
        gone = []
        for seq in range(len(self.uids), 0, -1):
            entry = self.entries[self.uids[seq - 1]]
            if "T" not in entry.name.partition(":2,")[2]:
                continue
            path = self._locate(entry)
            if path is not None:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
            gone.append(seq)
            del self.entries[entry.uid]
            del self.uids[seq - 1]
        return gone

    # Messages.

    def select_ids(self, messages: imap4.MessageSet, uid: bool) -> list[tuple[int, int]]:
        """(sequence number, UID) pairs in C{messages}, in sequence order."""
        last = (self.uids[-1] if self.uids else 0) if uid else len(self.uids)
        with contextlib.suppress(ValueError):
            messages.last = last
        picked: set[int] = set()
        for low, high in messages.ranges:
            if uid:
                start = bisect.bisect_left(self.uids, low)
                end = bisect.bisect_right(self.uids, high)
            else:
                start, end = max(low, 1) - 1, min(high, len(self.uids))
            picked.update(range(start, end))
        return [(index + 1, self.uids[index]) for index in sorted(picked)]

    def fetch(self, messages: imap4.MessageSet, uid: bool) -> list[tuple[int, MaildirMessage]]:
        return [(seq, MaildirMessage(self, self.entries[u]))
                for seq, u in self.select_ids(messages, uid)]

    def store(self, messages: imap4.MessageSet, flags: Iterable[str], mode: int,
              uid: bool) -> dict[int, list[str]]:
        if not self.writeable:
            raise imap4.ReadOnlyMailbox()
        letters = set()
        for flag in flags:
            for system, letter in FLAG_LETTERS.items():
                if flag.lower() == system.lower():
                    letters.add(letter)
        result = {}
        for seq, u in self.select_ids(messages, uid):
            entry = self.entries[u]
            info = entry.name.partition(":2,")[2]
            current = set(info)
            if mode > 0:
                wanted = current | letters
            elif mode < 0:
                wanted = current - letters
            else:
                wanted = (current - set(LETTER_FLAGS)) | letters
            if wanted != current or (entry.sub == "new" and wanted):
                self._rename(entry, "".join(sorted(wanted)))
            result[seq] = flags_of(entry.name)
        return result

    def _rename(self, entry: Entry, info: str) -> None:
        source = self._locate(entry)
        if source is None:
            return
        name = f"{entry.base}:2,{info}"
        target = os.path.join(self.path, "cur", name)
        os.rename(source, target)
        entry.sub, entry.name = "cur", name

    def _locate(self, entry: Entry) -> str | None:
        """The message's path now, found again if another program renamed it."""
        path = os.path.join(self.path, entry.sub, entry.name)
        if os.path.exists(path):
            return path
        on_disk = scan(self.path)  # one scan finds every message that moved
        for other in self.entries.values():
            moved = on_disk.get(other.base)
            if moved is not None:
                other.sub, other.name = moved
        where = on_disk.get(entry.base)
        if where is None:
            return None
        entry.sub, entry.name = where
        return os.path.join(self.path, *where)


def _crlf(data: bytes) -> bytes:
    """Line ends as CRLF (the Maildir holds LF; IMAP speaks CRLF)."""
    return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


class _Part:
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
        return _crlf(body)

    def getBodyFile(self) -> io.BytesIO:
        return io.BytesIO(self._body())

    def getSize(self) -> int:
        return len(self._body())

    def isMultipart(self) -> bool:
        return self.message.is_multipart()

    def getSubPart(self, part: int) -> _Part:
        payload = self.message.get_payload()
        if not isinstance(payload, list) or not 0 <= part < len(payload):
            raise IndexError(part)
        sub: Any = payload[part]
        return _Part(sub)


@implementer(imap4.IMessage, imap4.IMessageFile)
class MaildirMessage:
    """One message file; its content is read when first asked for, then kept."""

    def __init__(self, mailbox: MaildirMailbox, entry: Entry) -> None:
        self._mailbox = mailbox
        self.entry = entry
        self._data: bytes | None = None
        self._top: _Part | None = None

    def _bytes(self) -> bytes:
        if self._data is None:
            path = self._mailbox._locate(self.entry)
            raw = b""
            if path is not None:
                try:
                    with open(path, "rb") as file:
                        raw = file.read()
                except FileNotFoundError:
                    raw = b""
            self._data = _crlf(raw)
            self._mailbox.uid_map.sizes[self.entry.base] = len(self._data)
        return self._data

    def _part(self) -> _Part:
        if self._top is None:
            data = self._bytes()
            _head, sep, body = data.partition(b"\r\n\r\n")
            if not sep:
                body = b""
            message = email.message_from_bytes(data.replace(b"\r\n", b"\n"),
                                               policy=email.policy.compat32)
            self._top = _Part(message, body)
        return self._top

    def open(self) -> io.BytesIO:
        return io.BytesIO(self._bytes())

    def getUID(self) -> int:
        return self.entry.uid

    def getFlags(self) -> list[str]:
        return flags_of(self.entry.name)

    def getInternalDate(self) -> str:
        path = self._mailbox._locate(self.entry)
        try:
            stamp = os.stat(path).st_mtime if path else 0.0
        except FileNotFoundError:
            stamp = 0.0
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

    def getSubPart(self, part: int) -> _Part:
        return self._part().getSubPart(part)
