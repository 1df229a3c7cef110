"""
The relay client in memory: L{RelayConnection} on a StringTransport with its timeouts on a
Clock (EHLO, STARTTLS, AUTH, messages, RSET and parking, failures), and the sentences of
L{Diagnoser}. The pool is in test_relay_pool, misbehaving servers in test_relay_failures.
"""

from __future__ import annotations

import base64
import hmac
from collections.abc import Callable
from typing import Any

import attrs
from OpenSSL import SSL
from twisted.internet import error as net
from twisted.internet.interfaces import ISSLTransport
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.mail.smtp import (
    AUTHDeclinedError,
    AUTHRequiredError,
    SMTPTimeoutError,
    TLSRequiredError,
)
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import directlyProvides

from mailsink.config import RelaySettings
from mailsink.relay.connection import DeliveryRefused, Message, RelayConnection, RelayError
from mailsink.relay.deadline import Deadline
from mailsink.relay.diagnose import Diagnoser

TIMEOUT = 30.0
WIRE = b"Subject: hi\r\n\r\n..dotted\r\nbody\r\n"
SETTINGS = RelaySettings(
    host="relay.test", port=587, tls="starttls", tls_verify=True, username="user",
    password="secret", token="", token_command="", timeout=5, pool_size=1,
    allowed_recipients="", blocked_recipients="", auto_relay=False, auto_relay_match="")
WHERE = "relay.test:587"
DEADLINE = Deadline(TIMEOUT, TIMEOUT)
"""TIMEOUT seconds after a Clock's start: each L{Session}'s, and each L{message}'s."""
Hook = Callable[[Any], None]


class TLSTransport(StringTransport):
    """A StringTransport that records STARTTLS's context and becomes secure."""

    context: Any = None

    def startTLS(self, context: Any) -> None:
        self.context = context
        directlyProvides(self, ISSLTransport)


class Session:
    """A L{RelayConnection} on a StringTransport, timed by a Clock; what it handed back."""

    def __init__(self, username: str = "user", secret: bytes = b"pass", token: bool = False,
                 starttls: Any = None, transport: StringTransport | None = None) -> None:
        self.clock = Clock()
        self.idle: list[RelayConnection] = []
        self.lost: list[RelayConnection] = []
        self.connection = RelayConnection(
            identity="sink.test", username=username, secret=secret, token=token,
            starttls=starttls, implicit=False, clock=self.clock, deadline=DEADLINE,
            on_idle=self.idle.append, on_lost=self.lost.append)
        self.transport = transport or StringTransport()
        self.connection.makeConnection(self.transport)

    def server(self, *lines: str) -> bytes:
        """The server says C{lines}; what the client wrote in answer."""
        self.transport.clear()
        for line in lines:
            self.connection.dataReceived(line.encode("ascii") + b"\r\n")
            while self.transport.producer is not None:  # DATA, read chunk by chunk
                self.transport.producer.resumeProducing()
        return self.transport.value()

    def ehlo(self, *extensions: str) -> bytes:
        """Greet, answer EHLO offering C{extensions}; what the client said next."""
        self.server("220 relay.test ESMTP")
        *lines, last = ("relay.test", *extensions)
        return self.server(*(f"250-{line}" for line in lines), f"250 {last}")

    def send(self, message: Message) -> bytes:
        """Give the parked connection C{message}; what it wrote."""
        self.transport.clear()
        self.connection.send(message)
        return self.transport.value()

    def deliver(self, message: Message) -> bytes:
        """The whole exchange for C{message}, every reply positive; all the client wrote."""
        written = self.send(message)
        for _ in ["MAIL", *message.recipients]:
            written += self.server("250 2.1.0 ok")
        return written + self.server("354 go ahead", "250 2.0.0 queued", "250 2.0.0 reset")


def logged_in() -> Session:
    session = Session()
    session.ehlo("AUTH PLAIN LOGIN")
    session.server("235 2.7.0 accepted")
    return session


def plain(line: bytes) -> tuple[bytes, list[bytes]]:
    """An C{AUTH PLAIN} line: the command, then authcid and password (authzid left aside)."""
    command, _, response = line.rstrip(b"\r\n").rpartition(b" ")
    return command, base64.b64decode(response).split(b"\0")[1:]


def message(*recipients: str) -> Message:
    return Message("from@example.com", list(recipients or ["to@example.net"]), WIRE, DEADLINE)


class SessionTests(SynchronousTestCase):
    def test_ehlo_then_auth_plain_then_ready(self) -> None:
        session = Session()
        self.assertEqual(session.server("220 relay.test ESMTP"), b"EHLO sink.test\r\n")
        self.assertEqual(plain(session.server("250-relay.test", "250 AUTH PLAIN LOGIN")),
                         (b"AUTH PLAIN", [b"user", b"pass"]))
        self.assertNoResult(session.connection.ready)
        self.assertEqual(session.server("235 2.7.0 accepted"), b"")
        self.assertIs(self.successResultOf(session.connection.ready), session.connection)
        self.assertEqual(session.idle, [])

    def test_message_exchange_then_rset_then_parked(self) -> None:
        session, sent = logged_in(), message()
        self.assertEqual(session.send(sent), b"MAIL FROM:<from@example.com>\r\n")
        self.assertEqual(session.server("250 2.1.0 ok"), b"RCPT TO:<to@example.net>\r\n")
        self.assertEqual(session.server("250 2.1.5 ok"), b"DATA\r\n")
        self.assertEqual(session.server("354 go ahead"), WIRE + b".\r\n")
        self.assertNoResult(sent.sent)
        self.assertEqual(session.server("250 2.0.0 queued as X"), b"RSET\r\n")
        self.assertEqual(session.idle, [])
        self.assertEqual(session.server("250 2.0.0 reset"), b"")
        self.assertEqual(self.successResultOf(sent.sent), "250 2.0.0 queued as X")
        self.assertEqual(session.idle, [session.connection])

    def test_second_message_on_same_connection(self) -> None:
        session, second = logged_in(), message("two@example.net")
        session.deliver(message())
        self.assertEqual(session.deliver(second),
                         b"MAIL FROM:<from@example.com>\r\nRCPT TO:<two@example.net>\r\n"
                         b"DATA\r\n" + WIRE + b".\r\nRSET\r\n")
        self.assertEqual(self.successResultOf(second.sent), "250 2.0.0 queued")
        self.assertEqual(session.idle, [session.connection] * 2)

    def test_plain_without_authorization_identity(self) -> None:
        session = Session()
        line = session.ehlo("AUTH PLAIN")
        self.assertEqual(line, b"AUTH PLAIN " + base64.b64encode(b"\0user\0pass") + b"\r\n")

    def test_quit_is_bounded_by_the_timeout(self) -> None:
        session = logged_in()
        session.transport.clear()
        session.connection.quit()
        self.assertEqual(session.transport.value(), b"QUIT\r\n")
        session.clock.advance(TIMEOUT)
        self.assertTrue(session.transport.disconnecting)

    def test_refused_auth_plain_not_sent_again(self) -> None:
        session = Session()
        session.ehlo("AUTH PLAIN")
        self.assertEqual(session.server("535 5.7.8 bad credentials"), b"QUIT\r\n")
        error = self.failureResultOf(session.connection.ready, RelayError).value
        self.assertIsInstance(error.error, AUTHDeclinedError)
        self.assertEqual((error.error.code, error.stage), (535, "smtp"))

    def test_xoauth2_token_then_refusal(self) -> None:
        session = Session(username="U", secret=b"T", token=True)
        self.assertEqual(session.ehlo("AUTH LOGIN PLAIN XOAUTH2"), b"AUTH XOAUTH2\r\n")
        self.assertEqual(session.server("334 "),
                         base64.b64encode(b"user=U\x01auth=Bearer T\x01\x01") + b"\r\n")
        complaint = base64.b64encode(b'{"status":"401","schemes":"bearer"}').decode()
        self.assertEqual(session.server(f"334 {complaint}"), b"\r\n")
        session.server("535 5.7.8 Username and Password not accepted")
        error = self.failureResultOf(session.connection.ready, RelayError).value
        self.assertIsInstance(error.error, AUTHDeclinedError)
        self.assertEqual(error.error.code, 535)

    def test_cram_md5_preferred(self) -> None:
        session = Session()
        self.assertEqual(session.ehlo("AUTH LOGIN PLAIN CRAM-MD5"), b"AUTH CRAM-MD5\r\n")
        challenge = b"<1896.697170952@relay.test>"
        digest = hmac.new(b"pass", challenge, "md5").hexdigest().encode()
        self.assertEqual(session.server("334 " + base64.b64encode(challenge).decode()),
                         base64.b64encode(b"user " + digest) + b"\r\n")
        session.server("235 2.7.0 accepted")
        self.assertIs(self.successResultOf(session.connection.ready), session.connection)

    def test_starttls_before_auth(self) -> None:
        context, transport = object(), TLSTransport()
        session = Session(starttls=context, transport=transport)
        self.assertEqual(session.ehlo("STARTTLS", "AUTH PLAIN"), b"STARTTLS\r\n")
        self.assertEqual(session.server("220 2.0.0 ready"), b"EHLO sink.test\r\n")
        self.assertIs(transport.context, context)
        self.assertEqual(plain(session.server("250-relay.test", "250 AUTH PLAIN")),
                         (b"AUTH PLAIN", [b"user", b"pass"]))

    def test_starttls_required_not_offered(self) -> None:
        session = Session(starttls=object())
        self.assertEqual(session.ehlo("AUTH PLAIN"), b"QUIT\r\n")
        error = self.failureResultOf(session.connection.ready, RelayError).value
        self.assertIsInstance(error.error, TLSRequiredError)
        self.assertEqual((error.stage, error.tls), ("smtp", False))
        self.assertEqual(error.extensions, {b"RELAY.TEST": None, b"AUTH": b"PLAIN"})

    # Recipients and refusals.

    def test_one_recipient_refused_fails_naming_both(self) -> None:
        session, sent = logged_in(), message("gone@example.net", "to@example.net")
        session.send(sent)
        session.server("250 2.1.0 ok")
        self.assertEqual(session.server("550 5.1.1 no such user"),
                         b"RCPT TO:<to@example.net>\r\n")
        self.assertEqual(session.server("250 2.1.5 ok"), b"DATA\r\n")
        session.server("354 go ahead", "250 2.0.0 queued", "250 2.0.0 reset")
        error = self.failureResultOf(sent.sent, RelayError).value
        self.assertEqual((error.refusals, error.delivered),
                         ([("gone@example.net", 550, "5.1.1 no such user")],
                          ["to@example.net"]))

    def test_every_recipient_refused(self) -> None:
        session, sent = logged_in(), message("gone@example.net", "to@example.net")
        session.send(sent)
        session.server("250 2.1.0 ok", "550 5.1.1 no such user")
        self.assertEqual(session.server("553 5.7.1 relaying denied"), b"RSET\r\n")
        session.server("250 2.0.0 reset")
        error = self.failureResultOf(sent.sent, RelayError).value
        self.assertIsInstance(error.error, DeliveryRefused)
        self.assertEqual(error.error.text, "No recipients accepted")
        self.assertEqual(error.refusals, [("gone@example.net", 550, "5.1.1 no such user"),
                                          ("to@example.net", 553, "5.7.1 relaying denied")])
        self.assertEqual(session.idle, [session.connection])

    def test_mail_from_refused(self) -> None:
        session, sent = logged_in(), message()
        session.send(sent)
        self.assertEqual(session.server("530 5.7.0 Authentication required"), b"RSET\r\n")
        session.server("250 2.0.0 reset")
        error = self.failureResultOf(sent.sent, RelayError).value
        self.assertIsInstance(error.error, DeliveryRefused)
        self.assertEqual((error.error.code, error.error.text, error.stage),
                         (530, "5.7.0 Authentication required", "mail"))

    # Time and loss.

    def test_no_greeting_times_out(self) -> None:
        session = Session()
        session.clock.advance(TIMEOUT - 1)
        self.assertNoResult(session.connection.ready)
        session.clock.advance(1)
        error = self.failureResultOf(session.connection.ready, RelayError).value
        self.assertIsInstance(error.error, SMTPTimeoutError)
        self.assertEqual(error.stage, "greeting")
        self.assertTrue(session.transport.disconnecting)

    def test_parked_connection_never_times_out(self) -> None:
        session = logged_in()
        session.deliver(message())
        session.transport.clear()
        session.clock.advance(TIMEOUT * 100)
        self.assertEqual(session.clock.getDelayedCalls(), [])
        self.assertEqual(session.transport.value(), b"")
        self.assertFalse(session.transport.disconnecting)

    def test_silence_during_message_times_out(self) -> None:
        session, sent = logged_in(), message()
        session.send(sent)
        session.clock.advance(TIMEOUT)
        error = self.failureResultOf(sent.sent, RelayError).value
        self.assertIsInstance(error.error, SMTPTimeoutError)
        self.assertEqual(error.stage, "mail")

    def test_421_while_parked_quits(self) -> None:
        session = logged_in()
        self.assertEqual(session.server("421 4.4.2 idle too long"), b"QUIT\r\n")
        self.assertTrue(session.connection.closed)
        self.assertEqual(session.idle, [])

    def test_lost_before_mail_answer_may_be_resent(self) -> None:
        session, sent = logged_in(), message()
        session.send(sent)
        session.connection.connectionLost(Failure(net.ConnectionLost()))
        error = self.failureResultOf(sent.sent, RelayError).value
        self.assertTrue(error.before_mail)
        self.assertIsInstance(error.error, net.ConnectionLost)
        self.assertEqual(session.lost, [session.connection])

    def test_lost_after_recipients_not_resent(self) -> None:
        session, sent = logged_in(), message()
        session.send(sent)
        session.server("250 2.1.0 ok")
        self.assertEqual(session.server("250 2.1.5 ok"), b"DATA\r\n")
        session.connection.connectionLost(Failure(net.ConnectionLost()))
        self.assertFalse(self.failureResultOf(sent.sent, RelayError).value.before_mail)


class DiagnoserTests(SynchronousTestCase):
    def sentence(self, error: BaseException, stage: str = "smtp", secure: bool = False,
                 extensions: dict[bytes, bytes | None] | None = None,
                 refusals: list[tuple[str, int, str]] | None = None, **settings: Any) -> str:
        """The sentence for C{error} (wrapped in a RelayError unless a connect error)."""
        diagnoser = Diagnoser(attrs.evolve(SETTINGS, **settings), MemoryReactorClock())
        if not isinstance(error, net.ConnectError | net.DNSLookupError):
            error = RelayError(error, stage, secure, extensions or {}, refusals=refusals or ())
        return str(self.successResultOf(diagnoser.diagnose(error, DEADLINE)))

    def test_auth_declined(self) -> None:
        self.assertEqual(self.sentence(AUTHDeclinedError(535, b"5.7.8 no")),
                         "535 authentication failed: check [relay] username and password; "
                         "some providers need an app password (the server said: 5.7.8 no)")

    def test_token_declined(self) -> None:
        self.assertEqual(self.sentence(AUTHDeclinedError(535, b"5.7.8 no"), token="t"),
                         "535 authentication failed: check [relay] username and token; "
                         "OAuth2 access tokens expire (often after an hour) (the server "
                         "said: 5.7.8 no)")

    def test_token_command_declined(self) -> None:
        self.assertEqual(self.sentence(AUTHDeclinedError(535, b"5.7.8 no"),
                                       token_command="fetch-token"),
                         "535 authentication failed: check [relay] username and token; "
                         "OAuth2 access tokens expire (often after an hour) (the server "
                         "said: 5.7.8 no)")

    def test_auth_only_after_starttls(self) -> None:
        self.assertEqual(self.sentence(AUTHRequiredError(502, b"x"), tls="none",
                                       extensions={b"STARTTLS": None}),
                         f"{WHERE} does not offer AUTH before STARTTLS: set [relay] tls = "
                         f"starttls")

    def test_no_common_mechanism(self) -> None:
        self.assertEqual(self.sentence(AUTHRequiredError(502, b"x"), secure=True,
                                       extensions={b"AUTH": b"GSSAPI"}),
                         f"{WHERE} offers AUTH GSSAPI, none of which mailsink speaks here "
                         f"(CRAM-MD5, PLAIN, LOGIN)")

    def test_username_without_password(self) -> None:
        self.assertEqual(self.sentence(AUTHRequiredError(502, b"x"), password="",
                                       extensions={b"AUTH": b"PLAIN"}),
                         f"{WHERE} needs a password for [relay] username user: set [relay] "
                         f"password (or token)")

    def test_starttls_not_offered(self) -> None:
        sentence = self.sentence(TLSRequiredError(502, b"x"))
        self.assertEqual(sentence, f"{WHERE} does not offer STARTTLS: set [relay] tls = none, "
                                   f"or use the server's TLS port")

    def test_530_authentication_required(self) -> None:
        self.assertEqual(self.sentence(DeliveryRefused(530, "5.7.0 Authentication required"),
                                       stage="mail", secure=True),
                         "530 the server requires authentication: set [relay] username and "
                         "password")

    def test_every_recipient_refused(self) -> None:
        self.assertEqual(self.sentence(DeliveryRefused(550, "No recipients accepted"),
                                       stage="mail",
                                       refusals=[("a@example.net", 550, "5.1.1 no such user")]),
                         "the server refused every recipient: a@example.net (550 5.1.1 no "
                         "such user)")

    def test_plaintext_on_implicit_port(self) -> None:
        error = SSL.Error([("SSL routines", "", "wrong version number")])
        self.assertEqual(self.sentence(error, stage="handshake", tls="implicit", port=465),
                         "TLS handshake failed: wrong version number — the server speaks "
                         "plaintext first: set [relay] tls = starttls")

    def test_connection_refused(self) -> None:
        self.assertEqual(self.sentence(net.ConnectionRefusedError()),
                         f"{WHERE} refused the connection — nothing listens on that port: "
                         f"check [relay] host and port")

    def test_unknown_host(self) -> None:
        self.assertEqual(self.sentence(net.DNSLookupError("relay.test")),
                         "cannot find relay.test: no such host: check [relay] host")

    def test_connect_timeout(self) -> None:
        self.assertEqual(self.sentence(net.TimeoutError()),
                         f"{WHERE} did not answer a connection in 5 s — a firewall may drop "
                         f"it, or the host or port is wrong")

    def test_no_greeting_probes_for_tls(self) -> None:
        reactor = MemoryReactorClock()
        diagnosed = Diagnoser(SETTINGS, reactor).diagnose(
            RelayError(SMTPTimeoutError(-1, b"timeout"), "greeting", False, {}), DEADLINE)
        self.assertNoResult(diagnosed)
        ((_, port, factory, _, _),) = reactor.tcpClients
        self.assertEqual(port, 587)
        factory.clientConnectionFailed(None, Failure(net.ConnectionRefusedError()))
        reactor.advance(0.3)  # HostnameEndpoint's next attempt: there is none
        self.assertEqual(str(self.successResultOf(diagnosed)),
                         f"{WHERE} sent no greeting in 5 s — the server may be overloaded, "
                         f"or something between holds the connection")
