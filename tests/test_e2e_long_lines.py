"""
End-to-end: lines over RFC 5321's 998 octets are captured, not refused (issue 10 §1).

The real daemon takes a message with a 5 MB header line and one whose 20 MB body has no
line break at all, stores them byte for byte, and serves them through the API, the web
view, POP3 and IMAP; peak memory stays flat; C{long_lines = refuse} keeps RFC 5321's 500.
"""

from __future__ import annotations

import imaplib
import json
import poplib
import smtplib
import uuid

from daemon import Daemon, SharedDaemon, http_json
from twisted.trial.unittest import TestCase

CLIENT_TIMEOUT = 60.0
USERS = "alice:alice-secret"
SECTIONS: dict[str, dict[str, str]] = {
    "mailsink": {"max_message_size": "30M"},
    "auth": {"allow_insecure": "true"},
    "smtp": {"tls": "none", "auth": "none"},
    "smtp:strict": {"tls": "none", "auth": "none", "long_lines": "refuse"},
    "pop3": {"tls": "none"},
    "imap": {"tls": "none"},
    "web": {},
}
FIVE_MB = 5 * 1024 * 1024
TWENTY_MB = 20 * 1024 * 1024
PEAK_RSS_RISE_LIMIT = 40 * 1024 * 1024


def peak_rss(pid: int) -> int:
    """The process's peak resident set size (VmHWM) in bytes."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM in /proc status")


class Client(TestCase):
    """Sending to and reading from C{self.daemon}."""

    daemon: Daemon

    def send(self, message: bytes, section: str = "smtp") -> tuple[int, bytes]:
        with smtplib.SMTP("127.0.0.1", self.daemon.ports[section],
                          timeout=CLIENT_TIMEOUT) as client:
            client.ehlo("long.lines.test")
            self.assertEqual(client.mail("sender@example.com")[0], 250)
            self.assertEqual(client.rcpt("rcpt@example.com")[0], 250)
            return client.data(message)

    def api(self, path: str) -> bytes:
        status, body = http_json("GET", f"http://127.0.0.1:{self.daemon.ports['web']}{path}",
                                 timeout=CLIENT_TIMEOUT)
        self.assertEqual(status, 200, (path, body[:300]))
        return body

    def message_id(self, subject: str) -> str:
        listing = json.loads(self.api(f"/api/v1/search?query=subject:{subject}"))
        self.assertEqual(len(listing["messages"]), 1, listing)
        return str(listing["messages"][0]["ID"])


class LongLineTests(SharedDaemon, Client):
    daemon_sections = SECTIONS
    daemon_env = {"MAILSINK_AUTH": USERS}

    def test_five_megabyte_header_line(self) -> None:
        tag = uuid.uuid4().hex
        long_value = (b"v" * 1000 + b" ") * (FIVE_MB // 1001)
        body = b"x" * 3000 + b"\r\n.starts with a dot\r\nend\r\n"
        message = (b"From: sender@example.com\r\nTo: rcpt@example.com\r\n"
                   b"Subject: " + tag.encode() + b"\r\nX-Long: " + long_value + b"\r\n\r\n" + body)
        code, text = self.send(message)
        self.assertEqual(code, 250, text)
        name = text.split()[-1].decode()
        stored = self.daemon.read_new(name)
        self.assertTrue(stored.endswith(message.replace(b"\r\n", b"\n")), "not byte for byte")

        id = self.message_id(tag)
        self.assertEqual(json.loads(self.api(f"/api/v1/message/{id}"))["Subject"], tag)
        self.assertIn(long_value, self.api(f"/api/v1/message/{id}/raw"))
        headers = self.api(f"/api/v1/message/{id}/headers").decode()
        self.assertIn(long_value[:5000].decode(), headers)
        self.assertIn(b"x" * 3000, self.api(f"/view/{id}.txt"))
        self.api(f"/view/{id}.html")

        # poplib refuses lines over 2048 octets of its own accord; raise its limit as a
        # script reading such mail must (mutt, Thunderbird and Dovecot have no such limit).
        self.patch(poplib, "_MAXLINE", 2 * FIVE_MB)
        pop = poplib.POP3("127.0.0.1", self.daemon.ports["pop3"], timeout=CLIENT_TIMEOUT)
        self.addCleanup(pop.close)
        pop.user("alice")
        pop.pass_("alice-secret")
        retrieved = [b"\n".join(pop.retr(n + 1)[1]) for n in range(len(pop.list()[1]))]
        self.assertTrue(any(long_value in lines for lines in retrieved))
        pop.quit()

        imap = imaplib.IMAP4("127.0.0.1", self.daemon.ports["imap"], timeout=CLIENT_TIMEOUT)
        self.addCleanup(imap.sock.close)
        imap.login("alice", "alice-secret")
        imap.select("INBOX", readonly=True)
        status, found = imap.search(None, "SUBJECT", tag)
        self.assertEqual(status, "OK")
        status, fetched = imap.fetch(found[0].decode(), "(BODY.PEEK[] BODYSTRUCTURE ENVELOPE)")
        self.assertEqual(status, "OK", fetched)
        self.assertIn(long_value, b"".join(part[1] for part in fetched if isinstance(part, tuple)))
        imap.logout()

    def test_refuse_keeps_rfc_5321(self) -> None:
        before = self.daemon.new_files()
        code, text = self.send(b"Subject: strict\r\n\r\n" + b"y" * 999 + b"\r\n", "smtp:strict")
        self.assertEqual(code, 500, text)
        self.assertTrue(text.startswith(b"5.5.2 "), text)
        self.assertEqual(self.daemon.new_files(), before)
        longest = b"Subject: ok\r\n\r\n" + b"y" * 998 + b"\r\n"
        self.assertEqual(self.send(longest, "smtp:strict")[0], 250)


class LongLineMemoryTests(Client):
    """A daemon of its own, so no other test's message has raised its peak already."""

    def test_twenty_megabyte_line_keeps_memory_flat(self) -> None:
        self.daemon = Daemon.for_test(self, SECTIONS, env={"MAILSINK_AUTH": USERS})
        warm_up = uuid.uuid4().hex
        self.assertEqual(self.send(f"Subject: {warm_up}\r\n\r\nsmall\r\n".encode())[0], 250)
        self.message_id(warm_up)  # indexed too
        assert self.daemon.pid is not None
        before = peak_rss(self.daemon.pid)
        tag = uuid.uuid4().hex
        message = f"Subject: {tag}\r\n\r\n".encode() + b"q" * TWENTY_MB
        code, text = self.send(message)
        self.assertEqual(code, 250, text)
        name = text.split()[-1].decode()
        body = self.daemon.read_new(name).split(b"\n\n", 1)[1]
        self.assertTrue(body == b"q" * TWENTY_MB + b"\n", "not byte for byte")  # smtplib's CRLF
        del body
        self.message_id(tag)
        rise = peak_rss(self.daemon.pid) - before
        print(f"peak RSS rise for a 20 MB line-less message: {rise / 2**20:.1f} MiB")
        self.assertLess(rise, PEAK_RSS_RISE_LIMIT)
