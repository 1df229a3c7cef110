"""
End-to-end tests: the real daemon (C{twistd -n mailsink}) on loopback ports, spoken to by
real clients (smtplib, raw sockets, swaks, openssl s_client), checked by the replies and by
what lands in the Maildir's C{new/} folder.
"""

from __future__ import annotations

import contextlib
import email
import os
import re
import shutil
import signal
import smtplib
import socket
import ssl
import subprocess
import threading
import time
import unittest
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from daemon import Daemon, SharedDaemon, trusting_context, unverified_context
from twisted.trial.unittest import TestCase

CLIENT_TIMEOUT = 10.0
TOOL_TIMEOUT = 30.0
HELO = "e2e.client.test"
MAX_SIZE = 100 * 1024

LISTENERS = {
    "mailsink": {"max_message_size": "100K", "max_recipients": "3"},
    "smtp": {"tls": "starttls", "auth": "optional"},
    "smtp:submission": {"tls": "starttls-required", "auth": "none"},
    "smtp:smtps": {"tls": "implicit", "auth": "none"},
}

_TRACE = re.compile(
    rb"Return-Path: <(?P<sender>[^>\n]*)>\n"
    rb"(?P<delivered>(?:Delivered-To: [^\n]*\n)*)"
    rb"(?P<received>Received: [^\n]*\n(?:\t[^\n]*\n)*)")
_TLS_IN_RECEIVED = re.compile(r"\(using (TLSv1\.[23]) with cipher ([A-Z0-9_-]+) \((\d+)/\3 bits\)")
_QUEUED = re.compile(rb"2\.0\.0 Ok: queued as (\S+)")


def marker() -> str:
    return uuid.uuid4().hex


def make_message(tag: str, *, sender: str = "sender@example.com",
                 to: str = "rcpt@example.com", body: str = "") -> bytes:
    """A small message with LF line ends (as the Maildir stores it)."""
    text = (f"From: {sender}\nTo: {to}\nSubject: e2e {tag}\nMessage-Id: <{tag}@e2e.test>\n\n"
            f"Hello from the end-to-end tests.\n.a line that starts with a dot\n{body}"
            f"end {tag}\n")
    return text.encode()


def crlf(message: bytes) -> bytes:
    """C{message} with CRLF line ends (smtplib sends bytes as they are)."""
    return message.replace(b"\n", b"\r\n")


class RawClient:
    """SMTP over a plain socket, for what smtplib will not do (injection, smuggling)."""

    def __init__(self, port: int, context: ssl.SSLContext | None = None,
                 server_hostname: str = "localhost") -> None:
        sock = socket.create_connection(("127.0.0.1", port), timeout=CLIENT_TIMEOUT)
        if context is not None:
            sock = context.wrap_socket(sock, server_hostname=server_hostname)
        self.sock: socket.socket = sock
        self.buffer = b""

    def close(self) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def line(self) -> bytes:
        while b"\r\n" not in self.buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"connection closed; unfinished line {self.buffer!r}")
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\r\n")
        return line

    def reply(self) -> tuple[int, str]:
        """One (possibly multi-line) reply: code and text lines joined with LF."""
        lines = []
        while True:
            line = self.line()
            lines.append(line[4:].decode("utf-8", "replace"))
            if line[3:4] != b"-":
                return int(line[:3]), "\n".join(lines)

    def command(self, text: str) -> tuple[int, str]:
        self.send(text.encode() + b"\r\n")
        return self.reply()

    def starttls(self, context: ssl.SSLContext, server_hostname: str = "localhost") -> None:
        """Begin TLS on the socket; nothing may be left unread from the plaintext phase."""
        if self.buffer:
            raise AssertionError(f"plaintext bytes after the STARTTLS reply: {self.buffer!r}")
        self.sock = context.wrap_socket(self.sock, server_hostname=server_hostname)


if TYPE_CHECKING:
    _TestCaseBase = TestCase
else:
    _TestCaseBase = object


class StoreChecks(_TestCaseBase):
    """Assertions about replies and the Maildir, for TestCase classes with a daemon."""

    daemon: Daemon

    def queued_name(self, reply: tuple[int, bytes]) -> str:
        """The Maildir name from a C{250 2.0.0 Ok: queued as NAME} reply."""
        code, text = reply
        self.assertEqual(code, 250, text)
        match = _QUEUED.fullmatch(text)
        self.assertIsNotNone(match, text)
        assert match is not None
        return match.group(1).decode()

    def assert_stored(self, name: str, *, sender: str, recipients: list[str],
                      message: bytes, helo: str = HELO) -> str:
        """
        C{new/NAME} holds C{message} below the trace headers (Return-Path, one
        Delivered-To per recipient, Received), all with LF line ends; returns the Received
        header unfolded.
        """
        self.assertIn(name, self.daemon.new_files())
        data = self.daemon.read_new(name)
        self.assertNotIn(b"\r", data)
        match = _TRACE.match(data)
        self.assertIsNotNone(match, data[:400])
        assert match is not None
        self.assertEqual(match["sender"].decode(), sender)
        delivered = [line.removeprefix(b"Delivered-To: ").decode()
                     for line in match["delivered"].splitlines()]
        self.assertEqual(delivered, recipients)
        self.assertEqual(data[match.end():], message)
        received = match["received"].decode().replace("\n\t", " ").strip()
        self.assertTrue(received.startswith(f"Received: from {helo} (unknown [127.0.0.1]) "),
                        received)
        self.assertRegex(received, r" by localhost \(mailsink, listener smtp(:[a-z]+)?, "
                                   r"session [0-9a-f]{16}\) with ")
        return received

    def assert_plain_received(self, received: str) -> None:
        self.assertIn(" with ESMTP id ", received)
        self.assertNotIn("(using ", received)

    def assert_tls_received(self, received: str) -> None:
        self.assertIn(" with ESMTPS id ", received)
        self.assertRegex(received, _TLS_IN_RECEIVED)

    def send_with_smtplib(self, client: smtplib.SMTP, message: bytes, *,
                          sender: str = "sender@example.com",
                          recipients: tuple[str, ...] = ("rcpt@example.com",)) -> str:
        """MAIL, RCPT, DATA with checked replies; returns the queued name."""
        self.assertEqual(client.mail(sender), (250, b"2.1.0 Ok"))
        for recipient in recipients:
            self.assertEqual(client.rcpt(recipient), (250, b"2.1.5 Ok"))
        return self.queued_name(client.data(crlf(message)))


class SMTPClientTests(StoreChecks, SharedDaemon, TestCase):
    """smtplib, swaks and openssl against each TLS mode."""

    daemon_sections = LISTENERS

    def smtp(self, section: str = "smtp", host: str = "127.0.0.1") -> smtplib.SMTP:
        client = smtplib.SMTP(host, self.daemon.ports[section], local_hostname=HELO,
                              timeout=CLIENT_TIMEOUT)
        self.addCleanup(client.close)
        client.ehlo()
        return client

    def smtps(self, host: str = "127.0.0.1") -> smtplib.SMTP_SSL:
        client = smtplib.SMTP_SSL(host, self.daemon.ports["smtp:smtps"], local_hostname=HELO,
                                  timeout=CLIENT_TIMEOUT,
                                  context=trusting_context(self.daemon.cert_path))
        self.addCleanup(client.close)
        return client

    def test_greeting_and_extensions(self) -> None:
        client = smtplib.SMTP(local_hostname=HELO, timeout=CLIENT_TIMEOUT)
        self.addCleanup(client.close)
        code, greeting = client.connect("127.0.0.1", self.daemon.ports["smtp"])
        self.assertEqual((code, greeting), (220, b"localhost ESMTP mailsink"))
        code, text = client.ehlo()
        self.assertEqual(code, 250)
        self.assertEqual(text.splitlines()[0], b"localhost Hello 127.0.0.1")
        self.assertEqual(client.esmtp_features, {
            "pipelining": "", "size": str(MAX_SIZE), "8bitmime": "", "smtputf8": "",
            "enhancedstatuscodes": "", "starttls": ""})
        self.assertEqual(client.quit(), (221, b"2.0.0 Bye"))

    def test_plain(self) -> None:
        client = self.smtp()
        tag = marker()
        message = make_message(tag)
        before = self.daemon.new_files()
        name = self.send_with_smtplib(client, message)
        self.assertEqual(self.daemon.new_files() - before, {name})
        received = self.assert_stored(name, sender="sender@example.com",
                                      recipients=["rcpt@example.com"], message=message)
        self.assert_plain_received(received)
        self.assertIn("for <rcpt@example.com>;", received)

    def test_every_recipient_gets_delivered_to(self) -> None:
        client = self.smtp()
        message = make_message(marker(), to="to@example.com")
        recipients = ("to@example.com", "cc@example.com", "bcc@example.com")
        name = self.send_with_smtplib(client, message, sender="", recipients=recipients)
        self.assert_stored(name, sender="", recipients=list(recipients), message=message)

    def test_8bit_and_smtputf8(self) -> None:
        client = self.smtp()
        message = ("Subject: caf\u00e9\nContent-Type: text/plain; charset=utf-8\n"
                   "Content-Transfer-Encoding: 8bit\n\n\u00e7a marche, \u65e5\u672c\n"
                   ).encode()
        sender, recipient = "s\u00e9nder@exampl\u00e9.com", "r\u00e9cipient@example.com"
        self.assertEqual(client.mail(sender, ["SMTPUTF8", "BODY=8BITMIME"]),
                         (250, b"2.1.0 Ok"))
        self.assertEqual(client.rcpt(recipient), (250, b"2.1.5 Ok"))
        name = self.queued_name(client.data(crlf(message)))
        received = self.assert_stored(name, sender=sender, recipients=[recipient],
                                      message=message)
        self.assertIn(" with UTF8SMTP id ", received)

    def test_starttls(self) -> None:
        client = self.smtp(host="localhost")
        self.assertTrue(client.has_extn("starttls"))
        code, _ = client.starttls(context=trusting_context(self.daemon.cert_path))
        self.assertEqual(code, 220)
        client.ehlo()
        self.assertFalse(client.has_extn("starttls"))
        self.assertTrue(client.has_extn("size"))
        message = make_message(marker())
        name = self.send_with_smtplib(client, message)
        received = self.assert_stored(name, sender="sender@example.com",
                                      recipients=["rcpt@example.com"], message=message)
        self.assert_tls_received(received)

    def test_implicit_tls_checked_by_ip_address(self) -> None:
        client = self.smtps("127.0.0.1")
        code, text = client.ehlo()
        self.assertEqual(code, 250)
        self.assertFalse(client.has_extn("starttls"))
        for extension in ("pipelining", "size", "8bitmime", "smtputf8", "enhancedstatuscodes"):
            self.assertTrue(client.has_extn(extension), text)
        message = make_message(marker())
        name = self.send_with_smtplib(client, message)
        received = self.assert_stored(name, sender="sender@example.com",
                                      recipients=["rcpt@example.com"], message=message)
        self.assert_tls_received(received)

    def test_implicit_tls_checked_by_name(self) -> None:
        raw = socket.create_connection(("127.0.0.1", self.daemon.ports["smtp:smtps"]),
                                       timeout=CLIENT_TIMEOUT)
        context = trusting_context(self.daemon.cert_path)
        with context.wrap_socket(raw, server_hostname="localhost") as tls:
            self.assertIn(tls.version(), ("TLSv1.2", "TLSv1.3"))
            self.assertTrue(tls.recv(1024).startswith(b"220 localhost ESMTP"))

    def test_certificate_is_really_checked(self) -> None:
        raw = socket.create_connection(("127.0.0.1", self.daemon.ports["smtp:smtps"]),
                                       timeout=CLIENT_TIMEOUT)
        self.addCleanup(raw.close)
        context = trusting_context(self.daemon.cert_path)
        with self.assertRaises(ssl.SSLCertVerificationError):
            context.wrap_socket(raw, server_hostname="not-this-host.example")

    def test_starttls_required(self) -> None:
        client = self.smtp("smtp:submission")
        self.assertTrue(client.has_extn("starttls"))
        self.assertEqual(client.mail("sender@example.com"),
                         (530, b"5.7.0 Must issue a STARTTLS command first"))
        self.assertEqual(client.noop(), (250, b"2.0.0 Ok"))
        before = self.daemon.new_files()
        client.starttls(context=trusting_context(self.daemon.cert_path))
        client.ehlo()
        self.assertFalse(client.has_extn("starttls"))
        message = make_message(marker())
        name = self.send_with_smtplib(client, message)
        self.assertEqual(self.daemon.new_files() - before, {name})
        received = self.assert_stored(name, sender="sender@example.com",
                                      recipients=["rcpt@example.com"], message=message)
        self.assert_tls_received(received)

    # External clients.

    def swaks(self, section: str, *flags: str) -> str:
        if shutil.which("swaks") is None:
            raise unittest.SkipTest("swaks is not installed")
        tag = marker()
        before = self.daemon.new_files()
        result = subprocess.run(
            ["swaks", "--server", f"127.0.0.1:{self.daemon.ports[section]}",
             "--to", "x@example.com", "--from", "swaks@example.com", "--helo", HELO,
             "--header", f"Subject: swaks {tag}", "--timeout", "10", *flags],
            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=TOOL_TIMEOUT,
            check=False)
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        added = self.daemon.new_files() - before
        self.assertEqual(len(added), 1, result.stdout)
        name = added.pop()
        self.assertRegex(result.stdout, rf"\n<[-~]  250 2\.0\.0 Ok: queued as {re.escape(name)}\n")
        data = self.daemon.read_new(name)
        self.assertIn(f"Subject: swaks {tag}\n".encode(), data)
        self.assertNotIn(b"\r", data)
        match = _TRACE.match(data)
        assert match is not None, data[:400]
        self.assertEqual(match["delivered"], b"Delivered-To: x@example.com\n")
        return match["received"].decode().replace("\n\t", " ")

    def test_swaks_plain(self) -> None:
        self.assert_plain_received(self.swaks("smtp"))

    def test_swaks_starttls(self) -> None:
        self.assert_tls_received(self.swaks("smtp", "-tls"))

    def test_swaks_implicit_tls(self) -> None:
        self.assert_tls_received(self.swaks("smtp:smtps", "-tlsc"))

    def test_openssl_s_client_starttls(self) -> None:
        if shutil.which("openssl") is None:
            raise unittest.SkipTest("openssl is not installed")
        tag = marker()
        session = (f"EHLO {HELO}\nMAIL FROM:<openssl@example.com>\nRCPT TO:<x@example.com>\n"
                   f"DATA\nSubject: openssl {tag}\n\nsent by s_client\n.\nQUIT\n")
        before = self.daemon.new_files()
        result = subprocess.run(
            ["openssl", "s_client", "-starttls", "smtp",
             "-connect", f"127.0.0.1:{self.daemon.ports['smtp']}",
             "-servername", "localhost", "-verify_hostname", "localhost",
             "-CAfile", self.daemon.cert_path, "-verify_return_error", "-crlf", "-quiet"],
            input=session, capture_output=True, text=True, timeout=TOOL_TIMEOUT, check=False)
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        match = re.search(r"^250 2\.0\.0 Ok: queued as (\S+)\r?$", result.stdout, re.M)
        self.assertIsNotNone(match, result.stdout)
        assert match is not None
        self.assertRegex(result.stdout, r"221 2\.0\.0 Bye")
        name = match.group(1)
        self.assertEqual(self.daemon.new_files() - before, {name})
        received = self.assert_stored(
            name, sender="openssl@example.com", recipients=["x@example.com"],
            message=f"Subject: openssl {tag}\n\nsent by s_client\n".encode())
        self.assert_tls_received(received)


class BadInputTests(StoreChecks, SharedDaemon, TestCase):
    """Limits and attacks: the reply, nothing stored, and the session (or daemon) goes on."""

    daemon_sections = {**LISTENERS, "smtp:strict": {"tls": "starttls", "long_lines": "refuse"}}

    def smtp(self, section: str = "smtp") -> smtplib.SMTP:
        client = smtplib.SMTP("127.0.0.1", self.daemon.ports[section], local_hostname=HELO,
                              timeout=CLIENT_TIMEOUT)
        self.addCleanup(client.close)
        client.ehlo()
        return client

    def raw(self) -> RawClient:
        client = RawClient(self.daemon.ports["smtp"])
        self.addCleanup(client.close)
        self.assertEqual(client.reply(), (220, "localhost ESMTP mailsink"))
        code, _ = client.command(f"EHLO {HELO}")
        self.assertEqual(code, 250)
        return client

    def test_message_too_big(self) -> None:
        client = self.smtp()
        before = self.daemon.new_files()
        line = "x" * 76 + "\n"
        big = make_message(marker(), body=line * (200 * 1024 // len(line)))
        self.assertGreater(len(big), 2 * MAX_SIZE - 1000)
        self.assertEqual(client.mail("sender@example.com"), (250, b"2.1.0 Ok"))
        self.assertEqual(client.rcpt("rcpt@example.com"), (250, b"2.1.5 Ok"))
        code, text = client.data(crlf(big))
        self.assertEqual(code, 552, text)
        self.assertTrue(text.startswith(b"5.3.4 "), text)
        self.assertEqual(self.daemon.new_files(), before)
        self.daemon.wait_tmp_empty()
        small = make_message(marker())
        name = self.send_with_smtplib(client, small)
        self.assertEqual(self.daemon.new_files() - before, {name})
        self.assert_stored(name, sender="sender@example.com", recipients=["rcpt@example.com"],
                           message=small)

    def test_size_parameter_too_big(self) -> None:
        client = self.smtp()
        code, text = client.mail("sender@example.com", [f"SIZE={2 * MAX_SIZE}"])
        self.assertEqual(code, 552)
        self.assertTrue(text.startswith(b"5.3.4 "), text)
        self.assertEqual(client.mail("sender@example.com", [f"SIZE={MAX_SIZE}"]),
                         (250, b"2.1.0 Ok"))

    def test_too_many_recipients(self) -> None:
        client = self.smtp()
        before = self.daemon.new_files()
        self.assertEqual(client.mail("sender@example.com"), (250, b"2.1.0 Ok"))
        for n in range(3):
            self.assertEqual(client.rcpt(f"r{n}@example.com"), (250, b"2.1.5 Ok"))
        code, text = client.rcpt("r3@example.com")
        self.assertEqual(code, 452)
        self.assertTrue(text.startswith(b"4.5.3 "), text)
        self.assertEqual(self.daemon.new_files(), before)
        message = make_message(marker())
        name = self.queued_name(client.data(crlf(message)))
        self.assert_stored(name, sender="sender@example.com",
                           recipients=["r0@example.com", "r1@example.com", "r2@example.com"],
                           message=message)

    def test_line_too_long_with_long_lines_refuse(self) -> None:
        client = self.smtp("smtp:strict")
        before = self.daemon.new_files()
        self.assertEqual(client.mail("sender@example.com"), (250, b"2.1.0 Ok"))
        self.assertEqual(client.rcpt("rcpt@example.com"), (250, b"2.1.5 Ok"))
        code, text = client.data(crlf(make_message(marker(), body="y" * 2000 + "\n")))
        self.assertEqual(code, 500, text)
        self.assertTrue(text.startswith(b"5.5.2 "), text)
        self.assertEqual(self.daemon.new_files(), before)
        self.daemon.wait_tmp_empty()
        small = make_message(marker())
        name = self.send_with_smtplib(client, small)
        self.assertEqual(self.daemon.new_files() - before, {name})

    def test_starttls_command_injection(self) -> None:
        client = self.raw()
        offset = len(self.daemon.log_text())
        client.send(b"STARTTLS\r\nMAIL FROM:<evil@example.com>\r\n")
        self.assertEqual(client.reply(), (220, "2.0.0 Ready to start TLS"))
        client.starttls(trusting_context(self.daemon.cert_path))
        code, text = client.command(f"EHLO {HELO}")
        self.assertEqual(code, 250, text)
        self.assertTrue(text.startswith("localhost Hello 127.0.0.1\n"), text)
        self.assertNotIn("STARTTLS", text)
        # Had the injected MAIL been acted on, this would be "503 nested MAIL".
        self.assertEqual(client.command("MAIL FROM:<good@example.com>"), (250, "2.1.0 Ok"))
        self.assertEqual(client.command("RCPT TO:<rcpt@example.com>"), (250, "2.1.5 Ok"))
        self.assertEqual(client.command("DATA")[0], 354)
        message = make_message(marker())
        client.send(message.replace(b"\n", b"\r\n").replace(b"\r\n.", b"\r\n..") + b".\r\n")
        code, text = client.reply()
        name = self.queued_name((code, text.encode()))
        self.assertEqual(client.command("QUIT"), (221, "2.0.0 Bye"))
        received = self.assert_stored(name, sender="good@example.com",
                                      recipients=["rcpt@example.com"], message=message)
        self.assert_tls_received(received)
        self.daemon.wait_for_log(lambda text: "sent commands behind STARTTLS" in text,
                                 since=offset)

    def smuggle(self, separator: bytes) -> None:
        """A fake end of data (C{separator}) then a smuggled transaction: one message."""
        client = self.raw()
        before = self.daemon.new_files()
        self.assertEqual(client.command("MAIL FROM:<outer@example.com>"), (250, "2.1.0 Ok"))
        self.assertEqual(client.command("RCPT TO:<rcpt@example.com>"), (250, "2.1.5 Ok"))
        self.assertEqual(client.command("DATA")[0], 354)
        client.send(b"Subject: outer\r\n\r\nouter text" + separator
                    + b"MAIL FROM:<smuggled@example.com>\r\nRCPT TO:<victim@example.com>\r\n"
                    + b"DATA\r\nSubject: smuggled\r\n\r\nsmuggled text\r\n.\r\n")
        code, text = client.reply()
        name = self.queued_name((code, text.encode()))
        # A server fooled by the separator would answer the smuggled MAIL here.
        self.assertEqual(client.command("QUIT"), (221, "2.0.0 Bye"))
        self.assertEqual(self.daemon.new_files() - before, {name})
        data = self.daemon.read_new(name)
        self.assertTrue(data.startswith(b"Return-Path: <outer@example.com>\n"), data)
        for text_part in (b"outer text", b"MAIL FROM:<smuggled@example.com>",
                          b"Subject: smuggled", b"smuggled text\n"):
            self.assertIn(text_part, data)
        self.assertNotIn(b"victim@example.com>\n", data.split(b"\n\n")[0])

    def test_smuggling_lf_dot_crlf(self) -> None:
        self.smuggle(b"\n.\r\n")

    def test_smuggling_crlf_dot_lf(self) -> None:
        self.smuggle(b"\r\n.\n")

    def test_smuggling_cr_dot_crlf(self) -> None:
        self.smuggle(b"\r.\r\n")


class OversizeAbortTests(TestCase):
    """Big messages over a limit above the 256 KiB write threshold (tmp/ file open)."""

    def test_oversize_messages_are_dropped_cleanly(self) -> None:
        daemon = Daemon.for_test(self, {"mailsink": {"max_message_size": "1M"},
                                        "smtp": {"tls": "none", "auth": "none"}})
        big = crlf(make_message("big", body=("x" * 70 + "\n") * 60_000))

        def send_big() -> list[int]:
            with smtplib.SMTP("127.0.0.1", daemon.ports["smtp"], local_hostname=HELO,
                              timeout=CLIENT_TIMEOUT) as client:
                codes = []
                for _ in range(5):
                    client.mail("sender@example.com")
                    client.rcpt("rcpt@example.com")
                    codes.append(client.data(big)[0])
                return codes

        with ThreadPoolExecutor(4) as pool:
            results = list(pool.map(lambda _: send_big(), range(4)))
        self.assertEqual(results, [[552] * 5] * 4)
        self.assertEqual(daemon.new_files(), set())
        daemon.wait_tmp_empty()
        problems = [line.strip() for line in daemon.log_text().splitlines()
                    if re.search(r"#(critical|error)\]|Error:|Traceback", line)]
        self.assertEqual(problems, [])


class DiagnosticsTests(SharedDaemon, TestCase):
    """The 465-vs-587 confusion: one warning, naming the listener and the right one."""

    daemon_sections = {key: value for key, value in LISTENERS.items() if key != "mailsink"}

    def warnings(self, text: str, phrase: str) -> list[str]:
        return [line for line in text.splitlines() if "#warn]" in line and phrase in line]

    def wait_for_warning(self, phrase: str, offset: int, timeout: float) -> str:
        text = self.daemon.wait_for_log(lambda text: bool(self.warnings(text, phrase)),
                                        since=offset, timeout=timeout)
        lines = self.warnings(text, phrase)
        self.assertEqual(len(lines), 1, lines)
        return lines[0]

    def assert_hung_up(self, sock: socket.socket) -> None:
        sock.settimeout(CLIENT_TIMEOUT)
        with contextlib.suppress(ConnectionResetError):
            self.assertEqual(sock.recv(1024), b"")

    def test_tls_client_on_starttls_port(self) -> None:
        implicit = f"[smtp:smtps] port {self.daemon.ports['smtp:smtps']}"
        for section in ("smtp", "smtp:submission"):
            offset = len(self.daemon.log_text())
            raw = socket.create_connection(("127.0.0.1", self.daemon.ports[section]),
                                           timeout=CLIENT_TIMEOUT)
            with unverified_context().wrap_socket(
                    raw, server_hostname="localhost", do_handshake_on_connect=False) as tls:
                with self.assertRaises((ssl.SSLError, OSError)):
                    tls.do_handshake()
                # Stay connected until the daemon has read the ClientHello and warned.
                line = self.wait_for_warning("began a TLS handshake", offset, timeout=10)
            self.assertIn(f"[{section}] 127.0.0.1: this client began a TLS handshake", line)
            self.assertIn("the client is set to implicit TLS", line)
            self.assertIn(f"point it at {implicit}", line)

    def test_silent_client_on_implicit_port(self) -> None:
        offset = len(self.daemon.log_text())
        started = time.monotonic()
        sock = socket.create_connection(("127.0.0.1", self.daemon.ports["smtp:smtps"]),
                                        timeout=CLIENT_TIMEOUT)
        self.addCleanup(sock.close)
        line = self.wait_for_warning("expects TLS from the first byte", offset, timeout=15)
        elapsed = time.monotonic() - started
        self.assertGreater(elapsed, 8, "warned before the client had 10 s to start TLS")
        self.assertIn("[smtp:smtps] 127.0.0.1: this client sent no TLS handshake within 10 s",
                      line)
        self.assertIn("the client is set to plain SMTP or STARTTLS", line)
        self.assertIn(f"[smtp] port {self.daemon.ports['smtp']}", line)
        self.assert_hung_up(sock)

    def test_cleartext_client_on_implicit_port(self) -> None:
        offset = len(self.daemon.log_text())
        started = time.monotonic()
        sock = socket.create_connection(("127.0.0.1", self.daemon.ports["smtp:smtps"]),
                                        timeout=CLIENT_TIMEOUT)
        self.addCleanup(sock.close)
        sock.sendall(b"EHLO x\r\n")
        line = self.wait_for_warning("expects TLS from the first byte", offset, timeout=5)
        self.assertLess(time.monotonic() - started, 5)
        self.assertIn("[smtp:smtps] 127.0.0.1: this client sent SMTP commands in the clear",
                      line)
        self.assertIn("the client is set to plain SMTP or STARTTLS", line)
        self.assert_hung_up(sock)


def durable_message(number: int, lines: int) -> bytes:
    """Message C{number}, ending with a marker line that names it."""
    body = "".join(f"{number:06d} line {n:05d} {'z' * 60}\n" for n in range(lines))
    return (f"From: durable@example.com\nTo: sink{number}@example.com\n"
            f"Subject: durability {number}\nMessage-Id: <durability-{number}@e2e.test>\n\n"
            f"{body}.leading dot\nEND-OF-MESSAGE-{number}\n").encode()


_END_MARKER = re.compile(rb"END-OF-MESSAGE-(\d+)\n\Z")


class DurabilityTests(TestCase):
    """kill -9 loses nothing acknowledged and leaves nothing partial in new/."""

    FIRST_BATCH = 200
    FIRST_BATCH_THREADS = 8
    SECOND_BATCH_THREADS = 4
    KILL_AFTER = 20

    def setUp(self) -> None:
        self.daemon = Daemon.for_test(self, {"smtp": {"tls": "none", "auth": "none"}})
        self.acked: dict[str, bytes] = {}
        self.lock = threading.Lock()
        self.second_acks = 0
        self.enough = threading.Event()

    def send_batch(self, numbers: range, lines: int) -> BaseException | None:
        """
        Send each message over one connection; record each one acknowledged with 250.
        Returns the error that ended the connection early, if one did.
        """
        client = smtplib.SMTP(timeout=CLIENT_TIMEOUT)
        try:
            client.connect("127.0.0.1", self.daemon.ports["smtp"])
            client.ehlo(HELO)
            for number in numbers:
                message = durable_message(number, lines + number % 7 * lines)
                client.mail("durable@example.com")
                client.rcpt(f"sink{number}@example.com")
                code, text = client.data(crlf(message))
                if code == 250:
                    match = _QUEUED.fullmatch(text)
                    assert match is not None, text
                    with self.lock:
                        self.acked[match.group(1).decode()] = message
                        if number >= 100_000:
                            self.second_acks += 1
                            if self.second_acks >= self.KILL_AFTER:
                                self.enough.set()
            return None
        except (smtplib.SMTPException, OSError) as error:
            return error
        finally:
            client.close()

    def test_kill_9_keeps_every_acknowledged_message(self) -> None:
        threads = self.FIRST_BATCH_THREADS
        with ThreadPoolExecutor(threads) as pool:
            errors = list(pool.map(
                lambda k: self.send_batch(range(k, self.FIRST_BATCH, threads), lines=20),
                range(threads)))
        self.assertEqual(errors, [None] * threads)
        self.assertEqual(len(self.acked), self.FIRST_BATCH)

        # The second batch sends bigger messages until the daemon dies under it.
        with ThreadPoolExecutor(self.SECOND_BATCH_THREADS) as pool:
            futures = [pool.submit(self.send_batch,
                                   range(100_000 + k * 10_000, 100_000 + (k + 1) * 10_000),
                                   400)
                       for k in range(self.SECOND_BATCH_THREADS)]
            try:
                self.assertTrue(self.enough.wait(timeout=30), "the second batch stalled")
            finally:
                self.daemon.kill()
            errors = [future.result(timeout=CLIENT_TIMEOUT * 2) for future in futures]
        self.assertTrue(all(isinstance(error, (smtplib.SMTPException, OSError))
                            for error in errors), errors)
        with self.lock:
            acked = dict(self.acked)
        self.assertGreaterEqual(len(acked), self.FIRST_BATCH + self.KILL_AFTER)

        # Everything acknowledged is in new/, whole.
        stored = self.daemon.new_files()
        for name, message in acked.items():
            self.assertIn(name, stored)
            data = self.daemon.read_new(name)
            self.assertTrue(data.endswith(message), name)
            trace = data[: -len(message)]
            self.assertTrue(trace.startswith(b"Return-Path: <durable@example.com>\n"
                                             b"Delivered-To: sink"), trace)
            self.assertIn(b"\nReceived: from ", trace)
        # Nothing partial: a message committed but not acknowledged (the kill came between
        # the rename and the reply) is whole too; at most one per connection.
        unacknowledged = stored - set(acked)
        self.assertLessEqual(len(unacknowledged), self.SECOND_BATCH_THREADS)
        for name in stored:
            data = self.daemon.read_new(name)
            match = _END_MARKER.search(data)
            self.assertIsNotNone(match, f"{name} is cut short: ...{data[-80:]!r}")
            assert match is not None
            number = int(match.group(1))
            lines = (20 if number < 100_000 else 400) * (1 + number % 7)
            self.assertTrue(data.endswith(durable_message(number, lines)), name)
            parsed = email.message_from_bytes(data)
            self.assertEqual(parsed["Subject"], f"durability {number}")

        # Restart on the same Maildir: tmp/ files of dead processes of this host go, a
        # fresh one of another host stays, and any older than 36 hours goes.
        tmp = os.path.join(self.daemon.maildir, "tmp")
        now = int(time.time())
        dead = self.daemon.pid
        planted_dead = f"{now}.M1P{dead}Q1R00.{socket.gethostname()}"
        other_host = f"{now}.M1P{dead}Q1R00.another-host.example"
        other_host_old = f"{now - 40 * 3600}.M2P{dead}Q2R00.another-host.example"
        for name in (planted_dead, other_host, other_host_old):
            with open(os.path.join(tmp, name), "wb") as stream:
                stream.write(b"Subject: partial\n\npart")
        old = time.time() - 40 * 3600
        os.utime(os.path.join(tmp, other_host_old), (old, old))
        self.daemon.start()
        self.assertEqual(self.daemon.tmp_files(), {other_host})
        self.assertEqual(self.daemon.new_files(), stored)

        # And it takes mail again.
        client = smtplib.SMTP("127.0.0.1", self.daemon.ports["smtp"], local_hostname=HELO,
                              timeout=CLIENT_TIMEOUT)
        self.addCleanup(client.close)
        client.mail("durable@example.com")
        client.rcpt("again@example.com")
        code, _ = client.data(crlf(b"Subject: after the restart\n\nstill here\n"))
        self.assertEqual(code, 250)
        self.assertIn(self.daemon.stop(), (0, -signal.SIGTERM))
        self.assertIn("Server Shut Down.", self.daemon.log_text())
