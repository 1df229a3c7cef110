"""
The relay client when servers (or something between) misbehave, in memory: what counts as
delivered, what may be sent again, timeouts that must not wait on a silent peer, forged
lines around STARTTLS, and the sentences for refused logins.
"""

from __future__ import annotations

from typing import Any

import attrs
from test_relay_units import (
    DEADLINE,
    SETTINGS,
    TIMEOUT,
    Session,
    TLSTransport,
    logged_in,
    message,
)
from twisted.internet import error as net
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from mailsink import sentences
from mailsink.relay.connection import (
    DeliveryRefused,
    EarlyReply,
    InjectedAfterStartTLS,
    Message,
    RelayError,
)
from mailsink.relay.diagnose import Diagnoser


class AbortingTransport(TLSTransport):
    """Records abortConnection, which a TLS transport needs to close without the peer."""

    aborted = False

    def abortConnection(self) -> None:
        self.aborted = True
        super().loseConnection()


class DeliveryTests(SynchronousTestCase):
    def test_2xx_before_the_data_is_not_a_delivery(self) -> None:
        """A server answering 221 to MAIL FROM (it was closing) did not take the message,
        though Twisted still counts the previous message's recipients."""
        session, sent = logged_in(), message()
        session.deliver(message())
        session.send(sent)
        session.server("221 2.0.0 Bye", "250 2.0.0 reset")
        error = self.failureResultOf(sent.sent, RelayError).value
        self.assertIsInstance(error.error, DeliveryRefused)
        self.assertEqual(error.error.code, 221)

    def test_a_closed_connection_refuses_a_message_as_safe_to_resend(self) -> None:
        session = logged_in()
        session.connection.quit()
        sent = message()
        session.send(sent)
        error = self.failureResultOf(sent.sent, RelayError).value
        self.assertTrue(error.before_mail)

    def test_421_to_mail_from_may_be_resent_elsewhere(self) -> None:
        session, sent = logged_in(), message()
        session.send(sent)
        written = session.server("421 4.7.0 too many messages on this connection")
        self.assertEqual(written, b"RSET\r\nQUIT\r\n")
        self.assertTrue(self.failureResultOf(sent.sent, RelayError).value.before_mail)
        self.assertTrue(session.connection.closed)

    def test_garbage_while_parked_closes_the_connection(self) -> None:
        session = logged_in()
        session.server("Connection timed out")
        self.assertTrue(session.connection.closed)
        sent = message()
        session.send(sent)
        self.assertTrue(self.failureResultOf(sent.sent, RelayError).value.before_mail)

    def test_answer_during_the_data_aborts(self) -> None:
        transport = AbortingTransport()
        session = Session(transport=transport)
        session.ehlo("AUTH PLAIN")
        session.server("235 2.7.0 accepted")
        sent = Message("from@example.com", ["to@example.net"], b"x" * 65534 + b"\r\n",
                       DEADLINE)
        session.send(sent)
        session.server("250 2.1.0 ok", "250 2.1.5 ok")
        session.connection.dataReceived(b"354 go ahead\r\n")  # the body starts streaming
        session.connection.dataReceived(b"552 5.3.4 too big\r\n")
        error = self.failureResultOf(sent.sent, RelayError).value
        self.assertIsInstance(error.error, EarlyReply)
        self.assertFalse(error.after_data)
        self.assertTrue(transport.aborted)
        self.assertNotIn(b"\r\n.\r\n", transport.value())

    def test_lost_during_the_data_is_told_as_lost(self) -> None:
        session, sent = logged_in(), Message("from@example.com", ["to@example.net"],
                                             b"x" * 65534 + b"\r\n", DEADLINE)
        session.send(sent)
        session.server("250 2.1.0 ok", "250 2.1.5 ok")
        session.connection.dataReceived(b"354 go ahead\r\n")
        session.transport.producer.stopProducing()  # what TCP does first when the link drops
        session.connection.connectionLost(Failure(net.ConnectionLost()))
        error = self.failureResultOf(sent.sent, RelayError).value
        self.assertIsInstance(error.error, net.ConnectionLost)
        self.assertFalse(error.after_data)

    def test_result_told_after_the_connection_is_back(self) -> None:
        session, sent = logged_in(), message()
        order: list[str] = []
        session.connection.on_idle = lambda _: order.append("idle")
        sent.sent.addCallback(lambda _: order.append("told"))
        session.deliver(sent)
        self.assertEqual(order, ["idle", "told"])

    def test_refused_rset_ends_the_connection(self) -> None:
        session, sent = logged_in(), message()
        session.send(sent)
        for reply in ("250 2.1.0 ok", "250 2.1.5 ok", "354 go ahead", "250 2.0.0 queued"):
            session.server(reply)
        self.assertEqual(session.server("502 5.5.1 no RSET here"), b"QUIT\r\n")
        self.assertEqual(self.successResultOf(sent.sent), "250 2.0.0 queued")


class TimeoutTests(SynchronousTestCase):
    def test_silence_after_the_data_may_have_delivered_and_aborts(self) -> None:
        transport = AbortingTransport()
        session, sent = Session(transport=transport), message()
        session.ehlo("AUTH PLAIN")
        session.server("235 2.7.0 accepted")
        session.send(sent)
        session.server("250 2.1.0 ok", "250 2.1.5 ok", "354 go ahead")
        self.assertTrue(session.transport.value().endswith(b"\r\n.\r\n"))
        session.clock.advance(TIMEOUT)
        error = self.failureResultOf(sent.sent, RelayError).value
        self.assertTrue(error.after_data)
        self.assertTrue(transport.aborted)

    def test_unanswered_quit_aborts(self) -> None:
        transport = AbortingTransport()
        session = Session(transport=transport)
        session.ehlo("AUTH PLAIN")
        session.server("235 2.7.0 accepted")
        session.connection.quit()
        session.clock.advance(TIMEOUT)
        self.assertTrue(transport.aborted)


class StartTLSTests(SynchronousTestCase):
    def test_lines_after_the_220_abort(self) -> None:
        transport = AbortingTransport()
        session = Session(starttls=object(), transport=transport)
        self.assertEqual(session.ehlo("STARTTLS", "AUTH PLAIN"), b"STARTTLS\r\n")
        written = session.server("220 2.0.0 go ahead\r\n250-forged\r\n250 AUTH PLAIN")
        self.assertEqual(written, b"")
        self.assertTrue(transport.aborted)
        self.assertIsNone(transport.context)  # TLS never started
        error = self.failureResultOf(session.connection.ready, RelayError).value
        self.assertIsInstance(error.error, InjectedAfterStartTLS)

    def test_ehlo_keywords_in_lower_case(self) -> None:
        session = Session()
        self.assertTrue(session.ehlo("auth PLAIN").startswith(b"AUTH PLAIN "))


class SentenceTests(SynchronousTestCase):
    def sentence(self, error: BaseException, **details: Any) -> str:
        diagnoser = Diagnoser(SETTINGS, MemoryReactorClock())
        failure = RelayError(error, "mail", True, {}, **details)
        return str(self.successResultOf(diagnoser.diagnose(failure, DEADLINE)))

    def test_partly_delivered(self) -> None:
        self.assertEqual(
            self.sentence(DeliveryRefused(250, "2.0.0 queued"),
                          refusals=[("gone@example.net", 550, "5.1.1 no such user")],
                          delivered=["to@example.net"]),
            "the server refused gone@example.net (550 5.1.1 no such user); the copy went to "
            "to@example.net only")

    def test_lost_after_the_data(self) -> None:
        self.assertEqual(
            self.sentence(net.ConnectionLost(), after_data=True),
            "relay.test:587 closed the connection before answering the end of the message: "
            "the message may have been delivered all the same; check before sending it again")

    def test_login_refusals_quote_the_server(self) -> None:
        self.assertEqual(
            sentences.auth_failed(454, "4.7.0 Too many login attempts"),
            "454 the server cannot check logins right now (the server said: 4.7.0 Too many "
            "login attempts): try again later")
        self.assertIn("turn on Authenticated SMTP for the mailbox in Microsoft 365",
                      sentences.auth_failed(535, "5.7.139 Authentication unsuccessful, "
                                                 "SmtpClientAuthentication is disabled"))
        self.assertIn("the account needs an app password",
                      sentences.auth_failed(534, "5.7.9 Application-specific password "
                                                 "required"))

    def test_injected_lines(self) -> None:
        self.assertEqual(self.sentence(InjectedAfterStartTLS()),
                         "relay.test:587 sent more lines right after agreeing to STARTTLS, "
                         "before TLS began: something on the way may be tampering with the "
                         "connection; not going on")

    def test_closed_during_an_implicit_handshake_looks_for_plaintext(self) -> None:
        """mailsink's own plaintext listeners drop a ClientHello at once: the client may see
        the drop before the greeting, so the diagnosis looks again, in plaintext."""
        reactor = MemoryReactorClock()
        settings = attrs.evolve(SETTINGS, tls="implicit", port=465)
        diagnosed = Diagnoser(settings, reactor).diagnose(
            RelayError(net.ConnectionLost(), "handshake", False, {}), DEADLINE)
        ((_, port, factory, _, _),) = reactor.tcpClients
        self.assertEqual(port, 465)
        probe = factory.buildProtocol(None)
        probe.makeConnection(StringTransport())
        probe.dataReceived(b"220 relay.test ESMTP\r\n")
        self.assertEqual(str(self.successResultOf(diagnosed)),
                         "TLS handshake failed: the server closed the connection — the server "
                         "speaks plaintext first: set [relay] tls = starttls")

