"""
End to end: C{GET /api/v1/message/{ID}/lint} on the real daemon (C{twistd -n mailsink}),
for messages sent with smtplib: a clean one trips no rule, a broken one trips the rules it
should with the envelope read from mailsink's trace headers (MAIL FROM, SMTPUTF8), and
C{latest} (with C{?query=}) names the newest message as on the other message routes.
"""

from __future__ import annotations

import json
import smtplib
import unittest
import urllib.parse
from typing import Any, ClassVar

from daemon import SharedDaemon, http_json
from lint_samples import clean_message

SMTP_TIMEOUT = 10.0

BROKEN = b"""\
From: webmaster@shop.example.com
To: customer@example.net
Bcc: audit@shop.example.com
Subject: Password reset
Content-Type: text/html; charset=utf-8

<p>Reset it <a href="https://shop.example.com/r/abc">here</a>.</p>
"""

UTF8 = """\
From: Jörg <jörg@shop.example.com>
To: kundin@example.net
Subject: Grüße
Date: Tue, 02 Dec 2025 14:30:00 +0100
Message-ID: <utf8.1@shop.example.com>
Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: 8bit

Grüße aus Köln.
""".encode()


class LintRouteTests(SharedDaemon, unittest.TestCase):
    daemon_sections: ClassVar[dict[str, dict[str, str]]] = {"smtp": {"tls": "none"},
                                                            "web": {}}

    def get(self, path: str) -> tuple[int, Any]:
        url = f"http://127.0.0.1:{self.daemon.ports['web']}/api/v1/{path}"
        status, answer = http_json("GET", url)
        return status, json.loads(answer) if status == 200 else answer

    def send(self, mail_from: str, data: bytes, options: tuple[str, ...] = ()) -> None:
        """Send C{data} (LF line ends) with CRLF, as a mail library does: smtplib sends
        bytes as given, and would dot-stuff lines after a bare LF that the server keeps."""
        with smtplib.SMTP("127.0.0.1", self.daemon.ports["smtp"], timeout=SMTP_TIMEOUT) as smtp:
            smtp.sendmail(mail_from, ["customer@example.net"], data.replace(b"\n", b"\r\n"),
                          mail_options=options)

    def lint_of(self, subject: str) -> dict[str, Any]:
        query = urllib.parse.quote(f'subject:"{subject}"')
        status, found = self.get(f"search?query={query}")
        self.assertEqual((status, found["count"]), (200, 1))
        status, report = self.get(f"message/{found['messages'][0]['ID']}/lint")
        self.assertEqual(status, 200)
        return report

    def test_clean_message_has_no_findings(self) -> None:
        message = clean_message()
        self.send("bounces@shop.example.com", message.as_bytes())
        self.assertEqual(self.lint_of(str(message["Subject"])),
                         {"Findings": [], "Errors": 0, "Warnings": 0})

    def test_broken_message(self) -> None:
        self.send("www-data@web1.hosting.example", BROKEN)
        report = self.lint_of("Password reset")
        found = [(f["Code"], f["Severity"], f["Field"]) for f in report["Findings"]]
        self.assertEqual(found, [
            ("missing-date", "error", "Date"), ("missing-message-id", "error", "Message-ID"),
            ("bcc-header", "error", "Bcc"), ("html-without-text", "warning", "body"),
            ("from-domain-not-aligned", "warning", "From")])
        self.assertEqual((report["Errors"], report["Warnings"]), (3, 2))
        aligned = report["Findings"][-1]
        self.assertIn("web1.hosting.example", aligned["Message"])
        self.assertEqual(aligned["Reference"], "RFC 7489 3.1")

    def test_long_line_is_stored_and_named(self) -> None:
        """[smtp] long_lines = accept (the default) stores it; lint names the part."""
        data = (b"From: app@shop.example.com\nDate: Tue, 02 Dec 2025 14:30:00 +0100\n"
                b"Message-ID: <long.1@shop.example.com>\nSubject: long line\n"
                b"Content-Type: multipart/alternative; boundary=A\n\n--A\n\nHello.\n--A\n"
                b"Content-Type: text/html; charset=utf-8\n\n<p>" + b"w" * 5000 +
                b"</p>\n--A--\n")
        self.send("bounces@shop.example.com", data)
        found = self.lint_of("long line")["Findings"]
        self.assertEqual([(f["Code"], f["Field"]) for f in found], [("line-too-long", "2")])
        self.assertIn("the longest 5,007", found[0]["Message"])

    def test_8bit_headers_pass_only_with_smtputf8(self) -> None:
        self.send("jörg@shop.example.com", UTF8, ("SMTPUTF8",))
        self.assertEqual(self.lint_of("Grüße")["Findings"], [])
        plain = UTF8.replace("Grüße".encode(), b"Gruesse plain")
        self.send("joerg@shop.example.com", plain)
        codes = [f["Code"] for f in self.lint_of("Gruesse plain")["Findings"]]
        self.assertEqual(codes, ["unencoded-8bit-header"])

    def test_latest_and_unknown(self) -> None:
        message = clean_message()
        del message["Subject"]
        message["Subject"] = "latest lint"
        self.send("bounces@shop.example.com", message.as_bytes())
        self.send("www-data@web1.hosting.example", BROKEN.replace(b"Password reset",
                                                                  b"newest broken"))
        status, latest = self.get("message/latest/lint")
        self.assertEqual(status, 200)
        self.assertIn("bcc-header", [f["Code"] for f in latest["Findings"]])
        status, matching = self.get("message/latest/lint?query=" +
                                    urllib.parse.quote('subject:"latest lint"'))
        self.assertEqual((status, matching["Errors"], matching["Warnings"]), (200, 0, 0))
        status, _ = self.get("message/no-such-message/lint")
        self.assertEqual(status, 404)
