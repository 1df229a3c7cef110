"""
End to end: C{GET /api/v1/message/{ID}/html-check} on the real daemon (C{twistd -n
mailsink}) for messages sent with smtplib: an HTML newsletter answers Mailpit's
C{HTMLCheckResponse} with the warnings its HTML earns, C{latest} works as an ID, a
text-only message answers 400 "message does not contain HTML" as Mailpit does, and an
unknown ID 404.
"""

from __future__ import annotations

import json
import smtplib
import unittest
import urllib.parse
from email.message import EmailMessage
from typing import Any, ClassVar

from daemon import SharedDaemon, http_json

SMTP_TIMEOUT = 10.0

HTML = """\
<!DOCTYPE html>
<html><head><style>
  @media (max-width: 600px) { .col { width: 100% !important; } }
  a:hover { color: #cc0000; }
</style></head>
<body>
<table width="600" bgcolor="#ffffff"><tr>
  <td class="col" style="padding: 16px; font-family: Arial, sans-serif;">
    <div style="display: flex; gap: 8px;"><img src="https://cdn.example.com/a.webp" alt="A">
    <svg width="16" height="16"><circle cx="8" cy="8" r="8"/></svg></div>
  </td>
</tr></table>
</body></html>
"""


def message(subject: str, html: str | None) -> EmailMessage:
    """A message as Python's email library builds it: text, and HTML as its alternative."""
    built = EmailMessage()
    built["From"] = "news@shop.example.com"
    built["To"] = "customer@example.net"
    built["Subject"] = subject
    built.set_content("Our news, in plain text.\n")
    if html is not None:
        built.add_alternative(html, subtype="html")
    return built


class HtmlCheckRouteTests(SharedDaemon, unittest.TestCase):
    daemon_sections: ClassVar[dict[str, dict[str, str]]] = {"smtp": {"tls": "none"},
                                                            "web": {}}

    def get(self, path: str) -> tuple[int, bytes]:
        url = f"http://127.0.0.1:{self.daemon.ports['web']}/api/v1/{path}"
        return http_json("GET", url)

    def send(self, built: EmailMessage) -> str:
        """Send with smtplib; the stored message's ID, found by its subject."""
        with smtplib.SMTP("127.0.0.1", self.daemon.ports["smtp"], timeout=SMTP_TIMEOUT) as smtp:
            smtp.send_message(built)
        query = urllib.parse.quote(f'subject:"{built["Subject"]}"')
        status, answer = self.get(f"search?query={query}")
        found = json.loads(answer)
        self.assertEqual((status, found["count"]), (200, 1))
        return str(found["messages"][0]["ID"])

    def check(self, message_id: str) -> dict[str, Any]:
        status, answer = self.get(f"message/{message_id}/html-check")
        self.assertEqual(status, 200, answer)
        result: dict[str, Any] = json.loads(answer)
        return result

    def test_html_newsletter(self) -> None:
        report = self.check(self.send(message("November news", HTML)))
        self.assertEqual(sorted(report), ["Platforms", "Total", "Warnings"])
        self.assertEqual(sorted(report["Total"]),
                         ["Nodes", "Partial", "Supported", "Tests", "Unsupported"])
        # style, body, table, tr, td, div, img, svg, circle (html and head are not nodes)
        self.assertEqual(report["Total"]["Nodes"], 9)
        self.assertEqual(round(sum(report["Total"][key] for key in
                                   ("Supported", "Partial", "Unsupported")), 1), 100.0)
        found = {warning["Slug"]: warning["Score"]["Found"] for warning in report["Warnings"]}
        self.assertEqual(found, {
            "html-body": 1, "html-style": 1, "html-width": 2, "html-height": 1,
            "html-svg": 1, "image-webp": 1, "css-at-media": 1, "css-important": 1,
            "css-pseudo-class-hover": 1, "css-width": 1, "css-padding": 1,
            "css-background-color": 1, "css-display": 1, "css-display-flex": 1, "css-gap": 1,
        })
        flex = next(w for w in report["Warnings"] if w["Slug"] == "css-display-flex")
        self.assertEqual(sorted(flex), sorted([
            "Slug", "Title", "Description", "URL", "Category", "Tags", "Keywords", "Results",
            "NotesByNumber", "Score"]))
        self.assertEqual(sorted(flex["Score"]),
                         ["Found", "Partial", "Supported", "Unsupported"])
        self.assertEqual(sorted(flex["Results"][0]),
                         ["Family", "Name", "NoteNumber", "Platform", "Support", "Version"])
        self.assertEqual({result["Support"] for result in flex["Results"]},
                         {"yes", "no", "partial"})
        self.assertIn("Gmail", report["Platforms"]["android"])

    def test_latest_and_text_only(self) -> None:
        self.send(message("html for latest", "<p style='position: absolute'>x</p>"))
        status, answer = self.get("message/latest/html-check?query=" +
                                  urllib.parse.quote('subject:"html for latest"'))
        self.assertEqual(status, 200)
        self.assertEqual([w["Slug"] for w in json.loads(answer)["Warnings"]],
                         ["css-position"])
        text_only = self.send(message("plain text only", None))
        status, answer = self.get(f"message/{text_only}/html-check")
        self.assertEqual((status, answer), (400, b"message does not contain HTML"))
        status, answer = self.get("message/latest/html-check")
        self.assertEqual((status, answer), (400, b"message does not contain HTML"))
        status, _ = self.get("message/no-such-message/html-check")
        self.assertEqual(status, 404)
