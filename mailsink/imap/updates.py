"""
Keeping an IMAP client up to date, for L{mailsink.imap.protocol.SinkIMAP4Server}: NOOP,
CHECK and IDLE (every L{IDLE_POLL} seconds) rescan the Maildir in a worker thread and
report EXPUNGE, EXISTS and flag changes; one rescan at a time, its report shared by every
command that asked meanwhile.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.mail import imap4
from twisted.python.failure import Failure

from mailsink.imap.mailbox import MaildirMailbox

if TYPE_CHECKING:
    from mailsink.imap.settings import IMAPSettings

log = Logger()

IDLE_POLL = 1.0
"""Seconds between Maildir rescans while a client idles."""


class IMAPUpdates(imap4.IMAP4Server):
    """NOOP, CHECK, IDLE and the rescans behind them; mixed into the protocol."""

    _idle_poll: LoopingCall | None = None
    # Provided by the protocol.
    settings: IMAPSettings
    clock: Any
    transport: Any
    mbox: Any
    _scan_waiters: list[Deferred[None]]
    _hold: Callable[[], Any]

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
