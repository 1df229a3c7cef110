"""
End to end: C{GET /api/v1/message/{ID}/link-check} on the real daemon (C{twistd -n
mailsink}) for a message sent with smtplib whose links point at a local C{http.server}
(200, 404, 301, a path that refuses HEAD, one whose GET body is endless), at a host that
does not resolve and a port that refuses, and through C{file:}, C{data:} and
C{javascript:} links that must never be requested.
"""

from __future__ import annotations

import json
import smtplib
import threading
import time
import unittest
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

from daemon import SharedDaemon, free_port, http_json

SMTP_TIMEOUT = 10.0
BIG_BODY = 64 * 1024 * 1024
"""What the endless path would send if the client read it all."""
CHUNK = 64 * 1024


class LinkTargets(BaseHTTPRequestHandler):
    """The links' server: every request is logged; see L{answer} for the paths."""

    log: ClassVar[list[tuple[str, str]]] = []
    big_sent: ClassVar[list[int]] = []
    lock = threading.Lock()

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def do_HEAD(self) -> None:
        self.answer()

    def do_GET(self) -> None:
        self.answer()

    def answer(self) -> None:
        with self.lock:
            self.log.append((self.command, self.path))
        head = self.command == "HEAD"
        if self.path == "/flood":
            self.flood()
        elif self.path == "/moved":
            self.reply(301, b"", location="/ok")
        elif self.path in ("/nohead", "/big") and head:
            self.reply(405, b"")
        elif self.path == "/big":
            self.endless()
        elif self.path in ("/ok", "/nohead", "/text-only"):
            self.reply(200, b"" if head else b"fine\n")
        else:
            self.reply(404, b"" if head else b"not here\n")

    def reply(self, code: int, body: bytes, location: str = "") -> None:
        self.send_response(code)
        if location:
            self.send_header("Location", location)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def flood(self) -> None:
        """Header lines without end (each short enough for Twisted's line limit)."""
        self.send_response(200)
        self.flush_headers()  # the status line; then header lines that never end
        try:
            for _ in range(1_000_000):
                self.wfile.write(b"X-Flood: " + b"f" * 1000 + b"\r\n")
        except OSError:
            pass

    def endless(self) -> None:
        """A body far too big to download: how much of it went out before the client left."""
        self.send_response(200)
        self.send_header("Content-Length", str(BIG_BODY))
        self.end_headers()
        sent = 0
        try:
            while sent < BIG_BODY:
                self.wfile.write(b"x" * CHUNK)
                sent += CHUNK
        except OSError:
            pass
        with self.lock:
            self.big_sent.append(sent)


class LinkCheckTests(SharedDaemon, unittest.TestCase):
    daemon_sections: ClassVar[dict[str, dict[str, str]]] = {"smtp": {"tls": "none"},
                                                            "web": {}}
    server: ClassVar[ThreadingHTTPServer]
    base: ClassVar[str]

    @classmethod
    def setUpClass(cls) -> None:
        cls.server = ThreadingHTTPServer(("127.0.0.1", 0), LinkTargets)
        cls.server.daemon_threads = True
        threading.Thread(target=cls.server.serve_forever, daemon=True).start()
        cls.addClassCleanup(cls.server.server_close)
        cls.addClassCleanup(cls.server.shutdown)
        cls.base = f"http://127.0.0.1:{cls.server.server_address[1]}"
        super().setUpClass()

    def setUp(self) -> None:
        super().setUp()
        LinkTargets.log.clear()
        LinkTargets.big_sent.clear()

    def send(self, subject: str) -> str:
        """A message whose links cover every case; its ID."""
        base, refused = self.base, f"http://127.0.0.1:{free_port()}/"
        message = EmailMessage()
        message["From"] = "app@example.com"
        message["To"] = "dev@example.com"
        message["Subject"] = subject
        message.set_content(f"Open {base}/text-only or {base}/ok.\n"
                            f"Not these: file:///etc/passwd data:text/plain,{base}/text-data\n")
        message.add_alternative(f"""<html><head>
<link rel="stylesheet" href="{base}/missing.css"></head><body>
<a href="{base}/ok">ok</a> <a href="{base}/moved">moved</a> <a href="{base}/nohead">nohead</a>
<a href="{base}/big">big</a> <a href="{base}/ok">ok again</a>
<a href="file://127.0.0.1{base[16:]}/file-link">file</a>
<a href="data:text/html,<a href='{base}/from-data'>x</a>">data</a>
<a href="javascript:fetch('{base}/from-js')">js</a>
<a href="http://does-not-exist.invalid/">nowhere</a> <a href="{refused}">refused</a>
<img src="{base}/missing.png" alt="logo"><img src="data:image/png;base64,iVBORw0KGgo=" alt="">
</body></html>""", subtype="html")
        with smtplib.SMTP("127.0.0.1", self.daemon.ports["smtp"], timeout=SMTP_TIMEOUT) as smtp:
            smtp.send_message(message)
        status, found = self.get(f"search?query=subject:{subject}")
        self.assertEqual((status, found["count"]), (200, 1))
        self.refused = refused
        return str(found["messages"][0]["ID"])

    def get(self, path: str) -> tuple[int, Any]:
        url = f"http://127.0.0.1:{self.daemon.ports['web']}/api/v1/{path}"
        status, answer = http_json("GET", url, timeout=60)
        return status, json.loads(answer) if status == 200 else answer

    def links(self, report: dict[str, Any]) -> list[tuple[str, int, str]]:
        return [(link["URL"].replace(self.base, ""), link["StatusCode"], link["Status"])
                for link in report["Links"]]

    def test_every_link_once_with_its_status(self) -> None:
        message_id = self.send("links")
        status, report = self.get(f"message/{message_id}/link-check")
        self.assertEqual(status, 200)
        self.assertEqual(self.links(report), [
            ("/ok", 200, "OK"),
            ("/moved", 301, "Moved Permanently"),
            ("/nohead", 200, "OK"),
            ("/big", 200, "OK"),
            ("http://does-not-exist.invalid/", 0, "no such host"),
            (self.refused, 0, "connection refused"),
            ("/missing.css", 404, "Not Found"),
            ("/missing.png", 404, "Not Found"),
            ("/text-only", 200, "OK"),
        ])
        self.assertEqual(report["Errors"], 4)
        requested = sorted(set(LinkTargets.log))
        self.assertEqual(requested, sorted([
            ("HEAD", "/ok"), ("HEAD", "/moved"), ("HEAD", "/nohead"), ("GET", "/nohead"),
            ("HEAD", "/big"), ("GET", "/big"), ("HEAD", "/missing.css"),
            ("GET", "/missing.css"), ("HEAD", "/missing.png"), ("GET", "/missing.png"),
            ("HEAD", "/text-only")]))
        self.assertEqual(LinkTargets.log.count(("HEAD", "/ok")), 1)

    def test_an_endless_body_is_not_downloaded(self) -> None:
        message_id = self.send("big")
        status, report = self.get(f"message/{message_id}/link-check")
        self.assertEqual(status, 200)
        self.assertIn(("/big", 200, "OK"), self.links(report))
        self.assertEqual(len(LinkTargets.big_sent), 1)
        self.assertLess(LinkTargets.big_sent[0], BIG_BODY // 4)

    def test_redirects_followed_when_asked(self) -> None:
        self.send("follow")
        status, report = self.get("message/latest/link-check?follow=true")
        self.assertEqual(status, 200)
        self.assertIn(("/moved", 200, "OK"), self.links(report))
        self.assertIn(("HEAD", "/moved"), LinkTargets.log)
        self.assertEqual(LinkTargets.log.count(("HEAD", "/ok")), 2)  # the link, the redirect

    def test_endless_headers_are_cut_off(self) -> None:
        """A server streaming header lines costs 256 KiB, not its whole 10 s of them."""
        message = EmailMessage()
        message["Subject"] = "flood"
        message.set_content(f"See {self.base}/flood\n")
        with smtplib.SMTP("127.0.0.1", self.daemon.ports["smtp"], timeout=SMTP_TIMEOUT) as smtp:
            smtp.send_message(message, "app@example.com", ["dev@example.com"])
        started = time.monotonic()
        status, report = self.get("message/latest/link-check?query=subject:flood")
        self.assertEqual(status, 200)
        [(url, code, text)] = self.links(report)
        self.assertEqual((url, code), ("/flood", 0))
        self.assertIn("too large", text)
        self.assertLess(time.monotonic() - started, 8)

    def test_unknown_message(self) -> None:
        status, answer = self.get("message/nope/link-check")
        self.assertEqual((status, answer), (404, b"message not found"))


if __name__ == "__main__":
    unittest.main()
