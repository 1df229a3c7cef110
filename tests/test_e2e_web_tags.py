"""
Tags in the web view (issue 13 §1), end to end: the real daemon, the real page in headless
Chromium (as C{test_e2e_web}: Debian's chromium driven by Playwright, skipped without them
unless C{CI=true}), mail sent with smtplib. Rows and the open message show chips; a click on
a chip filters the list by C{tag:}; the message page adds and removes tags, and the rows
follow over the live event stream.
"""

from __future__ import annotations

import json
import smtplib
import unittest
import urllib.request
from typing import Any

from daemon import Daemon
from test_e2e_web import load_playwright, open_page

SMTP_TIMEOUT = 10.0
HTTP_TIMEOUT = 10.0
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class WebTagTests(unittest.TestCase):
    def setUp(self) -> None:
        self.sync_api = load_playwright()
        self.problems: list[str] = []
        self.page = open_page(self, self.problems)
        self.page.on("console", lambda message: self.problems.append(
            f"console: {message.text}") if message.type == "error" else None)
        self.daemon = Daemon.for_test(self, {"smtp": {"tls": "none", "auth": "none"},
                                             "web": {"auth": "none"}})
        self.base = f"http://127.0.0.1:{self.daemon.ports['web']}"

    def send(self, subject: str, tags: str = "") -> None:
        extra = f"X-Tags: {tags}\r\n" if tags else ""
        text = (f"From: app@example.com\r\nTo: dev@example.com\r\nSubject: {subject}\r\n"
                f"{extra}\r\nHello\r\n")
        with smtplib.SMTP("127.0.0.1", self.daemon.ports["smtp"], timeout=SMTP_TIMEOUT) as smtp:
            smtp.sendmail("app@example.com", ["dev@example.com"], text.encode())

    def put_tags(self, message_id: str, tags: list[str]) -> None:
        request = urllib.request.Request(
            self.base + "/api/v1/tags", method="PUT",
            data=json.dumps({"IDs": [message_id], "Tags": tags}).encode(),
            headers={"Content-Type": "application/json"})
        with _DIRECT.open(request, timeout=HTTP_TIMEOUT) as response:
            self.assertEqual(response.read(), b"ok")

    def api(self, path: str) -> Any:
        with _DIRECT.open(self.base + path, timeout=HTTP_TIMEOUT) as response:
            return json.load(response)

    def test_chips_filter_and_editing(self) -> None:
        try:
            self.check_tags()
        except BaseException:
            print(f"page problems: {self.problems}\ndaemon log (tail):\n"
                  f"{self.daemon.log_text()[-4000:]}")
            raise
        self.assertEqual(self.problems, [])

    def check_tags(self) -> None:
        expect, page = self.sync_api.expect, self.page
        self.send("Tagged one", "alpha, two words")
        self.send("Untagged")
        page.goto(self.base + "/")
        rows = page.locator("#message-list .message-row")
        expect(rows).to_have_count(2)
        tagged = rows.filter(has_text="Tagged one")
        expect(tagged.locator(".tag-chip")).to_have_text(["alpha", "two words"])
        expect(rows.filter(has_text="Untagged").locator(".tag-chip")).to_have_count(0)

        tagged.locator('.tag-chip[data-tag="two words"]').click()
        expect(page.locator("#search")).to_have_value('tag:"two words"')
        expect(rows).to_have_count(1)
        expect(rows.first).to_contain_text("Tagged one")
        self.assertIn("search=tag", page.url)
        expect(page.locator("#message-view")).to_be_hidden()  # the chip did not open it

        rows.first.locator(".subject").click()
        chips = page.locator("#message-tags .tag-chip")
        expect(chips).to_have_text(["alpha", "two words"])
        page.locator("#tag-input").fill("Added-1")
        page.locator("#tag-input").press("Enter")
        expect(chips).to_have_text(["Added-1", "alpha", "two words"])
        page.get_by_role("button", name="Remove tag alpha").click()
        expect(chips).to_have_text(["Added-1", "two words"])
        [summary] = self.api("/api/v1/search?query=tag:added-1")["messages"]
        self.assertEqual(summary["Tags"], ["Added-1", "two words"])
        # The row follows over the live event stream.
        expect(rows.first.locator(".tag-chip")).to_have_text(["Added-1", "two words"])

        # Tags set elsewhere (here the API, as IMAP or another page would) show at once.
        self.put_tags(summary["ID"], ["Added-1", "from-elsewhere"])
        expect(chips).to_have_text(["Added-1", "from-elsewhere"])

        chips.filter(has_text="Added-1").click()
        expect(page.locator("#search")).to_have_value("tag:Added-1")
        expect(rows).to_have_count(1)
