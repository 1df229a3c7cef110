"""
Real TLS in memory: an implicit-TLS listener (TLSMemoryBIOFactory around the SMTP factory,
as the service builds it) talking to a TLS client over iosim; and the first-bytes watch
that explains the 465-vs-587 confusion, driven by a Clock.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.defer import maybeDeferred
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.ssl import Certificate as TwistedCertificate
from twisted.internet.ssl import optionsForClientTLS
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import formatEvent, globalLogPublisher
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.test import iosim
from twisted.trial.unittest import TestCase

from mailsink.realm import build_portal
from mailsink.sessions.diagnosis import SILENCE_TIMEOUT, ListenerHints
from mailsink.smtp.diagnostics import ImplicitTLSWatchFactory
from mailsink.smtp.factory import SMTPFactory
from mailsink.smtp.server import SMTPSettings
from mailsink.store.maildir import Maildir
from mailsink.tls import load_or_generate_certificate, server_context_factory

ADDRESS = IPv4Address("TCP", "127.0.0.1", 40000)


class ScriptedClient(Protocol):
    """Sends each command after the previous reply's last line arrives."""

    def __init__(self, commands: list[bytes]) -> None:
        self.commands = list(commands)
        self.received = b""

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        lines = self.received.split(b"\r\n")
        if len(lines) > 1 and lines[-2][3:4] == b" " and self.commands:
            self.transport.write(self.commands.pop(0))  # type: ignore[union-attr]


class ImplicitTLSTests(TestCase):
    def setUp(self) -> None:
        self.folder = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.folder)
        self.certificate = load_or_generate_certificate(
            "", "", os.path.join(self.folder, "state"), "localhost")
        self.maildir = Maildir(os.path.join(self.folder, "mail"), maybeDeferred)
        self.maildir.create()

    def test_message_over_implicit_tls_records_version_and_cipher(self) -> None:
        settings = SMTPSettings(hostname="localhost", listener="smtp:smtps", tls_mode="implicit",
                                max_message_size=1000, max_recipients=5)
        context = server_context_factory(self.certificate)
        smtp = SMTPFactory(settings, build_portal(self.maildir), context, Clock())
        clock = Clock()
        server_factory = TLSMemoryBIOFactory(context, False, smtp, clock=clock)
        with open(self.certificate.cert_path, "rb") as stream:
            authority = TwistedCertificate.loadPEM(stream.read())
        script = ScriptedClient([
            b"EHLO client.test\r\n", b"MAIL FROM:<a@b.test>\r\n", b"RCPT TO:<c@d.test>\r\n",
            b"DATA\r\n", b"Subject: tls\r\n\r\nhello\r\n.\r\n", b"QUIT\r\n"])
        client_factory = TLSMemoryBIOFactory(
            optionsForClientTLS("localhost", trustRoot=authority), True,
            Factory.forProtocol(lambda: script), clock=clock)
        client_tls = client_factory.buildProtocol(ADDRESS)
        _, _, pump = iosim.connectedServerAndClient(
            lambda: server_factory.buildProtocol(ADDRESS), lambda: client_tls, clock=clock)
        pump.flush()
        replies = script.received.decode()
        self.assertIn("250 2.0.0 Ok: queued as", replies)
        self.assertNotIn("STARTTLS", replies)
        [name] = os.listdir(os.path.join(self.maildir.path, "new"))
        with open(os.path.join(self.maildir.path, "new", name), "rb") as stream:
            stored = stream.read()
        self.assertRegex(
            stored, rb"\(using TLSv1\.[23] with cipher [A-Z0-9_-]+ \(\d+/\d+ bits\)\)")
        self.assertIn(b"with ESMTPS id", stored)


class FirstBytesWatchTests(TestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.events: list[Any] = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)
        self.received: list[bytes] = []
        received = self.received

        class Inner(Protocol):
            def dataReceived(self, data: bytes) -> None:
                received.append(data)

        hints = ListenerHints("smtp:smtps", starttls_listeners="[smtp:submission] tcp:1587")
        self.factory = ImplicitTLSWatchFactory(Factory.forProtocol(Inner), hints, self.clock)

    def connect(self) -> tuple[Any, StringTransport]:
        protocol = self.factory.buildProtocol(ADDRESS)
        transport = StringTransport()
        protocol.makeConnection(transport)
        return protocol, transport

    def logged(self) -> str:
        return "\n".join(formatEvent(event) for event in self.events)

    def test_silent_client_is_explained_and_dropped(self) -> None:
        _, transport = self.connect()
        self.clock.advance(SILENCE_TIMEOUT - 0.1)
        self.assertFalse(transport.disconnecting)
        self.clock.advance(0.2)
        self.assertTrue(transport.disconnecting)
        self.assertIn("sent no TLS handshake within 10 s", self.logged())
        self.assertIn("[smtp:submission] tcp:1587", self.logged())

    def test_cleartext_smtp_is_explained_at_once(self) -> None:
        protocol, transport = self.connect()
        protocol.dataReceived(b"EHLO laptop\r\n")
        self.assertTrue(transport.disconnecting)
        self.assertIn("sent SMTP commands in the clear", self.logged())
        self.assertEqual(self.received, [])

    def test_tls_client_passes_through_and_timer_stops(self) -> None:
        protocol, transport = self.connect()
        protocol.dataReceived(b"\x16\x03\x01hello")
        protocol.dataReceived(b"more")
        self.clock.advance(60)
        self.assertEqual(self.received, [b"\x16\x03\x01hello", b"more"])
        self.assertFalse(transport.disconnecting)
        self.assertEqual(self.clock.getDelayedCalls(), [])
