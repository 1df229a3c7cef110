"""
mailsink's ESMTP server protocol: one subclass of Twisted's C{ESMTP} that closes the gaps
Twisted leaves (see C{shared/style.md}).

- Input is split into commands by L{PipelinedInput}, not by C{LineOnlyReceiver}: commands
  wait for the previous one's asynchronous answer (pipelined replies stay in order),
  plaintext pipelined behind STARTTLS is thrown away (the STARTTLS injection bug), and DATA
  is decoded in bulk by L{DataDecoder} and streamed to the store instead of being fed line
  by line.
- SIZE is advertised and enforced while streaming; PIPELINING, 8BITMIME, SMTPUTF8 and
  ENHANCEDSTATUSCODES are advertised; every reply carries an enhanced status code.
- STARTTLS forgets HELO and the transaction (RFC 3207 section 4.2); it is never offered on
  an implicit-TLS listener; C{starttls-required} refuses mail before TLS.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import attrs
from OpenSSL import SSL
from twisted.cred.credentials import Anonymous
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.interfaces import IHandshakeListener
from twisted.logger import Logger
from twisted.mail.smtp import ESMTP
from twisted.python.failure import Failure
from zope.interface import implementer

from mailsink.chaos import Chaos
from mailsink.index.codec import message_id
from mailsink.metrics import Metrics
from mailsink.pipelining import PipelinedInput
from mailsink.sessions.diagnosis import ListenerHints, diagnose, tls_on_plaintext_port
from mailsink.sessions.record import Session, SessionRecorder
from mailsink.sessions.redact import transcript_line
from mailsink.smtp.auth import AuthSetup, SMTPAuthentication
from mailsink.smtp.body import MAX_LINE, DataDecoder
from mailsink.smtp.commands import Reply, parse_path
from mailsink.smtp.diagnostics import looks_like_tls_client_hello, warn
from mailsink.store.delivery import DeliveryRefused, Envelope, IMailboxDelivery
from mailsink.store.maildir import IncomingMessage
from mailsink.tls import openssl_reason

log = Logger()

MAX_COMMAND_LINE = 16384
"""Longest command line: RFC 4954 asks for 12,288 octets of AUTH response, plus room."""

_BEFORE_STARTTLS = frozenset({b"EHLO", b"HELO", b"STARTTLS", b"NOOP", b"RSET", b"QUIT"})


@attrs.frozen
class SMTPSettings:
    """What one SMTP listener is configured to do."""

    hostname: str
    listener: str
    tls_mode: str
    max_message_size: int
    max_recipients: int
    auth: str = "none"
    """C{none}, C{optional} or C{required} (see L{SMTPAuthentication})."""
    allow_insecure: bool = False
    """Offer AUTH without TLS too."""
    idle_timeout: int = 300
    long_lines: str = "accept"
    """C{accept} stores lines over 998 octets as production servers do; C{refuse} answers
    RFC 5321's 500 5.5.2 and stores nothing."""
    hints: ListenerHints = attrs.field(
        default=attrs.Factory(lambda self: ListenerHints(self.listener), takes_self=True))
    """Which listeners serve the other TLS modes, for the 465-vs-587 warnings."""
    chaos: Chaos | None = None
    """Fault injection (C{[mailsink] chaos = true}); None leaves every reply alone."""


@implementer(IHandshakeListener)
class SinkESMTP(SMTPAuthentication, PipelinedInput, ESMTP):
    """An ESMTP server that stores every message it is given (see the module docstring)."""

    transport: Any
    delivery: Any
    portal: Any
    _helo: Any
    max_line = MAX_COMMAND_LINE

    def __init__(self, settings: SMTPSettings, portal: Any, tls_context: Any = None,
                 auth_setup: AuthSetup | None = None, metrics: Metrics | None = None,
                 session_sink: Callable[[Session], None] | None = None) -> None:
        offer_starttls = settings.tls_mode in ("starttls", "starttls-required")
        super().__init__(contextFactory=tls_context if offer_starttls else None)
        self.settings = settings
        self.portal = portal
        self.auth_setup = auth_setup
        self.metrics = metrics or Metrics()
        self.host = settings.hostname.encode("idna")
        self.timeout = int(settings.idle_timeout)
        self._first_bytes = True
        self._esmtp = False
        self._smtputf8 = False
        self._recipients: list[str] = []
        self._decoder: DataDecoder | None = None
        self._message: IncomingMessage | None = None
        self._session_sink = session_sink
        self._storing: Deferred[Any] | None = None
        """The message being fsynced, until its 250 or 452 (the session waits for it)."""
        self.session: SessionRecorder | None = None
        """This connection's session (see L{mailsink.sessions}), from connectionMade on."""
        self._unsent: list[tuple[int, str]] | None = None
        """On implicit TLS, replies (the greeting) that wait for the handshake to reach the
        wire: the transcript takes them only then."""

    # Connection and input.

    def connectionMade(self) -> None:
        peer = self.transport.getPeer()
        port = getattr(peer, "port", None)
        client = self.client_address()
        self.session = SessionRecorder(
            self.settings.listener,
            client if port is None else (f"[{client}]:{port}" if ":" in client
                                         else f"{client}:{port}"),
            time.time)
        if self.tls_active:
            self._unsent = []
        super().connectionMade()
        if self.factory is not None:
            self.factory.connections += 1
        self.metrics.connections.labels(self.settings.listener).inc()

    def handshakeCompleted(self) -> None:
        """Count TLS handshakes by version (implicit TLS and STARTTLS alike); tell the session,
        and let it have the greeting an implicit-TLS client only now receives."""
        handle = self.transport.getHandle()
        version = handle.get_protocol_version_name()
        self.metrics.tls_handshakes.labels(self.settings.listener, version).inc()
        unsent, self._unsent = self._unsent or [], None
        if self.session is not None:
            self.session.tls_started("starttls" if self.startedTLS else "implicit", version,
                                     handle.get_cipher_name() or "")
            for code, text in unsent:
                self.session.server_said(code, text)

    def greeting(self) -> bytes:
        return self.host + b" ESMTP mailsink"

    def client_address(self) -> str:
        return str(getattr(self.transport.getPeer(), "host", self.transport.getPeer()))

    def dataReceived(self, data: bytes) -> None:
        if self._first_bytes:
            self._first_bytes = False
            if not self.tls_active and looks_like_tls_client_hello(data):
                warn(self.settings.hints, self.client_address(),
                     tls_on_plaintext_port(self.settings.hints))
                if self.session is not None:
                    self.session.problem("tls-on-plaintext")
                self.transport.abortConnection()
                return
        self.resetTimeout()
        self.buffer_input(data)

    def _take_input(self) -> bool:
        """In DATA, the buffer goes to the decoder in bulk; otherwise one command line."""
        if self._decoder is None:
            return self._take_line()
        self._receive_data()
        return True

    def _line_too_long(self) -> None:
        self.reply(500, f"5.5.2 Line too long (more than {MAX_COMMAND_LINE} octets)")

    def reply(self, code: int, text: str) -> None:
        """Send one reply; C{text} starts with the enhanced status code, lines split on \\n."""
        self.sendCode(code, text.encode("utf-8"))

    def sendCode(self, code: int, message: bytes = b"") -> None:
        text = message.decode("utf-8", "replace")
        if self._unsent is not None:
            self._unsent.append((code, text))
        elif self.session is not None:
            self.session.server_said(code, text)
        super().sendCode(code, message)

    def lineReceived(self, line: bytes) -> None:
        self.resetTimeout()
        if self.in_sasl_exchange():
            self._heard("***")  # a SASL response: a password, however encoded
            self.sasl_line(line)
            return
        verb, _, rest = line.strip().partition(b" ")
        verb = verb.upper()
        handler = self.lookupMethod(verb) if verb.isalpha() else None
        self._heard(transcript_line(line, command=handler is not None))
        if not verb.isalpha():
            self.reply(500, "5.5.2 Error: bad syntax")
            return
        if (self.settings.tls_mode == "starttls-required" and not self.tls_active
                and verb not in _BEFORE_STARTTLS):
            self.reply(530, "5.7.0 Must issue a STARTTLS command first")
            return
        if handler is None:
            self.reply(500, "5.5.2 Error: command not recognized")
            return
        try:
            handler(rest.strip())
        except Reply as answer:
            self.reply(answer.code, answer.text)

    def _heard(self, text: str) -> None:
        if self.session is not None:
            self.session.client_said(text)

    def timeoutConnection(self) -> None:
        if self.session is not None:
            self.session.problem("timeout")
        self.reply(421, f"4.4.2 {self.settings.hostname} Error: timeout exceeded")
        self.transport.loseConnection()

    def connectionLost(self, reason: Failure | None = None) -> None:
        try:
            self._end_session(reason)
        except Exception:
            log.failure("[{listener}] cannot settle a session", listener=self.settings.listener)
        if self._message is not None:
            self._message.abort()
            self._message = None
        self._decoder = None
        if self.factory is not None:
            self.factory.connections -= 1
        self.metrics.connections.labels(self.settings.listener).dec()
        super().connectionLost(reason)

    def _end_session(self, reason: Failure | None) -> None:
        """Settle this connection's session and hand it on (once)."""
        session = self.session
        if session is None:
            return
        why = ""
        if reason is not None and isinstance(reason.value, SSL.Error):
            why = openssl_reason(reason.value)
            session.problem("tls-failed", why)
        elif self._decoder is not None and "timeout" not in session.problems:
            session.data_octets = self._decoder.wire_bytes  # in DATA (an oversized one too)
            session.problem("data-dropped")
        if not session.end(f"connection closed{': ' + why if why else ''}"):
            return
        if self._storing is not None:  # the client left before the message's answer
            self._storing.addBoth(lambda _: self._hand_on(session))
        else:
            self._hand_on(session)

    def _hand_on(self, session: SessionRecorder) -> None:
        if self._session_sink is not None:
            self._session_sink(session.freeze(*diagnose(session, self.settings.hints)))

    # Commands.

    def extensions(self) -> dict[bytes, list[bytes] | None]:
        ext: dict[bytes, list[bytes] | None] = {
            b"PIPELINING": None,
            b"SIZE": [str(self.settings.max_message_size).encode()],
            b"8BITMIME": None,
            b"SMTPUTF8": None,
            b"ENHANCEDSTATUSCODES": None,
        }
        if self.canStartTLS and not self.tls_active:
            ext[b"STARTTLS"] = None
        if self.auth_offered():
            ext[b"AUTH"] = self.auth_mechanisms()
        return ext

    def do_EHLO(self, rest: bytes) -> None:
        self._greeted(rest, esmtp=True)
        lines = [f"{self.settings.hostname} Hello {self.client_address()}"]
        lines += self.listExtensions().decode().split("\n")
        self.reply(250, "\n".join(lines))

    def do_HELO(self, rest: bytes) -> None:
        self._greeted(rest, esmtp=False)
        self.reply(250, self.settings.hostname)

    def _greeted(self, rest: bytes, esmtp: bool) -> None:
        if not rest:
            raise Reply(501, f"5.5.4 Syntax: {'EHLO' if esmtp else 'HELO'} hostname")
        self._reset_transaction()
        if self.session is not None:
            self.session.helo = rest.decode("utf-8", "replace")
        self._helo = (rest, self.client_address().encode())
        self._esmtp = esmtp

    def do_MAIL(self, rest: bytes) -> None:
        if self._from is not None:
            raise Reply(503, "5.5.1 Error: nested MAIL command")
        if self.settings.auth == "required" and not self.authenticated:
            raise Reply(530, "5.7.0 Authentication required")
        path = parse_path(rest, b"FROM")
        self._check_mail_parameters(path.parameters)
        self.chaos_check("Sender")
        if self.delivery is None:
            login = self.portal.login(Anonymous(), None, IMailboxDelivery)
            login.addCallback(self._logged_in)
        else:
            login = maybeDeferred(lambda: None)
        login.addCallback(lambda _: self.delivery.validateFrom(path.address))
        login.addCallbacks(lambda _: self._sender_accepted(path.address, path.parameters),
                           self._refused)
        self._block_until(login)

    def _logged_in(self, result: tuple[Any, Any, Callable[[], None]]) -> None:
        _, self.delivery, self._onLogout = result

    def _check_mail_parameters(self, parameters: dict[str, str | None]) -> None:
        for key, value in parameters.items():
            if key == "SIZE":
                if value is None or not value.isdigit():
                    raise Reply(501, "5.5.4 Bad SIZE parameter")
                limit = self.settings.max_message_size
                if limit and int(value) > limit:
                    raise Reply(552, "5.3.4 Message size exceeds fixed maximum message size "
                                f"({limit} bytes)")
            elif key == "BODY":
                if (value or "").upper() not in ("7BIT", "8BITMIME"):
                    raise Reply(501, "5.5.4 BODY must be 7BIT or 8BITMIME")
            elif key == "SMTPUTF8":
                if value is not None:
                    raise Reply(501, "5.5.4 SMTPUTF8 takes no value")
            elif key != "AUTH":
                raise Reply(555, f"5.5.4 Unsupported option: {key}")

    def _sender_accepted(self, address: str, parameters: dict[str, str | None]) -> None:
        self._from = address
        self._smtputf8 = "SMTPUTF8" in parameters
        if self.session is not None:
            self.session.in_transaction = True
        self.reply(250, "2.1.0 Ok")

    def _refused(self, failure: Failure) -> None:
        if isinstance(failure.value, DeliveryRefused):
            self.reply(failure.value.code, failure.value.reply)
        else:
            log.failure("[{listener}] checking a sender or recipient failed", failure,
                        listener=self.settings.listener)
            self.reply(451, "4.3.0 Error: local error in processing")

    def do_RCPT(self, rest: bytes) -> None:
        if self._from is None:
            raise Reply(503, "5.5.1 Error: need MAIL command")
        path = parse_path(rest, b"TO")
        if not path.address:
            raise Reply(501, "5.1.3 Bad recipient address syntax")
        for key in path.parameters:
            raise Reply(555, f"5.5.4 Unsupported option: {key}")
        if len(self._recipients) >= self.settings.max_recipients:
            raise Reply(452, "4.5.3 Error: too many recipients")
        self.chaos_check("Recipient")
        try:
            self.delivery.validateTo(path.address)
        except DeliveryRefused as refused:
            raise Reply(refused.code, refused.reply) from None
        self._recipients.append(path.address)
        self.reply(250, "2.1.5 Ok")

    def do_DATA(self, rest: bytes) -> None:
        if self._from is None:
            raise Reply(503, "5.5.1 Error: need MAIL command")
        if not self._recipients:
            raise Reply(554, "5.5.1 Error: no valid recipients")
        if rest:
            raise Reply(501, "5.5.4 Syntax: DATA")
        self._message = self.delivery.open_message(
            self._envelope(), self.settings.hostname, self.transport)
        self._decoder = DataDecoder(MAX_LINE if self.settings.long_lines == "refuse" else None)
        self.reply(354, "End data with <CR><LF>.<CR><LF>")

    def _envelope(self) -> Envelope:
        version = cipher = bits = None
        if self.tls_active:
            connection = self.transport.getHandle()
            version = connection.get_protocol_version_name()
            cipher = connection.get_cipher_name()
            bits = connection.get_cipher_bits()
        return Envelope(
            mail_from=self._from or "",
            recipients=tuple(self._recipients),
            helo=self._helo[0].decode("utf-8", "replace") if self._helo[0] else None,
            client_address=self.client_address(),
            protocol=self._protocol_name(),
            tls_version=version,
            tls_cipher=cipher,
            tls_bits=bits,
            user=getattr(self.delivery, "user", None),
            listener=self.settings.listener,
            session=self.session.id if self.session is not None else "",
        )

    def _protocol_name(self) -> str:
        """RFC 3848 (and RFC 6531 for SMTPUTF8) name for the Received header."""
        if not self._esmtp:
            return "SMTP"
        name = "UTF8SMTP" if self._smtputf8 else "ESMTP"
        name += "S" if self.tls_active else ""
        return name + ("A" if self.authenticated else "")

    def _receive_data(self) -> None:
        assert self._decoder is not None and self._message is not None
        chunk = self._decoder.feed(self.take_buffered())
        received = self._decoder.wire_bytes - len(chunk.rest or b"") - 3
        limit = self.settings.max_message_size
        if limit and received > limit:
            if not self._decoder.skipping:
                self._decoder.skip()
                self._message.abort()
        elif chunk.message:
            self._message.write(chunk.message)
        if chunk.rest is not None:
            self.put_back(chunk.rest)
            self._end_of_data(received)

    def _end_of_data(self, size: int) -> None:
        assert self._decoder is not None and self._message is not None
        decoder, message = self._decoder, self._message
        self._decoder = self._message = None
        self._reset_transaction()
        if self.session is not None:
            self.session.note(f"message data: {decoder.wire_bytes} octets")
        limit = self.settings.max_message_size
        if limit and size > limit:
            self.metrics.rejected.labels(self.settings.listener, "size").inc()
            self.reply(552, "5.3.4 Message size exceeds fixed maximum message size "
                       f"({limit} bytes)")
            return
        if decoder.line_too_long:
            self.metrics.rejected.labels(self.settings.listener, "line").inc()
            message.abort()
            self.reply(500, f"5.5.2 Line too long: message lines may hold at most "
                       f"{decoder.max_line} characters (RFC 5321 4.5.3.1.6); wrap them or "
                       "use quoted-printable or base64")
            return
        stored = message.finish()
        stored.addCallbacks(self._stored, self._not_stored, callbackArgs=(size,))
        self._storing = stored
        stored.addBoth(self._stored_or_not)
        self._block_until(stored)

    def _stored_or_not(self, result: object) -> object:
        self._storing = None
        return result

    def _stored(self, name: str, size: int) -> None:
        self.metrics.received.labels(self.settings.listener).inc()
        self.metrics.received_bytes.labels(self.settings.listener).inc(size)
        if self.session is not None:
            self.session.stored(message_id(name))
        self.reply(250, f"2.0.0 Ok: queued as {name}")  # first: the client waits for it
        log.info("[{listener}] stored {name} from {client}",
                 listener=self.settings.listener, name=name, client=self.client_address())

    def _not_stored(self, failure: Failure) -> None:
        self.metrics.rejected.labels(self.settings.listener, "storage").inc()
        log.error("[{listener}] cannot store a message from {client}: {error}; check that "
                  "the maildir's file system has space and is writable",
                  listener=self.settings.listener, client=self.client_address(),
                  error=failure.getErrorMessage())
        self.reply(452, "4.3.1 Insufficient system storage")

    def _reset_transaction(self) -> None:
        self._from = None
        self._recipients = []
        self._smtputf8 = False
        if self.session is not None:
            self.session.in_transaction = False

    def do_RSET(self, rest: bytes) -> None:
        self._reset_transaction()
        self.reply(250, "2.0.0 Ok")

    def do_NOOP(self, rest: bytes) -> None:
        self.reply(250, "2.0.0 Ok")

    def do_VRFY(self, rest: bytes) -> None:
        self.reply(252, "2.0.0 Cannot VRFY user, but will accept the message")

    def do_HELP(self, rest: bytes) -> None:
        self.reply(214, "2.0.0 See RFC 5321")

    def do_QUIT(self, rest: bytes) -> None:
        if self.session is not None:
            self.session.quit = True
        self.reply(221, "2.0.0 Bye")
        self.transport.loseConnection()

    def ext_STARTTLS(self, rest: bytes) -> None:
        if self.tls_active:
            raise Reply(503, "5.5.1 Error: TLS already active")
        if not self.canStartTLS:
            raise Reply(454, "4.7.0 TLS not available")
        if rest:
            raise Reply(501, "5.5.4 Syntax: STARTTLS")
        self.reply(220, "2.0.0 Ready to start TLS")
        if self.drop_pipelined():
            log.warn("[{listener}] {client} sent commands behind STARTTLS before TLS began; "
                     "they were dropped (RFC 3207 forbids acting on them)",
                     listener=self.settings.listener, client=self.client_address())
        self.transport.startTLS(self.ctx)
        self._helo = (None, self.client_address().encode())
        self._esmtp = False
        self._reset_transaction()
        self.forget_authentication()
        self.startedTLS = True
