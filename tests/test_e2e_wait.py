"""
End to end: waiting for mail in the API (C{?wait=}) on the real daemon. A GET that waits is
answered by a message sent with smtplib while it waits, long before its time is up; fifty
waiting at once are all answered by one message; a wait that runs out answers as Mailpit
would (an empty page, 404 for C{latest}); a client that hangs up is no longer waiting.
Whether requests are waiting is read from C{/metrics} (C{mailsink_api_waiting}), polled
with a deadline.
"""

from __future__ import annotations

import json
import smtplib
import socket
import threading
import time
import unittest
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from email.message import EmailMessage
from typing import Any, ClassVar

from daemon import POLL_INTERVAL, SharedDaemon, http_json

WAIT = 20
"""The C{wait} every waiting request here asks for; answers must come well before it."""
WELL_BEFORE = 5.0
SEND_AFTER = 0.5
"""Seconds after the GET started that the message is sent."""


class WaitTests(SharedDaemon, unittest.TestCase):
    daemon_sections: ClassVar[dict[str, dict[str, str]]] = {"smtp": {"tls": "none"},
                                                            "web": {}}

    @property
    def web(self) -> str:
        return f"http://127.0.0.1:{self.daemon.ports['web']}"

    def get(self, path: str, **arguments: Any) -> tuple[int, Any]:
        url = f"{self.web}{path}?{urllib.parse.urlencode(arguments)}"
        status, body = http_json("GET", url, timeout=WAIT + 10)
        return status, json.loads(body) if status == 200 else body

    def waiting(self) -> float:
        status, body = http_json("GET", f"{self.web}/metrics")
        self.assertEqual(status, 200)
        for line in body.decode().splitlines():
            if line.startswith("mailsink_api_waiting "):
                return float(line.split()[1])
        raise AssertionError("no mailsink_api_waiting in /metrics")

    def wait_until_waiting(self, count: int, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while self.waiting() != count:
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.waiting()} requests waiting, not {count}")
            time.sleep(POLL_INTERVAL)

    def send(self, subject: str) -> float:
        """Send over SMTP; returns when the 250 came (monotonic)."""
        message = EmailMessage()
        message["From"] = "app@example.com"
        message["To"] = "user@example.com"
        message["Subject"] = subject
        message.set_content("hello\n")
        with smtplib.SMTP("127.0.0.1", self.daemon.ports["smtp"], timeout=10) as client:
            client.send_message(message)
            return time.monotonic()

    def test_a_message_sent_while_waiting_answers_at_once(self) -> None:
        sent: list[float] = []
        started = time.monotonic()

        def sender() -> None:
            # The application under test sends half a second later, while the GET waits.
            threading.Event().wait(max(0.0, started + SEND_AFTER - time.monotonic()))
            self.wait_until_waiting(1)
            sent.append(self.send("e2e wait: password reset"))

        thread = threading.Thread(target=sender)
        thread.start()
        try:
            status, found = self.get("/api/v1/search", query='subject:"password reset"',
                                     wait=WAIT)
            answered = time.monotonic()
        finally:
            thread.join(timeout=30)
        self.assertEqual(status, 200, found)
        self.assertEqual([m["Subject"] for m in found["messages"]],
                         ["e2e wait: password reset"])
        self.assertEqual(len(sent), 1)
        self.assertGreaterEqual(sent[0] - started, SEND_AFTER)
        self.assertLess(answered - started, WELL_BEFORE)
        self.assertLess(answered - sent[0], 1.0)
        self.assertEqual(self.waiting(), 0)

    def test_fifty_waiters_are_all_answered(self) -> None:
        with ThreadPoolExecutor(50) as pool:
            pending = [pool.submit(self.get, "/api/v1/message/latest", query="tag-fifty",
                                   wait=WAIT) for _ in range(50)]
            self.wait_until_waiting(50)
            sent = self.send("e2e wait tag-fifty")
            answers = [each.result(timeout=WAIT + 10) for each in pending]
            answered = time.monotonic()
        self.assertEqual({(status, found["Subject"]) for status, found in answers},
                         {(200, "e2e wait tag-fifty")})
        self.assertLess(answered - sent, WELL_BEFORE)
        self.assertEqual(self.waiting(), 0)

    def test_count_and_time_up(self) -> None:
        started = time.monotonic()
        status, found = self.get("/api/v1/search", query="never-sent", wait=1)
        self.assertGreaterEqual(time.monotonic() - started, 1.0)
        self.assertEqual((status, found["messages_count"], found["messages"]), (200, 0, []))
        status, body = self.get("/api/v1/message/latest", query="never-sent", wait=0.5)
        self.assertEqual((status, body), (404, b"message not found"))
        status, body = self.get("/api/v1/messages", wait=61)
        self.assertEqual((status, body), (400, b"wait must be at most 60 seconds"))
        self.send("e2e wait counted 1")
        with ThreadPoolExecutor(1) as pool:
            pending = pool.submit(self.get, "/api/v1/search", query="counted", count=2,
                                  wait=WAIT)
            self.wait_until_waiting(1)
            self.send("e2e wait counted 2")
            status, found = pending.result(timeout=WAIT + 10)
        self.assertEqual((status, found["messages_count"]), (200, 2))

    def test_a_client_that_hangs_up_stops_waiting(self) -> None:
        with socket.create_connection(("127.0.0.1", self.daemon.ports["web"]), timeout=10) \
                as client:
            client.sendall(b"GET /api/v1/messages?wait=30&count=1000 HTTP/1.1\r\n"
                           b"Host: 127.0.0.1\r\n\r\n")
            self.wait_until_waiting(1)
        self.wait_until_waiting(0)
