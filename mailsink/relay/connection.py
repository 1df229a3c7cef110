"""
One SMTP connection to the C{[relay]} server, on Twisted's L{ESMTPClient}: EHLO, STARTTLS
and AUTH as configured, then one message after another (RSET between them) for as long as
the pool keeps the connection.

L{ESMTPClient} asks its subclass for the next message when the server is ready for MAIL
FROM; this one waits there ("parked") until the pool hands it a message. Whatever goes
wrong is kept as a L{RelayError} with the step it happened at, for
L{mailsink.relay.diagnose} to word.

Time is kept per operation, not per line: opening the connection, each message and each
relay test end at their L{Deadline}, however busily the server answers the steps between
(Twisted's client would wait the timeout again after every line and data chunk).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from io import BytesIO
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IHandshakeListener, IReactorTime
from twisted.internet.protocol import connectionDone
from twisted.mail.interfaces import IClientAuthentication
from twisted.mail.smtp import (
    SUCCESS,
    CramMD5ClientAuthenticator,
    ESMTPClient,
    LOGINAuthenticator,
    SMTPClient,
    SMTPClientError,
    SMTPTimeoutError,
    quoteaddr,
)
from twisted.python.failure import Failure
from zope.interface import implementer

from mailsink.relay.deadline import Deadline

PASSWORD_MECHANISMS = ("CRAM-MD5", "PLAIN", "LOGIN")
"""Tried in this order, as the server offers them (CRAM-MD5 never sends the password)."""
TOKEN_MECHANISMS = ("XOAUTH2",)


@implementer(IClientAuthentication)
class XOAuth2Authenticator:
    """Google's and Microsoft's XOAUTH2: the user and an OAuth2 access token."""

    def __init__(self, user: bytes) -> None:
        self.user = user

    def getName(self) -> bytes:
        return b"XOAUTH2"

    def challengeResponse(self, secret: bytes, chal: bytes) -> bytes:
        if chal:
            # A refused token: the server sent its JSON error and waits for an empty
            # line before its 535.
            return b""
        return b"user=%s\x01auth=Bearer %s\x01\x01" % (self.user, secret)


@implementer(IClientAuthentication)
class PlainAuthenticator:
    """
    RFC 4616 PLAIN without an authorization identity (as smtplib, msmtp and curl send
    it): Twisted's first sends C{user\\0user\\0password}, which some servers refuse.
    """

    def __init__(self, user: bytes) -> None:
        self.user = user

    def getName(self) -> bytes:
        return b"PLAIN"

    def challengeResponse(self, secret: bytes, chal: object) -> bytes:
        return b"\0" + self.user + b"\0" + secret


def authenticators(username: str, token: bool) -> list[IClientAuthentication]:
    """Fresh authenticators (LOGIN's keeps state) for one connection."""
    user = username.encode("utf-8")
    if token:
        return [XOAuth2Authenticator(user)]
    return [CramMD5ClientAuthenticator(user), PlainAuthenticator(user),
            LOGINAuthenticator(user)]


@dataclass
class Message:
    """One message to relay: the envelope and the bytes ready for the wire."""

    sender: str
    recipients: Sequence[str]
    wire: bytes
    """CRLF line ends, dot-stuffed, ending in CRLF (L{mailsink.relay.policy.wire_form})."""
    deadline: Deadline
    """When the release must have its answer, from waiting for a connection to the reply."""
    sent: Deferred[str] = field(default_factory=Deferred)
    """Fires with the server's reply to the data, or fails with a L{RelayError}."""


class RelayError(Exception):
    """What went wrong on a relay connection, with what it takes to word it."""

    def __init__(self, error: BaseException, stage: str, tls: bool,
                 extensions: dict[bytes, bytes | None], *, before_mail: bool = False,
                 after_data: bool = False, refusals: Sequence[tuple[str, int, str]] = (),
                 delivered: Sequence[str] = ()) -> None:
        super().__init__(str(error))
        self.error = error
        self.stage = stage
        """connect, handshake, greeting, smtp or mail."""
        self.tls = tls
        self.extensions = extensions
        """The server's last EHLO answer, C{{b"AUTH": b"PLAIN LOGIN", ...}}."""
        self.before_mail = before_mail
        """Lost before the server answered this message's MAIL FROM: safe to send again."""
        self.after_data = after_data
        """The whole message was sent but its answer never came: it may have arrived."""
        self.refusals = refusals
        """(recipient, code, text) for each refused recipient."""
        self.delivered = delivered
        """Recipients the server took the message for, when it refused others."""


class InjectedAfterStartTLS(Exception):
    """Lines arrived after the server's 220 to STARTTLS, before TLS began."""


class EarlyReply(Exception):
    """The server answered while the message was still being sent: it was not taken."""

    def __init__(self, line: str) -> None:
        super().__init__(line)
        self.line = line


class DeliveryRefused(Exception):
    """The server refused the message: C{code} and C{text} of the refusing reply."""

    def __init__(self, code: int, text: str) -> None:
        super().__init__(f"{code} {text}")
        self.code = code
        self.text = text


@implementer(IHandshakeListener)
class RelayConnection(ESMTPClient):
    """
    A connection that logs in (C{ready} fires with it), then sends the messages given to
    L{send}; after each, L{on_idle} hands it back to the pool.
    """

    debug = False  # Twisted's line log would keep the AUTH exchange in memory.

    def __init__(self, *, identity: str, username: str, secret: bytes,
                 token: bool, starttls: Any, implicit: bool, clock: IReactorTime,
                 deadline: Deadline, on_idle: Callable[[RelayConnection], None],
                 on_lost: Callable[[RelayConnection], None]) -> None:
        super().__init__(secret if username else None, starttls, identity)
        self.requireTransportSecurity = starttls is not None
        self.requireAuthentication = bool(username)
        self.heloFallback = not username and starttls is None
        for authenticator in authenticators(username, token) if username else ():
            self.registerAuthenticator(authenticator)
        self.clock = clock
        self.deadline = deadline
        """The current operation's: logging in, then each message or relay test."""
        self.implicit = implicit
        self.on_idle = on_idle
        self.on_lost = on_lost
        self.ready: Deferred[RelayConnection] = Deferred()
        self.stage = "handshake" if implicit else "greeting"
        self.extensions: dict[bytes, bytes | None] = {}
        self.tls = False
        self.closed = False
        self._handshaking = implicit
        self._message: Message | None = None
        self._outcome: tuple[Message, str | RelayError] | None = None
        """The last message's result, told once the connection is ready for the next."""
        self._answered_mail = False
        self._data_sent = False
        """The message's final dot went out: from here on it may be delivered."""
        self._trial: Deferred[None] | None = None
        self._sending_data = False
        self._lost = False

    # Time.

    def callLater(self, period: float, func: Callable[[], object]) -> Any:
        """TimeoutMixin's timer, on C{clock}."""
        return self.clock.callLater(period, func)

    def connectionMade(self) -> None:
        super().connectionMade()
        self._until(self.deadline)

    def _until(self, deadline: Deadline) -> None:
        """Time out at C{deadline}, whatever is under way then."""
        self.deadline = deadline
        self.setTimeout(deadline.left(self.clock))

    def resetTimeout(self) -> None:
        """A line or a chunk of data does not move the deadline (Twisted's would)."""

    # Where the session is.

    def handshakeCompleted(self) -> None:
        self._handshaking = False
        self.tls = True
        if self.stage == "handshake":
            self.stage = "greeting"

    def esmtpState_ehlo(self, code: int, resp: bytes) -> None:
        if self.stage == "greeting":
            self.stage = "smtp"
        super().esmtpState_ehlo(code, resp)

    def esmtpState_starttls(self, code: int, resp: bytes) -> None:
        if self.clearLineBuffer():
            # Lines after the 220 arrived in plaintext: whoever sent them could make the
            # client act on forged answers once TLS is up (RFC 3207 section 4.2).
            self._fail(self._error(InjectedAfterStartTLS()))
            self._abort()
            return
        self._handshaking = True
        super().esmtpState_starttls(code, resp)

    def tryTLS(self, code: int, resp: bytes, items: dict[bytes, bytes | None]) -> None:
        # EHLO keywords are case-insensitive (RFC 5321 2.4); Twisted looks for upper case.
        self.extensions = {name.upper(): value for name, value in items.items()}
        super().tryTLS(code, resp, self.extensions)

    def _esmtpState_plainAuth(self, code: int, resp: bytes) -> None:
        # Twisted answers a refused AUTH PLAIN by trying its other form of PLAIN; ours has
        # one form, and a second refusal would only count against the account.
        self.esmtpAUTHDeclined(code, resp)

    def _where(self) -> str:
        return "handshake" if self._handshaking else self.stage

    # Between messages.

    def smtpState_from(self, code: int, resp: bytes) -> None:
        """The server waits for MAIL FROM: send the message given, or wait for one."""
        if self._message is not None:
            self._answered_mail = self._data_sent = False
            super().smtpState_from(code, resp)
            return
        self.setTimeout(None)
        self._park()
        if not self.ready.called:
            self.stage = "mail"
            self.ready.callback(self)
            return
        self.on_idle(self)
        self._tell_outcome()

    def _park(self) -> None:
        self._expected = []
        self._okresponse = self._failresponse = self._unexpected

    def _tell_outcome(self) -> None:
        """
        Fire the last message's Deferred. Held back until RSET is answered so that a
        client sending message after message finds this connection back in the pool
        instead of opening another.
        """
        if self._outcome is None:
            return
        (message, result), self._outcome = self._outcome, None
        if isinstance(result, RelayError):
            message.sent.errback(result)
        else:
            message.sent.callback(result)

    def _unexpected(self, code: int, resp: bytes) -> None:
        """A reply while idle, such as 421 before the server times the connection out."""
        self.quit()

    def send(self, message: Message) -> Deferred[str]:
        """Send C{message} on this (parked) connection, by its deadline."""
        if self.closed:
            message.sent.errback(self._error(ConnectionDone(), before_mail=True))
            return message.sent
        self._message = message
        self._until(message.deadline)
        self.smtpState_from(250, b"")
        return message.sent

    def try_sender(self, sender: str, deadline: Deadline) -> Deferred[None]:
        """
        (Parked.) MAIL FROM C{sender}, then RSET, by C{deadline}: whether the server would
        take mail on this login, as C{relay/test} asks, without sending any.
        """
        tried: Deferred[None] = Deferred()
        self._trial = tried

        def accepted(code: int, resp: bytes) -> None:
            self._expected = []  # whatever RSET gets, the answer to MAIL FROM stands
            self._okresponse = self._failresponse = lambda code, resp: self._tried(None)
            self.sendLine(b"RSET")

        def refused(code: int, resp: bytes) -> None:
            self._tried(self._error(DeliveryRefused(code, _text(resp))))

        self._expected, self._okresponse, self._failresponse = [250], accepted, refused
        self._until(deadline)
        self.sendLine(b"MAIL FROM:" + quoteaddr(sender))
        return tried

    def _tried(self, error: RelayError | None) -> None:
        tried, self._trial = self._trial, None
        self.setTimeout(None)
        self._park()
        if tried is not None:
            if error is None:
                tried.callback(None)
            else:
                tried.errback(error)

    def quit(self) -> None:
        """
        QUIT, then close; dropped if the server does not answer within C{[relay] timeout}
        (no one waits for this answer: the operation was over).
        """
        if not self.closed:
            self.closed = True
            self.setTimeout(self.deadline.timeout)
            self._disconnectFromServer()

    # ESMTPClient's questions.

    def getMailFrom(self) -> str | None:
        return self._message.sender if self._message is not None else None

    def getMailTo(self) -> list[str]:
        self._answered_mail = True
        return list(self._message.recipients) if self._message is not None else []

    def getMailData(self) -> BytesIO:
        assert self._message is not None
        return BytesIO(self._message.wire)

    def transformChunk(self, chunk: bytes) -> bytes:
        """The data is in wire form already (CRLF, dot-stuffed): send it as it is."""
        return chunk

    def smtpState_data(self, code: int, resp: bytes) -> None:
        self._sending_data = True
        super().smtpState_data(code, resp)

    def finishedFileTransfer(self, lastsent: bytes) -> None:
        self._sending_data = False
        self._lost = False
        super().finishedFileTransfer(lastsent)
        self._data_sent = True

    def lineReceived(self, line: bytes) -> Any:
        if self._sending_data:
            # An answer before the final dot: whatever it says, the message was not taken
            # whole; stop here rather than send the rest and misread the answers after.
            self._fail(self._error(EarlyReply(_text(line))))
            self._abort()
            return None
        return super().lineReceived(line)

    def smtpState_msgSent(self, code: int, resp: bytes) -> None:
        super().smtpState_msgSent(code, resp)  # tells sentMail, sends RSET
        self._failresponse = self._reset_refused
        if code == 421:  # the server is closing this connection: no next message on it
            self._tell_outcome()
            self.quit()

    def _reset_refused(self, code: int, resp: bytes) -> None:
        """RSET refused (Twisted would send it again and again): this connection is done."""
        self._tell_outcome()
        self.quit()

    def sentMail(self, code: int, resp: bytes, numOk: int,
                 addresses: list[tuple[bytes, int, bytes]], log: object) -> None:
        """
        The message's result. Only a 2xx answer to the end of the data is a delivery:
        Twisted also comes here after a refused MAIL FROM or DATA, with the previous
        message's recipient count.
        """
        message, self._message = self._message, None
        if message is None:
            return
        text = _text(resp)
        refusals = [(_text(address), result, _text(reply))
                    for address, result, reply in addresses if result not in SUCCESS]
        if self._data_sent and code in SUCCESS:
            if refusals:
                delivered = [_text(address) for address, result, _ in addresses
                             if result in SUCCESS]
                self._outcome = (message, self._error(DeliveryRefused(code, text),
                                                      refusals=refusals, delivered=delivered))
            else:
                self._outcome = (message, f"{code} {text}")
            return
        # A 421 to MAIL FROM (a per-connection limit, say): nothing was taken, send again.
        again = code == 421 and not self._answered_mail
        self._outcome = (message, self._error(DeliveryRefused(code, text), refusals=refusals,
                                              before_mail=again))

    # Failures.

    def _error(self, error: BaseException, **details: Any) -> RelayError:
        return RelayError(error, self._where(), self.tls, self.extensions, **details)

    def _message_error(self, error: BaseException) -> RelayError:
        """C{error} while a message is under way: was it sent, or may it be sent again?"""
        return self._error(error, before_mail=not self._answered_mail,
                           after_data=self._data_sent)

    def sendError(self, exc: BaseException) -> None:
        if self._sending_data and not isinstance(exc, SMTPClientError):
            return  # the lost connection stopped the data: connectionLost tells it
        self._fail(self._message_error(exc))
        # Nothing more is sent or taken on this connection, whatever arrives.
        self.closed = True
        self._park()
        super().sendError(exc)

    def timeoutConnection(self) -> None:
        """The deadline passed: drop the connection at once (a TLS close would wait for the
        silent server) and stop sending whatever was being sent."""
        self._fail(self._message_error(SMTPTimeoutError(-1, b"timeout")))
        self._abort()

    def smtpState_disconnect(self, code: int, resp: bytes) -> None:
        super().smtpState_disconnect(code, resp)
        if not self._lost:
            # A TLS close waits for the server's close_notify: not longer than the timeout.
            self.setTimeout(self.deadline.timeout)

    def _abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abortConnection()  # type: ignore[attr-defined]

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        SMTPClient.connectionLost(self, reason)
        self.closed = self._lost = True
        error = reason.value if reason.value is not None else ConnectionDone()
        self._fail(self._message_error(error))
        self.on_lost(self)

    def _fail(self, error: RelayError) -> None:
        """Fail whatever waits on this connection; a message's result still counts."""
        self._tell_outcome()
        if not self.ready.called:
            self.ready.errback(error)
        if self._message is not None:
            message, self._message = self._message, None
            message.sent.errback(error)
        if self._trial is not None:
            self._tried(error)


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value
