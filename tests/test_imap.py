"""
The IMAP server in memory: L{SinkIMAP4Server} on a string transport over a temporary
Maildir, with a real portal and realm.
"""

from __future__ import annotations

import os
import re
import tempfile
import threading
import time
from typing import Any

from twisted.cred.checkers import InMemoryUsernamePasswordDatabaseDontUse
from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks, maybeDeferred
from twisted.internet.interfaces import ITLSTransport
from twisted.internet.task import Clock, deferLater
from twisted.internet.testing import StringTransport
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase
from zope.interface import implementer

from mailsink.imap import changes, uids
from mailsink.imap.mailbox import inline
from mailsink.imap.protocol import SinkIMAP4Server
from mailsink.imap.service import register_reader
from mailsink.imap.settings import IMAPSettings
from mailsink.realm import build_portal
from mailsink.store.maildir import Maildir

MESSAGE = (b"From: Alice <alice@example.com>\nTo: bob@example.com\nSubject: hello %d\n"
           b"Date: Mon, 23 Nov 2026 10:00:00 +0000\n\nbody %d text\n")


@implementer(ITLSTransport)
class Transport(StringTransport):
    """Drives pull producers at once; records STARTTLS."""

    tls_started = False

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        super().registerProducer(producer, streaming)
        if not streaming:
            while self.producer is producer:
                producer.resumeProducing()

    def startTLS(self, context: Any) -> None:
        self.tls_started = True


class IMAPTestCase(TestCase):
    def setUp(self) -> None:
        self.root = tempfile.mkdtemp(prefix="mailsink-imap-")
        self.addCleanup(_rmtree, self.root)
        self.maildir = os.path.join(self.root, "mail")
        self.state = os.path.join(self.root, "state")
        for sub in ("cur", "new", "tmp"):
            os.makedirs(os.path.join(self.maildir, sub))
        uids._maps.clear()
        self.addCleanup(uids._maps.clear)
        self.clock = Clock()
        self.counter = 0

    def deliver(self, count: int = 1, flags: str | None = None) -> list[str]:
        names = []
        for _ in range(count):
            self.counter += 1
            name = f"{1700000000 + self.counter}.M{self.counter}P1Q1.host"
            if flags is None:
                path = os.path.join(self.maildir, "new", name)
            else:
                path = os.path.join(self.maildir, "cur", f"{name}:2,{flags}")
            with open(path, "wb") as file:
                file.write(MESSAGE % (self.counter, self.counter))
            names.append(name)
        return names

    def connect(self, tls_mode: str = "starttls", allow_insecure: bool = True,
                login: bool = True, max_message_size: int = 1000,
                run: Any = inline) -> Session:
        checker = InMemoryUsernamePasswordDatabaseDontUse(alice=b"secret")
        portal = build_portal(Maildir(self.maildir, _no_threads), "none", checker)
        register_reader(portal, self.state, run)
        settings = IMAPSettings("mx.test", "imap", tls_mode, allow_insecure,
                                max_message_size)
        server = SinkIMAP4Server(settings, portal, object())
        server.clock = self.clock
        server.callLater = self.clock.callLater  # type: ignore[method-assign]
        transport = Transport()
        server.makeConnection(transport)
        session = Session(server, transport, self.clock)
        self.addCleanup(session.close)
        session.greeting = session.read()
        if login:
            session.ok("a LOGIN alice secret")
        return session

    def on_disk(self) -> list[str]:
        return sorted(os.listdir(os.path.join(self.maildir, "cur")) +
                      os.listdir(os.path.join(self.maildir, "new")))


class Session:
    def __init__(self, server: SinkIMAP4Server, transport: Transport, clock: Clock) -> None:
        self.server = server
        self.transport = transport
        self.clock = clock
        self.greeting = b""

    def read(self) -> bytes:
        for _ in range(200):
            self.clock.advance(0)
        data = self.transport.value()
        self.transport.clear()
        return data

    def send(self, line: str | bytes) -> bytes:
        data = line.encode() if isinstance(line, str) else line
        self.server.dataReceived(data + b"\r\n")
        return self.read()

    def ok(self, line: str) -> bytes:
        reply = self.send(line)
        tag = line.split()[0].encode()
        assert re.search(rb"(^|\n)" + tag + rb" OK", reply), reply
        return reply

    def close(self) -> None:
        self.server.connectionLost(None)


def _no_threads(work: Any) -> Any:
    raise AssertionError("reading needs no store threads")


def _rmtree(path: str) -> None:
    import shutil
    shutil.rmtree(path, ignore_errors=True)


class GreetingAndLogin(IMAPTestCase):
    def test_logindisabled_before_tls(self) -> None:
        session = self.connect(allow_insecure=False, login=False)
        self.assertIn(b"LOGINDISABLED", session.greeting)
        self.assertIn(b"STARTTLS", session.greeting)
        self.assertNotIn(b"AUTH=PLAIN", session.greeting)
        self.assertIn(b"a NO [PRIVACYREQUIRED]", session.send("a LOGIN alice secret"))
        self.assertIn(b"b NO", session.send("b AUTHENTICATE PLAIN"))

    def test_starttls_drops_injected_commands(self) -> None:
        session = self.connect(allow_insecure=False, login=False)
        reply = session.send(b"a STARTTLS\r\nb LOGIN alice secret")
        self.assertIn(b"a OK", reply)
        self.assertNotIn(b"b ", reply)
        self.assertTrue(session.transport.tls_started)
        self.assertEqual(session.server.state, "unauth")
        caps = session.ok("c CAPABILITY")
        self.assertIn(b"AUTH=PLAIN", caps)
        self.assertNotIn(b"STARTTLS", caps)
        self.assertNotIn(b"LOGINDISABLED", caps)
        session.ok("d LOGIN alice secret")

    def test_starttls_required(self) -> None:
        session = self.connect(tls_mode="starttls-required", allow_insecure=True,
                               login=False)
        self.assertIn(b"a NO [PRIVACYREQUIRED]", session.send("a LOGIN alice secret"))
        session.ok("b NOOP")
        session.ok("c CAPABILITY")
        session.ok("d STARTTLS")
        session.ok("e LOGIN alice secret")

    def test_wrong_password(self) -> None:
        session = self.connect(login=False)
        self.assertIn(b"a NO", session.send("a LOGIN alice wrong"))
        self.assertEqual(session.server.state, "unauth")

    def test_authenticate_plain(self) -> None:
        session = self.connect(login=False)
        self.assertTrue(session.send("a AUTHENTICATE PLAIN").startswith(b"+"))
        import base64
        reply = session.send(base64.b64encode(b"\0alice\0secret"))
        self.assertIn(b"a OK", reply)
        self.assertEqual(session.server.state, "auth")

    def test_commands_before_login(self) -> None:
        session = self.connect(login=False)
        self.assertIn(b"a BAD", session.send("a SELECT INBOX"))
        self.assertIn(b"b BAD", session.send("b FROBNICATE"))
        session.ok("c NOOP")


class Mailbox(IMAPTestCase):
    def test_list_and_select(self) -> None:
        self.deliver(3)
        session = self.connect()
        self.assertIn(b'* LIST (\\HasNoChildren) "/" "INBOX"', session.ok('a LIST "" "*"'))
        reply = session.ok("b SELECT INBOX")
        self.assertIn(b"* 3 EXISTS", reply)
        self.assertIn(b"[UIDVALIDITY ", reply)
        self.assertIn(b"[READ-WRITE]", reply)
        self.assertIn(b"READ-ONLY", session.ok("c EXAMINE INBOX"))
        self.assertIn(b"a NO", session.send("a SELECT Other"))

    def test_uids_in_arrival_order_and_stable(self) -> None:
        self.deliver(3)
        session = self.connect()
        reply = session.ok("b SELECT INBOX")
        validity = re.search(rb"UIDVALIDITY (\d+)", reply)
        reply = session.ok("c FETCH 1:* (UID)")
        self.assertEqual(re.findall(rb"UID (\d+)", reply), [b"1", b"2", b"3"])
        uids._maps.clear()  # as after a restart
        session2 = self.connect()
        reply2 = session2.ok("b SELECT INBOX")
        self.assertEqual(validity.group(1) if validity else None,
                         re.search(rb"UIDVALIDITY (\d+)", reply2).group(1))  # type: ignore[union-attr]
        self.assertEqual(re.findall(rb"UID (\d+)", session2.ok("c FETCH 1:* (UID)")),
                         [b"1", b"2", b"3"])

    def test_uids_never_reused(self) -> None:
        self.deliver(2)
        session = self.connect()
        session.ok("a SELECT INBOX")
        session.ok("b STORE 2 +FLAGS (\\Deleted)")
        session.ok("c EXPUNGE")
        self.deliver(1)
        reply = session.ok("d NOOP")
        self.assertIn(b"* 2 EXISTS", reply)
        self.assertIn(b"UID 3", session.ok("e FETCH 2 (UID)"))

    def test_fetch_items(self) -> None:
        self.deliver(1)
        session = self.connect()
        session.ok("a SELECT INBOX")
        reply = session.ok("b FETCH 1 (FLAGS INTERNALDATE RFC822.SIZE ENVELOPE BODYSTRUCTURE)")
        self.assertIn(b"FLAGS ()", reply)
        self.assertIn(b'ENVELOPE ("Mon, 23 Nov 2026 10:00:00 +0000" "hello 1"', reply)
        self.assertIn(b'BODYSTRUCTURE ("TEXT" "PLAIN"', reply.upper())
        size = int(re.search(rb"RFC822.SIZE (\d+)", reply).group(1))  # type: ignore[union-attr]
        expected = (MESSAGE % (1, 1)).replace(b"\n", b"\r\n")
        self.assertEqual(size, len(expected))
        reply = session.ok("c FETCH 1 (BODY.PEEK[])")
        self.assertIn(expected, reply)
        self.assertEqual(self.on_disk()[0].endswith(".host"), True)  # PEEK: not seen
        reply = session.ok("d FETCH 1 (RFC822.HEADER BODY[HEADER.FIELDS (SUBJECT)] RFC822)")
        self.assertIn(b"Subject: hello 1\r\n", reply)
        self.assertIn(expected, reply)
        self.assertIn(b"body 1 text\r\n", session.ok("e UID FETCH 1 (BODY[TEXT])"))
        self.assertTrue(self.on_disk()[0].endswith(":2,S"))  # BODY[...]: seen

    def test_store_flags_rename_files(self) -> None:
        [name] = self.deliver(1)
        session = self.connect()
        session.ok("a SELECT INBOX")
        self.assertIn(b"FLAGS (\\Seen)", session.ok("b STORE 1 +FLAGS (\\Seen)"))
        self.assertEqual(self.on_disk(), [name + ":2,S"])
        session.ok("c STORE 1 +FLAGS.SILENT (\\Flagged \\Answered \\Draft)")
        self.assertEqual(self.on_disk(), [name + ":2,DFRS"])
        session.ok("d STORE 1 -FLAGS (\\Draft \\Seen)")
        self.assertEqual(self.on_disk(), [name + ":2,FR"])
        session.ok("e UID STORE 1 FLAGS (\\Deleted)")
        self.assertEqual(self.on_disk(), [name + ":2,T"])
        self.assertIn(b"* 1 EXPUNGE", session.ok("f EXPUNGE"))
        self.assertEqual(self.on_disk(), [])

    def test_flags_changed_by_another_program(self) -> None:
        [name] = self.deliver(1)
        session = self.connect()
        session.ok("a SELECT INBOX")
        os.rename(os.path.join(self.maildir, "new", name),
                  os.path.join(self.maildir, "cur", name + ":2,FS"))
        reply = session.ok("b NOOP")
        self.assertIn(b"* 1 FETCH (FLAGS (\\Flagged \\Seen))", reply)
        os.unlink(os.path.join(self.maildir, "cur", name + ":2,FS"))
        self.assertIn(b"* 1 EXPUNGE", session.ok("c NOOP"))

    def test_search(self) -> None:
        self.deliver(2)
        self.deliver(1, flags="S")
        session = self.connect()
        session.ok("a SELECT INBOX")
        self.assertIn(b"* SEARCH 1 2\r\n", session.ok("b SEARCH UNSEEN"))
        self.assertIn(b"* SEARCH 3\r\n", session.ok("c SEARCH SEEN"))
        self.assertIn(b"* SEARCH 1 2 3\r\n", session.ok("d SEARCH ALL"))
        self.assertIn(b"* SEARCH 2\r\n", session.ok('e SEARCH SUBJECT "hello 2"'))
        self.assertIn(b"* SEARCH 1 2 3\r\n", session.ok("f SEARCH FROM alice"))
        self.assertIn(b"* SEARCH 1 2 3\r\n", session.ok("g SEARCH TO bob"))
        self.assertIn(b"* SEARCH 3\r\n", session.ok("h SEARCH TEXT \"body 3\""))
        self.assertIn(b"* SEARCH\r\n", session.ok("i SEARCH SUBJECT nothing"))
        self.assertIn(b"* SEARCH 2 3\r\n", session.ok("j UID SEARCH UID 2:*"))
        self.assertIn(b"* SEARCH 1 2 3\r\n", session.ok("k SEARCH SINCE 1-Jan-2000"))
        self.assertIn(b"* SEARCH\r\n", session.ok("l SEARCH BEFORE 1-Jan-2000"))
        self.assertIn(b"* SEARCH 1 2 3\r\n", session.ok("m SEARCH LARGER 10"))
        self.assertIn(b"* SEARCH\r\n", session.ok("n SEARCH SMALLER 10"))
        # Digits where a word is expected are words, not sequence sets.
        self.assertIn(b"* SEARCH 2\r\n", session.ok("o SEARCH HEADER Subject 2"))
        self.assertIn(b"* SEARCH 3\r\n", session.ok("p SEARCH SUBJECT 3"))

    def test_status_close_idle(self) -> None:
        self.deliver(2)
        session = self.connect()
        reply = session.ok("a STATUS INBOX (MESSAGES UNSEEN UIDNEXT)")
        self.assertIn(b"MESSAGES 2", reply)
        self.assertIn(b"UNSEEN 2", reply)
        self.assertIn(b"UIDNEXT 3", reply)
        session.ok("b SELECT INBOX")
        session.ok("c STORE 1 +FLAGS (\\Deleted)")
        session.ok("d CLOSE")
        self.assertEqual(len(self.on_disk()), 1)
        session.ok("e SELECT INBOX")
        self.assertTrue(session.send("f IDLE").startswith(b"+"))
        self.deliver(1)
        self.clock.advance(1.0)
        self.assertIn(b"* 2 EXISTS", session.read())
        self.assertIn(b"f OK", session.send("DONE"))
        session.ok("g LOGOUT")


class BadInput(IMAPTestCase):
    def test_bad_sequence_sets(self) -> None:
        self.deliver(2)
        session = self.connect()
        session.ok("a SELECT INBOX")
        self.assertIn(b"b BAD", session.send("b FETCH 5 (FLAGS)"))
        self.assertIn(b"c BAD", session.send("c FETCH x:y (FLAGS)"))
        self.assertIn(b"d BAD", session.send("d STORE 0 +FLAGS (\\Seen)"))
        self.assertNotIn(b"* ", session.ok("e UID FETCH 99 (FLAGS)"))
        self.assertEqual(len(self.on_disk()), 2)
        self.assertTrue(all(":2," not in name for name in self.on_disk()))

    def test_long_line(self) -> None:
        session = self.connect()
        reply = session.send(b"a NOOP " + b"x" * 100_000)
        self.assertIn(b"* BAD Line too long", reply)
        session.ok("b NOOP")
        session.server.dataReceived(b"c " + b"y" * 70_000)
        session.server.dataReceived(b"y" * 1000 + b"\r\nd NOOP\r\n")
        self.assertIn(b"d OK", session.read())

    def test_big_literal(self) -> None:
        session = self.connect(max_message_size=1000)
        session.ok("a SELECT INBOX")
        reply = session.send("b APPEND INBOX {5000}")
        self.assertIn(b"b BAD", reply)
        self.assertNotIn(b"+", reply.split(b" ")[0])
        session.ok("c NOOP")
        self.assertEqual(self.on_disk(), [])

    def test_idle_needs_done(self) -> None:
        session = self.connect()
        session.ok("a SELECT INBOX")
        session.send("b IDLE")
        self.assertIn(b"b BAD", session.send("nonsense"))
        session.ok("c NOOP")


class Rescan(IMAPTestCase):
    def age_folders(self) -> None:
        old = os.stat(self.maildir).st_mtime - 60
        for sub in ("new", "cur"):
            os.utime(os.path.join(self.maildir, sub), (old, old))

    def test_unchanged_folders_are_not_rescanned(self) -> None:
        self.deliver(1)
        self.age_folders()
        session = self.connect()
        self.assertIn(b"* 1 EXISTS", session.ok("a SELECT INBOX"))
        session.ok("b NOOP")
        self.deliver(1)
        self.age_folders()  # as if nothing changed: the scan is skipped
        self.assertNotIn(b"EXISTS", session.ok("c NOOP"))
        os.utime(os.path.join(self.maildir, "new"))
        self.assertIn(b"* 2 EXISTS", session.ok("d NOOP"))


MULTIPART = (b"From: a@example.com\nTo: b@example.com\nSubject: parts\nMIME-Version: 1.0\n"
             b"Content-Type: multipart/mixed; boundary=\"XX\"\n\npreamble\n--XX\n"
             b"Content-Type: text/plain; charset=utf-8\n\nfirst part\n--XX\n"
             b"Content-Type: text/html\n\n<p>second</p>\n--XX--\n")


class Structure(IMAPTestCase):
    def test_multipart_sections(self) -> None:
        with open(os.path.join(self.maildir, "new", "1700000001.M1P1Q1.host"), "wb") as f:
            f.write(MULTIPART)
        session = self.connect()
        session.ok("a SELECT INBOX")
        reply = session.ok("b FETCH 1 (BODYSTRUCTURE)").upper()
        self.assertIn(b'("TEXT" "PLAIN"', reply)
        self.assertIn(b'("TEXT" "HTML"', reply)
        self.assertIn(b'"MIXED"', reply)
        self.assertIn(b"{10}\r\nfirst part)", session.ok("c FETCH 1 (BODY.PEEK[1])"))
        self.assertIn(b"{13}\r\n<p>second</p>)", session.ok("d FETCH 1 (BODY.PEEK[2])"))
        self.assertIn(b"Content-Type: text/html", session.ok("e FETCH 1 (BODY.PEEK[2.MIME])"))

    def test_moved_by_another_program_is_found(self) -> None:
        names = self.deliver(3)
        session = self.connect()
        session.ok("a SELECT INBOX")
        for name in names:
            os.rename(os.path.join(self.maildir, "new", name),
                      os.path.join(self.maildir, "cur", name + ":2,S"))
        reply = session.ok("b FETCH 1:* (BODY.PEEK[TEXT])")
        for n in (1, 2, 3):
            self.assertIn(b"body %d text" % (n,), reply)


class Throttle(IMAPTestCase):
    def test_failed_logins_are_slowed_down(self) -> None:
        from mailsink.auth.throttle import FIRST_DELAY, FailureThrottle
        session = self.connect(login=False)
        session.server.throttle = FailureThrottle(self.clock)
        self.assertNotIn(b"a NO", session.send("a LOGIN alice wrong"))
        self.clock.advance(FIRST_DELAY)
        self.assertIn(b"a NO", session.read())
        session.ok("b LOGIN alice secret")


class Held:
    """A L{mailbox.Run} that keeps each call until the test lets it run."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, tuple[Any, ...], Deferred[Any]]] = []

    def __call__(self, call: Any, *args: Any) -> Deferred[Any]:
        done: Deferred[Any] = Deferred()
        self.calls.append((call, args, done))
        return done

    def names(self) -> list[str]:
        return [call.__name__ for call, _args, _done in self.calls]

    def release_all(self) -> None:
        """Run the calls kept so far (not those they lead to)."""
        calls, self.calls = self.calls, []
        for call, args, done in calls:
            maybeDeferred(call, *args).chainDeferred(done)


class OffTheReactor(IMAPTestCase):
    """Scans, sizes, renames and unlinks run through the mailbox's runner (threads)."""

    def test_select_waits_and_later_commands_queue(self) -> None:
        self.deliver(3)
        held = Held()
        session = self.connect(run=held)
        reply = session.send(b"a SELECT INBOX\r\nb FETCH 1:* (UID RFC822.SIZE)\r\nc NOOP")
        self.assertEqual(reply, b"")  # nothing answered: the scan has not run
        self.assertEqual(held.names(), ["open_maildir"])
        held.release_all()
        reply = session.read()
        self.assertIn(b"a OK", reply)
        self.assertEqual(held.names(), ["_fetch_and_measure"])  # sizes: in a worker too
        self.assertNotIn(b"b OK", reply)
        held.release_all()
        reply = session.read()
        self.assertEqual(held.names(), ["rescan"])
        self.assertIn(b"* 3 FETCH (UID 3 RFC822.SIZE ", reply)
        self.assertNotIn(b"c OK", reply)
        held.release_all()
        self.assertIn(b"c OK", session.read())

    def test_noop_reports_before_its_ok(self) -> None:
        self.deliver(1)
        held = Held()
        session = self.connect(run=held)
        session.send("a SELECT INBOX")
        held.release_all()
        session.read()
        self.deliver(1)
        self.assertEqual(session.send("b NOOP"), b"")
        held.release_all()
        reply = session.read()
        self.assertLess(reply.index(b"* 2 EXISTS"), reply.index(b"b OK"))

    def test_store_and_expunge_in_workers(self) -> None:
        self.deliver(2)
        held = Held()
        session = self.connect(run=held)
        session.send("a SELECT INBOX")
        held.release_all()
        session.read()
        self.assertEqual(session.send("b STORE 1:2 +FLAGS (\\Deleted)"), b"")
        self.assertEqual(held.names(), ["store_flags"])  # picking and renaming
        held.release_all()
        self.assertIn(b"b OK", session.read())
        self.assertEqual(session.send("c EXPUNGE"), b"")
        self.assertEqual(held.names(), ["expunge_deleted"])
        held.release_all()
        reply = session.read()
        self.assertIn(b"* 2 EXPUNGE\r\n* 1 EXPUNGE\r\nc OK", reply)
        self.assertEqual(self.on_disk(), [])

    def test_content_read_in_worker(self) -> None:
        self.deliver(1)
        held = Held()
        session = self.connect(run=held)
        session.send("a SELECT INBOX")
        held.release_all()
        session.read()
        self.assertEqual(session.send("b FETCH 1 (BODY.PEEK[TEXT])"), b"")
        self.assertEqual(held.names(), ["fetch"])  # the message list: in a worker too
        held.release_all()
        self.assertEqual(session.read(), b"")
        self.assertEqual(held.names(), ["_load"])
        held.release_all()
        self.assertIn(b"body 1 text", session.read())

    def test_content_fetch_marks_seen_then_lists_then_reads(self) -> None:
        self.deliver(2)
        held = Held()
        session = self.connect(run=held)
        session.send("a SELECT INBOX")
        held.release_all()
        session.read()
        self.assertEqual(session.send(b"b FETCH 1:* (BODY[TEXT])\r\nc NOOP"), b"")
        for step in (["store_flags"], ["fetch"], ["_load"], ["_load"]):
            self.assertEqual(held.names(), step)
            held.release_all()
            self.assertNotIn(b"c OK", session.read())
        self.assertEqual(held.names(), ["rescan"])
        held.release_all()
        self.assertIn(b"c OK", session.read())
        self.assertTrue(all(name.endswith(":2,S") for name in self.on_disk()))

    def test_later_commands_wait_for_store(self) -> None:
        self.deliver(3)
        held = Held()
        session = self.connect(run=held)
        session.send("a SELECT INBOX")
        held.release_all()
        session.read()
        reply = session.send(b"b UID STORE 2:* +FLAGS (\\Flagged)\r\nc UID SEARCH FLAGGED")
        self.assertEqual(reply, b"")
        self.assertEqual(held.names(), ["store_flags"])
        held.release_all()
        reply = session.read()
        self.assertIn(b"* 2 FETCH (UID 2 FLAGS (\\Flagged))\r\n"
                      b"* 3 FETCH (UID 3 FLAGS (\\Flagged))\r\nb OK", reply)
        self.assertNotIn(b"c OK", reply)
        self.assertEqual(held.names(), ["search_messages"])
        held.release_all()
        self.assertIn(b"* SEARCH 2 3\r\nc OK", session.read())

    def test_close_expunges_in_worker_and_later_commands_wait(self) -> None:
        self.deliver(2)
        held = Held()
        session = self.connect(run=held)
        session.send("a SELECT INBOX")
        held.release_all()
        session.read()
        session.send("b STORE 1 +FLAGS (\\Deleted)")
        held.release_all()
        session.read()
        self.assertEqual(session.send(b"c CLOSE\r\nd SELECT INBOX"), b"")
        self.assertEqual(held.names(), ["expunge_deleted"])
        held.release_all()
        reply = session.read()
        self.assertIn(b"c OK CLOSE completed", reply)
        self.assertNotIn(b"EXPUNGE", reply)
        self.assertEqual(held.names(), ["open_maildir"])
        held.release_all()
        self.assertIn(b"* 1 EXISTS", session.read())
        self.assertEqual(len(self.on_disk()), 1)

    def test_search_in_worker_and_later_commands_wait(self) -> None:
        self.deliver(3)
        held = Held()
        session = self.connect(run=held)
        session.send("a SELECT INBOX")
        held.release_all()
        session.read()
        reply = session.send(b'b SEARCH TEXT "body 2"\r\nc NOOP\r\nd UID SEARCH ALL')
        self.assertEqual(reply, b"")  # nothing read or matched on the reactor
        self.assertEqual(held.names(), ["search_messages"])
        held.release_all()
        reply = session.read()
        self.assertIn(b"* SEARCH 2\r\nb OK SEARCH completed", reply)
        self.assertNotIn(b"c OK", reply)
        self.assertEqual(held.names(), ["rescan"])
        held.release_all()
        reply = session.read()
        self.assertIn(b"c OK", reply)
        self.assertNotIn(b"d OK", reply)
        self.assertEqual(held.names(), ["search_messages"])
        held.release_all()
        self.assertIn(b"* SEARCH 1 2 3\r\nd OK", session.read())

    def test_search_results_through_worker(self) -> None:
        self.deliver(2)
        self.deliver(1, flags="S")
        held = Held()
        session = self.connect(run=held)

        def ask(line: str) -> bytes:
            self.assertEqual(session.send(line), b"")
            held.release_all()
            reply = session.read()
            self.assertIn(line.split()[0].encode() + b" OK", reply)
            return reply

        ask("a SELECT INBOX")
        expected = [("SEARCH UNSEEN", "1 2"), ("SEARCH SEEN", "3"), ("SEARCH ALL", "1 2 3"),
                    ('SEARCH SUBJECT "hello 2"', "2"), ("SEARCH FROM alice", "1 2 3"),
                    ("SEARCH TO bob", "1 2 3"), ('SEARCH TEXT "body 3"', "3"),
                    ('SEARCH BODY "body 1"', "1"), ("SEARCH TEXT alice@", "1 2 3"),
                    ("SEARCH SUBJECT nothing", ""), ("UID SEARCH UID 2:*", "2 3"),
                    ("SEARCH UID 1,3", "1 3"), ("SEARCH 2:3", "2 3"),
                    ("SEARCH SINCE 1-Jan-2000", "1 2 3"), ("SEARCH BEFORE 1-Jan-2000", ""),
                    ("SEARCH LARGER 10", "1 2 3"), ("SEARCH SMALLER 10", ""),
                    ("SEARCH NOT SEEN SUBJECT hello", "1 2"),
                    ("SEARCH OR SEEN SUBJECT \"hello 1\"", "1 3")]
        for n, (line, numbers) in enumerate(expected):
            reply = ask(f"t{n} {line}")
            self.assertIn(f"* SEARCH{' ' if numbers else ''}{numbers}\r\n".encode(), reply,
                          line)
        session.send("z SEARCH NONSENSE")
        held.release_all()
        self.assertIn(b"z BAD", session.read())

    def test_search_finds_messages_another_program_moved(self) -> None:
        first = self.deliver(2)[0]
        session = self.connect()
        session.ok("a SELECT INBOX")
        os.rename(os.path.join(self.maildir, "new", first),
                  os.path.join(self.maildir, "cur", first + ":2,S"))
        self.assertIn(b"* SEARCH 1\r\n", session.ok('b SEARCH TEXT "body 1"'))
        mbox = session.server.mbox
        self.assertEqual(mbox.entries[1].name, first + ":2,S")  # taken in on the reactor
        self.assertIn(b"RFC822.SIZE", session.ok("c FETCH 1 (RFC822.SIZE)"))

    @inlineCallbacks
    def test_slow_scan_does_not_hold_up_other_sessions(self) -> Any:
        """A scan stuck in a worker thread: another connection's NOOP is answered."""
        self.deliver(3)
        stuck, entered = threading.Event(), threading.Event()
        real_scan = changes.scan

        def slow_scan(path: str) -> Any:
            if threading.current_thread() is not threading.main_thread():
                entered.set()
                stuck.wait(10)
            return real_scan(path)

        self.patch(changes, "scan", slow_scan)
        self.addCleanup(stuck.set)
        other = self.connect()  # runs inline: on this (the reactor's) thread
        other.ok("a SELECT INBOX")
        slow = self.connect(run=deferToThread)
        slow.server.dataReceived(b"s SELECT INBOX\r\n")
        yield deferToThread(entered.wait, 10)
        self.assertTrue(entered.is_set())
        start = time.monotonic()
        self.assertIn(b"b OK NOOP", other.ok("b NOOP"))
        self.assertLess(time.monotonic() - start, 0.5)
        self.assertNotIn(b"s OK", slow.read())
        stuck.set()
        deadline = time.monotonic() + 10
        reply = b""
        while b"s OK" not in reply and time.monotonic() < deadline:
            yield deferLater(reactor, 0.01, lambda: None)
            reply += slow.read()
        self.assertIn(b"* 3 EXISTS", reply)
        self.assertIn(b"s OK [READ-WRITE] SELECT successful", reply)


class ConnectionCap(IMAPTestCase):
    def test_too_many_connections_get_bye(self) -> None:
        from twisted.internet.address import IPv4Address

        from mailsink.imap.service import MAX_CONNECTIONS, IMAPFactory
        self.assertEqual(MAX_CONNECTIONS, 1000)
        checker = InMemoryUsernamePasswordDatabaseDontUse(alice=b"secret")
        portal = build_portal(Maildir(self.maildir, _no_threads), "none", checker)
        register_reader(portal, self.state)
        settings = IMAPSettings("mx.test", "imap", "none", True, 1000)
        factory = IMAPFactory(settings, portal, None, self.clock, max_connections=2)
        address = IPv4Address("TCP", "127.0.0.1", 12345)

        def connect() -> tuple[Any, StringTransport]:
            protocol = factory.buildProtocol(address)
            transport = StringTransport()
            protocol.makeConnection(transport)
            return protocol, transport

        first, first_transport = connect()
        second, _ = connect()
        self.assertEqual(factory.connections, 2)
        self.assertTrue(first_transport.value().startswith(b"* OK"))
        third, third_transport = connect()
        self.assertEqual(third_transport.value(),
                         b"* BYE too many connections; try again later\r\n")
        self.assertTrue(third_transport.disconnecting)
        third.connectionLost(None)
        self.assertEqual(factory.connections, 2)
        first.connectionLost(None)
        first.connectionLost(None)  # counted once only
        self.assertEqual(factory.connections, 1)
        fourth, fourth_transport = connect()
        self.assertTrue(fourth_transport.value().startswith(b"* OK"))
        self.assertEqual(factory.connections, 2)
        for protocol in (second, fourth):
            protocol.connectionLost(None)
        self.assertEqual(factory.connections, 0)
