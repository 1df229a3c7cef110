"""
Maildirs as IMAP mailboxes for C{twisted.mail.imap4}: the account (INBOX and one folder per
C{[mailbox:NAME]} the user may see), and the mailbox (one per selecting session, each with
its own view of sequence numbers). Its messages are L{mailsink.imap.message.MaildirMessage};
flags live in the file names (L{mailsink.imap.flags}); UIDs come from a L{UidMap} kept in
the state folder.

Nothing here touches the disk on the reactor thread in proportion to the number or size of
messages: listing the folders (L{mailsink.imap.changes}), giving UIDs, reading sizes and
dates, searching (L{mailsink.imap.search}), renaming and unlinking run through C{run} (a
worker thread in the daemon, see L{mailsink.imap.service}) and only hand back results; the
session's state (its message list, sequence numbers) is changed on the reactor thread from
those results.
"""

from __future__ import annotations

import bisect
import os
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.mail import imap4
from zope.interface import implementer

from mailsink.imap.changes import Changes, open_maildir, rescan
from mailsink.imap.entries import Entry, Moves, moves_in, scan
from mailsink.imap.flags import (
    SYSTEM_FLAGS,
    Stored,
    expunge_deleted,
    keyword_flags,
    store_flags,
)
from mailsink.imap.message import MaildirMessage, Measured, measure
from mailsink.imap.search import Match, Searched, search_messages
from mailsink.imap.sequences import select_ids
from mailsink.imap.uids import UidMap
from mailsink.tags.keywords import keyword_file
from mailsink.tags.names import is_imap_atom

Run = Callable[..., "Deferred[Any]"]
"""Runs a blocking call elsewhere (a worker thread) and gives its result as a Deferred."""


def inline(call: Callable[..., Any], *args: Any, **kwargs: Any) -> Deferred[Any]:
    """A L{Run} for tests: the call runs at once, on the calling thread."""
    return maybeDeferred(call, *args, **kwargs)


INBOX = "INBOX"


@implementer(imap4.IAccount)
class MaildirAccount:
    """
    A user's view: INBOX, backed by one Maildir, and one folder per C{[mailbox:NAME]}
    the user may see (C{folders}: name to Maildir path).
    """

    def __init__(self, path: str, user: str, state_dir: str, run: Run = inline,
                 folders: Mapping[str, str] | None = None) -> None:
        self.path = path
        self.user = user
        self.state_dir = state_dir
        self.run = run
        self.folders = dict(folders or {})

    def _path(self, name: str) -> str | None:
        """The Maildir of mailbox C{name} (INBOX in any case), None if there is none."""
        return self.path if name.upper() == INBOX else self.folders.get(name)

    def listMailboxes(self, ref: str, wildcard: str) -> list[tuple[str, Any]]:
        pattern = (ref or "") + (wildcard or "")
        if not pattern:
            return []
        wanted = imap4.wildcardToRegexp(pattern, "/")
        return [(name, _MailboxInfo()) for name in (INBOX, *self.folders)
                if wanted.fullmatch(name)]

    def select(self, name: str, rw: bool = True) -> Deferred[MaildirMailbox | None]:
        """The mailbox, once a worker thread has read the UID map and listed the folders."""
        path = self._path(name)
        if path is None:
            return succeed(None)

        def opened(found: tuple[UidMap, Changes | None]) -> MaildirMailbox:
            uid_map, snapshot = found
            mailbox = MaildirMailbox(path, uid_map, self.run)
            mailbox.writeable = bool(rw)
            mailbox.apply(snapshot)
            return mailbox

        return self.run(open_maildir, self.state_dir, path).addCallback(opened)

    def isSubscribed(self, name: str) -> bool:
        return self._path(name) is not None

    def subscribe(self, name: str) -> bool:
        if self._path(name) is None:
            raise imap4.MailboxException("No such mailbox")
        return True

    def unsubscribe(self, name: str) -> bool:
        raise imap4.MailboxException("Every mailbox stays subscribed")

    def addMailbox(self, name: str, mbox: Any = None) -> bool:
        raise imap4.MailboxException("Mailboxes come from the configuration only")

    def create(self, pathspec: str) -> bool:
        raise imap4.MailboxException("Mailboxes come from the configuration only")

    def delete(self, name: str) -> bool:
        raise imap4.MailboxException("Mailboxes cannot be deleted")

    def rename(self, oldname: str, newname: str) -> bool:
        raise imap4.MailboxException("Mailboxes cannot be renamed")


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
        self._keywords: dict[str, str] | None = None

    # Keeping up with the disk.

    def refresh(self) -> Deferred[tuple[list[int], dict[int, list[str]], int]]:
        """
        Rescan the Maildir and work out what changed (in a worker thread). Gives the
        sequence numbers expunged (in the order to report them: highest first), flags
        changed by others (new sequence number to flags), and the number of messages that
        exist when new ones arrived (else 0).

        The session must not change its messages until this fires (its commands wait).
        """
        self._keywords = None
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
        (only those: see L{mailsink.imap.entries.moves_in})."""
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
        """System flags and the folder's keywords (a small file, read when it changed)."""
        return [*SYSTEM_FLAGS, *(name for name in self.keywords().values()
                                 if is_imap_atom(name))]

    def keywords(self) -> dict[str, str]:
        """
        Keyword letter -> name, from the folder's C{dovecot-keywords}: read at most once
        between a rescan or STORE and the next (a small file), not once per message.
        """
        if self._keywords is None:
            self._keywords = keyword_file(self.path).names()
        return self._keywords

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
        return select_ids(self.uids, messages, uid)

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
        letters, keywords = keyword_flags(list(flags))

        def renamed(outcome: Stored) -> dict[int, list[str]]:
            done, error, result = outcome
            self._keywords = None
            for u, where in done.items():
                entry = self.entries.get(u)
                if entry is not None:
                    entry.sub, entry.name = where
            if error is not None:
                raise error
            return result

        return self.run(store_flags, self.path, self.uids, self.entries, messages, uid,
                        set(letters), mode, tuple(keywords)).addCallback(renamed)

    def locate(self, entry: Entry) -> str | None:
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
