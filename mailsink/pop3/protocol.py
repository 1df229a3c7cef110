"""
mailsink's POP3 server: a subclass of Twisted's C{POP3} that closes the gaps Twisted leaves.

- Input is split into commands by L{PipelinedInput}: a command waits for the previous
  one's asynchronous answer (PIPELINING keeps replies in order), lines longer than
  L{MAX_LINE} get an error and are skipped, and plaintext pipelined behind STLS is thrown
  away (RFC 2595 / the STARTTLS injection bug). The autologout timer stops while a
  command waits, as in Twisted's POP3.
- STLS (RFC 2595) on C{tls = starttls | starttls-required} listeners, advertised in CAPA
  only before TLS; C{starttls-required} refuses login before it. Without TLS, logins are
  refused (and USER/SASL not advertised) unless C{[auth] allow_insecure}.
- USER/PASS and AUTH PLAIN (RFC 5034) go to the cred portal for an C{IMailbox}; failures
  are logged without the password and slowed per client address.
- Every command checks its arguments; a bad one gets C{-ERR} and nothing changes on disk.
  STAT, LIST, UIDL, TOP, RETR, DELE, RSET, NOOP and QUIT work on the snapshot taken at
  login (L{mailsink.pop3.mailbox}); files are removed only at QUIT.
- No APOP (mailsink keeps password hashes), so the greeting has no timestamp.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.interfaces import IHandshakeListener, IReactorTime
from twisted.logger import Logger
from twisted.mail.pop3 import POP3
from twisted.python.failure import Failure
from zope.interface import implementer

from mailsink.auth.sasl import Plain
from mailsink.auth.throttle import FailureThrottle
from mailsink.metrics import Metrics
from mailsink.pipelining import PipelinedInput
from mailsink.pop3.login import POP3Login, Refused
from mailsink.pop3.mailbox import MaildirMailbox, MessageGone
from mailsink.smtp.diagnostics import looks_like_tls_client_hello

log = Logger()

MAX_LINE = 8192
"""Longest command line (RFC 2449 says 255 octets; SASL responses may need more)."""
IDLE_TIMEOUT = 600
"""RFC 1939: the autologout timer is at least 10 minutes."""

_AUTHORIZATION = frozenset({b"CAPA", b"USER", b"PASS", b"AUTH", b"STLS", b"QUIT", b"NOOP"})
_TRANSACTION = frozenset({b"CAPA", b"STAT", b"LIST", b"UIDL", b"TOP", b"RETR", b"DELE",
                          b"RSET", b"NOOP", b"QUIT"})
_BEFORE_STLS = frozenset({b"CAPA", b"STLS", b"QUIT", b"NOOP"})


@attrs.frozen
class POP3Settings:
    """What one POP3 listener is configured to do."""

    hostname: str
    listener: str
    tls_mode: str = "none"
    allow_insecure: bool = False
    idle_timeout: int = IDLE_TIMEOUT
    implicit_listeners: str = ""
    """The POP3S listeners, named in the warning for a TLS client on a plaintext port."""


@implementer(IHandshakeListener)
class SinkPOP3(POP3Login, PipelinedInput, POP3):
    """A POP3 server over the Maildir (see the module docstring)."""

    transport: Any
    mbox: MaildirMailbox | None
    factory: Any
    portal: Any
    max_line = MAX_LINE

    def __init__(self, settings: POP3Settings, portal: Any, tls_context: Any = None,
                 throttle: FailureThrottle | None = None, clock: IReactorTime | None = None,
                 metrics: Metrics | None = None) -> None:
        self.settings = settings
        self.portal = portal
        self.tls_context = tls_context
        self.throttle = throttle
        self.clock = clock
        self.metrics = metrics or Metrics()
        self.timeOut = settings.idle_timeout
        self.mbox = None
        self._user: bytes | None = None
        self._sasl: Plain | None = None
        self._quitting = False
        self._first_bytes = True

    # Connection and input.

    def client_address(self) -> str:
        peer = self.transport.getPeer()
        return str(getattr(peer, "host", peer))

    def connectionMade(self) -> None:
        if self.factory is not None:
            self.factory.connections += 1
        self.metrics.connections.labels(self.settings.listener).inc()
        self.successResponse(f"{self.settings.hostname} POP3 mailsink ready")
        self.setTimeout(self.timeOut)

    def handshakeCompleted(self) -> None:
        version = self.transport.getHandle().get_protocol_version_name()
        self.metrics.tls_handshakes.labels(self.settings.listener, version).inc()

    def connectionLost(self, reason: Failure | None = None) -> None:
        if self.factory is not None:
            self.factory.connections -= 1
        self.metrics.connections.labels(self.settings.listener).dec()
        self.mbox = None
        super().connectionLost(reason)

    def timeoutConnection(self) -> None:
        """RFC 1939 autologout: close without the UPDATE state (nothing is deleted)."""
        self.failResponse(b"[SYS/TEMP] autologout: idle for too long")
        self.transport.loseConnection()

    def dataReceived(self, data: bytes) -> None:
        if self._first_bytes:
            self._first_bytes = False
            if not self.tls_active and looks_like_tls_client_hello(data):
                where = (self.settings.implicit_listeners
                         or "a listener with tls = implicit (add one)")
                log.warn("[{listener}] {client} began a TLS handshake, but this listener "
                         "speaks plain POP3 (STLS on request): the client is set to "
                         "implicit TLS (POP3S, the port 995 style). Point it at {where}, "
                         "or set its security to STARTTLS.",
                         listener=self.settings.listener, client=self.client_address(),
                         where=where)
                self.transport.abortConnection()
                return
        self.resetTimeout()
        self.buffer_input(data)

    def _take_input(self) -> bool:
        """One command line; nothing after QUIT is acted on."""
        return not self._quitting and self._take_line()

    def _line_too_long(self) -> None:
        self._sasl = None
        self.reply_err(f"line too long (more than {MAX_LINE} octets)")

    def _longOperation(self, d: Deferred[Any]) -> Deferred[Any]:
        """
        L{_block_until} with the autologout timer stopped until C{d} has fired (Twisted's
        POP3 does the same); the timer restarts before the held commands run.
        """
        self.setTimeout(None)

        def restart_timer(result: object) -> object:
            if self._connected():
                self.setTimeout(self.timeOut)
            return result

        self._block_until(d.addBoth(restart_timer))
        return d

    def reply_ok(self, text: str = "") -> None:
        self.successResponse(text)

    def reply_err(self, text: str) -> None:
        self.failResponse(text.encode("utf-8"))

    def send_multiline(self, first: str, lines: list[bytes]) -> None:
        """C{+OK first}, the lines (byte-stuffed), and the terminating dot."""
        body = b"".join((b"." + line if line.startswith(b".") else line) + b"\r\n"
                        for line in lines)
        self.transport.write(f"+OK {first}\r\n".encode() + body + b".\r\n")

    def lineReceived(self, line: bytes) -> None:
        self.resetTimeout()
        if self._sasl is not None:
            self._sasl_line(line)
            return
        verb, _, rest = line.partition(b" ")
        verb = verb.upper()
        if not verb.isalpha() or len(verb) > 4:
            self.reply_err("unknown command")
            return
        allowed = _AUTHORIZATION if self.mbox is None else _TRANSACTION
        if verb not in _AUTHORIZATION | _TRANSACTION:
            self.reply_err("unknown command")
            return
        if verb not in allowed:
            self.reply_err("not logged in" if self.mbox is None
                           else "already logged in")
            return
        if (self.settings.tls_mode == "starttls-required" and not self.tls_active
                and verb not in _BEFORE_STLS):
            self.reply_err("[SYS/PERM] issue STLS first: this listener requires TLS")
            return
        handler: Callable[[bytes], Any] = getattr(self, "pop_" + verb.decode())
        try:
            handler(rest)
        except Refused as refused:
            self.reply_err(refused.text)

    # Arguments.

    @staticmethod
    def _args(rest: bytes, least: int, most: int, syntax: str) -> list[bytes]:
        args = rest.split()
        if not least <= len(args) <= most:
            raise Refused(f"syntax: {syntax}")
        return args

    def _number(self, arg: bytes, deleted_ok: bool = False) -> int:
        """A 0-based index from a message-number argument that names a live message."""
        assert self.mbox is not None
        if not arg.isdigit() or len(arg) > 9:
            raise Refused(f"invalid message-number: {arg.decode('ascii', 'replace')}")
        index = int(arg) - 1
        if not 0 <= index < len(self.mbox.messages):
            raise Refused(f"no such message, only {len(self.mbox.messages)} messages in "
                          "maildrop")
        if self.mbox.messages[index].deleted and not deleted_ok:
            raise Refused("message already deleted")
        return index

    # Authorization state.

    def capabilities(self) -> list[bytes]:
        caps = [b"TOP", b"UIDL", b"RESP-CODES", b"AUTH-RESP-CODE", b"PIPELINING",
                b"IMPLEMENTATION mailsink"]
        if self.mbox is None and self.login_allowed():
            caps += [b"USER", b"SASL PLAIN"]
        if self.can_stls and self.mbox is None:
            caps.append(b"STLS")
        return caps

    def pop_CAPA(self, rest: bytes) -> None:
        self._args(rest, 0, 0, "CAPA")
        self.send_multiline("Capability list follows", self.capabilities())

    def pop_NOOP(self, rest: bytes) -> None:
        self._args(rest, 0, 0, "NOOP")
        self.reply_ok()

    def pop_STLS(self, rest: bytes) -> None:
        self._args(rest, 0, 0, "STLS")
        if self.tls_active:
            raise Refused("TLS is already active")
        if not self.can_stls:
            raise Refused("STLS is not available on this listener")
        self.reply_ok("Begin TLS negotiation")
        if self.drop_pipelined():
            log.warn("[{listener}] {client} sent commands behind STLS before TLS began; "
                     "they were dropped (RFC 2595)", listener=self.settings.listener,
                     client=self.client_address())
        self._user = None
        self.transport.startTLS(self.tls_context)

    # Transaction state.

    def pop_STAT(self, rest: bytes) -> None:
        self._args(rest, 0, 0, "STAT")
        assert self.mbox is not None
        live = [m for m in self.mbox.messages if not m.deleted]
        self.reply_ok(f"{len(live)} {sum(m.size for m in live)}")

    def pop_LIST(self, rest: bytes) -> None:
        args = self._args(rest, 0, 1, "LIST [message-number]")
        assert self.mbox is not None
        if args:
            index = self._number(args[0])
            self.reply_ok(f"{index + 1} {self.mbox.messages[index].size}")
            return
        live = [(n, m) for n, m in enumerate(self.mbox.messages, 1) if not m.deleted]
        self.send_multiline(f"{len(live)} messages ({sum(m.size for _, m in live)} octets)",
                            [f"{n} {m.size}".encode() for n, m in live])

    def pop_UIDL(self, rest: bytes) -> None:
        args = self._args(rest, 0, 1, "UIDL [message-number]")
        assert self.mbox is not None
        if args:
            index = self._number(args[0])
            self.reply_ok(f"{index + 1} {self.mbox.messages[index].uidl}")
            return
        self.send_multiline("unique-id listing follows",
                            [f"{n} {m.uidl}".encode()
                             for n, m in enumerate(self.mbox.messages, 1) if not m.deleted])

    def pop_RETR(self, rest: bytes) -> None:
        args = self._args(rest, 1, 1, "RETR message-number")
        self._send_message(self._number(args[0]), None)

    def pop_TOP(self, rest: bytes) -> None:
        args = self._args(rest, 2, 2, "TOP message-number lines")
        index = self._number(args[0])
        if not args[1].isdigit() or len(args[1]) > 9:
            raise Refused("syntax: TOP message-number lines (a non-negative number)")
        self._send_message(index, int(args[1]))

    def _send_message(self, index: int, lines: int | None) -> None:
        assert self.mbox is not None
        size = self.mbox.messages[index].size

        def send(data: bytes) -> None:
            first = f"+OK {size} octets\r\n" if lines is None else "+OK top of message\r\n"
            self.transport.write(first.encode() + data + b".\r\n")

        def failed(failure: Failure) -> None:
            if failure.check(MessageGone):
                self.reply_err("[SYS/TEMP] message was removed by another client")
                return
            log.failure("[{listener}] cannot read a message", failure,
                        listener=self.settings.listener)
            self.reply_err("[SYS/TEMP] cannot read the message")

        self._longOperation(self.mbox.retrieve(index, lines).addCallbacks(send, failed))

    def pop_DELE(self, rest: bytes) -> None:
        args = self._args(rest, 1, 1, "DELE message-number")
        assert self.mbox is not None
        index = self._number(args[0])
        self.mbox.deleteMessage(index)
        self.reply_ok(f"message {index + 1} deleted")

    def pop_RSET(self, rest: bytes) -> None:
        self._args(rest, 0, 0, "RSET")
        assert self.mbox is not None
        self.mbox.undeleteMessages()
        live = self.mbox.messages
        self.reply_ok(f"maildrop has {len(live)} messages ({sum(m.size for m in live)} "
                      "octets)")

    def pop_QUIT(self, rest: bytes) -> None:
        if self.mbox is None:
            self.reply_ok(f"{self.settings.hostname} POP3 mailsink signing off")
            self.transport.loseConnection()
            return
        mailbox = self.mbox

        def done(failed: list[str]) -> None:
            if failed:
                self.reply_err(f"some deleted messages not removed: {len(failed)}")
            else:
                self.reply_ok(f"{self.settings.hostname} POP3 mailsink signing off")
            self.transport.loseConnection()

        def error(failure: Failure) -> None:
            log.failure("[{listener}] removing deleted messages failed", failure,
                        listener=self.settings.listener)
            self.reply_err("some deleted messages not removed")
            self.transport.loseConnection()

        self._quitting = True
        self._longOperation(maybeDeferred(mailbox.commit).addCallbacks(done, error))
