"""
The IMAP4rev1 server: C{twisted.mail.imap4.IMAP4Server} with mailsink's TLS and
credential rules, IDLE that pushes new mail, and bad input answered without hanging up.

- Before TLS (unless C{[auth] allow_insecure}): C{LOGINDISABLED}, no C{AUTH=} mechanism,
  LOGIN and AUTHENTICATE refused. C{starttls-required} allows only CAPABILITY, STARTTLS,
  NOOP and LOGOUT before TLS. Anything pipelined behind STARTTLS is thrown away (the
  STARTTLS injection bug).
- NOOP, CHECK and IDLE (every L{IDLE_POLL} seconds) rescan the Maildir and report
  EXPUNGE, EXISTS and flag changes.
- Disk work and work that grows with the mailbox (SELECT's and NOOP's scans, FETCH's
  message list, sizes, dates and content, SEARCH, STORE's planning and renames, EXPUNGE's
  and CLOSE's unlinks) runs in the mailbox's worker threads; commands
  that follow wait (L{SinkIMAP4Server._hold}) so replies keep their order.
- An over-long line gets C{* BAD} and is skipped; the connection stays.
"""

from __future__ import annotations

import contextlib
import re
from typing import Any

import attrs
from twisted.cred.error import UnauthorizedLogin
from twisted.internet import interfaces
from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.internet.task import LoopingCall, deferLater
from twisted.logger import Logger
from twisted.mail import imap4
from twisted.python.failure import Failure

from mailsink.auth.throttle import FailureThrottle
from mailsink.imap.mailbox import MaildirMailbox, MaildirMessage

log = Logger()

IDLE_POLL = 1.0
"""Seconds between Maildir rescans while a client idles."""
MAX_LINE = 65536
"""Longest command line accepted (long UID sets need room)."""
FETCH_SLICE = 2000
"""Messages answered per reactor turn by a cheap FETCH."""
SPEW_BREAK = 50
"""Every this many messages, a FETCH yields to the reactor."""
_CHEAP = frozenset({"flags", "uid", "rfc822size", "internaldate"})
_NO_CONTENT = frozenset({"flags", "uid"})
_BEFORE_STARTTLS = frozenset({b"CAPABILITY", b"STARTTLS", b"NOOP", b"LOGOUT"})


@attrs.frozen
class IMAPSettings:
    """What one [imap] listener is told."""

    hostname: str
    listener: str
    tls_mode: str
    allow_insecure: bool
    max_message_size: int


class SinkIMAP4Server(imap4.IMAP4Server):
    """One IMAP connection."""

    MAX_LENGTH = MAX_LINE
    _discarding = False
    _counted = False
    _idle_poll: LoopingCall | None = None
    clock: Any = None
    throttle: FailureThrottle | None = None
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
        self.portal = _ThrottledPortal(portal, self)
        self.IDENT = f"{settings.hostname} mailsink IMAP4rev1 ready".encode()

    # TLS and credentials.

    @property
    def tls_active(self) -> bool:
        return bool(self.startedTLS or
                    interfaces.ISSLTransport(self.transport, None) is not None)

    def _may_login(self) -> bool:
        return self.tls_active or self.settings.allow_insecure

    def capabilities(self) -> dict[bytes, Any]:
        cap: dict[bytes, Any] = {}
        if self._may_login():
            cap[b"AUTH"] = [b"PLAIN"]
        else:
            cap[b"LOGINDISABLED"] = None
        if self.ctx and self.canStartTLS and not self.tls_active:
            cap[b"STARTTLS"] = None
        cap[b"IDLE"] = None
        cap[b"NAMESPACE"] = None
        return cap

    def dispatchCommand(self, tag: bytes, cmd: bytes, rest: bytes | None,
                        uid: Any = None) -> Any:
        if (self.settings.tls_mode == "starttls-required" and not self.tls_active
                and cmd.upper() not in _BEFORE_STARTTLS):
            self.sendNegativeResponse(tag, b"[PRIVACYREQUIRED] Must issue a STARTTLS "
                                      b"command first")
            return None
        return super().dispatchCommand(tag, cmd, rest, uid)

    def do_STARTTLS(self, tag: bytes) -> None:
        if self.tls_active:
            self.sendBadResponse(tag, b"TLS already active")
            return
        if not (self.ctx and self.canStartTLS):
            self.sendNegativeResponse(tag, b"TLS not available")
            return
        self.sendPositiveResponse(tag, b"Begin TLS negotiation now")
        if self._buffer:
            log.warn("[{listener}] {client} sent commands behind STARTTLS before TLS "
                     "began; they were dropped", listener=self.settings.listener,
                     client=self._client())
        self._buffer = b""
        self.transport.startTLS(self.ctx)
        self.startedTLS = True

    unauth_STARTTLS: Any = (do_STARTTLS,)

    def do_LOGIN(self, tag: bytes, user: bytes, passwd: bytes) -> None:
        if not self._may_login():
            self.sendNegativeResponse(tag, b"[PRIVACYREQUIRED] LOGIN is disabled before "
                                      b"STARTTLS")
            return
        super().do_LOGIN(tag, user, passwd)

    unauth_LOGIN: Any = (do_LOGIN, imap4.IMAP4Server.arg_astring,
                    imap4.IMAP4Server.arg_finalastring)

    def do_AUTHENTICATE(self, tag: bytes, args: bytes) -> None:
        if not self._may_login():
            self.sendNegativeResponse(tag, b"[PRIVACYREQUIRED] AUTHENTICATE is disabled "
                                      b"before STARTTLS")
            return
        super().do_AUTHENTICATE(tag, args)

    unauth_AUTHENTICATE: Any = (do_AUTHENTICATE, imap4.IMAP4Server.arg_atom)

    def _refused(self, failure: Failure, user: Any) -> Any:
        """A failed login: logged, answered NO after the throttle's delay."""
        if not failure.check(UnauthorizedLogin):
            log.warn("[{listener}] checking credentials failed: {error}",
                     listener=self.settings.listener, error=failure.value)
            failure = Failure(UnauthorizedLogin(str(failure.value)))
        client = self._client()
        name = user.decode("utf-8", "replace") if isinstance(user, bytes) else str(user)
        delay = self.throttle.failed(client) if self.throttle is not None else 0.0
        log.warn("[{listener}] login failed for {user!r} from {client}",
                 listener=self.settings.listener, user=name, client=client)
        if not delay or self.clock is None:
            return failure
        return deferLater(self.clock, delay, lambda: failure)

    def _logged_in(self, result: Any) -> Any:
        if self.throttle is not None:
            self.throttle.succeeded(self._client())
        return result

    def _client(self) -> str:
        peer = self.transport.getPeer()
        return str(getattr(peer, "host", peer))

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

    auth_SELECT: Any = (_selectWork, imap4.IMAP4Server.arg_astring, 1, b"SELECT")
    select_SELECT: Any = auth_SELECT
    auth_EXAMINE: Any = (_selectWork, imap4.IMAP4Server.arg_astring, 0, b"EXAMINE")
    select_EXAMINE: Any = auth_EXAMINE

    def do_FETCH(self, tag: bytes, messages: Any, query: Any, uid: int = 0) -> None:
        if not self._valid_set(tag, messages, uid):
            return
        release = self._hold()
        if query and all(part.type in _CHEAP for part in query):
            kinds = {part.type for part in query}
            measured = self.mbox.fetch_measured(
                messages, bool(uid), "rfc822size" in kinds, "internaldate" in kinds) \
                if isinstance(self.mbox, MaildirMailbox) \
                else maybeDeferred(self.mbox.fetch, messages, uid)
            measured.addCallback(lambda found: self._cheap_fetch(tag, found, query, uid))
            measured.addErrback(self._fetch_failed, tag)
            measured.addBoth(release)
            return
        if not query:
            self.sendPositiveResponse(tag, b"FETCH complete")
            release()
            return
        mbox = self.mbox
        if mbox.isWriteable() and any(_reads_content(part) for part in query):
            seen = maybeDeferred(mbox.store, messages, ["\\Seen"], 1, uid)
        else:
            seen = succeed(None)

        def marked(result: Any) -> Deferred[Any]:
            if isinstance(result, Failure):
                log.warn("[{listener}] could not mark messages seen: {error}",
                         listener=self.settings.listener, error=result.value)
            return mbox.fetch_later(messages, bool(uid)) \
                if isinstance(mbox, MaildirMailbox) \
                else maybeDeferred(mbox.fetch, messages, uid=uid)

        def listed(found: list[Any]) -> None:
            # Twisted's FETCH writes the messages (content read in a worker, see
            # spewMessage), keeping the commands that follow blocked, then releases them.
            self._oldTimeout = self.setTimeout(None)
            self._IMAP4Server__cbFetch(  # type: ignore[attr-defined]
                iter(found), tag, query, uid)

        def failed(failure: Failure) -> None:
            self._fetch_failed(failure, tag)
            release()

        seen.addBoth(marked).addCallbacks(listed, failed)

    def _fetch_failed(self, failure: Failure, tag: bytes) -> None:
        log.failure("FETCH failed", failure)
        self.sendBadResponse(tag, b"FETCH failed: " + str(failure.value).encode())

    def spewMessage(self, id: int, msg: Any, query: Any, uid: int) -> Any:
        """Content is read (and parsed) in a worker thread first."""
        spew = super().spewMessage
        if isinstance(msg, MaildirMessage) and \
                any(part.type not in _NO_CONTENT for part in query):
            return msg.preload().addCallback(lambda _: spew(id, msg, query, uid))
        return spew(id, msg, query, uid)

    def _cheap_fetch(self, tag: bytes, found: list[Any], query: Any,
                     uid: int) -> Deferred[None]:
        """FLAGS, UID, RFC822.SIZE, INTERNALDATE: written in slices, no per-item work."""
        kinds = [part.type for part in query]
        if uid and "uid" not in kinds:
            kinds.append("uid")
        mbox = self.mbox
        position = 0
        done: Deferred[None] = Deferred()

        def item(kind: str, message: Any) -> bytes:
            if kind == "flags":
                return b"FLAGS (" + " ".join(message.getFlags()).encode() + b")"
            if kind == "uid":
                return b"UID %d" % (message.getUID(),)
            if kind == "rfc822size":
                return b"RFC822.SIZE %d" % (message.getSize(),)
            chunks: list[bytes] = []
            self.spew_internaldate(0, message, chunks.append)
            return b"".join(chunks)

        def step() -> None:
            nonlocal position
            if self.mbox is not mbox or self.transport is None:
                done.callback(None)
                return
            lines = [b"* %d FETCH (%s)\r\n" % (seq, b" ".join(item(k, m) for k in kinds))
                     for seq, m in found[position:position + FETCH_SLICE]]
            self.transport.write(b"".join(lines))
            position += FETCH_SLICE
            if position < len(found):
                self._call_later(0, step)
                return
            self.sendPositiveResponse(tag, b"FETCH completed")
            done.callback(None)

        step()
        return done

    def _run_steps(self, steps: Any) -> Deferred[None]:
        """
        Run a FETCH response's steps at once, not one per reactor turn as Twisted's
        default does; every L{SPEW_BREAK}th message goes through the reactor so the
        per-message callback chain never grows deep.
        """
        done: Deferred[None] = Deferred()

        def run() -> None:
            try:
                for step in steps:
                    if isinstance(step, Deferred) and not step.called:
                        step.addCallbacks(lambda _: run(), done.errback)
                        return
            except Exception:
                done.errback(Failure())
                return
            done.callback(None)

        self._spews += 1
        if self._spews % SPEW_BREAK:
            run()
        else:
            self._call_later(0, run)
        return done

    select_FETCH: Any = (do_FETCH, imap4.IMAP4Server.arg_seqset,
                    imap4.IMAP4Server.arg_fetchatt)

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
                lambda seq, now: b"* %d FETCH (FLAGS (%s)%s)\r\n" % (
                    seq, b" ".join(flag.encode() for flag in now),
                    b" UID %d" % (mbox.getUID(seq),) if uid else b""))

        def failed(failure: Failure) -> None:
            self.sendBadResponse(tag, b"Server error: " + str(failure.value).encode())

        maybeDeferred(mbox.store, messages, names, how, uid=uid).addCallbacks(
            stored, failed).addBoth(release)

    def _write_slices(self, tag: bytes, done_text: bytes, items: list[Any],
                      line: Any) -> Deferred[None]:
        """Write one line per item, L{FETCH_SLICE} per reactor turn, then the tagged OK."""
        mbox = self.mbox
        position = 0
        done: Deferred[None] = Deferred()

        def step() -> None:
            nonlocal position
            if self.mbox is not mbox or self.transport is None:
                done.callback(None)
                return
            self.transport.write(b"".join(
                line(*item) for item in items[position:position + FETCH_SLICE]))
            position += FETCH_SLICE
            if position < len(items):
                self._call_later(0, step)
                return
            self.sendPositiveResponse(tag, done_text)
            done.callback(None)

        step()
        return done

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
            return bool(self._searchFilter(_copy(query), seq, message, last_seq, last_uid))

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
        return _needle(query.pop(0)) in msg.open().read().lower()

    def search_BODY(self, query: Any, id: int, msg: Any) -> bool:
        return _needle(query.pop(0)) in msg.getBodyFile().read().lower()

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

    # Keeping the client up to date.

    def report_changes(self) -> Deferred[None]:
        """
        Rescan the selected mailbox (in a worker thread) and tell the client what
        changed; the Deferred fires once that is written (it never fails).
        """
        mbox: Any = self.mbox
        if not isinstance(mbox, MaildirMailbox):
            return succeed(None)
        done: Deferred[None] = Deferred()
        self._scan_waiters.append(done)
        if len(self._scan_waiters) == 1:  # else one is running: its report will do
            mbox.refresh().addCallbacks(
                self._report, self._rescan_failed, callbackArgs=(mbox,),
                errbackArgs=(mbox,)).addBoth(self._scanned)
        return done

    def _scanned(self, _: Any) -> None:
        waiters, self._scan_waiters = self._scan_waiters, []
        for waiter in waiters:
            waiter.callback(None)

    def _rescan_failed(self, failure: Failure, mbox: MaildirMailbox) -> None:
        log.warn("[{listener}] rescanning {path} failed: {error}",
                 listener=self.settings.listener, path=mbox.path, error=failure.value)

    def _report(self, found: tuple[list[int], dict[int, list[str]], int],
                mbox: MaildirMailbox) -> None:
        expunged, changed, exists = found
        if self.mbox is not mbox or self.transport is None:
            return
        for seq in expunged:
            self.sendUntaggedResponse(b"%d EXPUNGE" % (seq,))
        if exists or expunged:
            self.sendUntaggedResponse(b"%d EXISTS" % (mbox.getMessageCount(),))
        for seq, flags in sorted(changed.items()):
            encoded = b" ".join(flag.encode() for flag in flags)
            self.sendUntaggedResponse(b"%d FETCH (FLAGS (%s))" % (seq, encoded))

    def do_NOOP(self, tag: bytes) -> None:
        release = self._hold()
        self.report_changes().addCallback(
            lambda _: self.sendPositiveResponse(tag, b"NOOP completed")).addBoth(release)

    unauth_NOOP: Any = (do_NOOP,)
    auth_NOOP: Any = unauth_NOOP
    select_NOOP: Any = unauth_NOOP

    def do_CHECK(self, tag: bytes) -> None:
        release = self._hold()
        self.report_changes().addCallback(
            lambda _: self.sendPositiveResponse(tag, b"CHECK completed")).addBoth(release)

    select_CHECK: Any = (do_CHECK,)

    def do_IDLE(self, tag: bytes) -> None:
        super().do_IDLE(tag)
        if self.mbox is not None:
            self._idle_poll = LoopingCall(self.report_changes)
            if self.clock is not None:
                self._idle_poll.clock = self.clock
            self._idle_poll.start(IDLE_POLL, now=True)

    select_IDLE: Any = (do_IDLE,)
    auth_IDLE: Any = select_IDLE

    def parse_idle(self, *args: Any) -> None:
        self._stop_idle()
        line = args[0] if args else b""
        if line.strip().upper() != b"DONE":
            self.parseState = self.lastState
            del self.lastState
            self.sendBadResponse(self.parseTag, b"Expected DONE")
            del self.parseTag
            return
        if not self._scan_waiters:
            super().parse_idle(*args)
            return
        # A scan is still running: its updates come before IDLE's OK.
        release = self._hold()
        finish = super().parse_idle
        self.report_changes().addCallback(lambda _: finish(*args)).addBoth(release)

    def _stop_idle(self) -> None:
        if self._idle_poll is not None and self._idle_poll.running:
            self._idle_poll.stop()
        self._idle_poll = None

    def _call_later(self, delay: float, call: Any) -> None:
        if self.clock is not None:
            self.clock.callLater(delay, call)
        else:
            from twisted.internet import reactor
            reactor.callLater(delay, call)

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


def _copy(query: Any) -> Any:
    """
    A deep copy of a parsed search query (Twisted's filter consumes it), with words as
    text (Twisted compares them with header text); sequence sets stay bytes.
    """
    copied: list[Any] = []
    previous: Any = None
    for item in query:
        if isinstance(item, list):
            copied.append(_copy(item))
        elif isinstance(item, bytes) and not (
                _SEQUENCE_SET.fullmatch(item) and str(previous).upper() not in _TEXT_KEYS):
            copied.append(item.decode("utf-8", "replace"))
        else:
            copied.append(item)
        previous = copied[-1]
    return copied


_SEQUENCE_SET = re.compile(rb"[0-9*:,]+")
_TEXT_KEYS = frozenset({"BCC", "BODY", "CC", "FROM", "HEADER", "KEYWORD", "SUBJECT", "TEXT",
                        "TO", "UNKEYWORD", "LARGER", "SMALLER"})


class _ThrottledPortal:
    """The portal, with failed logins (LOGIN and AUTHENTICATE alike) slowed down."""

    def __init__(self, portal: Any, server: SinkIMAP4Server) -> None:
        self.portal = portal
        self.server = server

    def login(self, credentials: Any, mind: Any, *interfaces: Any) -> Deferred[Any]:
        login = maybeDeferred(self.portal.login, credentials, mind, *interfaces)
        return login.addCallbacks(self.server._logged_in, self.server._refused,
                                  errbackArgs=(getattr(credentials, "username", b""),))


def _reads_content(part: Any) -> bool:
    """A FETCH item that sets \\Seen (RFC 3501 6.4.5): RFC822, RFC822.TEXT, BODY[...]."""
    if part.type in ("rfc822", "rfc822text"):
        return True
    return part.type == "body" and not part.peek and bool(
        part.header or part.text or part.mime or part.empty or part.part)


def _needle(value: Any) -> bytes:
    text = value if isinstance(value, bytes) else str(value).encode("utf-8")
    return text.lower()
