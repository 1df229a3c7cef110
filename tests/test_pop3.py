"""
In-memory tests of the POP3 server: L{SinkPOP3} on a StringTransport, its mailbox on a
temporary Maildir, file work run synchronously.
"""

from __future__ import annotations

import base64
import os
from typing import Any

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.interfaces import ISSLTransport
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.mail.pop3 import IMailbox
from twisted.trial.unittest import TestCase
from zope.interface import directlyProvides

from mailsink.auth.accept_any import AcceptAnyChecker
from mailsink.auth.environment import EnvironmentChecker
from mailsink.auth.throttle import FailureThrottle
from mailsink.pop3.factory import POP3Factory
from mailsink.pop3.mailbox import (
    MaildirMailbox,
    dot_stuff,
    to_wire,
    top_of,
    uidl_for,
)
from mailsink.pop3.protocol import MAX_LINE, POP3Settings
from mailsink.realm import build_portal
from mailsink.store.maildir import Maildir

USERS = "alice:alice-secret bob:bob-secret"


def run_now(work: Any) -> Deferred[Any]:
    return maybeDeferred(work)


class TLSStringTransport(StringTransport):
    """A StringTransport that pretends to start TLS when asked."""

    tls_started = False

    def startTLS(self, context: Any) -> None:
        self.tls_started = True
        directlyProvides(self, ISSLTransport)


def message(n: int, body: str = "") -> bytes:
    return (f"From: a@example.com\nSubject: message {n}\n\nline one of {n}\n"
            f".dotted line\n{body}last line\n").encode()


class Base(TestCase):
    tls_mode = "starttls"
    allow_insecure = False
    isolation = "none"
    checker: Any = None

    def setUp(self) -> None:
        self.root = self.mktemp()
        self.maildir = Maildir(self.root, run_now)
        self.maildir.create()
        checker = self.checker if self.checker is not None else EnvironmentChecker(USERS)
        self.portal = build_portal(self.maildir, self.isolation, checker)
        realm: Any = self.portal.realm
        realm.readers[IMailbox] = lambda path, user: MaildirMailbox(path, user, run_now)
        self.clock = Clock()
        self.factory = POP3Factory(
            POP3Settings("pop.test", "pop3", self.tls_mode, self.allow_insecure),
            self.portal, object(), self.clock, FailureThrottle(self.clock))
        self.names: list[str] = []

    def deliver(self, data: bytes, folder: str = "new", root: str | None = None,
                flags: str = "") -> str:
        root = root or self.root
        name = self.maildir.unique_name()
        os.makedirs(os.path.join(root, folder), exist_ok=True)
        filename = name + (f":2,{flags}" if folder == "cur" else "")
        with open(os.path.join(root, folder, filename), "wb") as stream:
            stream.write(data)
        self.names.append(name)
        return name

    def connect(self, tls: bool = False) -> tuple[Any, TLSStringTransport]:
        protocol = self.factory.buildProtocol(None)
        transport = TLSStringTransport()
        if tls:
            directlyProvides(transport, ISSLTransport)
        protocol.makeConnection(transport)
        self.addCleanup(lambda: protocol.connectionLost(None) if transport.connected
                        else None)
        greeting = transport.value()
        self.assertTrue(greeting.startswith(b"+OK "), greeting)
        transport.clear()
        return protocol, transport

    def send(self, protocol: Any, transport: StringTransport, data: bytes) -> bytes:
        transport.clear()
        protocol.dataReceived(data)
        return transport.value()

    def login(self, tls: bool = True, user: str = "alice") -> tuple[Any, TLSStringTransport]:
        protocol, transport = self.connect(tls)
        self.assertEqual(self.send(protocol, transport, f"USER {user}\r\n".encode()),
                         b"+OK send PASS\r\n")
        reply = self.send(protocol, transport, f"PASS {user}-secret\r\n".encode())
        self.assertTrue(reply.startswith(b"+OK maildrop has"), reply)
        return protocol, transport

    def files(self, root: str | None = None) -> set[str]:
        root = root or self.root
        return {f"{sub}/{name}" for sub in ("new", "cur")
                for name in os.listdir(os.path.join(root, sub))}


class MailboxTests(TestCase):
    def test_wire_and_stuffing(self) -> None:
        self.assertEqual(to_wire(b"a\nb\r\nc"), b"a\r\nb\r\nc\r\n")
        self.assertEqual(to_wire(b""), b"")
        self.assertEqual(dot_stuff(b".a\r\nb\r\n..c\r\n"), b"..a\r\nb\r\n...c\r\n")

    def test_top(self) -> None:
        data = b"H: 1\nH2: 2\n\nb1\nb2\nb3\n"
        self.assertEqual(top_of(data, 0), b"H: 1\nH2: 2\n\n")
        self.assertEqual(top_of(data, 2), b"H: 1\nH2: 2\n\nb1\nb2\n")
        self.assertEqual(top_of(data, 99), data)
        self.assertEqual(top_of(b"H: 1\n", 3), b"H: 1\n")

    def test_uidl(self) -> None:
        name = "1700000000.M1P2Q3.host"
        self.assertEqual(uidl_for(name), name)
        for odd in ("x" * 71, "with space", "caf\u00e9", "~tilde"):
            uid = uidl_for(odd)
            self.assertTrue(uid.startswith("~") and 1 <= len(uid) <= 70, uid)
            self.assertEqual(uid, uidl_for(odd))

    def test_size_counts_crlf(self) -> None:
        root = self.mktemp()
        Maildir(root, run_now).create()
        data = b"A: b\n\nx\r\ny\nno newline"
        with open(os.path.join(root, "new", "1.M1P1Q1.h"), "wb") as stream:
            stream.write(data)
        box = MaildirMailbox(root, "u", run_now)
        self.successResultOf(box.load())
        self.assertEqual(box.listMessages(), [len(to_wire(data))])


class AuthorizationTests(Base):
    def test_capa_before_tls(self) -> None:
        protocol, transport = self.connect()
        reply = self.send(protocol, transport, b"CAPA\r\n")
        self.assertIn(b"\r\nSTLS\r\n", reply)
        self.assertNotIn(b"USER", reply)
        self.assertNotIn(b"SASL", reply)
        self.assertTrue(reply.endswith(b"\r\n.\r\n"))

    def test_capa_after_tls(self) -> None:
        protocol, transport = self.connect(tls=True)
        reply = self.send(protocol, transport, b"CAPA\r\n")
        self.assertNotIn(b"STLS", reply)
        self.assertIn(b"\r\nUSER\r\n", reply)
        self.assertIn(b"\r\nSASL PLAIN\r\n", reply)

    def test_login_refused_without_tls(self) -> None:
        protocol, transport = self.connect()
        reply = self.send(protocol, transport, b"USER alice\r\nPASS alice-secret\r\n")
        self.assertTrue(reply.startswith(b"-ERR [SYS/PERM]"), reply)
        self.assertIn(b"STLS", reply)
        self.assertIsNone(protocol.mbox)
        reply = self.send(protocol, transport, b"AUTH PLAIN "
                          + base64.b64encode(b"\0alice\0alice-secret") + b"\r\n")
        self.assertTrue(reply.startswith(b"-ERR [SYS/PERM]"), reply)

    def test_stls_discards_pipelined_plaintext(self) -> None:
        protocol, transport = self.connect()
        reply = self.send(protocol, transport, b"STLS\r\nUSER alice\r\nPASS alice-secret\r\n")
        self.assertEqual(reply, b"+OK Begin TLS negotiation\r\n")
        self.assertTrue(transport.tls_started)
        reply = self.send(protocol, transport, b"STLS\r\n")
        self.assertTrue(reply.startswith(b"-ERR"), reply)
        reply = self.send(protocol, transport, b"USER alice\r\nPASS alice-secret\r\n")
        self.assertIn(b"+OK maildrop has 0 messages", reply)

    def test_auth_plain(self) -> None:
        protocol, transport = self.connect(tls=True)
        reply = self.send(protocol, transport, b"AUTH PLAIN\r\n")
        self.assertEqual(reply, b"+ \r\n")
        reply = self.send(protocol, transport,
                          base64.b64encode(b"\0bob\0bob-secret") + b"\r\n")
        self.assertTrue(reply.startswith(b"+OK maildrop has"), reply)

    def test_auth_plain_initial_and_cancel(self) -> None:
        protocol, transport = self.connect(tls=True)
        self.send(protocol, transport, b"AUTH PLAIN\r\n")
        self.assertTrue(self.send(protocol, transport, b"*\r\n").startswith(b"-ERR"))
        self.assertTrue(self.send(protocol, transport, b"AUTH PLAIN !!!\r\n")
                        .startswith(b"-ERR"))
        self.assertTrue(self.send(protocol, transport, b"AUTH CRAM-MD5\r\n")
                        .startswith(b"-ERR"))
        reply = self.send(protocol, transport, b"AUTH PLAIN "
                          + base64.b64encode(b"\0alice\0alice-secret") + b"\r\n")
        self.assertTrue(reply.startswith(b"+OK maildrop has"), reply)

    def test_failure_is_slowed_and_not_logged_with_password(self) -> None:
        protocol, transport = self.connect(tls=True)
        events: list[dict[str, Any]] = []
        from twisted.logger import globalLogPublisher
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        reply = self.send(protocol, transport, b"USER alice\r\nPASS wrong-guess\r\nNOOP\r\n")
        self.assertEqual(reply, b"+OK send PASS\r\n")  # the failure reply and NOOP wait
        self.clock.advance(1)
        self.assertEqual(transport.value(), b"+OK send PASS\r\n"
                         b"-ERR [AUTH] authentication failed\r\n+OK \r\n")
        text = repr(events)
        self.assertIn("authentication failed", text)
        self.assertNotIn("wrong-guess", text)

    def test_commands_before_login(self) -> None:
        protocol, transport = self.connect(tls=True)
        for command in (b"STAT", b"LIST", b"RETR 1", b"DELE 1", b"UIDL", b"TOP 1 1"):
            reply = self.send(protocol, transport, command + b"\r\n")
            self.assertEqual(reply, b"-ERR not logged in\r\n")
        self.assertEqual(self.send(protocol, transport, b"FOO bar\r\n"),
                         b"-ERR unknown command\r\n")
        self.assertEqual(self.send(protocol, transport, b"PASS x\r\n"),
                         b"-ERR USER first\r\n")
        self.assertEqual(self.send(protocol, transport, b"APOP a b\r\n"),
                         b"-ERR unknown command\r\n")
        self.assertTrue(transport.connected)

    def test_long_line(self) -> None:
        protocol, transport = self.connect(tls=True)
        reply = self.send(protocol, transport, b"X" * (MAX_LINE + 10))
        self.assertTrue(reply.startswith(b"-ERR line too long"), reply)
        reply = self.send(protocol, transport, b"Y" * 100 + b"\r\nNOOP\r\n")
        self.assertEqual(reply, b"+OK \r\n")
        self.assertTrue(transport.connected)

    def test_tls_hello_on_plaintext_port(self) -> None:
        protocol, transport = self.connect()
        events: list[dict[str, Any]] = []
        from twisted.logger import globalLogPublisher
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        protocol.dataReceived(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")
        self.assertTrue(transport.disconnecting)
        self.assertIn("POP3S", repr(events))

    def test_quit_before_login(self) -> None:
        protocol, transport = self.connect()
        reply = self.send(protocol, transport, b"QUIT\r\n")
        self.assertTrue(reply.startswith(b"+OK"))
        self.assertTrue(transport.disconnecting)

    def test_idle_timeout(self) -> None:
        _, transport = self.connect()
        self.clock.advance(601)
        self.assertTrue(transport.value().startswith(b"-ERR [SYS/TEMP] autologout"))
        self.assertTrue(transport.disconnecting)

    def test_too_many_connections(self) -> None:
        self.factory.max_connections = 1
        self.connect()
        protocol = self.factory.buildProtocol(None)
        transport = StringTransport()
        protocol.makeConnection(transport)
        self.assertTrue(transport.value().startswith(b"-ERR [SYS/TEMP] too many"))


class RequiredTests(Base):
    tls_mode = "starttls-required"
    allow_insecure = True

    def test_required_refuses_before_stls(self) -> None:
        protocol, transport = self.connect()
        reply = self.send(protocol, transport, b"CAPA\r\n")
        self.assertNotIn(b"USER", reply)
        reply = self.send(protocol, transport, b"USER alice\r\n")
        self.assertTrue(reply.startswith(b"-ERR [SYS/PERM] issue STLS first"), reply)
        self.send(protocol, transport, b"STLS\r\n")
        reply = self.send(protocol, transport, b"USER alice\r\nPASS alice-secret\r\n")
        self.assertIn(b"+OK maildrop has", reply)


class InsecureTests(Base):
    tls_mode = "none"
    allow_insecure = True

    def test_insecure_allowed(self) -> None:
        protocol, transport = self.connect()
        reply = self.send(protocol, transport, b"CAPA\r\n")
        self.assertIn(b"USER", reply)
        self.assertNotIn(b"STLS", reply)
        self.assertTrue(self.send(protocol, transport, b"STLS\r\n").startswith(b"-ERR"))
        reply = self.send(protocol, transport, b"USER alice\r\nPASS alice-secret\r\n")
        self.assertIn(b"+OK maildrop has", reply)


class TransactionTests(Base):
    def test_stat_list_uidl(self) -> None:
        first = self.deliver(message(1))
        second = self.deliver(message(2), folder="cur", flags="F")
        protocol, transport = self.login()
        size = len(to_wire(message(1)))
        self.assertEqual(self.send(protocol, transport, b"STAT\r\n"),
                         f"+OK 2 {2 * size}\r\n".encode())
        self.assertEqual(self.send(protocol, transport, b"LIST\r\n"),
                         f"+OK 2 messages ({2 * size} octets)\r\n1 {size}\r\n2 {size}\r\n"
                         ".\r\n".encode())
        self.assertEqual(self.send(protocol, transport, b"LIST 2\r\n"),
                         f"+OK 2 {size}\r\n".encode())
        self.assertEqual(self.send(protocol, transport, b"UIDL\r\n"),
                         f"+OK unique-id listing follows\r\n1 {first}\r\n2 {second}\r\n"
                         ".\r\n".encode())
        self.assertEqual(self.send(protocol, transport, b"UIDL 1\r\n"),
                         f"+OK 1 {first}\r\n".encode())
        for bad in (b"LIST 3", b"LIST 0", b"LIST x", b"UIDL -1", b"RETR", b"TOP 1",
                    b"TOP 1 x", b"DELE 99", b"STAT 1", b"USER alice", b"STLS"):
            reply = self.send(protocol, transport, bad + b"\r\n")
            self.assertTrue(reply.startswith(b"-ERR"), (bad, reply))
        self.assertEqual(len(self.files()), 2)

    def test_retr_wire_form_and_seen(self) -> None:
        self.deliver(message(1, body=".\n..two\n"))
        protocol, transport = self.login()
        reply = self.send(protocol, transport, b"RETR 1\r\n")
        wire = to_wire(message(1, body=".\n..two\n"))
        self.assertEqual(reply, f"+OK {len(wire)} octets\r\n".encode() + dot_stuff(wire)
                         + b".\r\n")
        self.assertIn(b"\r\n..dotted line\r\n..\r\n...two\r\n", reply)
        self.assertEqual(self.files(), {f"cur/{self.names[0]}:2,S"})
        # The message stays readable after the rename.
        self.assertTrue(self.send(protocol, transport, b"RETR 1\r\n").startswith(b"+OK"))

    def test_retr_keeps_other_flags(self) -> None:
        self.deliver(message(1), folder="cur", flags="FT")
        protocol, transport = self.login()
        self.send(protocol, transport, b"RETR 1\r\n")
        self.assertEqual(self.files(), {f"cur/{self.names[0]}:2,FST"})

    def test_top(self) -> None:
        self.deliver(message(1))
        protocol, transport = self.login()
        reply = self.send(protocol, transport, b"TOP 1 1\r\n")
        self.assertEqual(reply, b"+OK top of message\r\nFrom: a@example.com\r\n"
                         b"Subject: message 1\r\n\r\nline one of 1\r\n.\r\n")
        self.assertEqual(self.files(), {f"new/{self.names[0]}"})

    def test_dele_rset_quit(self) -> None:
        self.deliver(message(1))
        self.deliver(message(2))
        protocol, transport = self.login()
        self.assertTrue(self.send(protocol, transport, b"DELE 1\r\n").startswith(b"+OK"))
        self.assertTrue(self.send(protocol, transport, b"DELE 1\r\n").startswith(b"-ERR"))
        self.assertTrue(self.send(protocol, transport, b"RETR 1\r\n").startswith(b"-ERR"))
        self.assertEqual(len(self.files()), 2)
        size = len(to_wire(message(2)))
        self.assertEqual(self.send(protocol, transport, b"STAT\r\n"),
                         f"+OK 1 {size}\r\n".encode())
        self.send(protocol, transport, b"RSET\r\n")
        self.assertTrue(self.send(protocol, transport, b"STAT\r\n").startswith(b"+OK 2 "))
        self.send(protocol, transport, b"DELE 2\r\n")
        self.assertEqual(len(self.files()), 2)
        reply = self.send(protocol, transport, b"QUIT\r\n")
        self.assertTrue(reply.startswith(b"+OK"), reply)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.files(), {f"new/{self.names[0]}"})

    def test_disconnect_without_quit_keeps_files(self) -> None:
        self.deliver(message(1))
        protocol, transport = self.login()
        self.send(protocol, transport, b"DELE 1\r\n")
        transport.loseConnection()
        protocol.connectionLost(None)
        self.assertEqual(len(self.files()), 1)

    def test_file_gone(self) -> None:
        self.deliver(message(1))
        self.deliver(message(2))
        protocol, transport = self.login()
        os.unlink(os.path.join(self.root, "new", self.names[0]))
        reply = self.send(protocol, transport, b"RETR 1\r\n")
        self.assertTrue(reply.startswith(b"-ERR [SYS/TEMP] message was removed"), reply)
        self.send(protocol, transport, b"DELE 1\r\nDELE 2\r\n")
        self.assertTrue(self.send(protocol, transport, b"QUIT\r\n").startswith(b"+OK"))
        self.assertEqual(self.files(), set())

    def test_moved_file_found(self) -> None:
        self.deliver(message(1))
        protocol, transport = self.login()
        name = self.names[0]
        os.rename(os.path.join(self.root, "new", name),
                  os.path.join(self.root, "cur", name + ":2,F"))
        self.assertTrue(self.send(protocol, transport, b"RETR 1\r\n").startswith(b"+OK"))
        self.assertEqual(self.files(), {f"cur/{name}:2,FS"})

    def test_pipelined(self) -> None:
        self.deliver(message(1))
        protocol, transport = self.connect(tls=True)
        reply = self.send(protocol, transport,
                          b"USER alice\r\nPASS alice-secret\r\nSTAT\r\nRETR 1\r\nQUIT\r\n")
        self.assertIn(b"+OK 1 ", reply)
        self.assertTrue(reply.endswith(b"signing off\r\n"), reply)

    def test_oldest_first(self) -> None:
        root = self.root
        for stamp in ("1700000300.M5P1Q1.h", "1700000100.M9P1Q1.h", "1700000200.M1P1Q1.h"):
            with open(os.path.join(root, "new", stamp), "wb") as stream:
                stream.write(b"S: " + stamp.encode() + b"\n\nx\n")
        protocol, transport = self.login()
        reply = self.send(protocol, transport, b"UIDL\r\n")
        self.assertEqual(reply, b"+OK unique-id listing follows\r\n1 1700000100.M9P1Q1.h\r\n"
                         b"2 1700000200.M1P1Q1.h\r\n3 1700000300.M5P1Q1.h\r\n.\r\n")


class IsolationTests(Base):
    isolation = "user"

    def test_user_sees_own_maildir(self) -> None:
        self.deliver(message(1))
        own = os.path.join(self.root, "alice")
        self.deliver(message(2), root=own)
        protocol, transport = self.login(user="alice")
        self.assertEqual(self.send(protocol, transport, b"UIDL\r\n"),
                         f"+OK unique-id listing follows\r\n1 {self.names[1]}\r\n.\r\n"
                         .encode())
        protocol, transport = self.login(user="bob")
        self.assertTrue(self.send(protocol, transport, b"STAT\r\n").startswith(b"+OK 0 0"))


class AcceptAnyTests(Base):
    checker = AcceptAnyChecker()

    def test_any_login_opens_shared(self) -> None:
        self.deliver(message(1))
        protocol, transport = self.connect(tls=True)
        reply = self.send(protocol, transport, b"USER who\r\nPASS ever\r\nSTAT\r\n")
        self.assertIn(b"+OK 1 ", reply)
