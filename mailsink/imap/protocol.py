"""
The IMAP4rev1 server: C{twisted.mail.imap4.IMAP4Server} with mailsink's TLS and
credential rules (L{mailsink.imap.login}), FETCH (L{mailsink.imap.fetch}), IDLE that
pushes new mail (L{mailsink.imap.updates}), and bad input answered without hanging up.

- Disk work and work that grows with the mailbox (SELECT's and NOOP's scans, FETCH's
  message list, sizes, dates and content, SEARCH, STORE's planning and renames, EXPUNGE's
  and CLOSE's unlinks) runs in the mailbox's worker threads; commands
  that follow wait (L{SinkIMAP4Server._hold}) so replies keep their order.
- An over-long line gets C{* BAD} and is skipped; the connection stays.
"""

from __future__ import annotations

import contextlib
from typing import Any

from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.logger import Logger
from twisted.mail import imap4
from twisted.python.failure import Failure

from mailsink.imap.fetch import IMAPFetch
from mailsink.imap.login import IMAPLogin, ThrottledPortal
from mailsink.imap.mailbox import MaildirMailbox
from mailsink.imap.search import copy_query, needle, sent_day
from mailsink.imap.settings import IMAPSettings
from mailsink.imap.updates import IMAPUpdates
from mailsink.tags.keywords import TagLimit

log = Logger()

MAX_LINE = 65536
"""Longest command line accepted (long UID sets need room)."""


class SinkIMAP4Server(IMAPLogin, IMAPFetch, IMAPUpdates):
    """One IMAP connection."""

    MAX_LENGTH = MAX_LINE
    _discarding = False
    _counted = False
    clock: Any = None
    transport: Any
    mbox: Any
    portal: Any

    def __init__(self, settings: IMAPSettings, portal: Any, tls_context: Any,
                 scheduler: Any = None) -> None:
        offer = tls_context if settings.tls_mode in ("starttls", "starttls-required") \
            else None
        super().__init__({b"PLAIN": imap4.PLAINCredentials}, offer,
                         scheduler or self._run_steps)
        self._spews = 0
        self._scan_waiters: list[Deferred[None]] = []
        self.settings = settings
        self.portal = ThrottledPortal(portal, self)
        self.IDENT = f"{settings.hostname} mailsink IMAP4rev1 ready".encode()

    # Bad input.

    def dataReceived(self, data: bytes) -> Any:
        if self._discarding:
            newline = data.find(b"\n")
            if newline < 0:
                return None
            self._discarding = False
            data = data[newline + 1:]
            if not data:
                return None
        return super().dataReceived(data)

    def lineLengthExceeded(self, line: bytes) -> None:
        self.sendBadResponse(None, b"Line too long")
        end = line.find(b"\n")
        if end < 0:
            self._discarding = True
            return
        rest = line[end + 1:]
        if rest:
            super().dataReceived(rest)

    def arg_literal(self, line: bytes) -> Any:
        size = line[1:-1] if line[:1] == b"{" and line[-1:] == b"}" else b""
        if size.isdigit() and int(size) > self.settings.max_message_size:
            raise imap4.IllegalClientResponse(
                f"Literal too large: at most {self.settings.max_message_size} octets")
        return super().arg_literal(line)

    auth_APPEND: Any = (imap4.IMAP4Server.do_APPEND, imap4.IMAP4Server.arg_astring,
                        imap4.IMAP4Server.opt_plist, imap4.IMAP4Server.opt_datetime,
                        arg_literal)
    select_APPEND: Any = auth_APPEND

    def _valid_set(self, tag: bytes, messages: imap4.MessageSet, uid: int) -> bool:
        """Sequence numbers must exist (UIDs need not)."""
        if uid:
            return True
        count = self.mbox.getMessageCount()
        with contextlib.suppress(ValueError):
            messages.last = count
        for low, high in messages.ranges:
            if low < 1 or high > count:
                self.sendBadResponse(tag, b"Invalid message sequence number")
                return False
        return True

    # Waiting for worker threads.

    def _hold(self) -> Any:
        """
        Hold back the commands that follow (they queue in C{blocked}) until the returned
        call releases them: a command's reply comes before the next command runs.
        """
        mine = self.blocked is None
        if mine:
            self.blocked = []

        def release(result: Any = None) -> Any:
            if mine and self.blocked is not None:
                self._unblock()
            return result

        return release

    # Commands.

    def _selectWork(self, tag: bytes, name: bytes, rw: int, cmdName: bytes) -> None:
        """SELECT and EXAMINE: the mailbox is opened (scanned) in a worker thread."""
        if self.mbox:
            self.mbox.removeListener(self)
            closeable = imap4.ICloseableMailbox(self.mbox, None)
            if closeable is not None:
                maybeDeferred(closeable.close).addErrback(
                    lambda failure: log.failure("closing a mailbox", failure))
            self.mbox = None
            self.state = "auth"
        release = self._hold()
        account: Any = self.account
        opened: Deferred[Any] = maybeDeferred(account.select, imap4._parseMbox(name), rw)
        opened.addCallback(self._cbSelectWork, cmdName, tag)
        opened.addErrback(self._ebSelectWork, cmdName, tag)
        opened.addBoth(release)

    def _cbSelectWork(self, mbox: Any, cmdName: bytes, tag: bytes) -> None:
        """
        Twisted's answer to SELECT/EXAMINE with C{PERMANENTFLAGS} added (RFC 3501 6.3.1):
        the system flags, the folder's keywords and C{\\*}, as new keywords are kept (they
        become tags).
        """
        if mbox is None:
            self.sendNegativeResponse(tag, b"No such mailbox")
            return
        flags = [flag.encode() for flag in mbox.getFlags()]
        self.sendUntaggedResponse(b"%d EXISTS" % (mbox.getMessageCount(),))
        self.sendUntaggedResponse(b"%d RECENT" % (mbox.getRecentCount(),))
        self.sendUntaggedResponse(b"FLAGS (" + b" ".join(flags) + b")")
        if mbox.isWriteable():
            self.sendPositiveResponse(None, b"[PERMANENTFLAGS (" + b" ".join(flags)
                                      + b" \\*)] Flags and new keywords are kept")
        self.sendPositiveResponse(None, b"[UIDVALIDITY %d]" % (mbox.getUIDValidity(),))
        mode = b"READ-WRITE" if mbox.isWriteable() else b"READ-ONLY"
        mbox.addListener(self)
        self.sendPositiveResponse(tag, b"[" + mode + b"] " + cmdName + b" successful")
        self.state = "select"
        self.mbox = mbox

    auth_SELECT: Any = (_selectWork, imap4.IMAP4Server.arg_astring, 1, b"SELECT")
    select_SELECT: Any = auth_SELECT
    auth_EXAMINE: Any = (_selectWork, imap4.IMAP4Server.arg_astring, 0, b"EXAMINE")
    select_EXAMINE: Any = auth_EXAMINE

    def do_STORE(self, tag: bytes, messages: Any, mode: bytes, flags: Any,
                 uid: int = 0) -> None:
        if not self._valid_set(tag, messages, uid):
            return
        mode = mode.upper()
        silent = mode.endswith(b"SILENT")
        how = 1 if mode.startswith(b"+") else -1 if mode.startswith(b"-") else 0
        names = [flag.decode("utf-8", "replace") if isinstance(flag, bytes) else flag
                 for flag in flags]
        mbox = self.mbox
        release = self._hold()

        def stored(result: dict[int, list[str]]) -> Deferred[None] | None:
            if not result or silent:
                self.sendPositiveResponse(tag, b"STORE completed")
                return None
            return self._write_slices(
                tag, b"STORE completed", sorted(result.items()),
                lambda seq, now: b"* %d FETCH (%sFLAGS (%s))\r\n" % (
                    seq, b"UID %d " % (mbox.getUID(seq),) if uid else b"",
                    b" ".join(flag.encode() for flag in now)))

        def failed(failure: Failure) -> None:
            if failure.check(TagLimit):
                self.sendNegativeResponse(tag, b"[LIMIT] " + str(failure.value).encode())
                return
            self.sendBadResponse(tag, b"Server error: " + str(failure.value).encode())

        maybeDeferred(mbox.store, messages, names, how, uid=uid).addCallbacks(
            stored, failed).addBoth(release)

    select_STORE: Any = (do_STORE, imap4.IMAP4Server.arg_seqset, imap4.IMAP4Server.arg_atom,
                         imap4.IMAP4Server.arg_flaglist)

    def do_SEARCH(self, tag: bytes, charset: Any, query: Any, uid: int = 0) -> None:
        """
        The candidates, the criteria and any file reads (headers, TEXT, BODY, sizes,
        dates) are worked through in a worker thread; commands that follow wait.
        Always one C{* SEARCH}.
        """
        mbox: Any = self.mbox
        release = self._hold()

        def match(seq: int, message: Any, last_seq: int, last_uid: int) -> bool:
            # (Worker thread.) Twisted's criteria read only the message they are given.
            return bool(self._searchFilter(copy_query(query), seq, message, last_seq,
                                           last_uid))

        if isinstance(mbox, MaildirMailbox):
            searched = mbox.search(match, bool(uid))
        else:
            searched = maybeDeferred(self._search_inline, mbox, match, bool(uid))

        def answer(found: list[int]) -> None:
            self.sendUntaggedResponse(b" ".join([b"SEARCH", *(b"%d" % n for n in found)]))
            self.sendPositiveResponse(tag, b"SEARCH completed")

        def failed(failure: Failure) -> None:  # a query Twisted cannot evaluate
            self.sendBadResponse(tag, b"Bad search: " + str(failure.value).encode())

        searched.addCallbacks(answer, failed).addBoth(release)

    @staticmethod
    def _search_inline(mbox: Any, match: Any, by_uid: bool) -> list[int]:
        """SEARCH over a mailbox that is not a Maildir (none in the daemon)."""
        messages = mbox.fetch(imap4.MessageSet(1, None), uid=False)
        last_seq = len(messages)
        last_uid = messages[-1][1].getUID() if messages else 0
        return [message.getUID() if by_uid else seq for seq, message in messages
                if match(seq, message, last_seq, last_uid)]

    _requiresLastMessageInfo: Any = {b"OR", b"NOT", b"UID", "OR", "NOT", "UID"}

    def search_TEXT(self, query: Any, id: int, msg: Any) -> bool:
        return needle(query.pop(0)) in msg.open().read().lower()

    def search_BODY(self, query: Any, id: int, msg: Any) -> bool:
        return needle(query.pop(0)) in msg.getBodyFile().read().lower()

    def search_HEADER(self, query: Any, id: int, msg: Any) -> bool:
        """Only messages that have the field match, even an empty string (RFC 3501)."""
        name, text = str(query.pop(0)).lower(), str(query.pop(0)).lower()
        found = msg.getHeaders(False, name)
        return name in found and text in found[name].lower()

    def search_SENTBEFORE(self, query: Any, id: int, msg: Any) -> bool:
        return sent_day(msg) < imap4.parseTime(query.pop(0))[:3]

    def search_SENTON(self, query: Any, id: int, msg: Any) -> bool:
        return sent_day(msg) == imap4.parseTime(query.pop(0))[:3]

    def search_SENTSINCE(self, query: Any, id: int, msg: Any) -> bool:
        return sent_day(msg) >= imap4.parseTime(query.pop(0))[:3]

    def search_KEYWORD(self, query: Any, id: int, msg: Any) -> bool:
        """A keyword (a tag) among the message's flags (Twisted's never matches)."""
        keyword = str(query.pop(0)).lower()
        return any(flag.lower() == keyword for flag in msg.getFlags())

    def search_UNKEYWORD(self, query: Any, id: int, msg: Any) -> bool:
        return not self.search_KEYWORD(query, id, msg)

    select_SEARCH: Any = (do_SEARCH, imap4.IMAP4Server.opt_charset,
                          imap4.IMAP4Server.arg_searchkeys)

    def do_EXPUNGE(self, tag: bytes) -> None:
        if not self.mbox.isWriteable():
            self.sendNegativeResponse(tag, b"EXPUNGE ignored on read-only mailbox")
            return
        release = self._hold()

        def expunged(gone: list[int]) -> None:
            for seq in gone:
                self.sendUntaggedResponse(b"%d EXPUNGE" % (seq,))
            self.sendPositiveResponse(tag, b"EXPUNGE completed")

        def failed(failure: Failure) -> None:
            self.sendBadResponse(tag, b"EXPUNGE failed: " + str(failure.value).encode())

        maybeDeferred(self.mbox.expunge).addCallbacks(expunged, failed).addBoth(release)

    select_EXPUNGE: Any = (do_EXPUNGE,)

    def do_CLOSE(self, tag: bytes) -> None:
        """Expunge (in a worker thread, no EXPUNGE replies) and leave the mailbox; the
        commands that follow wait for it."""
        mbox = self.mbox
        release = self._hold()
        expunged = maybeDeferred(mbox.expunge) if mbox.isWriteable() else succeed(None)
        closeable = imap4.ICloseableMailbox(mbox, None)
        if closeable is not None:
            expunged.addCallback(lambda _: closeable.close())

        def closed(_: Any) -> None:
            self.sendPositiveResponse(tag, b"CLOSE completed")
            mbox.removeListener(self)
            if self.mbox is mbox:
                self.mbox = None
                self.state = "auth"

        def failed(failure: Failure) -> None:
            self.sendBadResponse(tag, b"CLOSE failed: " + str(failure.value).encode())

        expunged.addCallbacks(closed, failed).addBoth(release)

    select_CLOSE: Any = (do_CLOSE,)

    def do_UID(self, tag: bytes, command: bytes, line: bytes) -> None:
        command = command.upper()
        if command not in (b"FETCH", b"STORE", b"SEARCH"):
            raise imap4.IllegalClientResponse(command.decode("ascii", "replace"))
        self.dispatchCommand(tag, command, line, uid=1)

    select_UID: Any = (do_UID, imap4.IMAP4Server.arg_atom, imap4.IMAP4Server.arg_line)

    # The connection.

    def connectionMade(self) -> None:
        factory = getattr(self, "factory", None)
        if factory is not None and hasattr(factory, "connections"):
            factory.connections += 1
            self._counted = True
        super().connectionMade()

    def connectionLost(self, reason: Any = None) -> None:
        if self._counted:
            self._counted = False
            self.factory.connections -= 1
        self._stop_idle()
        if self.mbox is not None:
            self.mbox.removeListener(self)
            self.mbox = None
        super().connectionLost(reason)
