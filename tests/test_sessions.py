"""
SMTP sessions in memory: the recorder's bounds and outcomes, every diagnosis sentence, the
SQLite table (paging, filters, pruning, visibility, delete), the batching log on a Clock
and across a new log on the same state_dir, and whole SMTP conversations recorded by the
protocol over a StringTransport -- with no AUTH payload ever left in a transcript.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import os
import shutil
import sqlite3
import stat
import tempfile
import time
import uuid
from typing import Any

from OpenSSL import SSL
from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks, maybeDeferred
from twisted.internet.error import ConnectionAborted, ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase

from mailsink.auth.environment import EnvironmentChecker
from mailsink.auth.throttle import MAX_DELAY, FailureThrottle
from mailsink.chaos import Chaos
from mailsink.index.codec import message_id
from mailsink.realm import build_portal
from mailsink.sessions import store as store_module
from mailsink.sessions.diagnosis import (
    SILENCE_TIMEOUT,
    ListenerHints,
    diagnose,
    plaintext_on_implicit_port,
    tls_failed,
    tls_on_plaintext_port,
)
from mailsink.sessions.record import (
    HEAD_LINES,
    MAX_TEXT,
    TAIL_LINES,
    Entry,
    Session,
    SessionRecorder,
)
from mailsink.sessions.redact import transcript_line
from mailsink.sessions.store import BATCH_DELAY, SessionDatabase, SessionFilter, SessionLog
from mailsink.smtp.auth import AuthSetup
from mailsink.smtp.diagnostics import ImplicitTLSWatchFactory
from mailsink.smtp.factory import SMTPFactory
from mailsink.smtp.server import SMTPSettings
from mailsink.store.maildir import Maildir
from mailsink.web.events import EventHub
from tests.test_smtp_auth import TLSTransport

HINTS = ListenerHints(
    listener="smtp:submission", implicit_listeners="[smtp:smtps] port 1465",
    starttls_listeners="[smtp] port 1025", plain_listeners="[smtp] port 1025",
    certificate="/var/lib/mailsink/mailsink-cert.pem", max_message_size=25 * 1024 * 1024)
"""A submission listener's view of the others, as service.py builds it."""
BARE = ListenerHints(listener="smtp")
"""A listener with no other listener to point to."""


def b64(data: str | bytes) -> str:
    raw = data.encode("utf-8") if isinstance(data, str) else data
    return base64.b64encode(raw).decode("ascii")


def recorder(clock: Clock | None = None) -> SessionRecorder:
    return SessionRecorder("smtp", "10.0.0.1:40000", (clock or Clock()).seconds)


def settled(session: SessionRecorder, hints: ListenerHints = HINTS) -> Session:
    session.end()
    return session.freeze(*diagnose(session, hints))


class RecorderTests(TestCase):
    """What one session keeps: a bounded transcript, the facts, and its outcome."""

    def test_transcript_keeps_the_first_150_and_last_50_lines(self) -> None:
        clock = Clock()
        session = recorder(clock)
        for number in range(1000):
            clock.advance(1)
            session.client_said(f"NOOP {number}")
        frozen = settled(session)
        self.assertEqual(len(frozen.transcript), HEAD_LINES + TAIL_LINES)
        self.assertEqual(frozen.omitted, 800)
        texts = [entry.text for entry in frozen.transcript]
        self.assertEqual(texts, [f"NOOP {n}" for n in range(150)]
                         + [f"NOOP {n}" for n in range(950, 1000)])
        self.assertEqual(frozen.transcript[0].time, 1.0)
        entries = frozen.to_json()["Transcript"]
        self.assertEqual(len(entries), 201)
        self.assertEqual(entries[149]["Text"], "NOOP 149")
        self.assertEqual(entries[150], {"Time": entries[151]["Time"], "Side": "*",
                                        "Text": "… 800 more lines"})
        self.assertEqual(entries[151]["Text"], "NOOP 950")
        self.assertEqual(entries[-1]["Text"], "NOOP 999")

    def test_a_short_transcript_is_whole(self) -> None:
        session = recorder()
        for number in range(200):
            session.client_said(f"NOOP {number}")
        frozen = settled(session)
        self.assertEqual(frozen.omitted, 0)
        entries = frozen.to_json()["Transcript"]
        self.assertEqual([e["Text"] for e in entries], [f"NOOP {n}" for n in range(200)])

    def test_transcript_stays_under_64_kb_whatever_the_lines(self) -> None:
        session = recorder()
        for number in range(400):
            text = ("é€𝄞x" * 5000)[number % 7:]  # 1-, 2-, 3- and 4-octet characters
            if number % 2:
                session.client_said(text)
            else:
                session.server_said(500, text)
        frozen = settled(session)
        octets = [len(entry.text.encode("utf-8")) for entry in frozen.transcript]
        self.assertEqual(len(octets), 200)
        self.assertLessEqual(max(octets), MAX_TEXT)
        self.assertLess(sum(octets), 64 * 1024)
        transcript = json.dumps(frozen.to_json()["Transcript"], ensure_ascii=False)
        self.assertLess(len(transcript.encode()), (64 + 16) * 1024)  # with times and sides
        first = frozen.transcript[0].text
        self.assertTrue(first.startswith("500 é€𝄞x"), first[:20])
        kept = first.partition("… (")[0]
        self.assertEqual(first, f"{kept}… ({4 + 20000 - len(kept)} more characters)")

    def test_a_line_at_the_limit_is_kept_whole(self) -> None:
        session = recorder()
        session.client_said("x" * MAX_TEXT)
        session.client_said("é" * (MAX_TEXT // 2))
        session.client_said("x" * (MAX_TEXT + 1))
        texts = [entry.text for entry in settled(session).transcript]
        self.assertEqual(texts[:2], ["x" * MAX_TEXT, "é" * (MAX_TEXT // 2)])
        self.assertTrue(texts[2].endswith(" more characters)"), texts[2])
        self.assertLessEqual(len(texts[2].encode()), MAX_TEXT)

    def test_multi_line_reply_as_on_the_wire(self) -> None:
        session = recorder()
        session.server_said(250, "sink.test Hello 10.0.0.1\nPIPELINING\nSIZE 100")
        session.server_said(221, "2.0.0 Bye")
        self.assertEqual([e.text for e in settled(session).transcript],
                         ["250-sink.test Hello 10.0.0.1\n250-PIPELINING\n250 SIZE 100",
                          "221 2.0.0 Bye"])

    def test_last_error_names_the_command_it_answered(self) -> None:
        session = recorder()
        session.client_said("MAIL FROM:<a@b>")
        session.server_said(530, "5.7.0 Authentication required\nsecond line")
        session.client_said("NOOP")
        session.server_said(250, "2.0.0 Ok")
        self.assertEqual(session.last_error, (530, "5.7.0 Authentication required", "MAIL"))
        frozen = settled(session)
        self.assertEqual(frozen.error, "530 5.7.0 Authentication required")

    def test_outcomes(self) -> None:
        def outcome(*steps: str) -> str:
            session = recorder()
            for step in steps:
                if step == "stored":
                    session.stored("1.M1P1Q1.host")
                elif step == "refused":
                    session.server_said(550, "5.7.1 no")
                elif step == "mail":
                    session.in_transaction = True
                elif step == "quit":
                    session.quit = True
                else:
                    session.problem(step)
            return settled(session).outcome

        self.assertEqual(outcome(), "no-mail")
        self.assertEqual(outcome("quit"), "no-mail")
        self.assertEqual(outcome("stored"), "delivered")
        self.assertEqual(outcome("refused", "stored"), "delivered")
        self.assertEqual(outcome("refused"), "refused")
        self.assertEqual(outcome("chaos", "refused"), "refused")
        for problem in ("tls-on-plaintext", "plaintext-on-implicit", "silent-on-implicit",
                        "tls-failed", "storage"):
            self.assertEqual(outcome(problem, "refused"), "failed", problem)
        self.assertEqual(outcome("data-dropped"), "dropped")
        self.assertEqual(outcome("mail"), "dropped")
        self.assertEqual(outcome("mail", "quit"), "no-mail")

    def test_ends_once_with_its_reason(self) -> None:
        session = recorder()
        self.assertTrue(session.end("connection closed: why"))
        self.assertFalse(session.end("again"))
        frozen = session.freeze("", "")
        self.assertEqual([(e.side, e.text) for e in frozen.transcript],
                         [("*", "connection closed: why")])

    def test_summary_and_session_json(self) -> None:
        clock = Clock()
        clock.advance(1_800_000_000)
        session = recorder(clock)
        session.helo = "client.test"
        session.tls_started("starttls", "TLSv1.3", "TLS_AES_256_GCM_SHA384")
        session.login("alice", "PLAIN", succeeded=True)
        session.stored("1.M1P1Q1.host")
        clock.advance(2.5)
        frozen = settled(session)
        summary = frozen.summary_json()
        self.assertEqual(summary, {
            "ID": session.id, "Started": "2027-01-15T08:00:00.000+00:00",
            "Ended": "2027-01-15T08:00:02.500+00:00", "Listener": "smtp",
            "Client": "10.0.0.1:40000", "Helo": "client.test",
            "TLS": {"Mode": "starttls", "Version": "TLSv1.3",
                    "Cipher": "TLS_AES_256_GCM_SHA384"},
            "User": "alice", "Mechanism": "PLAIN", "LoggedIn": True,
            "Messages": ["1.M1P1Q1.host"], "Outcome": "delivered", "Error": "",
            "Diagnosis": ""})
        self.assertEqual(frozen.to_json()["Transcript"][0]["Text"],
                         "TLS handshake done (starttls): TLSv1.3 with TLS_AES_256_GCM_SHA384")
        self.assertRegex(session.id, r"^[0-9a-f]{16}$")
        self.assertNotEqual(recorder().id, session.id)


class DiagnosisTests(TestCase):
    """Each sentence: what went wrong and what to change, naming the listener to use."""

    def diagnosis(self, *, problem: str = "", detail: str = "",
                  reply: tuple[int, str, str] | None = None, user: str = "",
                  hints: ListenerHints = HINTS) -> tuple[str, str]:
        session = recorder()
        if problem:
            session.problem(problem, detail)
        if reply is not None:
            code, text, command = reply
            session.client_said(command)
            session.server_said(code, text)
        if user:
            session.login(user, "PLAIN", succeeded=False)
        session.end()
        return diagnose(session, hints)

    def test_tls_client_hello_on_a_plaintext_port(self) -> None:
        sentence, error = self.diagnosis(problem="tls-on-plaintext")
        self.assertEqual(error, "TLS ClientHello on a plaintext port")
        self.assertEqual(sentence, tls_on_plaintext_port(HINTS))
        self.assertIn("the client is set to implicit TLS", sentence)
        self.assertIn("point it at [smtp:smtps] port 1465, or set its security to STARTTLS",
                      sentence)
        self.assertIn("a listener with tls = implicit (add one)",
                      self.diagnosis(problem="tls-on-plaintext", hints=BARE)[0])

    def test_plaintext_and_silence_on_an_implicit_port(self) -> None:
        sentence, error = self.diagnosis(problem="plaintext-on-implicit")
        self.assertEqual(error, "SMTP in the clear on an implicit-TLS port")
        self.assertEqual(sentence, plaintext_on_implicit_port(HINTS, True))
        self.assertIn("this client sent SMTP commands in the clear", sentence)
        self.assertIn("point it at [smtp] port 1025, or set its security to SSL/TLS", sentence)
        sentence, error = self.diagnosis(problem="silent-on-implicit")
        self.assertEqual(error, "no TLS handshake within 10 s")
        self.assertIn("sent no TLS handshake within 10 s", sentence)
        self.assertIn("point it at [smtp] port 1025", sentence)
        self.assertIn("a listener with tls = starttls (add one)",
                      self.diagnosis(problem="silent-on-implicit", hints=BARE)[0])

    def test_untrusted_certificate(self) -> None:
        for reason in ("tlsv1 alert unknown ca", "sslv3 alert certificate unknown",
                       "sslv3 alert bad certificate", "tlsv1 alert decrypt error"):
            sentence, error = self.diagnosis(problem="tls-failed", detail=reason)
            self.assertEqual(error, f"TLS handshake failed: {reason}")
            self.assertEqual(sentence, tls_failed(HINTS, reason))
            self.assertIn(f"the client does not trust mailsink's certificate ({reason})",
                          sentence)
            self.assertIn("add /var/lib/mailsink/mailsink-cert.pem to the client's trusted "
                          "certificates", sentence)
            self.assertIn("turn certificate verification off", sentence)

    def test_tls_version_not_offered(self) -> None:
        for reason in ("unsupported protocol", "tlsv1 alert protocol version",
                       "wrong version number", "no protocols available"):
            sentence, _ = self.diagnosis(problem="tls-failed", detail=reason)
            self.assertIn(f"the client asked for a TLS version mailsink does not offer "
                          f"({reason})", sentence)
            self.assertIn("mailsink speaks TLS 1.2 and 1.3, so allow those", sentence)

    def test_other_tls_failures(self) -> None:
        self.assertIn("share no cipher (no shared cipher); allow the client a modern",
                      self.diagnosis(problem="tls-failed", detail="no shared cipher")[0])
        self.assertEqual(self.diagnosis(problem="tls-failed", detail="odd")[0],
                         "the TLS handshake failed (odd)")
        self.assertEqual(self.diagnosis(problem="tls-failed")[0],
                         "the TLS handshake failed (no reason given)")

    def test_auth_before_starttls(self) -> None:
        sentence, error = self.diagnosis(
            reply=(538, "5.7.11 Encryption required for requested authentication mechanism",
                   "AUTH PLAIN ***"))
        self.assertEqual(error, "538 5.7.11 Encryption required for requested authentication "
                                "mechanism")
        self.assertEqual(sentence, "the client tried AUTH before STARTTLS, and mailsink never "
                                   "takes a password in clear text (538): set the client's "
                                   "security to STARTTLS, or point it at [smtp:smtps] port "
                                   "1465")

    def test_mail_without_auth(self) -> None:
        sentence, _ = self.diagnosis(reply=(530, "5.7.0 Authentication required",
                                            "MAIL FROM:<a@b>"))
        self.assertEqual(sentence, "the client sent MAIL without logging in, and "
                                   "[smtp:submission] requires AUTH (530): give the client a "
                                   "user name and password, or send to [smtp] port 1025")

    def test_commands_before_starttls(self) -> None:
        sentence, error = self.diagnosis(reply=(530, "5.7.0 Must issue a STARTTLS command "
                                                     "first", "MAIL FROM:<a@b>"))
        self.assertEqual(error, "530 5.7.0 Must issue a STARTTLS command first")
        self.assertEqual(sentence, "[smtp:submission] requires STARTTLS before anything else "
                                   "(530): set the client's security to STARTTLS, or send to "
                                   "[smtp] port 1025")

    def test_wrong_credentials_name_the_user(self) -> None:
        sentence, error = self.diagnosis(
            reply=(535, "5.7.8 Error: authentication failed", "AUTH PLAIN ***"), user="alice")
        self.assertEqual(error, "535 5.7.8 Error: authentication failed")
        self.assertEqual(sentence, "the login of user 'alice' failed (535): check the user "
                                   "name and password the client uses against [auth] "
                                   "password_file, MAILSINK_AUTH or accept_any")

    def test_size(self) -> None:
        sentence, _ = self.diagnosis(reply=(552, "5.3.4 Message size exceeds fixed maximum "
                                                 "message size (26214400 bytes)", "DATA"))
        self.assertEqual(sentence, "the message is larger than [mailsink] max_message_size "
                                   "(25M) (552): raise max_message_size or send a smaller "
                                   "message")

    def test_other_replies(self) -> None:
        cases = {
            (500, "5.5.2 Line too long: message lines may hold at most 998", "DATA"):
                "longer than 998 octets and this listener has long_lines = refuse",
            (421, "4.4.2 sink.test Error: timeout exceeded", "MAIL"):
                "the client sent nothing for too long",
            (452, "4.3.1 Insufficient system storage", "DATA"):
                "mailsink could not store the message (452)",
            (454, "4.7.0 Temporary authentication failure", "AUTH PLAIN ***"):
                "AUTH was refused (454 4.7.0 Temporary authentication failure): see the "
                "transcript",
            (550, "5.7.1 nope", "RCPT TO:<a@b>"):
                "RCPT was refused (550 5.7.1 nope): see the transcript",
        }
        for reply, words in cases.items():
            self.assertIn(words, self.diagnosis(reply=reply)[0], reply)

    def test_client_dropped_during_data(self) -> None:
        session = recorder()
        session.data_octets = 1234
        session.problem("data-dropped")
        session.end()
        sentence, error = diagnose(session, HINTS)
        self.assertEqual(error, "connection closed during DATA")
        self.assertEqual(sentence, "the client closed the connection in the middle of the "
                                   "message data (after 1234 octets), so nothing was stored: "
                                   "it may have crashed or timed out")

    def test_chaos_comes_first(self) -> None:
        sentence, error = self.diagnosis(problem="chaos", detail="Sender answered 451",
                                         reply=(451, "4.3.0 Chaos: sender rejected", "MAIL"))
        self.assertEqual(error, "451 4.3.0 Chaos: sender rejected")
        self.assertEqual(sentence, "this error was injected on purpose by mailsink's chaos "
                                   "triggers (Sender answered 451), not a real failure: turn "
                                   "them off with PUT /api/v1/chaos if that was not meant")

    def test_all_well_and_plain_endings(self) -> None:
        self.assertEqual(self.diagnosis(), ("", ""))
        session = recorder()
        session.stored("1.M1P1Q1.host")
        self.assertEqual(diagnose(session, HINTS), ("", ""))
        session = recorder()
        session.in_transaction = True
        self.assertEqual(diagnose(session, HINTS)[0],
                         "the client closed the connection after MAIL FROM without sending a "
                         "message")


def session_row(number: int, *, outcome: str = "no-mail", listener: str = "smtp",
                user: str = "", logged_in: bool = False, ended: float = 0.0) -> Session:
    return Session(
        id=f"s{number:03d}", started=1000.0 + number, ended=ended or 1001.0 + number,
        listener=listener, client=f"10.0.0.{number}:2500", helo=f"h{number}",
        tls_mode="starttls", tls_version="TLSv1.3", tls_cipher="TLS_AES_128_GCM_SHA256",
        user=user, mechanism="PLAIN" if user else "", messages=(f"m{number}",),
        outcome=outcome, error="", diagnosis="",
        transcript=(Entry(1000.0, "C", "EHLO h"), Entry(1000.5, "S", "250 ok")),
        omitted=3, logged_in=logged_in)


EVERYONE = SessionFilter()
"""What an admin sees: every session."""


class DatabaseTests(TestCase):
    """The table itself: blocking code, as the worker thread runs it."""

    def setUp(self) -> None:
        self.folder = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.folder)
        self.path = os.path.join(self.folder, "sessions.sqlite3")
        self.db = SessionDatabase(self.path)
        self.addCleanup(self.db.close)

    def ids(self, chosen: SessionFilter = EVERYONE, start: int = 0,
            limit: int = 100) -> list[str]:
        return [s.id for s in self.db.page(chosen, start, limit)[2]]

    def test_round_trip_and_private_file(self) -> None:
        session = session_row(1, outcome="delivered", user="alice", logged_in=True)
        self.db.add([session], 10)
        self.assertEqual(self.db.get("s001", SessionFilter()), session)
        self.assertIsNone(self.db.get("nope", SessionFilter()))
        for suffix in ("", "-wal", "-shm"):  # the write-ahead log keeps transcripts too
            self.assertEqual(stat.S_IMODE(os.stat(self.path + suffix).st_mode), 0o600, suffix)

    def test_pages_newest_first(self) -> None:
        self.db.add([session_row(n) for n in range(10)], 100)
        self.assertEqual(self.ids(start=2, limit=3), ["s007", "s006", "s005"])
        self.assertEqual(self.ids(start=8), ["s001", "s000"])
        self.assertEqual(self.ids(start=10), [])
        total, matching, page = self.db.page(SessionFilter(), 0, 1)
        self.assertEqual((total, matching, len(page)), (10, 10, 1))

    def test_filters(self) -> None:
        outcomes = ["delivered", "refused", "failed", "no-mail", "dropped", "delivered"]
        self.db.add([session_row(n, outcome=o, listener="smtp" if n % 2 else "smtp:smtps")
                     for n, o in enumerate(outcomes)], 100)
        self.assertEqual(self.ids(SessionFilter(outcome="failed")), ["s004", "s002", "s001"])
        self.assertEqual(self.ids(SessionFilter(outcome="delivered")), ["s005", "s000"])
        self.assertEqual(self.ids(SessionFilter(listener="smtp:smtps")),
                         ["s004", "s002", "s000"])
        self.assertEqual(self.ids(SessionFilter(outcome="failed", listener="smtp")), ["s001"])
        total, matching, _ = self.db.page(SessionFilter(outcome="failed"), 0, 1)
        self.assertEqual((total, matching), (6, 3))

    def test_prunes_to_the_newest(self) -> None:
        for number in range(5):
            self.db.add([session_row(number)], 3)
        self.assertEqual(self.ids(), ["s004", "s003", "s002"])
        self.db.add([session_row(n) for n in range(10, 16)], 3)
        self.assertEqual(self.ids(), ["s015", "s014", "s013"])
        self.db.add([session_row(20)], 1)
        self.assertEqual(self.ids(), ["s020"])

    def test_visibility_by_login(self) -> None:
        self.db.add([
            session_row(1, user="alice", logged_in=True, outcome="refused"),
            session_row(2, user="alice", logged_in=False, outcome="refused"),  # failed login
            session_row(3, user="bob", logged_in=True),
            session_row(4),  # anonymous
            session_row(5, user="alice", logged_in=True, outcome="delivered"),
        ], 100)
        alice = SessionFilter(user="alice")
        self.assertEqual(self.ids(alice), ["s005", "s001"])
        self.assertEqual(self.ids(SessionFilter(outcome="failed", user="alice")), ["s001"])
        self.assertEqual(self.db.page(alice, 0, 1)[:2], (2, 2))
        self.assertEqual(self.ids(SessionFilter(user="")), [])
        self.assertEqual(len(self.ids()), 5)
        self.assertIsNone(self.db.get("s003", alice))
        self.assertIsNone(self.db.get("s004", alice))
        self.assertEqual(self.db.get("s001", alice), self.db.get("s001", SessionFilter()))

    def test_delete_what_the_viewer_sees(self) -> None:
        self.db.add([session_row(1, user="alice", logged_in=True), session_row(2),
                     session_row(3, user="bob", logged_in=True)], 100)
        self.assertEqual(self.db.delete(SessionFilter(user="alice")), 1)
        self.assertEqual(self.ids(), ["s003", "s002"])
        self.assertEqual(self.db.delete(SessionFilter()), 2)
        self.assertEqual(self.ids(), [])

    def test_failed_since(self) -> None:
        self.db.add([session_row(1, outcome="refused", ended=100.0),
                     session_row(2, outcome="dropped", ended=200.0),
                     session_row(3, outcome="delivered", ended=300.0),
                     session_row(4, outcome="failed", ended=400.0, user="alice",
                                 logged_in=True)], 100)
        self.assertEqual(self.db.failed_since(SessionFilter(), 150.0), 2)
        self.assertEqual(self.db.failed_since(SessionFilter(), 0.0), 3)
        self.assertEqual(self.db.failed_since(SessionFilter(user="alice"), 0.0), 1)
        self.assertEqual(self.db.failed_since(SessionFilter(), 400.0), 0)


class SessionLogTests(TestCase):
    """The daemon's side: batched writes in the worker thread, reads after them."""

    def setUp(self) -> None:
        self.state = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.state)
        self.clock = Clock()
        self.told: list[str] = []

    def started(self, keep: int = 1000) -> SessionLog:
        log = SessionLog(self.state, keep, reactor, self.clock)
        log.listeners.append(lambda session: self.told.append(session.id))
        log.startService()
        self.addCleanup(lambda: log.running and log.stopService())
        return log

    def rows_on_disk(self) -> list[str]:
        path = os.path.join(self.state, store_module.FILE_NAME)
        with contextlib.closing(sqlite3.connect(path)) as db:
            return [row[0] for row in db.execute("SELECT id FROM sessions ORDER BY seq")]

    def wait_for_rows(self, wanted: list[str], timeout: float = 10.0) -> None:
        """Poll the file (another connection) until it holds C{wanted}, or fail."""
        deadline = time.monotonic() + timeout
        while self.rows_on_disk() != wanted:
            if time.monotonic() > deadline:
                self.fail(f"the file holds {self.rows_on_disk()}, not {wanted}")
            time.sleep(0.01)

    @inlineCallbacks
    def test_batched_after_the_delay_and_read_after_writes(self) -> Any:
        log = self.started()
        log.ended(session_row(1))
        log.ended(session_row(2))
        self.assertEqual(self.told, ["s001", "s002"])
        self.clock.advance(BATCH_DELAY / 2)
        self.assertEqual(self.rows_on_disk(), [])  # nothing written on the reactor thread
        self.clock.advance(BATCH_DELAY / 2)
        self.wait_for_rows(["s001", "s002"])
        log.ended(session_row(3))  # waits for the next batch, but a read writes it first
        total, matching, page = yield log.page(SessionFilter(), 0, 10)
        self.assertEqual((total, matching, [s.id for s in page]), (3, 3, ["s003", "s002",
                                                                         "s001"]))
        self.assertEqual(self.rows_on_disk(), ["s001", "s002", "s003"])
        self.clock.advance(BATCH_DELAY)  # the timer finds nothing left to write
        found = yield log.get("s003", SessionFilter())
        self.assertEqual(found, session_row(3))

    @inlineCallbacks
    def test_kept_across_a_new_log(self) -> Any:
        log = self.started(keep=3)
        for number in range(4):
            log.ended(session_row(number))
        self.clock.advance(BATCH_DELAY)
        log.ended(session_row(4))
        yield log.stopService()  # writes what still waits
        again = self.started(keep=3)
        _, _, page = yield again.page(SessionFilter(), 0, 10)
        self.assertEqual([s.id for s in page], ["s004", "s003", "s002"])
        deleted = yield again.delete(SessionFilter())
        self.assertEqual(deleted, 3)
        failures = yield again.failed_since(SessionFilter(), 0)
        self.assertEqual(failures, 0)

    @inlineCallbacks
    def test_keep_none(self) -> Any:
        log = self.started(keep=0)
        log.ended(session_row(1))
        self.assertEqual(self.told, ["s001"])
        self.assertEqual(self.clock.getDelayedCalls(), [])
        page = yield log.page(SessionFilter(), 0, 10)
        self.assertEqual(page, (0, 0, []))
        found = yield log.get("s001", SessionFilter())
        self.assertIsNone(found)
        self.assertEqual(os.listdir(self.state), [])

    def test_a_failing_listener_is_logged_and_the_others_still_run(self) -> None:
        log = self.started()

        def broken(session: Session) -> None:
            raise RuntimeError("listener broke")

        log.listeners.insert(0, broken)
        log.ended(session_row(1))
        self.assertEqual(self.told, ["s001"])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)


class EventTests(TestCase):
    def test_session_event_only_to_those_who_may_see_it(self) -> None:
        hub = EventHub(Clock())
        everyone: list[str] = []
        alice: list[str] = []
        hub.add(everyone.append, None)
        hub.add(alice.append, ("alice",), sessions_of="alice")
        shop: list[str] = []
        hub.add(shop.append, ("", "shop"))  # a mailbox rule, no isolation: all sessions
        for session in (session_row(1, user="alice", logged_in=True),
                        session_row(2, user="alice", logged_in=False), session_row(3)):
            hub.index_event("session", session)
        self.assertEqual([json.loads(line)["Data"]["ID"] for line in everyone],
                         ["s001", "s002", "s003"])
        self.assertEqual(len(shop), 3)
        [line] = alice
        self.assertEqual(json.loads(line), {"Type": "session",
                                            "Data": session_row(1, user="alice",
                                                                logged_in=True).summary_json()})


PASSWORD = f"Pw-{uuid.uuid4()}"
WRONG = f"Wrong-{uuid.uuid4()}"


class SMTPSessionCase(TestCase):
    """SinkESMTP over a StringTransport: each connection hands one Session to the sink."""

    def setUp(self) -> None:
        self.folder = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.folder)
        self.maildir = Maildir(self.folder, maybeDeferred)
        self.maildir.create()
        self.clock = Clock()
        self.sessions: list[Session] = []
        self.checker = EnvironmentChecker(f"alice:{PASSWORD}")
        self.throttle = FailureThrottle(self.clock)

    def connect(self, *, tls: bool = False, tls_mode: str = "starttls", auth: str = "none",
                chaos: Chaos | None = None, transport: StringTransport | None = None,
                ) -> tuple[Any, StringTransport]:
        settings = SMTPSettings(hostname="sink.test", listener="smtp:submission",
                                tls_mode=tls_mode, max_message_size=1000, max_recipients=5,
                                auth=auth, hints=HINTS, chaos=chaos)
        factory = SMTPFactory(settings, build_portal(self.maildir, "none", self.checker),
                              object(), self.clock,
                              auth_setup=AuthSetup(self.checker.offers_plaintext,
                                                   self.throttle, self.clock),
                              session_sink=self.sessions.append)
        protocol = factory.buildProtocol(None)
        transport = transport or (TLSTransport() if tls else StringTransport())
        protocol.makeConnection(transport)
        if tls:
            protocol.handshakeCompleted()  # as the TLS layer tells it before any command
        return protocol, transport

    def say(self, protocol: Any, transport: StringTransport, line: str | bytes) -> str:
        """Send one line; the reply it caused (after any throttle delay)."""
        transport.clear()
        protocol.dataReceived((line.encode() if isinstance(line, str) else line) + b"\r\n")
        self.clock.advance(MAX_DELAY)
        return transport.value().decode()

    def close(self, protocol: Any, reason: Exception | None = None) -> Session:
        protocol.connectionLost(Failure(reason or ConnectionDone()))
        return self.sessions[-1]



class ProtocolSessionTests(SMTPSessionCase):
    """What the protocol tells the session, and what the session makes of it."""

    def test_whole_conversation(self) -> None:
        protocol, transport = self.connect()
        commands = ["EHLO client.test", "MAIL FROM:<a@example.com>", "RCPT TO:<b@example.com>",
                    "DATA"]
        for command in commands:
            self.say(protocol, transport, command)
        body = b"Subject: secret body\r\n\r\nthe message data\r\n.\r\n"
        transport.clear()
        protocol.dataReceived(body)
        name = transport.value().decode().rsplit(" ", 1)[1].strip()
        self.say(protocol, transport, "QUIT")
        self.assertEqual(self.sessions, [])  # not before the connection is gone
        session = self.close(protocol)
        self.assertEqual(len(self.sessions), 1)
        self.assertEqual(
            [(e.side, e.text) for e in session.transcript],
            [("S", "220 sink.test ESMTP mailsink"),
             ("C", "EHLO client.test"),
             ("S", "250-sink.test Hello 192.168.1.1\n250-PIPELINING\n250-SIZE 1000\n"
                   "250-8BITMIME\n250-SMTPUTF8\n250 ENHANCEDSTATUSCODES"),
             ("C", "MAIL FROM:<a@example.com>"), ("S", "250 2.1.0 Ok"),
             ("C", "RCPT TO:<b@example.com>"), ("S", "250 2.1.5 Ok"),
             ("C", "DATA"), ("S", "354 End data with <CR><LF>.<CR><LF>"),
             ("*", f"message data: {len(body)} octets"),
             ("S", f"250 2.0.0 Ok: queued as {name}"),
             ("C", "QUIT"), ("S", "221 2.0.0 Bye"),
             ("*", "connection closed")])
        self.assertEqual((session.listener, session.client, session.helo, session.tls_mode),
                         ("smtp:submission", "192.168.1.1:54321", "client.test", "none"))
        self.assertEqual((session.outcome, session.error, session.diagnosis),
                         ("delivered", "", ""))
        self.assertEqual(session.messages, (message_id(name),))
        with open(os.path.join(self.folder, "new", name), "rb") as stream:
            stored = stream.read()
        self.assertIn(f"(mailsink, listener smtp:submission, session {session.id})".encode(),
                      stored)

    def test_server_entries_are_the_wire_bytes(self) -> None:
        protocol, transport = self.connect()
        wire = transport.value()
        for command in ("EHLO c", "HELP", "NOOP", "VRFY x", "RCPT TO:<a@b>", "QUIT"):
            wire += self.say(protocol, transport, command).encode()
        session = self.close(protocol)
        replies = [e.text for e in session.transcript if e.side == "S"]
        self.assertEqual("".join(r.replace("\n", "\r\n") + "\r\n" for r in replies).encode(),
                         wire)

    def test_timeout(self) -> None:
        protocol, transport = self.connect()
        self.say(protocol, transport, "EHLO c")
        self.clock.advance(protocol.timeout)
        session = self.close(protocol)
        self.assertEqual(session.error, "421 4.4.2 sink.test Error: timeout exceeded")
        self.assertIn("the client sent nothing for too long", session.diagnosis)

    def test_tls_client_hello_on_the_plaintext_port(self) -> None:
        protocol, transport = self.connect()
        protocol.dataReceived(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\0" * 40)
        self.assertTrue(transport.disconnecting)
        session = self.close(protocol, ConnectionAborted())
        self.assertEqual((session.outcome, session.error),
                         ("failed", "TLS ClientHello on a plaintext port"))
        self.assertEqual(session.diagnosis, tls_on_plaintext_port(HINTS))
        self.assertNotIn("C", [e.side for e in session.transcript])

    def test_failed_handshake_keeps_openssl_reason(self) -> None:
        protocol, transport = self.connect()
        self.say(protocol, transport, "EHLO c")
        self.say(protocol, transport, "STARTTLS")
        error = SSL.Error([("SSL routines", "", "tlsv1 alert unknown ca")])
        session = self.close(protocol, error)
        self.assertEqual((session.outcome, session.error),
                         ("failed", "TLS handshake failed: tlsv1 alert unknown ca"))
        self.assertIn("does not trust mailsink's certificate", session.diagnosis)
        self.assertEqual(session.transcript[-1].text,
                         "connection closed: tlsv1 alert unknown ca")

    def test_dropped_during_data(self) -> None:
        protocol, transport = self.connect()
        for command in ("EHLO c", "MAIL FROM:<a@b>", "RCPT TO:<c@d>", "DATA"):
            self.say(protocol, transport, command)
        protocol.dataReceived(b"Subject: x\r\n\r\nhalf a mess")
        session = self.close(protocol, ConnectionAborted())
        self.assertEqual((session.outcome, session.error),
                         ("dropped", "connection closed during DATA"))
        self.assertIn("after 25 octets", session.diagnosis)
        self.assertEqual(os.listdir(os.path.join(self.folder, "new")), [])

    def test_dropped_during_data_over_the_size_limit(self) -> None:
        protocol, transport = self.connect()
        for command in ("EHLO c", "MAIL FROM:<a@b>", "RCPT TO:<c@d>", "DATA"):
            self.say(protocol, transport, command)
        protocol.dataReceived(b"x" * 3000)  # past max_message_size: no longer kept
        session = self.close(protocol, ConnectionAborted())
        self.assertEqual((session.outcome, session.error),
                         ("dropped", "connection closed during DATA"))
        self.assertIn("in the middle of the message data (after 3000 octets)",
                      session.diagnosis)

    def test_refusals(self) -> None:
        cases = [
            # (connect arguments, commands, error, words of the diagnosis)
            ({"tls_mode": "starttls", "auth": "optional"},
             ["EHLO c", f"AUTH PLAIN {b64(chr(0) + 'alice' + chr(0) + PASSWORD)}"],
             "538 5.7.11 Encryption required for requested authentication mechanism",
             "tried AUTH before STARTTLS"),
            ({"tls_mode": "starttls-required"}, ["EHLO c", "MAIL FROM:<a@b>"],
             "530 5.7.0 Must issue a STARTTLS command first",
             "[smtp:submission] requires STARTTLS before anything else"),
            ({"tls": True, "tls_mode": "none", "auth": "required"}, ["EHLO c", "MAIL FROM:<a@b>"],
             "530 5.7.0 Authentication required",
             "the client sent MAIL without logging in, and [smtp:submission] requires AUTH"),
            ({}, ["EHLO c", "MAIL FROM:<a@b> SIZE=5000"],
             "552 5.3.4 Message size exceeds fixed maximum message size (1000 bytes)",
             "(552): raise max_message_size"),
        ]
        for arguments, commands, error, words in cases:
            protocol, transport = self.connect(**arguments)
            for command in commands:
                self.say(protocol, transport, command)
            session = self.close(protocol)
            self.assertEqual((session.outcome, session.error), ("refused", error), commands)
            self.assertIn(words, session.diagnosis)

    def test_size_while_streaming(self) -> None:
        protocol, transport = self.connect()
        for command in ("EHLO c", "MAIL FROM:<a@b>", "RCPT TO:<c@d>", "DATA"):
            self.say(protocol, transport, command)
        protocol.dataReceived(b"x" * 3000 + b"\r\n.\r\n")
        session = self.close(protocol)
        self.assertEqual(session.outcome, "refused")
        self.assertTrue(session.error.startswith("552 5.3.4"), session.error)
        self.assertIn("(552): raise max_message_size", session.diagnosis)

    def test_chaos(self) -> None:
        chaos = Chaos(lambda: 0.0)
        chaos.set_triggers({"Recipient": {"ErrorCode": 451, "Probability": 100}})
        protocol, transport = self.connect(chaos=chaos)
        for command in ("EHLO c", "MAIL FROM:<a@b>", "RCPT TO:<c@d>", "QUIT"):
            self.say(protocol, transport, command)
        session = self.close(protocol)
        self.assertEqual((session.outcome, session.error),
                         ("refused", "451 4.3.0 Chaos: recipient rejected"))
        self.assertIn("injected on purpose by mailsink's chaos triggers (Recipient answered "
                      "451)", session.diagnosis)

    def test_implicit_tls_greeting_waits_for_the_handshake(self) -> None:
        """Until the handshake is done the greeting sits in the TLS layer, not on the wire."""
        settings = SMTPSettings(hostname="sink.test", listener="smtp:smtps",
                                tls_mode="implicit", max_message_size=0, max_recipients=5)
        factory = SMTPFactory(settings, build_portal(self.maildir), None, self.clock,
                              session_sink=self.sessions.append)
        for handshake in (False, True):
            protocol = factory.buildProtocol(None)
            transport = TLSTransport()
            protocol.makeConnection(transport)
            self.assertEqual(transport.value(), b"220 sink.test ESMTP mailsink\r\n")
            if handshake:
                protocol.handshakeCompleted()
                self.say(protocol, transport, "QUIT")
            session = self.close(protocol, None if handshake else ConnectionAborted())
            self.assertEqual([(e.side, e.text) for e in session.transcript], [
                ("*", "TLS handshake done (implicit): TLSv1.3 with TLS_AES_128_GCM_SHA256"),
                ("S", "220 sink.test ESMTP mailsink"), ("C", "QUIT"), ("S", "221 2.0.0 Bye"),
                ("*", "connection closed")] if handshake else [("*", "connection closed")])

    def test_implicit_tls_silence_and_plaintext(self) -> None:
        for data, problem in ((None, "no TLS handshake within 10 s"),
                              (b"EHLO c\r\n", "SMTP in the clear on an implicit-TLS port")):
            settings = SMTPSettings(hostname="sink.test", listener="smtp:smtps",
                                    tls_mode="implicit", max_message_size=0,
                                    max_recipients=5, hints=HINTS)
            inner = SMTPFactory(settings, build_portal(self.maildir), None, self.clock,
                                session_sink=self.sessions.append)
            watch = ImplicitTLSWatchFactory(inner, HINTS, self.clock).buildProtocol(None)
            transport = StringTransport()
            watch.makeConnection(transport)
            if data is None:
                self.clock.advance(SILENCE_TIMEOUT - 0.1)
                self.assertFalse(transport.disconnecting)
                self.clock.advance(0.1)
            else:
                watch.dataReceived(data)
            self.assertTrue(transport.disconnecting)
            watch.connectionLost(Failure(ConnectionAborted()))
            session = self.sessions[-1]
            self.assertEqual((session.listener, session.outcome, session.error),
                             ("smtp:smtps", "failed", problem))
            self.assertIn("expects TLS from the first byte", session.diagnosis)
            self.assertIn("point it at [smtp] port 1025", session.diagnosis)


class AuthSecrecyTests(SMTPSessionCase):
    """PLAIN, LOGIN, CRAM-MD5 and XOAUTH2: the transcript shows *** for every payload."""

    def secret_forms(self, password: str) -> set[str]:
        return {password, b64(password), b64(f"\0alice\0{password}"),
                b64(f"alice\0alice\0{password}"),
                b64(f"user=alice\x01auth=Bearer {password}\x01\x01"), password[3:15]}

    def assert_secret_free(self, session: Session, sent: list[str]) -> None:
        dumped = json.dumps(session.to_json(), ensure_ascii=False)
        for form in self.secret_forms(PASSWORD) | self.secret_forms(WRONG) | set(sent):
            self.assertNotIn(form, dumped)

    def exchange(self, mechanism: str, password: str, initial: bool) -> tuple[Session, list[str]]:
        """One login on a TLS connection, then QUIT; the session and the payloads sent."""
        protocol, transport = self.connect(tls=True, tls_mode="none", auth="optional")
        self.say(protocol, transport, "EHLO c")
        sent: list[str] = []

        def respond(text: str) -> str:
            sent.append(b64(text))
            return self.say(protocol, transport, sent[-1])

        if mechanism == "PLAIN":
            if initial:
                sent.append(b64(f"\0alice\0{password}"))
                reply = self.say(protocol, transport, f"AUTH PLAIN {sent[-1]}")
            else:
                self.say(protocol, transport, "AUTH PLAIN")
                reply = respond(f"alice\0alice\0{password}")
        elif mechanism == "LOGIN":
            if initial:
                sent.append(b64("alice"))
                self.say(protocol, transport, f"AUTH LOGIN {sent[-1]}")
            else:
                self.say(protocol, transport, "AUTH LOGIN")
                respond("alice")
            reply = respond(password)
        elif mechanism == "CRAM-MD5":
            challenge = base64.b64decode(self.say(protocol, transport, "AUTH CRAM-MD5")[4:])
            digest = hmac.new(password.encode(), challenge, hashlib.md5).hexdigest()
            reply = respond(f"alice {digest}")
        else:
            blob = f"user=alice\x01auth=Bearer {password}\x01\x01"
            if initial:
                sent.append(b64(blob))
                reply = self.say(protocol, transport, f"AUTH XOAUTH2 {sent[-1]}")
            else:
                self.say(protocol, transport, "AUTH XOAUTH2")
                reply = respond(blob)
            if reply.startswith("334 "):
                reply = self.say(protocol, transport, "")
        self.assertEqual(reply[:3], "235" if password == PASSWORD else "535", mechanism)
        self.say(protocol, transport, "QUIT")
        return self.close(protocol), sent

    def test_every_mechanism_leaves_only_stars(self) -> None:
        expected = {
            ("PLAIN", True): ["AUTH PLAIN ***"],
            ("PLAIN", False): ["AUTH PLAIN", "***"],
            ("LOGIN", True): ["AUTH LOGIN ***", "***"],
            ("LOGIN", False): ["AUTH LOGIN", "***", "***"],
            ("CRAM-MD5", False): ["AUTH CRAM-MD5", "***"],
            ("XOAUTH2", True): ["AUTH XOAUTH2 ***"],
            ("XOAUTH2", False): ["AUTH XOAUTH2", "***"],
        }
        for (mechanism, initial), lines in expected.items():
            session, sent = self.exchange(mechanism, PASSWORD, initial)
            client = [e.text for e in session.transcript if e.side == "C"]
            self.assertEqual(client, ["EHLO c", *lines, "QUIT"], mechanism)
            self.assertEqual((session.user, session.mechanism, session.logged_in,
                              session.outcome, session.error, session.diagnosis),
                             ("alice", mechanism, True, "no-mail", "", ""), mechanism)
            self.assert_secret_free(session, sent)

    def test_failed_logins_name_the_user_never_the_password(self) -> None:
        for mechanism, initial in (("PLAIN", True), ("LOGIN", False), ("CRAM-MD5", False),
                                   ("XOAUTH2", True)):
            session, sent = self.exchange(mechanism, WRONG, initial)
            self.assertEqual((session.user, session.mechanism, session.logged_in,
                              session.outcome, session.error),
                             ("alice", mechanism, False, "refused",
                              "535 5.7.8 Error: authentication failed"), mechanism)
            self.assertIn("the login of user 'alice' failed (535)", session.diagnosis)
            self.assert_secret_free(session, sent)

    def test_payloads_hidden_however_spaced(self) -> None:
        payload = b64(f"\0alice\0{PASSWORD}").encode()
        self.assertEqual(transcript_line(b"AUTH PLAIN " + payload), "AUTH PLAIN ***")
        self.assertEqual(transcript_line(b"auth  plain\t" + payload), "AUTH plain ***")
        self.assertEqual(transcript_line(b"AUTH\tPLAIN " + payload), "AUTH PLAIN ***")
        self.assertEqual(transcript_line(b"AUTH " + payload), "AUTH ***")
        self.assertEqual(transcript_line(b"AUTH LOGIN"), "AUTH LOGIN")
        self.assertEqual(transcript_line(b"AUTH"), "AUTH")
        self.assertEqual(transcript_line(b"MAIL FROM:<a@b> AUTH=<>"), "MAIL FROM:<a@b> AUTH=<>")
        for word in (b64("alice"), b64(PASSWORD), b64("pw"), b64("pwd"), b64("pass")):
            self.assertEqual(transcript_line(word.encode(), command=False), "***", word)
        self.assertEqual(transcript_line(b"*", command=False), "*")
        for line in (b"HELLO", b"FOO", b"GET / HTTP/1.1", b"x=", b"\x16\x03"):
            self.assertEqual(transcript_line(line, command=False),
                             line.decode("utf-8", "replace"))
        protocol, transport = self.connect(tls=True, tls_mode="none", auth="optional")
        for line in (b"AUTH\tPLAIN " + payload, b"AUTH " + payload):
            self.say(protocol, transport, line)
        session = self.close(protocol)
        self.assertEqual([e.text for e in session.transcript if e.side == "C"],
                         ["AUTH PLAIN ***", "AUTH ***"])
        self.assert_secret_free(session, [payload.decode()])

    def test_responses_pipelined_behind_a_refused_auth(self) -> None:
        """A client that does not wait for 334: its lines become (unknown) commands."""
        protocol, transport = self.connect(tls_mode="starttls", auth="optional")
        transport.clear()
        sent = [b64("alice"), b64(PASSWORD)]
        protocol.dataReceived(f"EHLO c\r\nAUTH LOGIN\r\n{sent[0]}\r\n{sent[1]}\r\n"
                              "NOOP\r\n".encode())
        replies = transport.value().decode().splitlines()
        self.assertEqual([line[:4] for line in replies[-4:]], ["538 ", "500 ", "500 ", "250 "])
        session = self.close(protocol)
        self.assertEqual([e.text for e in session.transcript if e.side == "C"],
                         ["EHLO c", "AUTH LOGIN", "***", "***", "NOOP"])
        self.assert_secret_free(session, sent)


class ReviewedCornerTests(SMTPSessionCase):
    """Corners a review found: each was wrong before its fix."""

    def transaction(self, protocol: Any, transport: StringTransport) -> None:
        for command in ("EHLO c", "MAIL FROM:<a@example.com>", "RCPT TO:<b@example.com>",
                        "DATA"):
            self.say(protocol, transport, command)

    def test_message_stored_after_the_client_left_is_delivered(self) -> None:
        """The fsync answered after the hang-up (printf ... | nc -q0): still its message."""
        pending: list[Deferred[Any]] = []

        def slow_disk(work: Any) -> Deferred[Any]:
            later: Deferred[Any] = Deferred()
            pending.append(later)
            later.addCallback(lambda _: work())
            return later

        self.maildir = Maildir(self.folder, slow_disk)
        protocol, transport = self.connect()
        self.transaction(protocol, transport)
        protocol.dataReceived(b"Subject: s\r\n\r\nbody\r\n.\r\nQUIT\r\n")
        protocol.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(self.sessions, [])  # waits for the message's answer
        while pending:
            pending.pop(0).callback(None)
        self.assertEqual(len(self.sessions), 1)
        self.assertEqual((self.sessions[0].outcome, len(self.sessions[0].messages)),
                         ("delivered", 1))

    def test_refusal_after_a_delivery_is_diagnosed(self) -> None:
        protocol, transport = self.connect()
        self.transaction(protocol, transport)
        protocol.dataReceived(b"Subject: one\r\n\r\nsmall\r\n.\r\n")
        self.transaction(protocol, transport)
        protocol.dataReceived(b"Subject: two\r\n\r\n" + b"x" * 2000 + b"\r\n.\r\n")
        session = self.close(protocol)
        self.assertEqual(session.outcome, "delivered")
        self.assertTrue(session.error.startswith("552 "), session.error)
        self.assertIn("1 message stored, but then", session.diagnosis)
        self.assertIn("max_message_size", session.diagnosis)

    def test_timeout_during_data_is_the_servers(self) -> None:
        protocol, transport = self.connect()
        self.transaction(protocol, transport)
        protocol.dataReceived(b"Subject: s\r\n\r\npart")
        protocol.timeoutConnection()
        session = self.close(protocol)
        self.assertNotIn("data-dropped", session.diagnosis)
        self.assertIn("421", session.diagnosis)
        self.assertIn("sent nothing for too long", session.diagnosis)

    def test_auth_payload_without_a_mechanism_name_is_hidden(self) -> None:
        secret = base64.b64encode(b"\0bob\0secret1").decode()  # 16 letters, no padding
        self.assertEqual(transcript_line(f"AUTH {secret}".encode()), "AUTH ***")
        self.assertEqual(transcript_line(b"AUTH PLAIN"), "AUTH PLAIN")
        self.assertEqual(transcript_line(b"AUTH login x"), "AUTH login ***")

    def test_a_session_that_cannot_be_settled_costs_no_cleanup(self) -> None:
        protocol, _ = self.connect()
        before = protocol.factory.connections

        def broken(session: Session) -> None:
            raise RuntimeError("sink broke")

        protocol._session_sink = broken
        protocol.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(protocol.factory.connections, before - 1)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)


class BrokenDatabaseTests(TestCase):
    def test_unreadable_database_is_moved_aside(self) -> None:
        folder = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, folder)
        path = os.path.join(folder, store_module.FILE_NAME)
        with open(path, "wb") as stream:
            stream.write(os.urandom(8192))
        log = SessionLog(folder, 10, reactor, Clock())
        log.startService()
        self.addCleanup(log.stopService)
        self.assertIsNotNone(log._db)
        self.assertTrue(os.path.exists(path + ".broken"))
