"""
End-to-end test of the web view's Sessions view: the real daemon (C{twistd -n mailsink}
with a plain C{[smtp]}, a STARTTLS C{[smtp:submission]} and C{[web]}), the real page in
headless Chromium (Debian's C{/usr/bin/chromium} driven by Playwright, as in
L{test_e2e_web}), SMTP sessions made with smtplib.

One session delivers a message; another tries AUTH PLAIN before STARTTLS (538) after a NOOP
whose argument is HTML. The test checks what a person sees: the banner on the message list
("1 client failed to deliver: see Sessions") leading to the failed sessions; the list with
the failure in red and its diagnosis in the row; the session page with the diagnosis, the
transcript with C{***} for the AUTH payload (the password nowhere on the page) and the HTML
as text; reload and back; a new session appearing live, and a new failure bringing the
dismissed banner back with the new count; the message's Transport tab linking to its
session and the session linking back to the message; "Delete all"; no console error.
Another fills more than a page: "Load more" brings the rest, and the Failed filter takes a
new failure live but not a new delivery.
"""

from __future__ import annotations

import base64
import json
import re
import smtplib
import unittest
import urllib.parse
from typing import Any

from daemon import Daemon, http_json
from test_e2e_web import load_playwright, open_page

SMTP_TIMEOUT = 10.0
SUBJECT = "Sessions e2e: delivered"
LIVE_SUBJECT = "Sessions e2e: arrived live"
USER, PASSWORD = "alice", "Sesame-0pen-Sesame"
PAYLOAD = base64.b64encode(f"\0{USER}\0{PASSWORD}".encode()).decode()
INJECTED = '<b id="injected">bold</b>'
"""Sent as NOOP's argument: the transcript must show it as text, never as markup."""
BEFORE_STARTTLS = "the client tried AUTH before STARTTLS"
PAGE = 50
"""Sessions the page asks for at a time."""


def message_text(subject: str) -> str:
    return f"From: app@example.com\r\nTo: dev@example.com\r\nSubject: {subject}\r\n\r\nHello.\r\n"


class SessionsViewTests(unittest.TestCase):
    def setUp(self) -> None:
        self.sync_api = load_playwright()
        self.expect = self.sync_api.expect
        self.daemon = Daemon.for_test(self, {
            "smtp": {"tls": "none", "auth": "none"},
            "smtp:submission": {"tls": "starttls", "auth": "optional"},
            "auth": {"accept_any": "true"},
            "web": {"auth": "none"},
        })
        self.base = f"http://127.0.0.1:{self.daemon.ports['web']}"
        self.problems: list[str] = []
        self.page = open_page(self, self.problems)
        self.page.on("console", self._note_console)

    def _note_console(self, message: Any) -> None:
        if message.type == "error" and not message.location.get("url", "").endswith(
                "/favicon.ico"):
            self.problems.append(f"console error: {message.text} ({message.location})")

    # The daemon's side.

    def api(self, path: str) -> Any:
        status, body = http_json("GET", self.base + path)
        self.assertEqual(status, 200, body)
        return json.loads(body)

    def deliver(self, subject: str) -> str:
        """A message over [smtp]; returns its ID."""
        with smtplib.SMTP("127.0.0.1", self.daemon.ports["smtp"], local_hostname="app.e2e.test",
                          timeout=SMTP_TIMEOUT) as client:
            client.sendmail("app@example.com", ["dev@example.com"], message_text(subject))
        query = urllib.parse.quote(f'subject:"{subject}"')
        found = self.api(f"/api/v1/search?query={query}&wait=10")["messages"]
        self.assertEqual(len(found), 1, found)
        return str(found[0]["ID"])

    def fail_auth_before_starttls(self) -> None:
        """AUTH PLAIN in clear text on [smtp:submission]: 538 (smtplib's login() would not try)."""
        with smtplib.SMTP("127.0.0.1", self.daemon.ports["smtp:submission"],
                          local_hostname="bad.e2e.test", timeout=SMTP_TIMEOUT) as client:
            client.ehlo()
            client.docmd("NOOP", INJECTED)
            code, _ = client.docmd("AUTH", f"PLAIN {PAYLOAD}")
            self.assertEqual(code, 538)

    def failed_ids(self) -> list[str]:
        return [s["ID"] for s in self.api("/api/v1/sessions?outcome=failed")["sessions"]]

    # The page.

    def test_sessions_view(self) -> None:
        try:
            self.check_sessions_view()
        except BaseException:
            print(f"page problems: {self.problems}\ndaemon log (tail):\n"
                  f"{self.daemon.log_text()[-4000:]}")
            raise
        self.assertEqual(self.problems, [])

    def check_sessions_view(self) -> None:
        expect, page = self.expect, self.page
        message_id = self.deliver(SUBJECT)
        delivered_id = self.api(f"/api/v1/message/{message_id}")["SessionID"]
        self.assertTrue(delivered_id)
        self.fail_auth_before_starttls()
        [failed_id] = self.failed_ids()

        # The message list says a client failed, and leads to the failed sessions.
        page.goto(self.base + "/", wait_until="load")
        expect(page.locator("#live-indicator")).to_have_text("live")
        banner = page.locator("#failure-banner")
        expect(banner).to_be_visible()
        expect(banner).to_contain_text("1 client failed to deliver: see Sessions")
        expect(page.locator("#nav-messages")).to_have_attribute("aria-current", "page")
        page.locator("#failure-banner-link").click()
        self.assertTrue(page.url.endswith("#/sessions?outcome=failed"), page.url)
        expect(page.locator("#sessions-view")).to_be_visible()
        expect(page.locator("#messages-view")).to_be_hidden()
        expect(banner).to_be_hidden()
        expect(page.locator("#nav-sessions")).to_have_attribute("aria-current", "page")
        expect(page.locator("#filter-failed")).to_have_attribute("aria-pressed", "true")
        rows = page.locator("#session-list .session-row")
        expect(rows).to_have_count(1)
        expect(rows.first).to_have_attribute("data-id", failed_id)
        expect(page.locator("#sessions-counts")).to_have_text(re.compile(r"^1 failed \(of \d+\)$"))

        # All sessions, newest first: the failure marked, with its diagnosis in the row.
        page.locator("#filter-all").click()
        expect(page.locator("#filter-all")).to_have_attribute("aria-pressed", "true")
        failed_row = page.locator(f'#session-list .session-row[data-id="{failed_id}"]')
        delivered_row = page.locator(f'#session-list .session-row[data-id="{delivered_id}"]')
        expect(failed_row).to_have_class(re.compile(r"\bfailed\b"))
        expect(failed_row.locator(".outcome")).to_have_text("refused")
        expect(failed_row.locator(".listener")).to_have_text("[smtp:submission]")
        expect(failed_row.locator(".client")).to_have_text(re.compile(r"^127\.0\.0\.1:\d+$"))
        expect(failed_row.locator(".diagnosis")).to_contain_text(BEFORE_STARTTLS)
        expect(delivered_row).not_to_have_class(re.compile(r"\bfailed\b"))
        expect(delivered_row.locator(".outcome")).to_have_text("delivered")
        expect(delivered_row.locator(".messages")).to_have_text("1 message")
        expect(delivered_row.locator(".diagnosis")).to_have_count(0)
        ids = [row.get_attribute("data-id") for row in rows.all()]
        self.assertLess(ids.index(failed_id), ids.index(delivered_id), ids)
        self.assertEqual(ids, [s["ID"] for s in self.api("/api/v1/sessions")["sessions"]])

        # The failed session: diagnosis first, the transcript with *** for the AUTH payload.
        failed_row.locator("a.session-link").click()
        self.check_failed_session(failed_id)
        page.reload(wait_until="load")
        self.check_failed_session(failed_id)
        page.locator("#btn-session-back").click()
        expect(page.locator("#session-list-pane")).to_be_visible()
        expect(page.locator("#session-view")).to_be_hidden()

        # A session that ends while the list is open appears at its top without a reload.
        self.assertTrue(page.url.endswith("#/sessions"), page.url)
        count = rows.count()
        live_message = self.deliver(LIVE_SUBJECT)
        live_session = self.api(f"/api/v1/message/{live_message}")["SessionID"]
        expect(rows).to_have_count(count + 1)
        expect(rows.first).to_have_attribute("data-id", live_session)
        expect(rows.first.locator(".outcome")).to_have_text("delivered")

        # Back on the message list: dismissed, the banner returns with the next failure.
        page.locator("#nav-messages").click()
        expect(page.locator("#messages-view")).to_be_visible()
        expect(banner).to_contain_text("1 client failed to deliver: see Sessions")
        page.locator("#btn-banner-close").click()
        expect(banner).to_be_hidden()
        self.fail_auth_before_starttls()
        expect(banner).to_be_visible()
        expect(banner).to_contain_text("2 clients failed to deliver: see Sessions")

        # The message's Transport tab leads to its session, and the session back to it.
        page.locator(f'#message-list .message-row[data-id="{message_id}"]').click()
        expect(page.locator("#message-subject")).to_have_text(SUBJECT)
        page.locator('[data-tab="transport"]').click()
        link = page.locator("#transport-session")
        expect(link).to_have_attribute("href", f"#/session/{delivered_id}")
        link.click()
        expect(page.locator("#session-view")).to_be_visible()
        expect(page.locator("#message-view")).to_be_hidden()
        expect(page.locator("#session-title")).not_to_have_class(re.compile(r"\bfailed\b"))
        expect(page.locator("#session-diagnosis")).to_be_hidden()
        back_link = page.locator(f'#session-messages a[data-id="{message_id}"]')
        expect(back_link).to_contain_text(SUBJECT)  # the subject looked up for the link
        expect(page.locator("#session-transcript")).to_contain_text(
            f"250 2.0.0 Ok: queued as {message_id}")
        back_link.click()
        expect(page.locator("#message-view")).to_be_visible()
        expect(page.locator("#message-subject")).to_have_text(SUBJECT)
        page.go_back()
        expect(page.locator("#session-view")).to_be_visible()
        expect(page.locator("#session-title")).to_contain_text("Session from 127.0.0.1:")
        page.go_back()
        expect(page.locator("#message-subject")).to_have_text(SUBJECT)

        # Delete all, after the confirm() dialog.
        page.locator("#nav-sessions").click()
        expect(rows.first).to_be_visible()
        dialogs: list[str] = []

        def accept(dialog: Any) -> None:
            dialogs.append(dialog.message)
            dialog.accept()

        page.once("dialog", accept)
        page.locator("#btn-sessions-delete-all").click()
        expect(rows).to_have_count(0)
        expect(page.locator("#sessions-empty")).to_have_text("No SMTP sessions yet.")
        self.assertEqual(len(dialogs), 1)
        self.assertRegex(dialogs[0], r"^Delete all \d+ SMTP sessions\? This cannot be undone\.$")
        self.assertEqual(self.api("/api/v1/sessions")["total"], 0)

    def test_load_more_and_live_filter(self) -> None:
        """Past one page, "Load more" brings the rest; the Failed filter takes failures live."""
        expect, page = self.expect, self.page
        for _ in range(PAGE + 5):  # sessions that say nothing and QUIT: no-mail
            with smtplib.SMTP("127.0.0.1", self.daemon.ports["smtp"], timeout=SMTP_TIMEOUT):
                pass
        total = self.api("/api/v1/sessions?limit=1")["total"]
        self.assertGreater(total, PAGE)
        page.goto(self.base + "/#/sessions", wait_until="load")
        expect(page.locator("#live-indicator")).to_have_text("live")
        rows = page.locator("#session-list .session-row")
        expect(rows).to_have_count(PAGE)
        expect(page.locator("#sessions-counts")).to_have_text(f"{total} sessions")
        more = page.locator("#btn-sessions-more")
        expect(more).to_be_visible()
        more.click()
        expect(rows).to_have_count(total)
        expect(more).to_be_hidden()
        ids = [row.get_attribute("data-id") for row in rows.all()]
        self.assertEqual(len(set(ids)), total)

        page.locator("#filter-failed").click()
        self.assertTrue(page.url.endswith("#/sessions?outcome=failed"), page.url)
        expect(page.locator("#sessions-empty")).to_have_text("No failed sessions.")
        self.deliver(SUBJECT)  # delivered: not for this filter
        self.fail_auth_before_starttls()
        [failed_id] = self.failed_ids()
        expect(rows).to_have_count(1)
        expect(rows.first).to_have_attribute("data-id", failed_id)
        expect(rows.first).to_have_class(re.compile(r"\bfresh\b"))
        expect(page.locator("#sessions-counts")).to_have_text(f"1 failed (of {total + 2})")
        self.assertEqual(self.problems, [])

    def check_failed_session(self, session_id: str) -> None:
        expect, page = self.expect, self.page
        self.assertTrue(page.url.endswith(f"#/session/{session_id}"), page.url)
        expect(page.locator("#session-view")).to_be_visible()
        expect(page.locator("#session-list-pane")).to_be_hidden()
        expect(page.locator("#session-title")).to_have_class(re.compile(r"\bfailed\b"))
        diagnosis = page.locator("#session-diagnosis")
        expect(diagnosis).to_be_visible()
        expect(diagnosis).to_contain_text(BEFORE_STARTTLS)
        entries = page.locator("#session-transcript tbody tr")
        auth = entries.filter(has_text="AUTH PLAIN")
        expect(auth).to_have_count(1)
        expect(auth.locator(".text")).to_have_text("AUTH PLAIN ***")
        expect(auth.locator(".side")).to_have_text("C")
        expect(auth).to_have_class(re.compile(r"\bside-client\b"))
        expect(entries.filter(has_text="538 5.7.11")).to_have_class(
            re.compile(r"\bside-server\b"))
        expect(page.locator("#session-transcript .side-note").last).to_have_text(
            re.compile(r"\*connection closed$"))
        noop = entries.filter(has_text="NOOP")
        expect(noop.locator(".text")).to_have_text(f"NOOP {INJECTED}")
        expect(page.locator("#injected")).to_have_count(0)
        meta = page.locator("#session-meta")
        expect(meta).to_contain_text("[smtp:submission]")
        expect(meta).to_contain_text("bad.e2e.test")
        expect(meta).to_contain_text("538 5.7.11")
        text = page.locator("body").inner_text()
        self.assertNotIn(PASSWORD, text)
        self.assertNotIn(PAYLOAD, text)
        self.assertNotIn(PAYLOAD, page.content())


if __name__ == "__main__":
    unittest.main()
