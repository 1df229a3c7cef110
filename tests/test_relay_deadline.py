"""
One C{[relay] timeout} per operation, in memory on a MemoryReactorClock: a relay test or a
release that hangs at any step (the token, connecting, the greeting, a TLS handshake, EHLO,
AUTH, MAIL FROM, RCPT, the data, the final dot) answers at its deadline, however busily the
server answered the steps before; a second look at the port stays within the grace; a
release waiting for a busy pool gives up at its deadline.
"""

from __future__ import annotations

from typing import Any

import attrs
from test_relay_units import SETTINGS, TLSTransport
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionAborted, ProcessDone
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from mailsink.relay.client import RelayClient
from mailsink.relay.deadline import GRACE, Deadline
from mailsink.relay.pool import ConnectionPool
from mailsink.relay.token import fetch_token
from mailsink.sentences import Diagnosis

TIMEOUT = 5
STEP = 1 / 64
"""A moment before the deadline (a binary fraction: the Clock's sums stay exact)."""
WHERE = "relay.test:587"
STOPPED = f"{WHERE} stopped answering for {TIMEOUT} s"


class AbortableTransport(TLSTransport):
    """What the client wrote; STARTTLS recorded; lost at once when aborted, as TCP is."""

    aborted = False
    protocol: Any = None

    def abortConnection(self) -> None:
        if not self.aborted:
            self.aborted = True
            super().abortConnection()
            self.protocol.connectionLost(Failure(ConnectionAborted()))


class ProcessReactor(MemoryReactorClock):
    """Records the token command instead of running it."""

    def __init__(self) -> None:
        super().__init__()
        self.processes: list[Any] = []

    def spawnProcess(self, processProtocol: Any, executable: Any, args: Any = (),
                     env: Any = None, *rest: Any, **options: Any) -> None:
        self.processes.append(processProtocol)


class Relay:
    """
    A relay client and pool on a memory reactor, its clock at 0 when the operation starts;
    the test plays the server.
    """

    def __init__(self, **settings: Any) -> None:
        self.reactor = ProcessReactor()
        settings = {"tls": "none", "username": "", "timeout": TIMEOUT, **settings}
        self.client = RelayClient(attrs.evolve(SETTINGS, **settings), self.reactor,
                                  "sink.test")
        self.pool = ConnectionPool(self.client, 1, TIMEOUT, self.reactor)
        self.protocol: Any = None
        self.transport = AbortableTransport()

    def accept(self) -> AbortableTransport:
        """The latest connection attempt succeeds."""
        factory = self.reactor.tcpClients[-1][2]
        self.protocol = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 587))
        self.transport = AbortableTransport()
        self.transport.protocol = self.protocol
        self.protocol.makeConnection(self.transport)
        return self.transport

    def server(self, *lines: str, flowing: bool = True) -> bytes:
        """The server says C{lines}; what the client wrote in answer (the data read as it
        is offered, unless not C{flowing}: a peer that stopped reading)."""
        self.transport.clear()
        for line in lines:
            self.protocol.dataReceived(line.encode("ascii") + b"\r\n")
            while flowing and self.transport.producer is not None:
                self.transport.producer.resumeProducing()
        return self.transport.value()

    def later(self, seconds: float) -> None:
        """Let C{seconds} (a multiple of STEP) pass, each timer firing when it is due."""
        steps = seconds / STEP
        assert steps == int(steps), seconds
        for _ in range(int(steps)):
            self.reactor.advance(STEP)

    def logged_in(self) -> bytes:
        """Greeted, EHLO answered (no AUTH, no STARTTLS); what the client said after."""
        self.accept()
        return self.server("220 relay.test ESMTP", "250 relay.test")

    def release(self, **options: Any) -> Deferred[Any]:
        return self.pool.send("from@example.com", ["to@example.net"],
                              b"Subject: hi\r\n\r\nbody\r\n", **options)


class DeadlineTestCase(SynchronousTestCase):
    def answer_at(self, relay: Relay, answer: Deferred[Any], at: float) -> str:
        """Nothing until C{at} seconds from the start; then C{answer}'s sentence."""
        relay.later(at - relay.reactor.seconds() - STEP)
        self.assertNoResult(answer)
        relay.later(STEP)
        return str(self.failureResultOf(answer, Diagnosis).value)


class RelayTestDeadlineTests(DeadlineTestCase):
    """C{relay/test}: from the connection attempt to the answer to its MAIL FROM."""

    def test_connection_never_answered(self) -> None:
        relay = Relay()
        answer = relay.client.check()
        self.assertEqual(self.answer_at(relay, answer, TIMEOUT),
                         f"{WHERE} did not answer a connection in {TIMEOUT} s — a firewall "
                         f"may drop it, or the host or port is wrong")
        self.assertEqual(relay.reactor.getDelayedCalls(), [])

    def test_no_greeting_then_a_second_look_within_the_grace(self) -> None:
        """Silence from the start: the look for TLS on the port (never answered either)
        ends GRACE after the deadline, not a whole timeout after (the old 2 x timeout)."""
        relay = Relay(tls="starttls")
        answer = relay.client.check()
        relay.accept()
        relay.later(TIMEOUT)
        self.assertTrue(relay.transport.aborted)
        self.assertEqual(len(relay.reactor.tcpClients), 2)  # the second look
        self.assertEqual(self.answer_at(relay, answer, TIMEOUT + GRACE),
                         f"{WHERE} sent no greeting in {TIMEOUT} s — the server may be "
                         f"overloaded, or something between holds the connection")
        self.assertLessEqual(GRACE, 1)
        self.assertEqual(relay.reactor.getDelayedCalls(), [])

    def test_implicit_tls_handshake_stalls(self) -> None:
        relay = Relay(tls="implicit", port=465)
        answer = relay.client.check()
        relay.accept()
        self.assertTrue(relay.transport.value().startswith(b"\x16\x03"))  # ClientHello
        self.assertEqual(self.answer_at(relay, answer, TIMEOUT),
                         f"relay.test:465 did not finish the TLS handshake in {TIMEOUT} s")

    def test_starttls_handshake_stalls(self) -> None:
        relay = Relay(tls="starttls")
        answer = relay.client.check()
        relay.accept()
        relay.server("220 relay.test ESMTP", "250-relay.test", "250 STARTTLS")
        relay.server("220 2.0.0 go ahead")
        self.assertIsNotNone(relay.transport.context)
        self.assertEqual(self.answer_at(relay, answer, TIMEOUT),
                         f"{WHERE} did not finish the TLS handshake in {TIMEOUT} s")

    def test_ehlo_unanswered(self) -> None:
        relay = Relay()
        answer = relay.client.check()
        relay.accept()
        self.assertEqual(relay.server("220 relay.test ESMTP"), b"EHLO sink.test\r\n")
        self.assertEqual(self.answer_at(relay, answer, TIMEOUT), STOPPED)

    def test_auth_unanswered(self) -> None:
        relay = Relay(username="user")
        answer = relay.client.check()
        relay.accept()
        relay.server("220 relay.test ESMTP")
        written = relay.server("250-relay.test", "250 AUTH PLAIN")
        self.assertTrue(written.startswith(b"AUTH PLAIN "))
        self.assertEqual(self.answer_at(relay, answer, TIMEOUT), STOPPED)

    def test_mail_from_unanswered(self) -> None:
        relay = Relay()
        answer = relay.client.check()
        self.assertEqual(relay.logged_in(), b"EHLO sink.test\r\nMAIL FROM:<>\r\n")
        self.assertEqual(self.answer_at(relay, answer, TIMEOUT), STOPPED)

    def test_steps_answered_just_in_time_do_not_add_up(self) -> None:
        """The greeting at 3 s and the EHLO answer at 4.5 s each came before a per-step
        timeout would have fired (which would then end at 9.5 s): the deadline stands."""
        relay = Relay(username="user")
        answer = relay.client.check()
        relay.accept()
        relay.later(3)
        relay.server("220 relay.test ESMTP")
        relay.later(1.5)
        self.assertTrue(relay.server("250-relay.test", "250 AUTH PLAIN").startswith(b"AUTH"))
        self.assertEqual(self.answer_at(relay, answer, TIMEOUT), STOPPED)

    def test_token_command_then_the_rest_in_the_time_left(self) -> None:
        relay = Relay(username="user", token_command="fetch-token")
        answer = relay.client.check()
        (command,) = relay.reactor.processes
        relay.later(3)
        command.outReceived(b"token\n")
        command.processEnded(Failure(ProcessDone(0)))
        relay.accept()  # and the server never greets
        self.assertEqual(self.answer_at(relay, answer, TIMEOUT + GRACE),
                         f"{WHERE} sent no greeting in {TIMEOUT} s — the server may be "
                         f"overloaded, or something between holds the connection")

    def test_token_command_never_done(self) -> None:
        relay = Relay(username="user", token_command="fetch-token")
        answer = relay.client.check()
        self.assertEqual(self.answer_at(relay, answer, TIMEOUT),
                         f"[relay] token_command did not finish in {TIMEOUT} s: check the "
                         f"command")
        self.assertEqual(relay.reactor.tcpClients, [])

    def test_token_command_has_only_the_time_left(self) -> None:
        """For a release that waited 3 s for a free connection, say."""
        reactor = ProcessReactor()
        token = fetch_token(reactor, "fetch-token", Deadline(2, TIMEOUT))
        reactor.advance(2 - STEP)
        self.assertNoResult(token)
        reactor.advance(STEP)
        self.assertEqual(str(self.failureResultOf(token, Diagnosis).value),
                         f"[relay] token_command did not finish in {TIMEOUT} s: check the "
                         f"command")

    def test_second_look_after_an_early_close_keeps_to_the_deadline(self) -> None:
        """A drop during an implicit handshake at 1 s: the plaintext look at the port has
        the 4 s left and the grace, not a timeout of its own."""
        relay = Relay(tls="implicit", port=465)
        answer = relay.client.check()
        relay.later(1)
        relay.accept()
        relay.protocol.connectionLost(Failure(ConnectionError("reset")))
        self.assertEqual(len(relay.reactor.tcpClients), 2)
        self.assertEqual(self.answer_at(relay, answer, TIMEOUT + GRACE),
                         "relay.test:465 closed the connection unexpectedly")


class ReleaseDeadlineTests(DeadlineTestCase):
    """A release: from the moment its copy is ready to the server's answer."""

    def test_rcpt_unanswered(self) -> None:
        relay = Relay()
        answer = relay.release()
        self.assertEqual(relay.logged_in(),
                         b"EHLO sink.test\r\nMAIL FROM:<from@example.com>\r\n")
        self.assertEqual(relay.server("250 2.1.0 ok"), b"RCPT TO:<to@example.net>\r\n")
        self.assertEqual(self.answer_at(relay, answer, TIMEOUT), STOPPED)

    def test_data_stalls(self) -> None:
        """The server stops reading in the middle of the data (its window stays full)."""
        relay = Relay()
        answer = relay.release()
        relay.logged_in()
        relay.server("250 2.1.0 ok", "250 2.1.5 ok")
        self.assertEqual(relay.server("354 go ahead", flowing=False), b"")
        self.assertEqual(self.answer_at(relay, answer, TIMEOUT), STOPPED)
        self.assertTrue(relay.transport.aborted)

    def test_final_dot_unanswered(self) -> None:
        relay = Relay()
        answer = relay.release()
        relay.logged_in()
        relay.later(1)
        relay.server("250 2.1.0 ok", "250 2.1.5 ok")
        self.assertTrue(relay.server("354 go ahead").endswith(b"body\r\n.\r\n"))
        self.assertEqual(self.answer_at(relay, answer, TIMEOUT),
                         f"{WHERE} did not answer the end of the message in {TIMEOUT} s: the "
                         f"message may have been delivered all the same; check before "
                         f"sending it again")

    def test_no_second_attempt_after_the_deadline(self) -> None:
        """A reused connection that never answers MAIL FROM: nothing was taken, but the
        time is up, so no fresh connection is tried (it would take another timeout)."""
        relay = Relay()
        first = relay.release()
        relay.logged_in()
        relay.server("250 2.1.0 ok", "250 2.1.5 ok", "354 go ahead", "250 2.0.0 queued",
                     "250 2.0.0 reset")
        self.assertEqual(self.successResultOf(first), "250 2.0.0 queued")
        relay.later(60 - STEP)  # idle in the pool, a moment before it would be closed
        answer = relay.release()
        self.assertEqual(self.answer_at(relay, answer, relay.reactor.seconds() + TIMEOUT),
                         STOPPED)
        self.assertEqual(len(relay.reactor.tcpClients), 1)

    def test_a_release_waiting_for_a_busy_pool_gives_up_at_its_deadline(self) -> None:
        """
        One connection, busy with an auto_relay message; another auto_relay message waits
        (its clock not started) and a release waits behind it. The release's answer comes
        at its own deadline; the auto_relay message gets its full timeout once it has the
        connection.
        """
        relay = Relay()
        auto = relay.release(answer_in_time=False)
        relay.logged_in()  # MAIL FROM sent, never answered
        relay.later(1)
        waiting_auto = relay.release(answer_in_time=False)
        relay.later(1)
        release = relay.release()
        self.assertEqual(self.answer_at(relay, auto, TIMEOUT), STOPPED)
        relay.logged_in()  # the next connection, for the waiting auto_relay message
        self.assertEqual(self.answer_at(relay, release, 2 + TIMEOUT),
                         f"all 1 connections to {WHERE} stayed busy for {TIMEOUT} s: try "
                         f"again, or raise [relay] pool_size")
        self.assertEqual(self.answer_at(relay, waiting_auto, 2 * TIMEOUT), STOPPED)
        self.assertEqual(relay.reactor.getDelayedCalls(), [])
