"""
L{ConnectionPool} with fake connections (reuse, waiting, sending again, idle close, close)
and the wire form of a released message.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet import error as net
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from mailsink.relay.connection import Message, RelayError
from mailsink.relay.deadline import Deadline
from mailsink.relay.policy import prepare_release, wire_form
from mailsink.relay.pool import IDLE_CLOSE, ConnectionPool
from mailsink.sentences import Diagnosis

Hook = Callable[[Any], None]
TIMEOUT = 5.0


class FakeConnection:
    """A pooled connection: records what it is given; the test says how it ends."""

    def __init__(self, on_idle: Hook, on_lost: Hook) -> None:
        self.on_idle, self.on_lost = on_idle, on_lost
        self.messages: list[Message] = []
        self.closed, self.quits = False, 0

    def send(self, message: Message) -> Deferred[str]:
        self.messages.append(message)
        return message.sent

    def quit(self) -> None:
        self.quits += 1
        self.closed = True

    def finish(self, reply: str = "250 ok") -> None:
        self.messages[-1].sent.callback(reply)
        self.on_idle(self)

    def lose(self, before_mail: bool) -> RelayError:
        error = RelayError(net.ConnectionLost(), "mail", False, {}, before_mail=before_mail)
        self.closed = True
        self.messages[-1].sent.errback(error)
        self.on_lost(self)
        return error


class FakeClient:
    """C{connect} hands out Deferreds the test fires with L{open}; its own diagnoser."""

    where = "relay.test:587"

    def __init__(self) -> None:
        self.diagnoser = self
        self.errors: list[BaseException] = []
        self.openings: list[tuple[Deferred[Any], Hook, Hook]] = []
        self.deadlines: list[Deadline] = []
        """Each opening's."""

    def connect(self, on_idle: Hook, on_lost: Hook, deadline: Deadline) -> Deferred[Any]:
        opening: Deferred[Any] = Deferred()
        self.openings.append((opening, on_idle, on_lost))
        self.deadlines.append(deadline)
        return opening

    def diagnose(self, error: BaseException, deadline: Deadline) -> Deferred[Diagnosis]:
        self.errors.append(error)
        return succeed(Diagnosis(f"diagnosed at {getattr(error, 'stage', '?')}"))

    def open(self) -> FakeConnection:
        """Complete the latest opening."""
        opening, on_idle, on_lost = self.openings[-1]
        connection = FakeConnection(on_idle, on_lost)
        opening.callback(connection)
        return connection


class PoolTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.client = FakeClient()
        self.pool = ConnectionPool(self.client, 1, TIMEOUT, self.clock)  # type: ignore[arg-type]

    def send(self, wire: bytes) -> Deferred[Any]:
        return self.pool.send("from@example.com", ["to@example.net"], wire)

    def idle_connection(self) -> FakeConnection:
        first = self.send(b"one\r\n")
        connection = self.client.open()
        connection.finish("250 first")
        self.assertEqual(self.successResultOf(first), "250 first")
        return connection

    def test_second_message_waits_for_the_connection(self) -> None:
        first, second = self.send(b"one\r\n"), self.send(b"two\r\n")
        self.assertEqual(len(self.client.openings), 1)
        connection = self.client.open()
        self.assertEqual([m.wire for m in connection.messages], [b"one\r\n"])
        connection.finish("250 first")
        self.assertEqual([m.wire for m in connection.messages], [b"one\r\n", b"two\r\n"])
        connection.finish("250 second")
        self.assertEqual((self.successResultOf(first), self.successResultOf(second)),
                         ("250 first", "250 second"))
        self.assertEqual(len(self.client.openings), 1)

    def test_idle_connection_reused(self) -> None:
        connection = self.idle_connection()
        second = self.send(b"two\r\n")
        self.assertEqual(len(self.client.openings), 1)
        self.assertEqual(connection.messages[-1].wire, b"two\r\n")
        connection.finish("250 second")
        self.assertEqual(self.successResultOf(second), "250 second")

    def test_reused_connection_gone_before_mail_sends_again(self) -> None:
        stale = self.idle_connection()
        second = self.send(b"two\r\n")
        stale.lose(before_mail=True)
        self.assertEqual(len(self.client.openings), 2)
        fresh = self.client.open()
        self.assertEqual([m.wire for m in fresh.messages], [b"two\r\n"])
        fresh.finish("250 again")
        self.assertEqual(self.successResultOf(second), "250 again")
        self.assertEqual(self.client.errors, [])

    def test_reused_connection_lost_after_mail_not_sent_again(self) -> None:
        stale = self.idle_connection()
        second = self.send(b"two\r\n")
        error = stale.lose(before_mail=False)
        failure = self.failureResultOf(second, Diagnosis)
        self.assertEqual(str(failure.value), "diagnosed at mail")
        self.assertEqual(self.client.errors, [error])
        self.assertEqual(len(self.client.openings), 1)

    def test_idle_connection_quit_after_idle_close(self) -> None:
        connection = self.idle_connection()
        self.clock.advance(IDLE_CLOSE - 1)
        self.assertEqual(connection.quits, 0)
        self.clock.advance(1)
        self.assertEqual(connection.quits, 1)

    def test_failed_login_counted_off_once(self) -> None:
        first = self.send(b"one\r\n")
        opening, _, on_lost = self.client.openings[0]
        opening.errback(Diagnosis("535 refused"))
        on_lost(object())  # the refused connection closes afterwards
        self.assertEqual(str(self.failureResultOf(first, Diagnosis).value), "535 refused")
        self.send(b"two\r\n")
        self.send(b"three\r\n")
        self.assertEqual(len(self.client.openings), 2)

    def test_close_fails_waiting_messages(self) -> None:
        self.send(b"one\r\n")
        waiting = self.send(b"two\r\n")
        self.pool.close()
        self.assertEqual(str(self.failureResultOf(waiting, Diagnosis).value),
                         "mailsink is stopping")

    def test_close_quits_idle_connections(self) -> None:
        connection = self.idle_connection()
        self.pool.close()
        self.assertEqual(connection.quits, 1)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_connection_finishing_after_close_is_quit(self) -> None:
        first = self.send(b"one\r\n")
        connection = self.client.open()
        self.pool.close()
        connection.finish("250 first")
        self.assertEqual(self.successResultOf(first), "250 first")
        self.assertEqual(connection.quits, 1)
        self.assertEqual(self.clock.getDelayedCalls(), [])


class WireFormTests(SynchronousTestCase):
    def test_line_ends_become_crlf(self) -> None:
        self.assertEqual(wire_form(b"a\nb\r\nc\rd\n"), b"a\r\nb\r\nc\r\nd\r\n")

    def test_leading_dots_doubled(self) -> None:
        self.assertEqual(wire_form(b".first\nmid.dle\n.\n..two\n"),
                         b"..first\r\nmid.dle\r\n..\r\n...two\r\n")

    def test_always_ends_with_crlf(self) -> None:
        self.assertEqual(wire_form(b"no end"), b"no end\r\n")
        self.assertEqual(wire_form(b"end\r"), b"end\r\n")
        self.assertEqual(wire_form(b"end\r\n"), b"end\r\n")

    def test_prepare_release(self) -> None:
        raw = (b"Return-Path: <sender@example.com>\nDelivered-To: to@example.net\n"
               b"Subject: hi\nBcc: hidden@example.net\n\n.body\n")
        self.assertEqual(prepare_release(raw),
                         ("sender@example.com", b"Subject: hi\r\n\r\n..body\r\n"))
