"""
End to end: the daemon with C{[web]} parses new mail in its parse worker child
(C{python -c ... parse_worker}); a worker killed with SIGKILL costs no message (the next
one is parsed by a new worker or by the daemon itself), and stopping the daemon leaves no
worker behind.
"""

from __future__ import annotations

import json
import os
import signal
import smtplib
import time
import unittest
import urllib.parse
from collections.abc import Callable
from email.message import EmailMessage
from functools import partial
from typing import Any, TypeVar

from daemon import POLL_INTERVAL, Daemon, http_json
from test_index_parser import alive, worker_pids

WAIT = 10.0
SMTP_TIMEOUT = 10.0
T = TypeVar("T")


def wait_for(find: Callable[[], T | None], what: str, timeout: float = WAIT) -> T:
    """Poll C{find} until it gives something; fail after C{timeout} seconds."""
    deadline = time.monotonic() + timeout
    while True:
        found = find()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:g} s: {what}")
        time.sleep(POLL_INTERVAL)


def dead(pid: int) -> bool:
    return not alive(pid)


class ParseWorkerTests(unittest.TestCase):
    def setUp(self) -> None:
        self.daemon = Daemon.for_test(self, {"smtp": {"tls": "none"}, "web": {}})
        self.api = f"http://127.0.0.1:{self.daemon.ports['web']}/api/v1"

    def workers(self) -> set[int]:
        assert self.daemon.pid is not None
        return worker_pids(self.daemon.pid)

    def send(self, subject: str) -> None:
        message = EmailMessage()
        message["From"] = "App <app@example.com>"
        message["To"] = "dev@example.com"
        message["Subject"] = subject
        message.set_content(f"The body of {subject}.\n")
        with smtplib.SMTP("127.0.0.1", self.daemon.ports["smtp"],
                          timeout=SMTP_TIMEOUT) as client:
            client.send_message(message)

    def found(self, subject: str) -> list[dict[str, Any]]:
        query = urllib.parse.quote(f'subject:"{subject}"')
        status, body = http_json("GET", f"{self.api}/search?query={query}")
        self.assertEqual(status, 200, body)
        messages: list[dict[str, Any]] = json.loads(body)["messages"]
        return messages

    def test_worker_killed_then_stopped_with_the_daemon(self) -> None:
        first_worker = wait_for(self.workers, "a parse worker child of the daemon")
        self.assertEqual(len(first_worker), 1)
        (pid,) = first_worker
        with open(f"/proc/{pid}/cmdline", "rb") as stream:
            argv = stream.read().split(b"\0")
        self.assertEqual(argv[1:3], [b"-P", b"-c"])
        self.assertIn(b"mailsink.index.parse_worker", argv[3])

        self.send("before the kill")
        (before,) = wait_for(lambda: self.found("before the kill"), "the first message")
        self.assertEqual((before["From"]["Address"], before["Snippet"]),
                         ("app@example.com", "The body of before the kill."))

        offset = len(self.daemon.log_text())
        os.kill(pid, signal.SIGKILL)
        self.daemon.wait_for_log(lambda text: "index parse worker ended" in text, since=offset)
        self.assertFalse(alive(pid))

        self.send("after the kill")
        (after,) = wait_for(lambda: self.found("after the kill"), "the second message")
        self.assertEqual(after["Snippet"], "The body of after the kill.")
        second_worker = wait_for(self.workers, "a new parse worker")
        self.assertNotIn(pid, second_worker)
        self.assertNotIn("died 3 times", self.daemon.log_text())

        self.assertIn(self.daemon.stop(), (0, -signal.SIGTERM))  # twistd re-raises SIGTERM
        for gone in (pid, *second_worker):
            wait_for(partial(dead, gone), f"worker {gone} gone")
        self.assertNotIn("did not exit when stopped", self.daemon.log_text())
