"""
End-to-end tests of C{mailsink check} and C{mailsink send}: the console script run as a
subprocess against a real daemon with three SMTP listeners on loopback ports (plaintext
with STARTTLS; implicit TLS; STARTTLS required with AUTH required), trusting the daemon's
generated certificate with C{--cafile}. Plus unit tests of the sentences.
"""

from __future__ import annotations

import datetime
import os
import socket
import subprocess
import sys
import time

from daemon import Daemon, SharedDaemon, free_port
from twisted.trial.unittest import SynchronousTestCase, TestCase

from mailsink import probe, sentences
from mailsink.send import build_message

MAILSINK = os.path.join(os.path.dirname(sys.executable), "mailsink")
TOOL_TIMEOUT = 60.0
DELIVERY_TIMEOUT = 10.0


def mailsink(*args: str, stdin: str | None = None,
             env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the console script to completion (bounded), without MAILSINK_* from outside."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("MAILSINK_")}
    environment.update(env or {})
    return subprocess.run([MAILSINK, *args], input=stdin, capture_output=True, text=True,
                          timeout=TOOL_TIMEOUT, check=False, env=environment,
                          stdin=None if stdin is not None else subprocess.DEVNULL)


class ProbeEndToEnd(SharedDaemon, TestCase):
    daemon_sections = {
        "auth": {"accept_any": "true"},
        "smtp": {"tls": "starttls"},
        "smtp:smtps": {"tls": "implicit"},
        "smtp:plain": {"tls": "none"},
        "smtp:submission": {"tls": "starttls-required", "auth": "required"},
    }

    def target(self, section: str) -> str:
        return f"127.0.0.1:{self.daemon.ports[section]}"

    def run_ok(self, *args: str, **kwargs: object) -> str:
        result = mailsink(*args, **kwargs)  # type: ignore[arg-type]
        self.assertEqual(result.returncode, 0, f"{args}: {result.stdout}{result.stderr}")
        self.assertEqual(result.stderr, "")
        return result.stdout

    def run_failing(self, *args: str, **kwargs: object) -> str:
        """The one line on standard error of a command expected to exit 1."""
        result = mailsink(*args, **kwargs)  # type: ignore[arg-type]
        self.assertEqual(result.returncode, 1, f"{args}: {result.stdout}{result.stderr}")
        lines = result.stderr.splitlines()
        self.assertEqual(len(lines), 1, result.stderr)
        return lines[0]

    def check(self, section: str, *extra: str) -> str:
        return self.run_ok("check", self.target(section), "--cafile", self.daemon.cert_path,
                           "--timeout", "2", *extra)

    def assert_delivered(self, before: set[str], subject: str) -> bytes:
        deadline = time.monotonic() + DELIVERY_TIMEOUT
        while not (self.daemon.new_files() - before):
            self.assertLess(time.monotonic(), deadline, "no new message in new/")
            time.sleep(0.05)
        (name,) = self.daemon.new_files() - before
        data = self.daemon.read_new(name)
        self.assertIn(f"Subject: {subject}".encode(), data)
        return data

    def send(self, section: str, subject: str, *extra: str, **kwargs: object) -> bytes:
        before = self.daemon.new_files()
        out = self.run_ok("send", self.target(section), "--cafile", self.daemon.cert_path,
                          "--subject", subject, *extra, **kwargs)
        self.assertIn("250 2.0.0 Ok: queued as", out)
        return self.assert_delivered(before, subject)

    # check

    def test_check_starttls(self) -> None:
        out = self.check("smtp")
        self.assertIn("greeting: 220 localhost", out)
        self.assertIn("STARTTLS: offered", out)
        self.assertIn("AUTH before TLS: not offered", out)
        self.assertIn("certificate accepted", out)
        self.assertIn("certificate subject: CN=localhost", out)
        self.assertIn("certificate SANs: localhost, 127.0.0.1, ::1", out)
        self.assertIn("certificate issuer: CN=localhost", out)
        self.assertIn("certificate matches 127.0.0.1: yes", out)
        self.assertRegex(out, r"certificate expires: \d{4}-\d\d-\d\d \(in \d+ days\)")
        self.assertIn("AUTH after TLS: PLAIN LOGIN", out)
        self.assertRegex(out, r"SIZE: \d+")
        self.assertIn("AUTH required: no", out)
        self.assertEqual(out.splitlines()[-1],
                         f"use: port {self.daemon.ports['smtp']}, STARTTLS, AUTH PLAIN")

    def test_check_implicit(self) -> None:
        out = self.check("smtp:smtps")
        self.assertIn("(implicit TLS?)", out)
        self.assertIn("greeting (over TLS): 220 localhost", out)
        self.assertIn("implicit TLS: yes", out)
        self.assertIn("certificate matches 127.0.0.1: yes", out)
        self.assertEqual(out.splitlines()[-1],
                         f"use: port {self.daemon.ports['smtp:smtps']}, implicit TLS, "
                         f"AUTH PLAIN")

    def test_check_starttls_required_auth_required(self) -> None:
        out = self.check("smtp:submission")
        self.assertIn("STARTTLS: offered", out)
        self.assertIn("AUTH before TLS: not offered", out)
        self.assertIn("AUTH required: yes", out)
        self.assertEqual(out.splitlines()[-1],
                         f"use: port {self.daemon.ports['smtp:submission']}, STARTTLS, "
                         f"AUTH PLAIN")

    def test_check_plain(self) -> None:
        out = self.check("smtp:plain")
        self.assertIn("STARTTLS: not offered", out)
        self.assertIn("AUTH required: no", out)
        self.assertNotIn("certificate", out)
        self.assertEqual(out.splitlines()[-1],
                         f"use: port {self.daemon.ports['smtp:plain']}, no TLS")

    def test_check_untrusted(self) -> None:
        line = self.run_failing("check", self.target("smtp"), "--timeout", "5")
        self.assertIn("certificate is not trusted (self-signed certificate)", line)
        out = mailsink("check", self.target("smtp"), "--timeout", "5").stdout
        self.assertIn("certificate check: refused: self-signed certificate", out)
        self.assertIn("certificate SANs: localhost, 127.0.0.1, ::1", out)
        self.assertIn("--cafile", line)

    def test_check_insecure(self) -> None:
        out = self.run_ok("check", self.target("smtp"), "--insecure", "--timeout", "5")
        self.assertIn("not checked", out)
        self.assertIn("use: port", out)

    def test_check_wrong_name(self) -> None:
        line = self.run_failing("check", self.target("smtp"), "--cafile",
                                self.daemon.cert_path, "--servername", "wrong.example")
        self.assertEqual(line, "mailsink check: certificate is for localhost, 127.0.0.1 and "
                               "::1, not wrong.example")

    def test_check_closed_port(self) -> None:
        port = free_port()
        line = self.run_failing("check", f"127.0.0.1:{port}", "--timeout", "2")
        self.assertEqual(line, f"mailsink check: 127.0.0.1:{port} refused the connection — "
                               f"nothing listens on that port: check the host and port")

    def test_check_silent_server(self) -> None:
        """A port that accepts connections and never speaks, not even TLS."""
        with socket.socket() as listener:
            listener.bind(("127.0.0.1", 0))
            listener.listen(8)
            port = listener.getsockname()[1]
            line = self.run_failing("check", f"127.0.0.1:{port}", "--timeout", "1")
        self.assertIn(f"127.0.0.1:{port} sent no greeting in 1 s", line)

    # send

    def test_send_none(self) -> None:
        self.send("smtp", "probe none", "--tls", "none", "--from", "a@example.org",
                  "--to", "b@example.org", "--to", "c@example.org")

    def test_send_starttls_with_attachments(self) -> None:
        folder = self.mktemp()
        os.makedirs(folder)
        pdf = os.path.join(folder, "report.pdf")
        text = os.path.join(folder, "notes.txt")
        with open(pdf, "wb") as stream:
            stream.write(b"%PDF-1.4 not really\n")
        with open(text, "w", encoding="utf-8") as stream:
            stream.write("hello\n")
        data = self.send("smtp", "probe starttls", "--tls", "starttls", "--attach", pdf,
                         "--attach", text)
        self.assertIn(b"Content-Type: application/pdf", data)
        self.assertIn(b'filename="report.pdf"', data)
        self.assertIn(b"Content-Type: text/plain", data)
        self.assertIn(b'filename="notes.txt"', data)

    def test_send_implicit_password_stdin(self) -> None:
        data = self.send("smtp:smtps", "probe implicit", "--tls", "implicit", "--user", "bob",
                         "--password-stdin", stdin="secret\n")
        self.assertIn(b"ESMTPSA", data)

    def test_send_password_environment(self) -> None:
        data = self.send("smtp:submission", "probe env", "--user", "carol",
                         env={"MAILSINK_PASSWORD": "secret"})
        self.assertIn(b"ESMTPSA", data)

    def test_send_auth_required(self) -> None:
        line = self.run_failing("send", self.target("smtp:submission"), "--cafile",
                                self.daemon.cert_path)
        self.assertIn("530 the server requires authentication", line)

    def test_send_wrong_password(self) -> None:
        checked = Daemon.for_test(self, {"smtp": {"tls": "implicit", "auth": "required"}},
                                  env={"MAILSINK_AUTH": "bob:right"})
        line = self.run_failing("send", f"127.0.0.1:{checked.ports['smtp']}", "--tls",
                                "implicit", "--cafile", checked.cert_path, "--user", "bob",
                                "--password-stdin", stdin="wrong\n")
        self.assertEqual(line, "mailsink send: 535 authentication failed: check "
                               "username/password; some providers need an app password (the "
                               "server said: 5.7.8 Error: authentication failed)")

    def test_send_user_without_password(self) -> None:
        line = self.run_failing("send", self.target("smtp:submission"), "--cafile",
                                self.daemon.cert_path, "--user", "bob")
        self.assertIn("MAILSINK_PASSWORD", line)

    def test_send_auth_before_starttls(self) -> None:
        line = self.run_failing("send", self.target("smtp:submission"), "--tls", "none",
                                "--user", "bob", env={"MAILSINK_PASSWORD": "x"})
        self.assertEqual(line, f"mailsink send: 127.0.0.1:{self.daemon.ports['smtp:submission']}"
                               f" does not offer AUTH before STARTTLS: set tls = starttls")

    def test_send_starttls_to_implicit_port(self) -> None:
        port = self.daemon.ports["smtp:smtps"]
        line = self.run_failing("send", self.target("smtp:smtps"), "--tls", "starttls",
                                "--cafile", self.daemon.cert_path, "--timeout", "2")
        self.assertRegex(line, rf"^mailsink send: 127\.0\.0\.1:{port} (sent no greeting in "
                               rf"2 s|closed the connection without a greeting) — port "
                               rf"{port} expects TLS from the first byte: set tls = "
                               rf"implicit$")

    def test_send_implicit_to_starttls_port(self) -> None:
        line = self.run_failing("send", self.target("smtp"), "--tls", "implicit", "--cafile",
                                self.daemon.cert_path, "--timeout", "2")
        self.assertRegex(line, r"^mailsink send: TLS handshake failed: .+ — the server speaks "
                               r"plaintext first: set tls = starttls$")

    def test_send_wrong_name(self) -> None:
        line = self.run_failing("send", self.target("smtp:smtps"), "--tls", "implicit",
                                "--cafile", self.daemon.cert_path, "--servername",
                                "wrong.example")
        self.assertEqual(line, "mailsink send: certificate is for localhost, 127.0.0.1 and "
                               "::1, not wrong.example")

    def test_password_stdin_needs_user(self) -> None:
        result = mailsink("send", self.target("smtp"), "--password-stdin", stdin="x\n")
        self.assertEqual(result.returncode, 2, result.stderr)


class Sentences(SynchronousTestCase):
    def test_parse_target(self) -> None:
        self.assertEqual(probe.parse_target("smtp.example.com"), ("smtp.example.com", 587))
        self.assertEqual(probe.parse_target("smtp.example.com:465"), ("smtp.example.com", 465))
        self.assertEqual(probe.parse_target("[::1]:2525"), ("::1", 2525))
        self.assertEqual(probe.parse_target("::1", 25), ("::1", 25))
        for bad in ("host:0", "host:x", ":25", "[::1]x"):
            self.assertRaises(ValueError, probe.parse_target, bad)

    def test_mismatch(self) -> None:
        self.assertEqual(sentences.mismatch(["mail.example.net"], "smtp.example.com"),
                         "certificate is for mail.example.net, not smtp.example.com")

    def test_certificate_matches(self) -> None:
        cert = sentences.Certificate("CN=x", "CN=x", ["*.example.com", "example.org"],
                                 ["127.0.0.1"], datetime.datetime.now(datetime.UTC))
        self.assertTrue(cert.matches("smtp.example.com"))
        self.assertFalse(cert.matches("a.b.example.com"))
        self.assertTrue(cert.matches("EXAMPLE.org"))
        self.assertTrue(cert.matches("127.0.0.1"))
        self.assertFalse(cert.matches("::1"))

    def test_verification_mismatch(self) -> None:
        cert = sentences.Certificate("CN=mail.example.net", "CN=ca", ["mail.example.net"], [],
                                 datetime.datetime.now(datetime.UTC))
        self.assertEqual(sentences.verification(62, "Hostname mismatch", "smtp.example.com", cert),
                         "certificate is for mail.example.net, not smtp.example.com")

    def test_silence(self) -> None:
        self.assertEqual(sentences.silence("smtp.example.com", 465, 10.0),
                         "smtp.example.com:465 sent no greeting in 10 s — port 465 expects "
                         "TLS from the first byte: set tls = implicit")
        self.assertEqual(sentences.plaintext("wrong version number"),
                         "TLS handshake failed: wrong version number — the server speaks "
                         "plaintext first: set tls = starttls")

    def test_build_message(self) -> None:
        message = build_message("a@example.com", ["b@example.com", "c@example.com"], "Hi")
        self.assertEqual(message["To"], "b@example.com, c@example.com")
        self.assertEqual(message["Subject"], "Hi")
        self.assertIn("Message-ID", message)
