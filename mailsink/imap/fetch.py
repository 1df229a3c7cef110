"""
FETCH for L{mailsink.imap.protocol.SinkIMAP4Server}, and writing many C{* n FETCH} lines
without holding up the reactor.

A cheap FETCH (FLAGS, UID, RFC822.SIZE, INTERNALDATE) gets its message list, sizes and
dates from a worker thread, then is written L{FETCH_SLICE} messages a reactor turn; STORE's
replies go out the same way. Any other FETCH marks content it reads C{\\Seen} first, then
goes through Twisted's FETCH loop, each message's content items made in a worker thread
(L{mailsink.imap.items}, not Twisted's, which raise on malformed MIME) before it is
written, and every L{SPEW_BREAK}th message through the reactor. Items go out in
L{fetch_order}; a literal longer than L{STREAM_OVER} is streamed as the client reads.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.logger import Logger
from twisted.mail import imap4
from twisted.python.failure import Failure

from mailsink.imap.items import CONTENT, Item
from mailsink.imap.mailbox import MaildirMailbox
from mailsink.imap.message import MaildirMessage

if TYPE_CHECKING:
    from mailsink.imap.settings import IMAPSettings

log = Logger()

FETCH_SLICE = 2000
"""Messages answered per reactor turn by a cheap FETCH."""
SPEW_BREAK = 50
"""Every this many messages, a FETCH yields to the reactor."""
STREAM_OVER = 65536
"""Literals longer than this are written through a producer, as the client reads them."""
_CHEAP = frozenset({"flags", "uid", "rfc822size", "internaldate"})
_UID = imap4._FetchParser.UID()


class IMAPFetch(imap4.IMAP4Server):
    """The FETCH command and long FETCH-style replies; mixed into the protocol."""

    # Provided by the protocol.
    settings: IMAPSettings
    clock: Any
    transport: Any
    mbox: Any
    _spews: int
    _hold: Callable[[], Any]
    _valid_set: Callable[[bytes, imap4.MessageSet, int], bool]

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

    def spewMessage(self, id: int, msg: MaildirMessage, query: Any, uid: int) -> Any:
        """One C{* n FETCH}: content items made in a worker thread, then written."""
        items = fetch_order(query, bool(uid))
        rendered = msg.render([part for part in items if part.type in CONTENT])
        return rendered.addCallback(
            lambda made: self._scheduler(self._spew(id, msg, items, iter(made))))

    def _spew(self, id: int, msg: MaildirMessage, items: list[Any],
              made: Iterator[Item]) -> Iterator[Any]:
        """Write one message's items (C{made}: its content items, in order)."""
        out = [b"* %d FETCH (" % (id,)]
        for number, part in enumerate(items):
            if number:
                out.append(b" ")
            if part.type in CONTENT:
                text, literal = next(made)
            else:
                text, literal = self._cheap_item(part.type, msg), None
            out.append(text)
            if literal is None:
                continue
            if len(literal) <= STREAM_OVER:
                out.append(b" {%d}\r\n%b" % (len(literal), literal))
                continue
            self.transport.write(b"".join(out) + b" ")
            out = []
            yield imap4.FileProducer(io.BytesIO(literal)).beginProducing(self.transport)
        out.append(b")\r\n")
        self.transport.write(b"".join(out))

    def _cheap_item(self, kind: str, message: Any) -> bytes:
        """FLAGS, UID, RFC822.SIZE or INTERNALDATE of a message."""
        if kind == "flags":
            return b"FLAGS (" + " ".join(message.getFlags()).encode() + b")"
        if kind == "uid":
            return b"UID %d" % (message.getUID(),)
        if kind == "rfc822size":
            return b"RFC822.SIZE %d" % (message.getSize(),)
        chunks: list[bytes] = []
        self.spew_internaldate(0, message, chunks.append)
        return b"".join(chunks)

    def _cheap_fetch(self, tag: bytes, found: list[Any], query: Any,
                     uid: int) -> Deferred[None]:
        """FLAGS, UID, RFC822.SIZE, INTERNALDATE: written in slices, no per-item work."""
        kinds = [part.type for part in fetch_order(query, bool(uid))]
        return self._write_slices(
            tag, b"FETCH completed", found,
            lambda seq, m: b"* %d FETCH (%s)\r\n" % (
                seq, b" ".join(self._cheap_item(k, m) for k in kinds)))

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

    def _call_later(self, delay: float, call: Any) -> None:
        if self.clock is not None:
            self.clock.callLater(delay, call)
        else:
            from twisted.internet import reactor
            reactor.callLater(delay, call)


def fetch_order(query: Any, uid: bool) -> list[Any]:
    """
    The items of a FETCH response in the order real clients parse: C{UID} first (always
    there for C{UID FETCH}), then C{FLAGS}, then the other items that are not literals, and
    literals (message text, header and body sections) last; otherwise as asked. Dovecot,
    Gmail, Cyrus and Courier answer so, and scripts look for the UID before the first
    literal (C{re.search(rb"UID (\\d+)", item[0])} over imaplib's tuples).
    """
    items = list(query)
    if uid and not any(part.type == "uid" for part in items):
        items.append(_UID)
    return sorted(items, key=_rank)


def _rank(part: Any) -> int:
    """Where an item goes in L{fetch_order} (a stable sort keeps the asked order within)."""
    if part.type == "uid":
        return 0
    if part.type == "flags":
        return 1
    return 3 if _is_literal(part) else 2


def _is_literal(part: Any) -> bool:
    """Whether an item's value is sent as a literal: message text or a BODY[...] section."""
    if part.type in ("rfc822", "rfc822header", "rfc822text"):
        return True
    return part.type == "body" and bool(
        part.header or part.text or part.mime or part.empty or part.part)


def _reads_content(part: Any) -> bool:
    """A FETCH item that sets \\Seen (RFC 3501 6.4.5): RFC822, RFC822.TEXT, BODY[...]."""
    if part.type in ("rfc822", "rfc822text"):
        return True
    return part.type == "body" and not part.peek and _is_literal(part)
