"""
The ESMTP protocol driven in memory: whole conversations over a StringTransport, with a
real Maildir in a temporary folder and disk work run synchronously (or held, to show
ordering). Each gap Twisted's own ESMTP leaves has a regression test here.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.interfaces import ISSLTransport, ITLSTransport
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import LogEvent, formatEvent, globalLogPublisher
from twisted.trial.unittest import TestCase
from zope.interface import directlyProvides, implementer

from mailsink.realm import build_portal
from mailsink.smtp.factory import SMTPFactory
from mailsink.smtp.server import SMTPSettings
from mailsink.store import maildir as maildir_module
from mailsink.store.maildir import Maildir


@implementer(ITLSTransport)
class TLSCapableTransport(StringTransport):
    """A StringTransport that can 'start TLS': it records the call and becomes secure."""

    tls_started_with: Any = None

    def startTLS(self, contextFactory: Any, normal: bool = True) -> None:
        self.tls_started_with = contextFactory
        directlyProvides(self, ISSLTransport, ITLSTransport)

    def getHandle(self) -> Any:
        return FakeTLSConnection()


class FakeTLSConnection:
    def get_protocol_version_name(self) -> str:
        return "TLSv1.3"

    def get_cipher_name(self) -> str:
        return "TLS_AES_256_GCM_SHA384"

    def get_cipher_bits(self) -> int:
        return 256


class HeldDiskWork:
    """A run_blocking that holds each job until the test releases it."""

    def __init__(self) -> None:
        self.jobs: list[tuple[Callable[[], Any], Deferred[Any]]] = []

    def __call__(self, work: Callable[[], Any]) -> Deferred[Any]:
        waiting: Deferred[Any] = Deferred()
        self.jobs.append((work, waiting))
        return waiting

    def release_all(self) -> None:
        while self.jobs:
            work, waiting = self.jobs.pop(0)
            maybeDeferred(work).chainDeferred(waiting)


class ProtocolTestCase(TestCase):
    tls_mode = "none"
    max_message_size = 10_000
    max_recipients = 3

    def setUp(self) -> None:
        self.folder = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.folder)
        self.disk: Callable[[Callable[[], Any]], Deferred[Any]] = maybeDeferred
        self.maildir = Maildir(self.folder, lambda work: self.disk(work))
        self.maildir.create()
        self.clock = Clock()
        self.events: list[LogEvent] = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def connect(self, tls_mode: str | None = None, max_connections: int = 10,
                transport: StringTransport | None = None,
                long_lines: str = "accept") -> tuple[Any, StringTransport]:
        settings = SMTPSettings(
            hostname="sink.test", listener="smtp", tls_mode=tls_mode or self.tls_mode,
            max_message_size=self.max_message_size, max_recipients=self.max_recipients,
            long_lines=long_lines)
        self.factory = getattr(self, "factory", None) or SMTPFactory(
            settings, build_portal(self.maildir), object(), self.clock, max_connections)
        protocol = self.factory.buildProtocol(None)
        transport = transport or TLSCapableTransport()
        protocol.makeConnection(transport)
        return protocol, transport

    def converse(self, protocol: Any, transport: StringTransport, data: bytes) -> list[str]:
        """Send C{data}; return the reply lines it caused."""
        transport.clear()
        protocol.dataReceived(data)
        return transport.value().decode().splitlines()

    def stored(self) -> list[bytes]:
        new = os.path.join(self.folder, "new")
        result = []
        for name in sorted(os.listdir(new)):
            with open(os.path.join(new, name), "rb") as stream:
                result.append(stream.read())
        return result

    def tmp_files(self) -> list[str]:
        return os.listdir(os.path.join(self.folder, "tmp"))

    def logged(self) -> str:
        return "\n".join(formatEvent(event) for event in self.events)


TRANSACTION = (b"EHLO client.test\r\nMAIL FROM:<a@example.com>\r\n"
               b"RCPT TO:<b@example.com>\r\nDATA\r\n")


class ConversationTests(ProtocolTestCase):
    def test_greeting_names_hostname(self) -> None:
        _, transport = self.connect()
        self.assertEqual(transport.value(), b"220 sink.test ESMTP mailsink\r\n")

    def test_ehlo_lists_extensions(self) -> None:
        protocol, transport = self.connect()
        lines = self.converse(protocol, transport, b"EHLO client.test\r\n")
        self.assertEqual(lines[0], "250-sink.test Hello 192.168.1.1")
        self.assertEqual(
            [line[4:] for line in lines[1:]],
            ["PIPELINING", "SIZE 10000", "8BITMIME", "SMTPUTF8", "ENHANCEDSTATUSCODES"])
        self.assertTrue(lines[-1].startswith("250 "))

    def test_pipelined_transaction_stores_with_trace_headers(self) -> None:
        protocol, transport = self.connect()
        lines = self.converse(protocol, transport, TRANSACTION[:-6]
                              + b"RCPT TO:<c@example.com>\r\nDATA\r\n"
                              + b"Subject: hi\r\n\r\n..leading dot\r\nbody\r\n.\r\n")
        self.assertEqual([line[:9] for line in lines[-5:]],
                         ["250 2.1.0", "250 2.1.5", "250 2.1.5", "354 End d", "250 2.0.0"])
        [message] = self.stored()
        headers, _, body = message.partition(b"\n\n")
        self.assertEqual(body, b".leading dot\nbody\n")
        header_lines = headers.split(b"\n")
        self.assertEqual(header_lines[:3], [b"Return-Path: <a@example.com>",
                                            b"Delivered-To: b@example.com",
                                            b"Delivered-To: c@example.com"])
        self.assertEqual(header_lines[3], b"Received: from client.test (unknown [192.168.1.1])")
        self.assertRegex(headers, rb"by sink.test \(mailsink, listener smtp, session "
                                  rb"[0-9a-f]{16}\) with ESMTP id")
        self.assertTrue(headers.endswith(b"Subject: hi"))

    def test_ok_reply_names_stored_file(self) -> None:
        protocol, transport = self.connect()
        lines = self.converse(protocol, transport, TRANSACTION + b"x\r\n.\r\n")
        self.assertTrue(lines[-1].startswith("250 2.0.0 Ok: queued as "))
        name = lines[-1].rsplit(" ", 1)[1]
        self.assertEqual(os.listdir(os.path.join(self.folder, "new")), [name])

    def test_null_sender_and_helo(self) -> None:
        protocol, transport = self.connect()
        lines = self.converse(protocol, transport, b"HELO old.test\r\nMAIL FROM:<>\r\n"
                              b"RCPT TO:<b@example.com>\r\nDATA\r\nhi\r\n.\r\n")
        self.assertEqual(lines[0], "250 sink.test")
        self.assertTrue(lines[-1].startswith("250 2.0.0"))
        [message] = self.stored()
        self.assertTrue(message.startswith(b"Return-Path: <>\n"))
        self.assertIn(b"with SMTP id", message)

    def test_smtputf8_address(self) -> None:
        protocol, transport = self.connect()
        lines = self.converse(
            protocol, transport,
            "EHLO c\r\nMAIL FROM:<δοκιμή@παράδειγμα.δοκιμή> SMTPUTF8\r\n"
            "RCPT TO:<用户@例子.广告>\r\nDATA\r\nhi\r\n.\r\n".encode())
        self.assertTrue(lines[-1].startswith("250 2.0.0"), lines)
        [message] = self.stored()
        self.assertIn("Delivered-To: 用户@例子.广告".encode(), message)
        self.assertIn(b"with UTF8SMTP id", message)

    def test_sequence_errors(self) -> None:
        protocol, transport = self.connect()
        self.assertEqual(self.converse(protocol, transport, b"RCPT TO:<a@b>\r\n"),
                         ["503 5.5.1 Error: need MAIL command"])
        self.assertEqual(self.converse(protocol, transport, b"DATA\r\n"),
                         ["503 5.5.1 Error: need MAIL command"])
        self.converse(protocol, transport, b"MAIL FROM:<a@b>\r\n")
        self.assertEqual(self.converse(protocol, transport, b"MAIL FROM:<a@b>\r\n"),
                         ["503 5.5.1 Error: nested MAIL command"])
        self.assertEqual(self.converse(protocol, transport, b"DATA\r\n"),
                         ["554 5.5.1 Error: no valid recipients"])

    def test_simple_commands(self) -> None:
        protocol, transport = self.connect()
        self.assertEqual(self.converse(protocol, transport, b"NOOP\r\n"), ["250 2.0.0 Ok"])
        self.assertEqual(self.converse(protocol, transport, b"RSET\r\n"), ["250 2.0.0 Ok"])
        self.assertEqual(self.converse(protocol, transport, b"VRFY x\r\n")[0][:9], "252 2.0.0")
        self.assertEqual(self.converse(protocol, transport, b"BOGUS\r\n"),
                         ["500 5.5.2 Error: command not recognized"])
        self.assertEqual(self.converse(protocol, transport, b"EHLO\r\n"),
                         ["501 5.5.4 Syntax: EHLO hostname"])
        self.assertEqual(self.converse(protocol, transport, b"MAIL TO:<a@b>\r\n"),
                         ["501 5.5.4 Syntax: MAIL FROM:<address>"])
        self.assertEqual(self.converse(protocol, transport, b"QUIT\r\n"), ["221 2.0.0 Bye"])
        self.assertTrue(transport.disconnecting)

    def test_binary_garbage_gets_a_reply(self) -> None:
        protocol, transport = self.connect()
        for junk in (b"\xff\xfe\r\n", b"\x00\r\n", b"DO_IT\r\n", b"  \r\n"):
            self.assertEqual(self.converse(protocol, transport, junk),
                             ["500 5.5.2 Error: bad syntax"], junk)
        self.assertEqual(self.converse(protocol, transport, b"NOOP\r\n"), ["250 2.0.0 Ok"])

    def test_bare_auth_is_refused_not_crashed(self) -> None:
        """Twisted issue 7753: a bare AUTH crashed the protocol."""
        protocol, transport = self.connect()
        self.assertEqual(self.converse(protocol, transport, b"AUTH\r\n"),
                         ["503 5.5.1 Error: authentication not enabled"])
        self.assertEqual(self.converse(protocol, transport, b"NOOP\r\n"), ["250 2.0.0 Ok"])

    def test_unsupported_parameters(self) -> None:
        protocol, transport = self.connect()
        self.assertEqual(self.converse(protocol, transport, b"MAIL FROM:<a@b> RET=FULL\r\n"),
                         ["555 5.5.4 Unsupported option: RET"])
        lines = self.converse(protocol, transport, b"MAIL FROM:<a@b> BODY=BINARYMIME\r\n")
        self.assertEqual(lines,
                         ["501 5.5.4 BODY must be 7BIT or 8BITMIME"])
        self.converse(protocol, transport, b"MAIL FROM:<a@b> BODY=8BITMIME\r\n")
        self.assertEqual(self.converse(protocol, transport, b"RCPT TO:<c@d> NOTIFY=NEVER\r\n"),
                         ["555 5.5.4 Unsupported option: NOTIFY"])


class LimitTests(ProtocolTestCase):
    def test_declared_size_over_limit(self) -> None:
        protocol, transport = self.connect()
        self.assertEqual(self.converse(protocol, transport, b"MAIL FROM:<a@b> SIZE=10001\r\n"),
                         ["552 5.3.4 Message size exceeds fixed maximum message size "
                          "(10000 bytes)"])
        self.assertEqual(self.converse(protocol, transport, b"MAIL FROM:<a@b> SIZE=10000\r\n"),
                         ["250 2.1.0 Ok"])

    def test_streamed_size_over_limit_keeps_nothing_and_session_usable(self) -> None:
        protocol, transport = self.connect()
        self.converse(protocol, transport, TRANSACTION)
        for _ in range(30):
            protocol.dataReceived(b"x" * 500 + b"\r\n")
        lines = self.converse(protocol, transport, b".\r\n")
        self.assertEqual(lines, ["552 5.3.4 Message size exceeds fixed maximum message size "
                                 "(10000 bytes)"])
        self.assertEqual((self.stored(), self.tmp_files()), ([], []))
        lines = self.converse(protocol, transport, TRANSACTION[len(b"EHLO client.test\r\n"):]
                              + b"small\r\n.\r\n")
        self.assertTrue(lines[-1].startswith("250 2.0.0"))
        self.assertEqual(len(self.stored()), 1)

    def test_exactly_at_size_limit_is_accepted(self) -> None:
        protocol, transport = self.connect()
        self.converse(protocol, transport, TRANSACTION)
        body = (b"y" * 98 + b"\r\n") * 100  # 10,000 octets including CRLFs
        lines = self.converse(protocol, transport, body + b".\r\n")
        self.assertTrue(lines[-1].startswith("250 2.0.0"), lines)

    def test_too_many_recipients(self) -> None:
        protocol, transport = self.connect()
        lines = self.converse(protocol, transport, b"MAIL FROM:<a@b>\r\n" + b"".join(
            b"RCPT TO:<r%d@example.com>\r\n" % n for n in range(4)))
        self.assertEqual(lines, ["250 2.1.0 Ok"] + ["250 2.1.5 Ok"] * 3
                         + ["452 4.5.3 Error: too many recipients"])

    def test_long_line_in_data_is_refused_without_falling_into_command_mode(self) -> None:
        """Twisted fell back to command mode, running the rest of the body as commands."""
        protocol, transport = self.connect(long_lines="refuse")
        self.converse(protocol, transport, TRANSACTION)
        lines = self.converse(protocol, transport, b"a" * 999 + b"\r\nQUIT\r\nmore\r\n.\r\n")
        self.assertEqual(len(lines), 1)
        self.assertTrue(lines[0].startswith("500 5.5.2 Line too long"), lines)
        self.assertFalse(transport.disconnecting)
        self.assertEqual((self.stored(), self.tmp_files()), ([], []))
        self.assertEqual(self.converse(protocol, transport, b"NOOP\r\n"), ["250 2.0.0 Ok"])

    def test_long_line_in_data_is_stored_by_default(self) -> None:
        protocol, transport = self.connect()
        self.converse(protocol, transport, TRANSACTION)
        lines = self.converse(protocol, transport, b"a" * 999 + b"\r\nQUIT\r\nmore\r\n.\r\n")
        self.assertEqual(len(lines), 1)
        self.assertTrue(lines[0].startswith("250 2.0.0"), lines)
        self.assertEqual(len(self.stored()), 1)

    def test_longest_allowed_line(self) -> None:
        protocol, transport = self.connect(long_lines="refuse")
        self.converse(protocol, transport, TRANSACTION)
        lines = self.converse(protocol, transport, b"a" * 998 + b"\r\n.\r\n")
        self.assertTrue(lines[-1].startswith("250 2.0.0"), lines)

    def test_long_command_line(self) -> None:
        protocol, transport = self.connect()
        lines = self.converse(protocol, transport, b"NOOP " + b"x" * 20000)
        self.assertEqual(lines, ["500 5.5.2 Line too long (more than 16384 octets)"])
        self.converse(protocol, transport, b"x" * 20000)
        lines = self.converse(protocol, transport, b"yyy\r\nNOOP\r\n")
        self.assertEqual(lines, ["250 2.0.0 Ok"])

    def test_idle_timeout(self) -> None:
        protocol, transport = self.connect()
        self.clock.advance(299)
        protocol.dataReceived(b"NOOP\r\n")
        self.clock.advance(299)
        self.assertFalse(transport.disconnecting)
        transport.clear()
        self.clock.advance(2)
        self.assertEqual(transport.value(), b"421 4.4.2 sink.test Error: timeout exceeded\r\n")
        self.assertTrue(transport.disconnecting)

    def test_connection_cap(self) -> None:
        self.connect(max_connections=2)
        self.connect()
        _, third = self.connect()
        self.assertEqual(third.value(), b"421 4.7.0 sink.test Error: too many connections; "
                                        b"try again later\r\n")
        self.assertTrue(third.disconnecting)
        self.assertEqual(self.factory.connections, 2)


class BigMessageTests(ProtocolTestCase):
    max_message_size = 10 * 1024 * 1024

    def test_connection_lost_mid_data_leaves_nothing(self) -> None:
        protocol, transport = self.connect()
        self.converse(protocol, transport, TRANSACTION + b"half a message\r\n" * 20000)
        self.assertEqual(len(self.tmp_files()), 1)
        protocol.connectionLost(None)
        self.assertEqual((self.stored(), self.tmp_files()), ([], []))
        self.assertEqual(self.factory.connections, 0)


class StorageFailureTests(ProtocolTestCase):
    def test_write_error_answers_452_and_keeps_nothing(self) -> None:
        def disk_full(fd: int, chunks: list[bytes]) -> None:
            raise OSError(errno.ENOSPC, "No space left on device")

        self.patch(maildir_module, "_write_all", disk_full)
        protocol, transport = self.connect()
        lines = self.converse(protocol, transport, TRANSACTION + b"body\r\n.\r\n")
        self.assertEqual(lines[-1], "452 4.3.1 Insufficient system storage")
        self.assertEqual((self.stored(), self.tmp_files()), ([], []))
        self.assertIn("No space left on device", self.logged())
        self.assertEqual(self.converse(protocol, transport, b"NOOP\r\n"), ["250 2.0.0 Ok"])

    def test_replies_wait_for_the_disk(self) -> None:
        """A command pipelined after the final dot is answered only after the 250."""
        held = HeldDiskWork()
        self.disk = held
        protocol, transport = self.connect()
        lines = self.converse(protocol, transport, TRANSACTION + b"body\r\n.\r\nNOOP\r\n")
        self.assertEqual(lines[-1], "354 End data with <CR><LF>.<CR><LF>")
        self.assertEqual(self.stored(), [])
        transport.clear()
        held.release_all()
        lines = transport.value().decode().splitlines()
        self.assertTrue(lines[0].startswith("250 2.0.0 Ok: queued as"))
        self.assertEqual(lines[1:], ["250 2.0.0 Ok"])
        self.assertEqual(len(self.stored()), 1)


class TLSPolicyTests(ProtocolTestCase):
    tls_mode = "starttls"

    def test_starttls_advertised_until_tls(self) -> None:
        protocol, transport = self.connect()
        lines = self.converse(protocol, transport, b"EHLO c\r\n")
        self.assertIn("STARTTLS", [line[4:] for line in lines])
        self.assertEqual(self.converse(protocol, transport, b"STARTTLS\r\n"),
                         ["220 2.0.0 Ready to start TLS"])
        self.assertIsNotNone(transport.tls_started_with)  # type: ignore[attr-defined]
        lines = self.converse(protocol, transport, b"EHLO c\r\n")
        self.assertNotIn("STARTTLS", " ".join(lines))
        self.assertEqual(self.converse(protocol, transport, b"STARTTLS\r\n"),
                         ["503 5.5.1 Error: TLS already active"])

    def test_starttls_not_offered_on_implicit_or_plain_listeners(self) -> None:
        for mode in ("none", "implicit"):
            protocol, transport = self.connect(tls_mode=mode)
            del self.factory
            lines = self.converse(protocol, transport, b"EHLO c\r\nSTARTTLS\r\n")
            self.assertNotIn("STARTTLS", " ".join(lines[:-1]))
            self.assertEqual(lines[-1], "454 4.7.0 TLS not available")

    def test_starttls_injection_is_dropped(self) -> None:
        """Plaintext pipelined behind STARTTLS must not be acted on (CVE-2011-0411 class)."""
        protocol, transport = self.connect()
        lines = self.converse(protocol, transport,
                              b"EHLO c\r\nSTARTTLS\r\nMAIL FROM:<evil@example.com>\r\n")
        self.assertEqual(lines[-1], "220 2.0.0 Ready to start TLS")
        self.assertIn("dropped", self.logged())
        self.assertEqual(self.converse(protocol, transport, b"RCPT TO:<a@b>\r\n"),
                         ["503 5.5.1 Error: need MAIL command"])

    def test_starttls_forgets_helo_and_transaction(self) -> None:
        protocol, transport = self.connect()
        self.converse(protocol, transport, b"EHLO before.test\r\nMAIL FROM:<a@b>\r\n")
        self.converse(protocol, transport, b"STARTTLS\r\n")
        self.assertEqual(self.converse(protocol, transport, b"RCPT TO:<a@b>\r\n"),
                         ["503 5.5.1 Error: need MAIL command"])
        lines = self.converse(protocol, transport, b"EHLO after.test\r\nMAIL FROM:<a@b>\r\n"
                              b"RCPT TO:<c@d>\r\nDATA\r\nhi\r\n.\r\n")
        self.assertTrue(lines[-1].startswith("250 2.0.0"))
        [message] = self.stored()
        self.assertIn(b"from after.test", message)
        self.assertIn(b"(using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits))",
                      message)
        self.assertIn(b"with ESMTPS id", message)

    def test_starttls_required_refuses_mail_before_tls(self) -> None:
        protocol, transport = self.connect(tls_mode="starttls-required")
        for command in (b"EHLO c", b"NOOP", b"RSET"):
            self.assertTrue(self.converse(protocol, transport, command + b"\r\n")[-1]
                            .startswith("250"))
        for command in (b"MAIL FROM:<a@b>", b"RCPT TO:<a@b>", b"DATA", b"VRFY x"):
            self.assertEqual(self.converse(protocol, transport, command + b"\r\n"),
                             ["530 5.7.0 Must issue a STARTTLS command first"])
        self.converse(protocol, transport, b"STARTTLS\r\n")
        self.assertEqual(self.converse(protocol, transport, b"MAIL FROM:<a@b>\r\n"),
                         ["250 2.1.0 Ok"])

    def test_tls_client_hello_on_plaintext_port_is_explained(self) -> None:
        protocol, transport = self.connect()
        protocol.dataReceived(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")
        self.assertTrue(transport.disconnecting)
        self.assertIn("began a TLS handshake", self.logged())
        self.assertIn("[smtp]", self.logged())
