"""
A Maildir as an IMAP INBOX for C{twisted.mail.imap4}: the account, the mailbox (one per
selecting session, each with its own view of sequence numbers), and the messages.

Flags live only in the Maildir file names (C{:2,FLAGS}): C{\\Seen} is C{S}, C{\\Deleted}
C{T}, C{\\Flagged} C{F}, C{\\Answered} C{R}, C{\\Draft} C{D}; setting flags renames the
file into C{cur/}. UIDs come from a L{UidMap} kept in the state folder.

Nothing here touches the disk on the reactor thread in proportion to the number or size of
messages: listing the folders, giving UIDs, reading sizes and dates, renaming and unlinking
run through C{run} (a worker thread in the daemon, see L{mailsink.imap.service}) and only
hand back results; the session's state (its message list, sequence numbers) is changed on
the reactor thread from those results.
"""

from __future__ import annotations

import bisect
import contextlib
import email
import email.message
import email.parser
import email.policy
import email.utils
import io
import os
import time
from collections.abc import Callable, Iterable
from typing import Any

from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.mail import imap4
from zope.interface import implementer

from mailsink.imap.uids import UidMap, base_name, uid_map_for

Run = Callable[..., "Deferred[Any]"]
"""Runs a blocking call elsewhere (a worker thread) and gives its result as a Deferred."""


def inline(call: Callable[..., Any], *args: Any, **kwargs: Any) -> Deferred[Any]:
    """A L{Run} for tests: the call runs at once, on the calling thread."""
    return maybeDeferred(call, *args, **kwargs)

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


class Snapshot:
    """What a scan found: base name to (UID, C{cur} or C{new}, file name)."""

    __slots__ = ("next_uid", "on_disk", "stamps")

    def __init__(self, on_disk: dict[str, tuple[int, str, str]],
                 stamps: tuple[int, ...] | None, next_uid: int) -> None:
        self.on_disk = on_disk
        self.stamps = stamps
        self.next_uid = next_uid


def folder_stamps(path: str) -> tuple[int, ...] | None:
    """
    The folders' modification times, or None when they are too recent to trust
    (a change in the same clock tick as the last scan would leave them equal).
    """
    stamps = []
    for sub in ("new", "cur"):
        try:
            stamps.append(os.stat(os.path.join(path, sub)).st_mtime_ns)
        except FileNotFoundError:
            stamps.append(0)
    if time.time_ns() - max(stamps) < 2_000_000_000:
        return None
    return tuple(stamps)


def read_disk(path: str, uid_map: UidMap,
              previous: tuple[int, ...] | None) -> Snapshot | None:
    """
    (Worker thread.) List the Maildir and give UIDs to new messages; None when neither
    folder changed since the scan that saw the stamps C{previous}.
    """
    stamps = folder_stamps(path)
    if stamps is not None and stamps == previous:
        return None
    found = scan(path)
    with uid_map.lock:
        known = uid_map.lookup()
        fresh = [base for base in found if base not in known]
        if fresh:
            uid_map.assign(fresh)
            known = uid_map.by_base
        on_disk = {base: (known[base], sub, name) for base, (sub, name) in found.items()
                   if base in known}
        next_uid = uid_map.next_uid
    return Snapshot(on_disk, stamps, next_uid)


class Changes:
    """A session's messages after a rescan, and what to tell its client."""

    __slots__ = ("added", "changed", "entries", "expunged", "next_uid", "recent", "stamps",
                 "uids")

    def __init__(self, uids: list[int], entries: dict[int, Entry], expunged: list[int],
                 changed: dict[int, list[str]], added: bool, recent: int,
                 stamps: tuple[int, ...] | None, next_uid: int) -> None:
        self.uids = uids
        self.entries = entries
        self.expunged = expunged
        self.changed = changed
        self.added = added
        self.recent = recent
        self.stamps = stamps
        self.next_uid = next_uid


def rescan(path: str, uid_map: UidMap, previous: tuple[int, ...] | None, uids: list[int],
           entries: dict[int, Entry]) -> Changes | None:
    """
    (Worker thread.) Scan the Maildir and work out a session's new message list from its
    current one (C{uids}, C{entries}: read, never changed; entries that changed are new
    objects). None when neither folder changed since the scan that saw C{previous}.
    """
    snapshot = read_disk(path, uid_map, previous)
    if snapshot is None:
        return None
    on_disk = snapshot.on_disk
    kept: list[int] = []
    new_entries: dict[int, Entry] = {}
    expunged: list[int] = []
    changed_uids: dict[int, list[str]] = {}
    for seq, uid in enumerate(uids, 1):
        entry = entries[uid]
        found = on_disk.get(entry.base)
        if found is None or found[0] != uid:
            expunged.append(seq)
            continue
        _uid, sub, name = found
        if name != entry.name or sub != entry.sub:
            if flags_of(name) != flags_of(entry.name):
                changed_uids[uid] = flags_of(name)
            entry = Entry(uid, entry.base, sub, name)
        kept.append(uid)
        new_entries[uid] = entry
    added = sorted(found[0] for base, found in on_disk.items()
                   if found[0] not in new_entries)
    recent = 0
    by_uid = {found[0]: (base, found[1], found[2]) for base, found in on_disk.items()} \
        if added else {}
    for uid in added:
        base, sub, name = by_uid[uid]
        new_entries[uid] = Entry(uid, base, sub, name)
        if sub == "new":
            recent += 1
    if added and kept and added[0] < kept[-1]:
        kept = sorted(kept + added)
    else:
        kept.extend(added)
    changed = {}
    if changed_uids:
        position = {uid: seq for seq, uid in enumerate(kept, 1)}
        changed = {position[uid]: flags for uid, flags in changed_uids.items()}
    return Changes(kept, new_entries, expunged[::-1], changed, bool(added), recent,
                   snapshot.stamps, snapshot.next_uid)


def open_maildir(state_dir: str, path: str) -> tuple[UidMap, Changes | None]:
    """(Worker thread.) The Maildir's UID map (read the first time) and a first scan."""
    uid_map = uid_map_for(state_dir, path)
    return uid_map, rescan(path, uid_map, None, [], {})


def _where(path: str, sub: str, name: str, base: str,
           scanned: dict[str, tuple[str, str]] | None
           ) -> tuple[tuple[str, str] | None, dict[str, tuple[str, str]] | None]:
    """
    (Worker thread.) Where a message is now: (C{sub}, C{name}) if it is still there, else
    found in a scan (made once, then passed back in as C{scanned}); None if gone.
    """
    if os.path.exists(os.path.join(path, sub, name)):
        return (sub, name), scanned
    if scanned is None:
        scanned = scan(path)
    return scanned.get(base), scanned


Moves = list[tuple[int, str, str]]
"""(UID, C{sub}, name) of messages another program renamed."""
Measured = tuple[dict[str, int], dict[str, float], Moves]


def moves_in(entries: dict[int, Entry], scanned: dict[str, tuple[str, str]] | None) -> Moves:
    """(Worker thread.) The session's messages (C{entries}: read, never changed) that a
    scan found somewhere other than where the session knows them."""
    if scanned is None:
        return []
    moves = []
    for uid, entry in entries.items():
        where = scanned.get(entry.base)
        if where is not None and where != (entry.sub, entry.name):
            moves.append((uid, *where))
    return moves


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
        where, scanned = _where(path, sub, name, base, scanned)
        if where is None:
            found_sizes[base], found_dates[base] = 0, 0.0
            continue
        full = os.path.join(path, *where)
        try:
            if sizes:
                with open(full, "rb") as file:
                    found_sizes[base] = len(_crlf(file.read()))
            if dates:
                found_dates[base] = os.stat(full).st_mtime
        except FileNotFoundError:
            found_sizes[base], found_dates[base] = 0, 0.0
    return found_sizes, found_dates, scanned


Loaded = tuple[tuple[str, str] | None, Moves, bytes, "_Part", float]


def _load(path: str, sub: str, name: str, base: str, entries: dict[int, Entry]) -> Loaded:
    """(Worker thread.) Where a message is, the session's messages (C{entries}: read, never
    changed) found moved, its content (CRLF line ends), its parsed MIME tree and its
    modification time."""
    where, scanned = _where(path, sub, name, base, None)
    raw, stamp = b"", 0.0
    if where is not None:
        try:
            with open(os.path.join(path, *where), "rb") as file:
                raw = file.read()
                stamp = os.fstat(file.fileno()).st_mtime
        except FileNotFoundError:
            raw = b""
    data = _crlf(raw)
    return where, moves_in(entries, scanned), data, _parse(data), stamp


def _rename_all(path: str, plan: list[tuple[int, str, str, str, str]]
                ) -> tuple[dict[int, tuple[str, str]], OSError | None]:
    """
    (Worker thread.) Rename each (uid, base, sub, name, new info) into C{cur/} with its new
    flags; the new (C{cur}, name) per UID done, and the error that stopped the rest.
    """
    done: dict[int, tuple[str, str]] = {}
    scanned: dict[str, tuple[str, str]] | None = None
    try:
        for uid, base, sub, name, info in plan:
            where, scanned = _where(path, sub, name, base, scanned)
            if where is None:
                continue
            target = f"{base}:2,{info}"
            os.rename(os.path.join(path, *where), os.path.join(path, "cur", target))
            done[uid] = ("cur", target)
    except OSError as error:
        return done, error
    return done, None


def _unlink_all(path: str, doomed: list[tuple[str, str, str]]) -> None:
    """(Worker thread.) Unlink messages given as (base, sub, name), wherever they are."""
    scanned: dict[str, tuple[str, str]] | None = None
    for base, sub, name in doomed:
        where, scanned = _where(path, sub, name, base, scanned)
        if where is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(path, *where))


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

    __slots__ = ("_data", "_head", "_search", "entry", "name", "sub")

    def __init__(self, search: _Search, entry: Entry) -> None:
        self._search = search
        self.entry = entry
        self.sub, self.name = entry.sub, entry.name
        self._data: bytes | None = None
        self._head: _Part | None = None

    def _full(self) -> str | None:
        """The message's path, found by one scan of the Maildir if it moved."""
        path = self._search.path
        full = os.path.join(path, self.sub, self.name)
        if os.path.exists(full):
            return full
        where, self._search.scanned = _where(path, self.sub, self.name, self.entry.base,
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
            self._data = _crlf(raw)
            if self.entry.base not in self._search.sizes:
                self._search.found_sizes[self.entry.base] = len(self._data)
        return self._data

    def getUID(self) -> int:
        return self.entry.uid

    def getFlags(self) -> list[str]:
        return flags_of(self.name)

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
        if self._head is None:
            head = self._bytes().partition(b"\r\n\r\n")[0].replace(b"\r\n", b"\n")
            self._head = _Part(email.parser.BytesHeaderParser(
                policy=email.policy.compat32).parsebytes(head))
        return self._head.getHeaders(negate, *names)

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


def _select(uids: list[int], messages: imap4.MessageSet, uid: bool
            ) -> list[tuple[int, int]]:
    """(sequence number, UID) pairs of the session's C{uids} in C{messages}, in order."""
    last = (uids[-1] if uids else 0) if uid else len(uids)
    with contextlib.suppress(ValueError):
        messages.last = last
    picked: set[int] = set()
    for low, high in messages.ranges:
        if uid:
            start = bisect.bisect_left(uids, low)
            end = bisect.bisect_right(uids, high)
        else:
            start, end = max(low, 1) - 1, min(high, len(uids))
        picked.update(range(start, end))
    return [(index + 1, uids[index]) for index in sorted(picked)]


Stored = tuple[dict[int, tuple[str, str]], "OSError | None", dict[int, list[str]]]


def store_flags(path: str, uids: list[int], entries: dict[int, Entry],
                messages: imap4.MessageSet, by_uid: bool, letters: set[str],
                mode: int) -> Stored:
    """
    (Worker thread.) Add (C{mode} > 0), remove (< 0) or set (0) flag letters on a session's
    messages (C{uids}, C{entries}: read, never changed): the new (C{cur}, name) per UID
    renamed, the error that stopped the renames, and every picked message's flags by
    sequence number.
    """
    picked = _select(uids, messages, by_uid)
    plan = []
    for _seq, u in picked:
        entry = entries[u]
        current = set(entry.name.partition(":2,")[2])
        if mode > 0:
            wanted = current | letters
        elif mode < 0:
            wanted = current - letters
        else:
            wanted = (current - set(LETTER_FLAGS)) | letters
        if wanted != current or (entry.sub == "new" and wanted):
            plan.append((u, entry.base, entry.sub, entry.name, "".join(sorted(wanted))))
    done, error = _rename_all(path, plan) if plan else ({}, None)
    result = {seq: flags_of(done[u][1] if u in done else entries[u].name)
              for seq, u in picked}
    return done, error, result


def expunge_deleted(path: str, uids: list[int], entries: dict[int, Entry]
                    ) -> tuple[list[int], list[int], list[int]]:
    """
    (Worker thread.) Unlink a session's \\Deleted messages (C{uids}, C{entries}: read,
    never changed): the UIDs kept, the sequence numbers gone (highest first), the UIDs
    gone.
    """
    doomed = [(seq, uid) for seq, uid in enumerate(uids, 1)
              if "T" in entries[uid].name.partition(":2,")[2]]
    if not doomed:
        return uids, [], []
    _unlink_all(path, [(entries[uid].base, entries[uid].sub, entries[uid].name)
                       for _seq, uid in doomed])
    gone_uids = {uid for _seq, uid in doomed}
    kept = [uid for uid in uids if uid not in gone_uids]
    return kept, [seq for seq, _uid in doomed][::-1], sorted(gone_uids)


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

    def __init__(self, path: str, user: str, state_dir: str, run: Run = inline) -> None:
        self.path = path
        self.user = user
        self.state_dir = state_dir
        self.run = run

    def listMailboxes(self, ref: str, wildcard: str) -> list[tuple[str, Any]]:
        pattern = (ref or "") + (wildcard or "")
        if not pattern:
            return []
        if imap4.wildcardToRegexp(pattern, "/").match(INBOX) or \
                imap4.wildcardToRegexp(pattern.upper(), "/").match(INBOX):
            return [(INBOX, _MailboxInfo())]
        return []

    def select(self, name: str, rw: bool = True) -> Deferred[MaildirMailbox | None]:
        """The mailbox, once a worker thread has read the UID map and listed the folders."""
        if name.upper() != INBOX:
            return succeed(None)

        def opened(found: tuple[UidMap, Changes | None]) -> MaildirMailbox:
            uid_map, snapshot = found
            mailbox = MaildirMailbox(self.path, uid_map, self.run)
            mailbox.writeable = bool(rw)
            mailbox.apply(snapshot)
            return mailbox

        return self.run(open_maildir, self.state_dir, self.path).addCallback(opened)

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

    def __init__(self, path: str, uid_map: UidMap, run: Run = inline) -> None:
        self.path = path
        self.uid_map = uid_map
        self.run = run
        self.uids: list[int] = []
        self.entries: dict[int, Entry] = {}
        self.recent = 0
        self.next_uid = 1
        self.listeners: list[Any] = []
        self._scanned_stamps: tuple[int, ...] | None = None

    # Keeping up with the disk.

    def refresh(self) -> Deferred[tuple[list[int], dict[int, list[str]], int]]:
        """
        Rescan the Maildir and work out what changed (in a worker thread). Gives the
        sequence numbers expunged (in the order to report them: highest first), flags
        changed by others (new sequence number to flags), and the number of messages that
        exist when new ones arrived (else 0).

        The session must not change its messages until this fires (its commands wait).
        """
        return self.run(rescan, self.path, self.uid_map, self._scanned_stamps, self.uids,
                        self.entries).addCallback(self.apply)

    def apply(self, changes: Changes | None) -> tuple[list[int], dict[int, list[str]], int]:
        """(Reactor thread.) Take in a rescan's result: see L{refresh}."""
        if changes is None:
            return [], {}, 0  # neither folder changed since the last scan
        self._scanned_stamps = changes.stamps
        self.next_uid = max(self.next_uid, changes.next_uid)
        self.uids, self.entries = changes.uids, changes.entries
        self.recent += changes.recent
        return changes.expunged, changes.changed, len(self.uids) if changes.added else 0

    def moved(self, moves: Moves) -> None:
        """(Reactor thread.) Take in where a worker found messages another program renamed
        (only those: see L{moves_in})."""
        for uid, sub, name in moves:
            entry = self.entries.get(uid)
            if entry is not None:
                entry.sub, entry.name = sub, name

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
        return max(self.next_uid, (self.uids[-1] + 1) if self.uids else 1)

    def getUID(self, message: int) -> int:
        return self.uids[message - 1]

    def getMessageCount(self) -> int:
        return len(self.uids)

    def getRecentCount(self) -> int:
        return self.recent

    def getUnseenCount(self) -> int:
        return sum(1 for e in list(self.entries.values())
                   if "S" not in e.name.partition(":2,")[2])

    def isWriteable(self) -> bool:
        return self.writeable

    def destroy(self) -> None:
        raise imap4.MailboxException("INBOX cannot be deleted")

    def requestStatus(self, names: Iterable[str]) -> Deferred[dict[str, int]]:
        """(In a worker thread: counting UNSEEN grows with the mailbox; STATUS's mailbox
        is its own, shared with no session.)"""
        return self.run(self._status, list(names))

    def _status(self, names: list[str]) -> dict[str, int]:
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

    def expunge(self) -> Deferred[list[int]]:
        """Unlink every \\Deleted message (picked and unlinked in a worker thread); gives
        their sequence numbers, highest first."""
        def unlinked(outcome: tuple[list[int], list[int], list[int]]) -> list[int]:
            kept, gone, gone_uids = outcome
            if gone_uids:
                self.uids = kept
                for uid in gone_uids:
                    self.entries.pop(uid, None)
            return gone

        return self.run(expunge_deleted, self.path, self.uids,
                        self.entries).addCallback(unlinked)

    # Messages.

    def select_ids(self, messages: imap4.MessageSet, uid: bool) -> list[tuple[int, int]]:
        """(sequence number, UID) pairs in C{messages}, in sequence order."""
        return _select(self.uids, messages, uid)

    def fetch(self, messages: imap4.MessageSet, uid: bool) -> list[tuple[int, MaildirMessage]]:
        return [(seq, MaildirMessage(self, self.entries[u]))
                for seq, u in self.select_ids(messages, uid)]

    def fetch_measured(self, messages: imap4.MessageSet, uid: bool, sizes: bool,
                       dates: bool) -> Deferred[list[tuple[int, MaildirMessage]]]:
        """
        L{fetch}, with the sizes and dates not known yet read from the files, all in a
        worker thread (both grow with the number of messages). The session must not change
        its messages until this fires (its commands wait).
        """
        def measured(result: tuple[list[tuple[int, MaildirMessage]], Measured]
                     ) -> list[tuple[int, MaildirMessage]]:
            found, (found_sizes, found_dates, moves) = result
            self.uid_map.sizes.update(found_sizes)
            self.uid_map.dates.update(found_dates)
            self.moved(moves)
            return found

        return self.run(self._fetch_and_measure, messages, uid, sizes,
                        dates).addCallback(measured)

    def _fetch_and_measure(self, messages: imap4.MessageSet, uid: bool, sizes: bool,
                           dates: bool) -> tuple[list[tuple[int, MaildirMessage]], Measured]:
        """(Worker thread.) See L{fetch_measured}; changes nothing here."""
        found = self.fetch(messages, uid)
        known_sizes, known_dates = self.uid_map.sizes, self.uid_map.dates
        wanted = [(m.entry.base, m.entry.sub, m.entry.name) for _seq, m in found
                  if (sizes and m.entry.base not in known_sizes)
                  or (dates and m.entry.base not in known_dates)]
        if not wanted:
            return found, ({}, {}, [])
        found_sizes, found_dates, scanned = measure(self.path, wanted, sizes, dates)
        return found, (found_sizes, found_dates, moves_in(self.entries, scanned))

    def search(self, match: Match, by_uid: bool) -> Deferred[list[int]]:
        """
        The sequence numbers (or UIDs) of the messages that C{match}, worked out in a worker
        thread (candidates, criteria and any file reads). The session must not change its
        messages until this fires (its commands wait).
        """
        def searched(result: Searched) -> list[int]:
            found, found_sizes, found_dates, moves = result
            self.uid_map.sizes.update(found_sizes)
            self.uid_map.dates.update(found_dates)
            self.moved(moves)
            return found

        return self.run(search_messages, self.path, self.uid_map, self.uids, self.entries,
                        match, by_uid).addCallback(searched)

    def fetch_later(self, messages: imap4.MessageSet, uid: bool
                    ) -> Deferred[list[tuple[int, MaildirMessage]]]:
        """L{fetch}, worked out in a worker thread (it grows with the number of messages).
        The session must not change its messages until this fires (its commands wait)."""
        return self.run(self.fetch, messages, uid)

    def store(self, messages: imap4.MessageSet, flags: Iterable[str], mode: int,
              uid: bool) -> Deferred[dict[int, list[str]]]:
        """
        Set flags by renaming the files: which messages, which to rename and the renames
        are all worked out in a worker thread. Gives the new flags by sequence number.
        The session must not change its messages until this fires (its commands wait).
        """
        if not self.writeable:
            raise imap4.ReadOnlyMailbox()
        letters = set()
        for flag in flags:
            for system, letter in FLAG_LETTERS.items():
                if flag.lower() == system.lower():
                    letters.add(letter)

        def renamed(outcome: Stored) -> dict[int, list[str]]:
            done, error, result = outcome
            for u, where in done.items():
                entry = self.entries.get(u)
                if entry is not None:
                    entry.sub, entry.name = where
            if error is not None:
                raise error
            return result

        return self.run(store_flags, self.path, self.uids, self.entries, messages, uid,
                        letters, mode).addCallback(renamed)

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


def _parse(data: bytes) -> _Part:
    """The MIME tree of a message given with CRLF line ends."""
    _head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        body = b""
    message = email.message_from_bytes(data.replace(b"\r\n", b"\n"),
                                       policy=email.policy.compat32)
    return _Part(message, body)


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

    def _part(self) -> _Part:
        if self._top is None:
            self._top = _parse(self._bytes())
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
            path = self._mailbox._locate(self.entry)
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

    def getSubPart(self, part: int) -> _Part:
        return self._part().getSubPart(part)
