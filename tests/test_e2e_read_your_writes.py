"""
End to end: a message is in the API as soon as it was accepted, as Mailpit's clients and
test helpers expect (Mailpit stores a message before it answers): over SMTP (250, then
GET /api/v1/message/latest at once) and over POST /api/v1/send (the ID, then GET it).
"""

from __future__ import annotations

import json
import smtplib
import unittest
from email.message import EmailMessage
from typing import Any, ClassVar

from daemon import SharedDaemon, http_json

ROUNDS = 20


def _http(method: str, url: str, body: Any = None) -> tuple[int, Any]:
    status, answer = http_json(method, url, body)
    return status, json.loads(answer) if status == 200 else answer


class ReadYourWritesTests(SharedDaemon, unittest.TestCase):
    daemon_sections: ClassVar[dict[str, dict[str, str]]] = {"smtp": {"tls": "none"},
                                                            "web": {}}

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.daemon.ports['web']}/api/v1"

    def test_latest_right_after_the_250(self) -> None:
        with smtplib.SMTP("127.0.0.1", self.daemon.ports["smtp"], timeout=10) as client:
            for round_ in range(ROUNDS):
                message = EmailMessage()
                message["From"] = "app@example.com"
                message["To"] = "user@example.com"
                message["Subject"] = f"round {round_}"
                message.set_content("hello\n")
                client.send_message(message)
                status, latest = _http("GET", f"{self.api}/message/latest")
                self.assertEqual((status, latest["Subject"]), (200, f"round {round_}"))

    def test_send_then_get(self) -> None:
        for round_ in range(ROUNDS):
            status, sent = _http("POST", f"{self.api}/send", {
                "From": {"Email": "app@example.com"}, "To": [{"Email": "user@example.com"}],
                "Subject": f"sent {round_}", "Text": "hello"})
            self.assertEqual(status, 200)
            status, message = _http("GET", f"{self.api}/message/{sent['ID']}")
            self.assertEqual((status, message["Subject"]), (200, f"sent {round_}"))
