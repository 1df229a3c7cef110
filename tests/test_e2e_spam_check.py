"""
End to end: C{GET /api/v1/message/{ID}/sa-check} on the real daemon (C{twistd -n
mailsink}) against a real SpamAssassin C{spamd} started here on a free loopback port with
local tests only (C{--local}: no DNS or network rules) and the packaged rules: a GTUBE
message is spam with the GTUBE rule, a plain one is not. Then spamd down (a closed port)
and a silent server (a port that accepts and never answers): each answers C{Error} in one
sentence within 10 s, and the daemon serves other requests meanwhile. Without
C{[spamassassin] host} the route is 404 and C{/api/v1/webui} says SpamAssassin is off.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import shutil
import signal
import smtplib
import socket
import subprocess
import tempfile
import threading
import time
import unittest
from email.message import EmailMessage
from typing import Any, ClassVar

from daemon import POLL_INTERVAL, Daemon, SharedDaemon, free_port, http_json

SMTP_TIMEOUT = 10.0
SPAMD_START_TIMEOUT = 60.0
"""Seconds spamd may take to load its rules and answer PING."""
SPAM_CHECK_TIMEOUT = 10.0
"""What the daemon promises: an answer from sa-check within this, whatever spamd does."""
SITE_CONFIG = "/etc/spamassassin"
"""Debian's site configuration: its .pre files load the plugins (the rules need them)."""
GTUBE = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"


class Spamd:
    """
    A spamd of this test's own: on 127.0.0.1:C{port}, local tests only, no user
    configuration, no Bayes, its site configuration the distribution's plugin loaders only
    (so a local.cf on the machine changes nothing), logging to a file in its folder.
    """

    def __init__(self) -> None:
        self.port = free_port()
        self.root = tempfile.mkdtemp(prefix="mailsink-spamd-")
        os.chmod(self.root, 0o755)  # spamd drops root for nobody: it must read this
        self.site = os.path.join(self.root, "site")
        os.mkdir(self.site)
        for pre in glob.glob(os.path.join(SITE_CONFIG, "*.pre")):
            shutil.copy(pre, self.site)
        self.log_path = os.path.join(self.root, "spamd.log")
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        command = ["spamd", "--listen", f"127.0.0.1:{self.port}", "--local",
                   "--nouser-config", "--siteconfigpath", self.site, "--cf", "use_bayes 0",
                   "--max-children", "1", "--min-children", "1", "--syslog", "stderr",
                   "--helper-home-dir", self.root, "--pidfile", os.path.join(self.root, "pid")]
        if os.geteuid() == 0:
            command += ["--username", "nobody"]
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log,
                                            stderr=subprocess.STDOUT, start_new_session=True)
        self.wait_ready()

    def wait_ready(self) -> None:
        """Poll with SPAMC PING until spamd answers PONG, or fail with its log."""
        deadline = time.monotonic() + SPAMD_START_TIMEOUT
        while not self.pongs():
            assert self.process is not None
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"spamd did not answer PING; log:\n{self.log()}")
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=POLL_INTERVAL)

    def pongs(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=5) as sock:
                sock.sendall(b"PING SPAMC/1.5\r\n\r\n")
                return b"PONG" in sock.recv(1024)
        except OSError:
            return False

    def log(self) -> str:
        with open(self.log_path, encoding="utf-8", errors="replace") as stream:
            return stream.read()

    def stop(self) -> None:
        """SIGTERM to spamd's process group (it and its children), SIGKILL if need be."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        shutil.rmtree(self.root, ignore_errors=True)


def message(subject: str, body: str) -> EmailMessage:
    mail = EmailMessage()
    mail["From"] = "Shop <news@shop.example.com>"
    mail["To"] = "dev@example.com"
    mail["Subject"] = subject
    mail["Date"] = "Tue, 02 Dec 2025 14:30:00 +0100"
    mail["Message-ID"] = f"<{subject.replace(' ', '.')}.20251202@shop.example.com>"
    mail.set_content(body)
    return mail


class SpamCheckClient:
    """Sending with smtplib and asking the API with urllib, on this daemon."""

    daemon: Daemon

    def send(self, mail: EmailMessage) -> None:
        with smtplib.SMTP("127.0.0.1", self.daemon.ports["smtp"], timeout=SMTP_TIMEOUT) as smtp:
            smtp.send_message(mail)

    def get(self, path: str) -> tuple[int, Any]:
        url = f"http://127.0.0.1:{self.daemon.ports['web']}/api/v1/{path}"
        status, answer = http_json("GET", url, timeout=60)
        return status, json.loads(answer) if status == 200 else answer

    def timed_check(self, mail: EmailMessage) -> tuple[float, dict[str, Any]]:
        self.send(mail)
        started = time.monotonic()
        status, result = self.get(f"message/latest/sa-check?query=subject:{mail['Subject']}")
        elapsed = time.monotonic() - started
        assert status == 200, (status, result)
        return elapsed, result


def sections(host: str) -> dict[str, dict[str, str]]:
    return {"smtp": {"tls": "none"}, "web": {}, "spamassassin": {"host": host}}


@unittest.skipUnless(shutil.which("spamd") and os.path.isdir(SITE_CONFIG),
                     "spamd is not installed (apt-get install spamassassin spamd)")
class RealSpamdTests(SharedDaemon, SpamCheckClient, unittest.TestCase):
    spamd: ClassVar[Spamd]

    @classmethod
    def setUpClass(cls) -> None:
        cls.spamd = Spamd()
        cls.addClassCleanup(cls.spamd.stop)
        cls.spamd.start()
        cls.daemon_sections = sections(f"127.0.0.1:{cls.spamd.port}")
        super().setUpClass()

    def test_gtube_is_spam(self) -> None:
        elapsed, result = self.timed_check(message("gtube", f"Hello,\n\n{GTUBE}\n"))
        self.assertEqual((result["IsSpam"], result["Error"]), (True, ""), result)
        self.assertGreaterEqual(result["Score"], 1000)
        rules = {rule["Name"]: rule for rule in result["Rules"]}
        self.assertEqual(rules["GTUBE"]["Score"], 1000)
        self.assertIn("Generic Test for Unsolicited Bulk Email", rules["GTUBE"]["Description"])
        self.assertEqual(sorted(result), ["Error", "IsSpam", "Rules", "Score"])
        self.assertLess(elapsed, SPAM_CHECK_TIMEOUT)

    def test_plain_message_is_not_spam(self) -> None:
        _elapsed, result = self.timed_check(message(
            "minutes", "Hi team,\n\nthe minutes of today's meeting are attached to the wiki "
            "page.\n\nThanks,\nSam\n"))
        self.assertEqual((result["IsSpam"], result["Error"]), (False, ""), result)
        self.assertLess(result["Score"], 5)
        self.assertNotIn("GTUBE", [rule["Name"] for rule in result["Rules"]])

    def test_webui_says_spamassassin_is_on(self) -> None:
        self.assertIs(self.get("webui")[1]["SpamAssassin"], True)

    def test_unknown_message(self) -> None:
        self.assertEqual(self.get("message/nope/sa-check"), (404, b"message not found"))


class UnreachableSpamdTests(SpamCheckClient, unittest.TestCase):
    def test_spamd_down(self) -> None:
        port = free_port()
        self.daemon = Daemon.for_test(self, sections(f"127.0.0.1:{port}"))
        elapsed, result = self.timed_check(message("down", "hello\n"))
        self.assertEqual(result, {
            "IsSpam": False, "Score": 0, "Rules": [],
            "Error": f"spamd at 127.0.0.1:{port} refused the connection: start spamd, or set "
                     "[spamassassin] host to where it listens"})
        self.assertLess(elapsed, SPAM_CHECK_TIMEOUT)

    def test_silent_server_answered_within_ten_seconds(self) -> None:
        silent = socket.create_server(("127.0.0.1", 0))  # accepts, never says a word
        silent.settimeout(30)
        self.addCleanup(silent.close)
        port = silent.getsockname()[1]
        self.daemon = Daemon.for_test(self, sections(f"127.0.0.1:{port}"))
        checked: list[tuple[float, dict[str, Any]]] = []
        checking = threading.Thread(
            target=lambda: checked.append(self.timed_check(message("silent", "hello\n"))))
        checking.start()
        connection, _ = silent.accept()  # the daemon is waiting on "spamd" now
        self.addCleanup(connection.close)
        started = time.monotonic()
        self.assertEqual(self.get("messages")[0], 200)  # and serves others meanwhile
        self.assertLess(time.monotonic() - started, 2)
        checking.join(timeout=30)
        [(elapsed, result)] = checked
        self.assertEqual(result["Error"], f"spamd at 127.0.0.1:{port} did not answer within "
                         "10 s; it may be overloaded or still starting, or the port is not "
                         "spamd's")
        self.assertEqual((result["IsSpam"], result["Rules"]), (False, []))
        self.assertGreater(elapsed, SPAM_CHECK_TIMEOUT - 1)
        self.assertLess(elapsed, SPAM_CHECK_TIMEOUT + 1)
        self.assertIn(b"REPORT SPAMC/1.5\r\n", connection.recv(65536))

    def test_not_configured(self) -> None:
        self.daemon = Daemon.for_test(self, {"smtp": {"tls": "none"}, "web": {}})
        self.send(message("off", "hello\n"))
        self.assertEqual(self.get("message/latest/sa-check"),
                         (404, b"SpamAssassin is not configured: set [spamassassin] host"))
        self.assertIs(self.get("webui")[1]["SpamAssassin"], False)


if __name__ == "__main__":
    unittest.main()
