"""
C{mailsink-sendmail}'s pure parts: the command line as PHP, cron, git send-email, mutt and
Symfony pass it; standard input as sendmail reads it; the headers sendmail adds; where the
message goes by the INI; the C{-bs} SMTP conversation; the Maildir fallback.
"""

from __future__ import annotations

import datetime
import os
import socket

from twisted.trial.unittest import TestCase

from mailsink.config import parse_config
from mailsink.message import mime
from mailsink.sendmail import main as sendmail_main
from mailsink.sendmail.deliver import (
    EX_TEMPFAIL,
    Target,
    deliver,
    endpoint_address,
    listener_target,
    override_target,
)
from mailsink.sendmail.prepare import (
    Identity,
    Options,
    UsageError,
    local_received,
    parse_arguments,
    prepare,
    read_message,
)
from mailsink.sendmail.stdio import converse, framed

NOW = datetime.datetime(2026, 3, 1, 12, 30, tzinfo=datetime.timezone(datetime.timedelta(hours=1)))
ALICE = Identity(user="alice", uid=1000, hostname="devbox.example", gecos_name="Alice Liddell")


def ini(text: str) -> str:
    return "[mailsink]\nmaildir = /srv/mail\nstate_dir = /srv/state\n" + text


class ArgumentTests(TestCase):
    """The flags programs really pass, read as sendmail's getopt reads them."""

    def test_callers(self) -> None:
        cases = [
            (["-t", "-i"], Options(extract=True, dots_end=False)),  # PHP
            (["-FCronDaemon", "-i", "-B8BITMIME", "-oem", "root"],  # Debian cron
             Options(recipients=("root",), full_name="CronDaemon", dots_end=False)),
            (["-f", "dev@example.com", "-i", "a@example.com", "b@example.com"],  # git
             Options(recipients=("a@example.com", "b@example.com"),
                     sender="dev@example.com", dots_end=False)),
            (["-oem", "-oi", "--", "-odd@example.com"],  # mutt, and a recipient after --
             Options(recipients=("-odd@example.com",), dots_end=False)),
            (["-bs"], Options(mode="smtp")),  # Symfony, Laravel
            (["-bm", "-ti", "-rbounce@example.com"],
             Options(extract=True, dots_end=False, sender="bounce@example.com")),
            (["-f", "<>", "x@example.com"], Options(recipients=("x@example.com",), sender="")),
            (["-O", "IgnoreDots=true", "-N", "never", "-R", "hdrs", "-V", "id", "-U", "-v",
              "-odi", "x@example.com"],
             Options(recipients=("x@example.com",), dots_end=False)),
            (["-c", "/etc/x.ini", "--smtp", "localhost:2525", "Ann <a@example.com>, b@x"],
             Options(recipients=("a@example.com", "b@x"), config="/etc/x.ini",
                     smtp="localhost:2525")),
            (["--config=/x.ini", "--help"], Options(config="/x.ini", help=True)),
        ]
        for argv, expected in cases:
            with self.subTest(argv=argv):
                self.assertEqual(parse_arguments(argv), expected)

    def test_refused(self) -> None:
        """Unknown flags and modes a sink cannot honour: one sentence naming the flag."""
        cases = [
            (["-Z"], "option -Z not recognized"),
            (["-f"], "option -f requires argument"),
            (["-bp"], "-bp is not supported"),
            (["-bi"], "-bi is not supported"),
            (["-q"], "-q (run the mail queue) is not supported"),
            (["-C", "/etc/mail/sendmail.cf"], "give mailsink's INI with -c"),
            (["--smtp"], "option --smtp requires argument"),
            (["-f", "a b@x", "c@x"], "an address has no white space"),
        ]
        for argv, words in cases:
            with self.subTest(argv=argv):
                error = self.assertRaises(UsageError, parse_arguments, argv)
                self.assertIn(words, str(error))
                self.assertNotIn("\n", str(error))


class ReadTests(TestCase):
    def test_lone_dot_ends_input_without_i(self) -> None:
        lines = [b"Subject: x\n", b"\n", b"one\n", b".\n", b"lost\n"]
        self.assertEqual(read_message(lines, dots_end=True), b"Subject: x\n\none\n")
        self.assertEqual(read_message([b"a\r\n", b".\r\n", b"b\r\n"], True), b"a\r\n")
        self.assertEqual(read_message(lines, dots_end=False), b"".join(lines))
        self.assertEqual(read_message([b"..\n", b". \n"], True), b"..\n. \n")


class PrepareTests(TestCase):
    def prepare(self, raw: bytes, argv: list[str], **kwargs: object) -> tuple[bytes, object]:
        message = prepare(raw, parse_arguments(argv), ALICE, NOW, **kwargs)  # type: ignore
        return message.data, message

    def test_extract_recipients_and_remove_bcc(self) -> None:
        raw = (b"From: Shop <shop@example.com>\r\nTo: Ann <ann@example.com>,\r\n"
               b"  bob@example.com\r\nCc: undisclosed-recipients:;\r\nBcc: audit@example.com,\r\n"
               b"\tANN@example.com\r\nSubject: Order\r\n\r\nBcc: not a header\r\n")
        data, message = self.prepare(raw, ["-t", "-i", "extra@example.com", "bob@example.com"])
        self.assertEqual(message.recipients,  # type: ignore[attr-defined]
                         ("extra@example.com", "bob@example.com", "ann@example.com",
                          "audit@example.com"))
        self.assertNotIn(b"audit", data)
        self.assertTrue(data.endswith(b"Subject: Order\n\nBcc: not a header\n"), data)
        self.assertIn(b"From: Shop <shop@example.com>\nTo: Ann <ann@example.com>,\n"
                      b"  bob@example.com\nCc: undisclosed-recipients:;\nSubject", data)

    def test_bcc_kept_without_t(self) -> None:
        data, message = self.prepare(b"Bcc: x@example.com\n\nbody\n", ["y@example.com"])
        self.assertIn(b"Bcc: x@example.com\n", data)
        self.assertEqual(message.recipients, ("y@example.com",))  # type: ignore

    def test_added_headers_as_sendmail(self) -> None:
        """cron's message: no From, Date or Message-ID; a bare local name as recipient."""
        raw = b"Subject: Cron <alice@devbox> ./job\nX-Cron-Env: <SHELL=/bin/sh>\n\nout\n"
        data, message = self.prepare(raw, ["-FCronDaemon", "-i", "alice"])
        header, _, body = data.partition(b"\n\n")
        lines = header.split(b"\n")
        self.assertEqual(lines[0], b"From: CronDaemon <alice@devbox.example>")
        self.assertEqual(lines[1], b"Date: Sun, 01 Mar 2026 12:30:00 +0100")
        self.assertRegex(lines[2].decode(), r"^Message-ID: <[^@>]+@devbox\.example>$")
        self.assertEqual(lines[3:], [b"Subject: Cron <alice@devbox> ./job",
                                     b"X-Cron-Env: <SHELL=/bin/sh>"])
        self.assertEqual(body, b"out\n")
        self.assertEqual(message.recipients, ("alice@devbox.example",))  # type: ignore
        self.assertEqual(message.sender, "alice@devbox.example")  # type: ignore

    def test_from_names(self) -> None:
        cases = [
            ([], b"From: Alice Liddell <alice@devbox.example>\n"),  # the GECOS name
            (["-F", ""], b"From: alice@devbox.example\n"),
            (["-F", "Zo\u00eb", "-f", "app@example.com"],
             b"From: =?utf-8?q?Zo=C3=AB?= <app@example.com>\n"),
            (["-f", ""], b"From: Alice Liddell <alice@devbox.example>\n"),  # null sender
        ]
        for flags, expected in cases:
            with self.subTest(flags=flags):
                data, _ = self.prepare(b"Subject: s\n\nb\n", [*flags, "x@example.com"])
                self.assertTrue(data.startswith(expected), data)

    def test_present_headers_kept(self) -> None:
        raw = (b"from: a@example.com\nDATE: Mon, 2 Mar 2026 00:00:00 +0000\n"
               b"Message-Id: <x@y>\n\nbody\n")
        data, _ = self.prepare(raw, ["x@example.com"])
        self.assertEqual(data, raw)

    def test_header_body_boundary(self) -> None:
        """A body without a header, or a header without a blank line, still parts right."""
        data, _ = self.prepare(b"just text\nmore: text\n", ["-F", "", "x@example.com"])
        self.assertTrue(data.endswith(b">\n\njust text\nmore: text\n"), data)
        data, _ = self.prepare(b"Subject: only a header", ["-F", "", "x@example.com"])
        self.assertTrue(data.endswith(b"\nSubject: only a header\n\n"), data)
        data, _ = self.prepare(b" folded first\nSubject: s\n\n", ["-F", "", "x@example.com"])
        self.assertTrue(data.endswith(b">\n\n folded first\nSubject: s\n\n"), data)

    def test_crlf_becomes_lf(self) -> None:
        data, _ = self.prepare(b"Subject: s\r\n\r\na\r\nb\rc\r\n", ["x@example.com"])
        self.assertTrue(data.endswith(b"Subject: s\n\na\nb\rc\n"))

    def test_smtp_envelope(self) -> None:
        """-bs: the envelope is the conversation's; -t does not apply."""
        _, message = self.prepare(b"To: y@example.com\n\nb\n", ["-t"],
                                  recipients=["z@example.com"], sender="")
        self.assertEqual((message.sender, message.recipients),  # type: ignore
                         ("", ("z@example.com",)))


class TraceHeaderTests(TestCase):
    def test_local_received(self) -> None:
        header = local_received(ALICE, NOW)
        self.assertEqual(header, b"Received: from alice (uid 1000)\n"
                                 b"\tby devbox.example (mailsink-sendmail) with local;\n"
                                 b"\tSun, 01 Mar 2026 11:30:00 +0000 (UTC)\n")
        odd = Identity(user="ev il(x);\n", uid=7, hostname="h")
        header = local_received(odd, NOW, "a (b)\nc")
        self.assertTrue(header.startswith(b"Received: from ev_il_x___ (uid 7)\n\tby h "
                                          b"(mailsink-sendmail, a [b] c) with local;\n"))


class TargetTests(TestCase):
    def test_endpoint_address(self) -> None:
        cases = [
            ("tcp:1025:interface=127.0.0.1", ("127.0.0.1", 1025, False)),
            ("tcp:port=25", ("127.0.0.1", 25, False)),
            ("tcp:2525:interface=0.0.0.0", ("127.0.0.1", 2525, False)),
            ("tcp6:2525:interface=\\:\\:1", ("::1", 2525, False)),
            ("tcp6:2525", ("::1", 2525, False)),
            ("ssl:1465:privateKey=k.pem:certKey=c.pem:interface=192.0.2.1",
             ("192.0.2.1", 1465, True)),
            ("systemd:domain=INET:index=0", None),
            ("unix:/run/mailsink.sock", None),
            ("tcp:0", None),
        ]
        for endpoint, expected in cases:
            with self.subTest(endpoint=endpoint):
                self.assertEqual(endpoint_address(endpoint), expected)

    def test_listener_target(self) -> None:
        cases = [
            ("[smtp]\n", Target("127.0.0.1", 1025, "none", "localhost",
                                 "/srv/state/mailsink-cert.pem")),
            ("[smtp]\nlisten = tcp6:2525:interface=\\:\\:1\ntls = starttls-required\n"
             "[tls]\ncert = /c.pem\nkey = /k.pem\n",
             Target("::1", 2525, "starttls", "localhost", "/c.pem")),
            ("[smtp]\nlisten = tcp:2525\ntls = none\nauth = required\n"
             "[auth]\nallow_insecure = true\n"
             "[smtp:local]\nlisten = ssl:2465:privateKey=k:interface=127.0.0.2\n",
             Target("127.0.0.2", 2465, "implicit", "localhost",
                    "/srv/state/mailsink-cert.pem")),
        ]
        for text, expected in cases:
            with self.subTest(text=text):
                self.assertEqual(listener_target(parse_config(ini(text), "/e/m.ini", {})),
                                 expected)

    def test_no_reachable_listener(self) -> None:
        config = parse_config(ini("[smtp]\nlisten = systemd:domain=INET:index=0\n"),
                              "/e/m.ini", {})
        self.assertEqual(listener_target(config),
                         "[smtp] listen = systemd:domain=INET:index=0 names no address and "
                         "port to connect to: pass --smtp HOST:PORT")
        config = parse_config(ini("[smtp]\nlisten = tcp:1\nauth = required\ntls = implicit\n"),
                              "/e/m.ini", {})
        self.assertIn("no SMTP listener that takes mail without a password",
                      str(listener_target(config)))

    def test_override(self) -> None:
        config = parse_config(ini("[smtp:smtps]\nlisten = tcp:1465\ntls = implicit\n"),
                              "/e/m.ini", {})
        self.assertEqual(override_target("mail.local:1465", config),
                         Target("mail.local", 1465, "implicit", "mail.local",
                                "/srv/state/mailsink-cert.pem"))
        self.assertEqual(override_target("[::1]:2525", config),
                         Target("::1", 2525, "none", "::1"))
        self.assertEqual(override_target("box", None), Target("box", 25, "none", "box"))
        self.assertRaises(ValueError, override_target, "box:http", None)

    def test_config_path(self) -> None:
        home = self.mktemp()
        self.patch(os, "environ", {**os.environ, "HOME": home})
        self.patch(sendmail_main, "DEFAULT_CONFIG_PATH", os.path.join(home, "none.ini"))
        self.assertEqual(sendmail_main.config_path("/a.ini", {"MAILSINK_CONFIG": "/b"}),
                         "/a.ini")
        self.assertEqual(sendmail_main.config_path(None, {"MAILSINK_CONFIG": "/b"}), "/b")
        self.assertIsNone(sendmail_main.config_path(None, {}))
        user = os.path.join(home, ".config", "mailsink", "mailsink.ini")
        os.makedirs(os.path.dirname(user))
        open(user, "w").close()
        self.assertEqual(sendmail_main.config_path(None, {}), user)


class FallbackTests(TestCase):
    """Nothing listens: the message goes to the Maildir, or exit status 75."""

    def setUp(self) -> None:
        with socket.socket() as sock:  # a port nothing listens on once it is closed
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.message = prepare(b"Subject: kept\n\nbody\n", parse_arguments(["-t"]), ALICE,
                               NOW, recipients=["a@example.com", "b@example.com"],
                               sender="app@example.com")
        self.target = Target("127.0.0.1", self.port, "none", "localhost")

    def test_written_to_maildir(self) -> None:
        folder = os.path.join(self.mktemp(), "mail")
        outcome = deliver(self.message, ALICE, NOW, self.target, folder)
        self.assertEqual((outcome.status, outcome.reply),
                         (0, "250 2.0.0 written to the Maildir directly"))
        (name,) = os.listdir(os.path.join(folder, "new"))
        self.assertIn(f"127.0.0.1:{self.port} refused the connection", outcome.note)
        self.assertTrue(outcome.note.endswith(os.path.join(folder, "new", name)))
        self.assertEqual(os.listdir(os.path.join(folder, "tmp")), [])
        with open(os.path.join(folder, "new", name), "rb") as stream:
            stored = stream.read()
        self.assertTrue(stored.startswith(
            b"Return-Path: <app@example.com>\nDelivered-To: a@example.com\n"
            b"Delivered-To: b@example.com\nReceived: from alice (uid 1000)\n\tby devbox.example"
            b" (mailsink-sendmail, written to the Maildir directly: 127.0.0.1:"), stored)
        self.assertTrue(stored.endswith(self.message.data))
        transport = mime.facts(stored).transport
        self.assertEqual((transport.protocol, transport.username, transport.mail_from,
                          transport.rcpt_to, transport.listener),
                         ("local", "alice", "app@example.com",
                          ("a@example.com", "b@example.com"), ""))

    def test_nowhere_to_keep_it(self) -> None:
        blocker = self.mktemp()
        open(blocker, "w").close()  # a file where the Maildir's folder should be
        outcome = deliver(self.message, ALICE, NOW, self.target, os.path.join(blocker, "m"))
        self.assertEqual(outcome.status, EX_TEMPFAIL)
        self.assertTrue(outcome.reply.startswith("451 4.3.0 "))
        self.assertIn("refused the connection", outcome.note)
        self.assertIn(f"and the Maildir {blocker}/m cannot be written (Not a directory)",
                      outcome.note)
        self.assertNotIn("\n", outcome.note)

    def test_no_listener_no_maildir(self) -> None:
        outcome = deliver(self.message, ALICE, NOW, "no listener: pass --smtp", None)
        self.assertEqual((outcome.status, outcome.reply, outcome.note),
                         (EX_TEMPFAIL, "451 4.3.0 no listener: pass --smtp",
                          "the message was not sent: no listener: pass --smtp"))


class StdioTests(TestCase):
    """-bs: a client's conversation in, replies out, each message handed on at its dot."""

    def converse(self, script: bytes) -> tuple[list[str], list[tuple[object, ...]]]:
        written: list[bytes] = []
        handed: list[tuple[object, ...]] = []

        def deliver(sender: str, recipients: tuple[str, ...], data: bytes) -> str:
            handed.append((sender, recipients, data))
            return "250 2.0.0 Ok: queued"

        converse(script.splitlines(keepends=True), written.append, "devbox", deliver)
        self.assertTrue(all(chunk.endswith(b"\r\n") for chunk in written))
        return b"".join(written).decode().splitlines(), handed

    def test_symfony_session(self) -> None:
        """As Symfony's SmtpTransport talks to sendmail -bs: HELO, one message, QUIT."""
        replies, handed = self.converse(
            b"HELO [127.0.0.1]\r\nMAIL FROM:<app@example.com> BODY=8BITMIME\r\n"
            b"RCPT TO:<a@example.com>\r\nRCPT TO:<b@example.com>\r\nDATA\r\n"
            b"Subject: hi\r\n\r\n..one dot\r\n.\r\nQUIT\r\n")
        self.assertEqual(replies, [
            "220 devbox ESMTP mailsink-sendmail", "250 devbox", "250 2.1.0 Ok",
            "250 2.1.5 Ok", "250 2.1.5 Ok", "354 End data with <CR><LF>.<CR><LF>",
            "250 2.0.0 Ok: queued", "221 2.0.0 Bye"])
        self.assertEqual(handed, [("app@example.com", ("a@example.com", "b@example.com"),
                                   b"Subject: hi\n\n.one dot\n")])

    def test_order_and_errors(self) -> None:
        replies, handed = self.converse(
            b"EHLO x\nRCPT TO:<a@x>\nDATA\nMAIL TO:<a@x>\nMAIL FROM:<>\nMAIL FROM:<b@x>\n"
            b"RCPT FROM:<a@x>\nRSET\nMAIL FROM:<>\nRCPT TO:<a@x>\nDATA\nx\n.\nNOOP\nVRFY a\n"
            b"STARTTLS\nMAIL FROM:c@x\nRCPT TO:d@x\nDATA\nunended\n")
        self.assertEqual(replies, [
            "220 devbox ESMTP mailsink-sendmail",
            "250-devbox", "250-8BITMIME", "250-SMTPUTF8", "250 ENHANCEDSTATUSCODES",
            "503 5.5.1 Error: need MAIL command", "503 5.5.1 Error: need RCPT command",
            "501 5.5.4 Syntax: MAIL FROM:<address>", "250 2.1.0 Ok",
            "503 5.5.1 Error: nested MAIL command", "501 5.5.4 Syntax: RCPT TO:<address>",
            "250 2.0.0 Ok", "250 2.1.0 Ok", "250 2.1.5 Ok",
            "354 End data with <CR><LF>.<CR><LF>", "250 2.0.0 Ok: queued", "250 2.0.0 Ok",
            "252 2.0.0 Cannot VRFY user, but will accept message",
            "502 5.5.2 Error: command not recognized", "250 2.1.0 Ok", "250 2.1.5 Ok",
            "354 End data with <CR><LF>.<CR><LF>"])
        self.assertEqual(handed, [("", ("a@x",), b"x\n")])  # the unended one is not sent


class FramedReplyTests(TestCase):
    def test_a_multi_line_answer_is_one_smtp_reply(self) -> None:
        self.assertEqual(framed("550 5.7.1 Relaying denied\nSee https://example.com/why"),
                         "550-5.7.1 Relaying denied\n550 See https://example.com/why")
        self.assertEqual(framed("250 2.0.0 Ok: queued as X"), "250 2.0.0 Ok: queued as X")
