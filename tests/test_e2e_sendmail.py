"""
C{mailsink-sendmail} end to end: the installed console script, driven as PHP's mail()
(C{-t -i}), cron (a recipient argument, no From), git send-email (the real one through
C{--sendmail-cmd} where it is installed, else its exact argv) and Symfony (C{-bs}) drive
it, against the real daemon; STARTTLS and implicit TLS listeners; the Maildir fallback with
the daemon stopped; exit 75 when neither works; the listener's refusals passed on.
"""

from __future__ import annotations

import json
import os
import pwd
import shlex
import shutil
import subprocess
import sys
import tempfile
import unittest
import urllib.parse
from typing import Any, ClassVar

from daemon import Daemon, SharedDaemon, daemon_environment, free_port, http_json

_SCRIPT = os.path.join(os.path.dirname(sys.executable), "mailsink-sendmail")
SENDMAIL = [_SCRIPT] if os.path.exists(_SCRIPT) else [sys.executable, "-m",
                                                      "mailsink.sendmail.main"]
"""The console script as installed (an editable checkout not reinstalled: the module)."""
MAILSINK = os.path.join(os.path.dirname(sys.executable), "mailsink")
USER = pwd.getpwuid(os.getuid()).pw_name
RUN_TIMEOUT = 60.0
WAIT = 10.0


def sendmail(config: str, *args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    """Run the command with C{-c config} as a program would, the message on stdin."""
    return subprocess.run([*SENDMAIL, "-c", config, *args], input=stdin, capture_output=True,
                          env=daemon_environment(), timeout=RUN_TIMEOUT, check=False)


def git_send_email_available() -> bool:
    try:
        exec_path = subprocess.run(["git", "--exec-path"], capture_output=True, text=True,
                                   timeout=RUN_TIMEOUT, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return False
    return os.path.exists(os.path.join(exec_path, "git-send-email"))


class Api:
    """The daemon's API; waiting for a message is the API's own C{wait}."""

    daemon: Daemon

    def get(self, path: str) -> Any:
        status, answer = http_json("GET", f"http://127.0.0.1:{self.daemon.ports['web']}"
                                          f"/api/v1/{path}")
        assert status == 200, (path, status, answer)
        return json.loads(answer) if answer[:1] in (b"{", b"[") else answer

    def message(self, subject: str) -> tuple[dict[str, Any], bytes]:
        """The one message with C{subject} (waited for): its JSON and its raw bytes."""
        query = urllib.parse.quote(f'subject:"{subject}"')
        found = self.get(f"search?query={query}&wait={WAIT:g}")  # answered on arrival
        assert found["messages_count"] == 1, found
        ident = found["messages"][0]["ID"]
        return self.get(f"message/{ident}"), self.get(f"message/{ident}/raw")

    def count(self, subject: str) -> int:
        query = urllib.parse.quote(f'subject:"{subject}"')
        return int(self.get(f"search?query={query}")["messages_count"])


class SendmailTests(Api, SharedDaemon, unittest.TestCase):
    daemon_sections: ClassVar[dict[str, dict[str, str]]] = {
        "smtp": {"tls": "starttls"}, "web": {}, "auth": {"accept_any": "true"},
        "mailsink": {"chaos": "true"}}

    def assertLocal(self, message: dict[str, Any]) -> None:
        """Transport: over the [smtp] listener from loopback, protocol local, the user."""
        transport = message["Transport"]
        self.assertEqual((transport["Protocol"], transport["Username"], transport["Listener"],
                          transport["RemoteAddress"], transport["Helo"]),
                         ("local", USER, "smtp", "127.0.0.1", "localhost"))
        self.assertTrue(transport["SessionID"])

    def test_php_mail(self) -> None:
        """PHP's mail(): -t -i; To and Subject from PHP (LF), the app's headers (CRLF)."""
        data = (b"To: customer@example.com\nSubject: PHP order 1001\n"
                b"From: Shop <shop@example.com>\r\nCc: sales@example.com\r\n"
                b"Bcc: audit@example.com\n\nThanks for your order.\n.\nThe dot stays.\n")
        result = sendmail(self.daemon.config_path, "-t", "-i", stdin=data)
        self.assertEqual((result.returncode, result.stderr), (0, b""))
        message, raw = self.message("PHP order 1001")
        self.assertLocal(message)
        self.assertEqual(message["Transport"]["RcptTo"],
                         ["customer@example.com", "sales@example.com", "audit@example.com"])
        self.assertEqual(message["ReturnPath"], f"{USER}@localhost")
        self.assertEqual(message["Bcc"], [{"Name": "", "Address": "audit@example.com"}])
        self.assertEqual(message["Text"], "Thanks for your order.\n.\nThe dot stays.\n")
        header = raw.partition(b"\n\n")[0]
        self.assertEqual(header.count(b"audit@example.com"), 1)  # its Delivered-To only
        self.assertNotIn(b"\nBcc:", header)
        received = [line for line in header.split(b"\n") if line.startswith(b"Received:")]
        self.assertEqual(len(received), 2)
        self.assertTrue(received[0].startswith(b"Received: from localhost (unknown "
                                               b"[127.0.0.1])"))
        self.assertEqual(received[1], f"Received: from {USER} (uid {os.getuid()})".encode())

    def test_cron(self) -> None:
        """Debian cron: -FCronDaemon -i -B8BITMIME -oem and the user: no From, Date or ID."""
        data = ("Subject: Cron <root@box> /usr/local/bin/nightly\nMIME-Version: 1.0\n"
                "Content-Type: text/plain; charset=UTF-8\nContent-Transfer-Encoding: 8bit\n"
                "X-Cron-Env: <SHELL=/bin/sh>\n\nbackup done \u2713\n").encode()
        result = sendmail(self.daemon.config_path, "-FCronDaemon", "-i", "-B8BITMIME",
                          "-oem", USER, stdin=data)
        self.assertEqual((result.returncode, result.stderr), (0, b""))
        message, _ = self.message("Cron <root@box> /usr/local/bin/nightly")
        self.assertLocal(message)
        self.assertEqual(message["From"], {"Name": "CronDaemon", "Address": f"{USER}@localhost"})
        self.assertEqual(message["Transport"]["RcptTo"], [f"{USER}@localhost"])
        self.assertTrue(message["Date"] and message["MessageID"].endswith("@localhost"))
        self.assertEqual(message["Text"], "backup done \u2713\n")
        codes = {finding["Code"] for finding in self.get(f"message/{message['ID']}/lint")
                 ["Findings"]}
        self.assertFalse(codes & {"missing-from", "missing-date", "missing-message-id"}, codes)

    def test_git_send_email(self) -> None:
        """git send-email --sendmail-cmd runs CMD -i RECIPIENT... with the patch on stdin."""
        folder = tempfile.mkdtemp(prefix="mailsink-git-")
        self.addCleanup(shutil.rmtree, folder, ignore_errors=True)
        command = shlex.join([*SENDMAIL, "-c", self.daemon.config_path])
        recipients = ["maintainer@example.com", "list@example.com"]
        if git_send_email_available():
            env = daemon_environment({"HOME": folder, "GIT_CONFIG_NOSYSTEM": "1"})

            def git(*args: str) -> subprocess.CompletedProcess[str]:
                return subprocess.run(["git", *args], cwd=folder, env=env, text=True,
                                      capture_output=True, timeout=RUN_TIMEOUT, check=True)
            git("init", "-q")
            git("config", "user.name", "Dev")
            git("config", "user.email", "dev@example.com")
            with open(os.path.join(folder, "notes.txt"), "w") as stream:
                stream.write("sink\n.\n")
            git("add", "notes.txt")
            git("commit", "-q", "-m", "notes: sendmail patch one")
            patch = git("format-patch", "-1", "-o", "out").stdout.strip()
            git("send-email", f"--sendmail-cmd={command}", f"--to={recipients[0]}",
                f"--cc={recipients[1]}", "--from=Dev <dev@example.com>", "--confirm=never",
                "--suppress-cc=all", "--quiet", patch)
        else:  # its exact argv and shell call, and a message as it writes one
            data = (b"From: Dev <dev@example.com>\nTo: maintainer@example.com\n"
                    b"Cc: list@example.com\nSubject: [PATCH] notes: sendmail patch one\n"
                    b"Date: Mon, 2 Mar 2026 10:00:00 +0000\n"
                    b"Message-Id: <20260302100000.1-1-dev@example.com>\n"
                    b"X-Mailer: git-send-email 2.39.5\nMIME-Version: 1.0\n"
                    b"Content-Transfer-Encoding: 8bit\n\n---\n notes.txt | 2 ++\n"
                    b"+sink\n+.\n-- \n2.39.5\n\n")
            subprocess.run(["sh", "-c", f'{command} "$@"', "-", "-i", *recipients],
                           input=data, env=daemon_environment(), timeout=RUN_TIMEOUT,
                           check=True)
        message, _ = self.message("[PATCH] notes: sendmail patch one")
        self.assertLocal(message)
        self.assertEqual(message["From"], {"Name": "Dev", "Address": "dev@example.com"})
        self.assertEqual(message["Transport"]["RcptTo"], recipients)
        self.assertIn("+sink\n+.\n", message["Text"])

    def test_symfony_bs(self) -> None:
        """-bs: SMTP on stdin and stdout, as Symfony Mailer's SendmailTransport speaks it."""
        script = (b"HELO [127.0.0.1]\r\nMAIL FROM:<app@example.com>\r\n"
                  b"RCPT TO:<user@example.com>\r\nDATA\r\nFrom: app@example.com\r\n"
                  b"Subject: Symfony -bs\r\n\r\n..leading dot\r\n.\r\nQUIT\r\n")
        result = sendmail(self.daemon.config_path, "-bs", "-i", stdin=script)
        self.assertEqual((result.returncode, result.stderr), (0, b""))
        replies = [line[:3] for line in result.stdout.split(b"\r\n") if line]
        self.assertEqual(replies, [b"220", b"250", b"250", b"250", b"354", b"250", b"221"])
        message, _ = self.message("Symfony -bs")
        self.assertLocal(message)
        self.assertEqual(message["ReturnPath"], "app@example.com")
        self.assertEqual(message["Text"], ".leading dot\n")

    def test_refusals_passed_on(self) -> None:
        """A listener's refusal is the caller's answer (69 or 75): never worked around."""
        chaos = f"http://127.0.0.1:{self.daemon.ports['web']}/api/v1/chaos"
        self.addCleanup(http_json, "PUT", chaos, {"Recipient": {"Probability": 0}})
        for code, status in ((550, 69), (451, 75)):
            with self.subTest(code=code):
                answer = http_json("PUT", chaos, {"Recipient": {"ErrorCode": code,
                                                                "Probability": 100}})
                self.assertEqual(answer[0], 200)
                result = sendmail(self.daemon.config_path, "x@example.com",
                                  stdin=b"Subject: refused by chaos\n\nx\n")
                self.assertEqual(result.returncode, status)
                self.assertRegex(result.stderr.decode(),
                                 rf"^mailsink-sendmail: 127\.0\.0\.1:\d+ refused the "
                                 rf"message: {code} .*\n$")
        self.assertEqual(self.count("refused by chaos"), 0)
        self.assertEqual(os.listdir(os.path.join(self.daemon.maildir, "tmp")), [])

    def test_help_and_usage(self) -> None:
        for command in (SENDMAIL, [MAILSINK, "sendmail"]):
            with self.subTest(command=command):
                result = subprocess.run([*command, "--help"], capture_output=True, text=True,
                                        timeout=RUN_TIMEOUT, check=False)
                self.assertEqual(result.returncode, 0)
                self.assertIn("/etc/mailsink/mailsink.ini, else\n"
                              "~/.config/mailsink/mailsink.ini", result.stdout)
        cases = [(["-Z", "x@example.com"], 64, "option -Z not recognized"),
                 ([], 64, "no recipients: give them as arguments"),
                 (["-bp"], 64, "-bp is not supported"),
                 (["-c", "/nonexistent/m.ini", "x@example.com"], 78, "cannot read")]
        for args, status, words in cases:
            with self.subTest(args=args):
                result = subprocess.run([*SENDMAIL, *args], input="", capture_output=True,
                                        text=True, env=daemon_environment(),
                                        timeout=RUN_TIMEOUT, check=False)
                self.assertEqual(result.returncode, status)
                self.assertIn(words, result.stderr)
                self.assertEqual(result.stderr.count("\n"), 1)


class TLSListenerTests(Api, unittest.TestCase):
    """STARTTLS-only and implicit-TLS listeners: the command does TLS, trusting the INI's."""

    def test_starttls_required_and_implicit(self) -> None:
        daemon = Daemon.for_test(self, {
            "smtp": {"tls": "starttls-required"}, "smtp:tls": {"tls": "implicit"},
            "web": {}, "auth": {"accept_any": "true"}})
        self.daemon = daemon
        cases = [("STARTTLS one", ()),
                 ("implicit one", ("--smtp", f"127.0.0.1:{daemon.ports['smtp:tls']}"))]
        for subject, extra in cases:
            with self.subTest(subject=subject):
                result = sendmail(daemon.config_path, *extra, "x@example.com",
                                  stdin=f"Subject: {subject}\n\nover TLS\n".encode())
                self.assertEqual((result.returncode, result.stderr), (0, b""))
                message, _ = self.message(subject)
                transport = message["Transport"]
                self.assertEqual(transport["Protocol"], "local")
                self.assertTrue(transport["TLS"]["Version"].startswith("TLSv1."), transport)


class FallbackTests(Api, unittest.TestCase):
    """The daemon is down: the Maildir directly; nowhere to keep it: exit 75."""

    def test_daemon_stopped(self) -> None:
        daemon = Daemon.for_test(self, {"smtp": {}, "web": {}})
        self.daemon = daemon
        daemon.stop()
        result = sendmail(daemon.config_path, "-t", "-i",
                          stdin=b"To: a@example.com\nSubject: while down\n\nkept\n")
        self.assertEqual(result.returncode, 0, result.stderr)
        (name,) = daemon.new_files()
        self.assertEqual(result.stderr.decode(),
                         f"mailsink-sendmail: 127.0.0.1:{daemon.ports['smtp']} refused the "
                         f"connection — nothing listens on that port: check the host and "
                         f"port; the message was written to the Maildir directly: "
                         f"{os.path.join(daemon.maildir, 'new', name)}\n")
        stored = daemon.read_new(name)
        self.assertTrue(stored.startswith(
            f"Return-Path: <{USER}@localhost>\nDelivered-To: a@example.com\n"
            f"Received: from {USER} (uid {os.getuid()})\n\tby localhost (mailsink-sendmail, "
            f"written to the Maildir directly: 127.0.0.1:".encode()), stored)
        daemon.start()
        message, _ = self.message("while down")
        transport = message["Transport"]
        self.assertEqual((transport["Protocol"], transport["Username"], transport["Listener"],
                          transport["RcptTo"], message["Text"]),
                         ("local", USER, "", ["a@example.com"], "kept\n"))

    def test_nowhere(self) -> None:
        root = tempfile.mkdtemp(prefix="mailsink-e2e-")
        self.addCleanup(shutil.rmtree, root, ignore_errors=True)
        open(os.path.join(root, "blocker"), "w").close()
        port = free_port()
        daemon = Daemon({"smtp": {"listen": f"tcp:{port}:interface=127.0.0.1"},
                         "mailsink": {"maildir": "blocker/mail"}}, root=root)
        result = sendmail(daemon.config_path, "a@example.com", stdin=b"Subject: lost?\n\nx\n")
        self.assertEqual(result.returncode, 75)
        self.assertEqual(result.stderr.decode(),
                         f"mailsink-sendmail: the message was not sent: 127.0.0.1:{port} "
                         f"refused the connection — nothing listens on that port: check the "
                         f"host and port; and the Maildir {root}/blocker/mail cannot be "
                         f"written (Not a directory)\n")
