"""
L{PipelinedInput} driven in memory: a small line protocol on a StringTransport whose
commands answer at once, wait on a Deferred the test fires, or act like STARTTLS.
"""

from __future__ import annotations

import time

from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import Protocol
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase

from mailsink.pipelining import MAX_BUFFERED_WHILE_WAITING, PipelinedInput


class LineProtocol(PipelinedInput, Protocol):
    """C{WAIT} answers when the test fires it, C{NOW} waits on a fired Deferred,
    C{STARTTLS} drops what is pipelined behind it; anything else is echoed."""

    max_line = 2000

    def __init__(self) -> None:
        self.lines: list[bytes] = []
        self.pending: list[Deferred[None]] = []
        self.dropped: list[bool] = []

    def dataReceived(self, data: bytes) -> None:
        self.buffer_input(data)

    def _take_input(self) -> bool:
        return self._take_line()

    def _line_too_long(self) -> None:
        self.transport.write(b"too long\r\n")

    def lineReceived(self, line: bytes) -> None:
        self.lines.append(line)
        if line == b"WAIT":
            waiting: Deferred[None] = Deferred()
            waiting.addCallback(lambda _: self.transport.write(b"done\r\n"))
            self.pending.append(waiting)
            self._block_until(waiting)
        elif line == b"NOW":
            self._block_until(succeed(None).addCallback(
                lambda _: self.transport.write(b"now\r\n")))
        elif line == b"STARTTLS":
            self.transport.write(b"ready\r\n")
            self.dropped.append(self.drop_pipelined())
        else:
            self.transport.write(b"ok " + line + b"\r\n")


class PipelinedInputTests(TestCase):
    def setUp(self) -> None:
        self.protocol = LineProtocol()
        self.transport = StringTransport()
        self.protocol.makeConnection(self.transport)

    def replies(self) -> list[bytes]:
        value = self.transport.value().splitlines()
        self.transport.clear()
        return value

    def test_lines_behind_a_pending_command_wait(self) -> None:
        self.protocol.dataReceived(b"WAIT\r\nA\r\nB\r\n")
        self.assertEqual(self.protocol.lines, [b"WAIT"])
        self.assertEqual(self.replies(), [])
        self.protocol.dataReceived(b"C\r\n")
        self.assertEqual(self.protocol.lines, [b"WAIT"])
        self.protocol.pending[0].callback(None)
        self.assertEqual(self.replies(), [b"done", b"ok A", b"ok B", b"ok C"])

    def test_held_lines_are_released_in_linear_time(self) -> None:
        """4 MiB pipelined behind one command: cutting each line off the front of the
        buffer (a copy of the rest each time) took minutes; an offset takes milliseconds."""
        line = b"X" * 62 + b"\r\n"
        self.protocol.dataReceived(b"WAIT\r\n" + line * (4 * 1024 * 1024 // len(line)))
        started = time.monotonic()
        self.protocol.pending[0].callback(None)
        self.assertLess(time.monotonic() - started, 2.0)
        self.assertEqual(len(self.protocol.lines), 1 + 4 * 1024 * 1024 // len(line))

    def test_replies_stay_in_order(self) -> None:
        self.protocol.dataReceived(b"WAIT\r\nA\r\nWAIT\r\nB\r\nNOW\r\nC\r\n")
        self.protocol.pending[0].callback(None)
        self.assertEqual(self.replies(), [b"done", b"ok A"])
        self.protocol.pending[1].callback(None)
        self.assertEqual(self.replies(), [b"done", b"ok B", b"now", b"ok C"])

    def test_a_fired_deferred_releases_at_once(self) -> None:
        self.protocol.dataReceived(b"NOW\r\nA\r\nNOW\r\nB\r\n")
        self.assertEqual(self.replies(), [b"now", b"ok A", b"now", b"ok B"])

    def test_many_fired_deferreds_do_not_recurse(self) -> None:
        self.protocol.dataReceived(b"NOW\r\n" * 5000)
        self.assertEqual(len(self.protocol.lines), 5000)

    def test_a_line_split_across_reads(self) -> None:
        self.protocol.dataReceived(b"A\r\nB")
        self.assertEqual(self.protocol.lines, [b"A"])
        self.protocol.dataReceived(b"C\n")
        self.assertEqual(self.protocol.lines, [b"A", b"BC"])

    def test_input_behind_starttls_is_dropped(self) -> None:
        self.protocol.dataReceived(b"STARTTLS\r\nEVIL\r\n")
        self.assertEqual(self.protocol.lines, [b"STARTTLS"])
        self.assertEqual(self.protocol.dropped, [True])
        self.protocol.dataReceived(b"A\r\n")
        self.assertEqual(self.replies(), [b"ready", b"ok A"])

    def test_nothing_to_drop_behind_starttls(self) -> None:
        self.protocol.dataReceived(b"STARTTLS\r\n")
        self.assertEqual(self.protocol.dropped, [False])

    def test_starttls_pipelined_behind_a_pending_command(self) -> None:
        self.protocol.dataReceived(b"WAIT\r\nSTARTTLS\r\nEVIL\r\n")
        self.protocol.pending[0].callback(None)
        self.assertEqual(self.protocol.lines, [b"WAIT", b"STARTTLS"])
        self.assertEqual(self.replies(), [b"done", b"ready"])

    def test_connection_lost_while_blocked(self) -> None:
        self.protocol.dataReceived(b"WAIT\r\nA\r\n")
        self.transport.loseConnection()
        self.protocol.connectionLost(Failure(ConnectionDone()))
        self.protocol.pending[0].callback(None)
        self.assertEqual(self.protocol.lines, [b"WAIT"])
        self.assertEqual(self.replies(), [b"done"])

    def test_transport_gone_while_blocked(self) -> None:
        self.protocol.dataReceived(b"WAIT\r\nA\r\n")
        self.protocol.transport = None
        self.protocol.dataReceived(b"x" * (MAX_BUFFERED_WHILE_WAITING + 1))
        self.assertEqual(self.protocol.lines, [b"WAIT"])

    def test_reading_pauses_while_too_much_waits(self) -> None:
        line = b"x" * 1000 + b"\r\n"
        self.protocol.dataReceived(b"WAIT\r\n")
        for _ in range(MAX_BUFFERED_WHILE_WAITING // len(line)):
            self.protocol.dataReceived(line)
        self.assertEqual(self.transport.producerState, "producing")
        self.protocol.dataReceived(line)
        self.assertEqual(self.transport.producerState, "paused")
        self.protocol.pending[0].callback(None)
        self.assertEqual(self.transport.producerState, "producing")
        self.assertEqual(len(self.protocol.lines),
                         2 + MAX_BUFFERED_WHILE_WAITING // len(line))

    def test_long_line_answered_once_and_skipped(self) -> None:
        self.protocol.dataReceived(b"y" * 2001)
        self.protocol.dataReceived(b"y" * 3000)
        self.protocol.dataReceived(b"yyy\r\nA\r\n")
        self.assertEqual(self.replies(), [b"too long", b"ok A"])
        self.protocol.dataReceived(b"z" * 2000 + b"\r\nB\r\n")
        self.assertEqual(self.replies(), [b"ok " + b"z" * 2000, b"ok B"])
        self.protocol.dataReceived(b"z" * 2001 + b"\r\nC\r\n")
        self.assertEqual(self.replies(), [b"too long", b"ok C"])
