"""
End-to-end test of the web view's message checks (issue 11 §5): the real daemon
(C{twistd -n mailsink}), the real page in headless Chromium (Debian's C{/usr/bin/chromium}
driven by Playwright, as in L{test_e2e_web}), mail sent with smtplib.

A clean text message and a broken HTML one (no Message-ID, no Date, HTML only, links to a
local C{http.server}): the list marks the broken one's row with its lint error count and
not the clean one's, also after the row is rebuilt; the Checks tab shows the lint findings
as the lint route gives them (errors first, with field, sentence, reference and code), the
HTML check's score with the client families that lack a feature, or the route's reason
when there is nothing to check; the link check runs only on a click and shows each link's
status (200, 404 marked broken, 301, or 200 with "Follow redirects"); a message arriving
live is marked too. With a real spamd (Debian's C{spamd}, local tests only, on a free
loopback port) and C{[spamassassin] host}, the tab shows the GTUBE message's score and rules.

Without Chromium, Playwright or spamd a test is skipped, unless C{CI=true}: then it fails.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import re
import shutil
import signal
import smtplib
import socket
import subprocess
import tempfile
import threading
import time
import unittest
import urllib.parse
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any

from daemon import Daemon, free_port, http_json
from test_e2e_web import load_playwright, open_page

SMTP_TIMEOUT = 10.0
SPAMD = "/usr/sbin/spamd"
SPAMD_START_TIMEOUT = 60.0
STOP_TIMEOUT = 10.0
CLEAN_SUBJECT = "Checks e2e: clean"
BROKEN_SUBJECT = "Checks e2e: broken"
LIVE_SUBJECT = "Checks e2e: broken, arrived live"
GTUBE = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"
BADGE_TITLE = re.compile(r"^2 lint errors: ")

_LIST_TEXTS = "(items) => items.map((item) => item.textContent)"
_FINDINGS = """(items) => items.map((li) => ({
  className: li.className,
  severity: li.querySelector('.severity').textContent,
  field: li.querySelector('.field').textContent,
  sentence: li.querySelector('.sentence').textContent,
  reference: li.querySelector('.reference').textContent,
  code: li.querySelector('.code').textContent,
}))"""
_LINK_ROWS = """(rows) => rows.map((tr) => ({
  bad: tr.classList.contains('bad'),
  code: tr.querySelector('.status-code').textContent,
  status: tr.querySelector('.status').textContent,
  url: tr.querySelector('.url').textContent,
}))"""


class _Links(http.server.BaseHTTPRequestHandler):
    """The links' server: /ok answers 200, /moved 301 to /ok, anything else 404."""

    def do_HEAD(self) -> None:
        self._answer()

    def do_GET(self) -> None:
        body = self._answer()
        self.wfile.write(body)

    def _answer(self) -> bytes:
        code = {"/ok": 200, "/moved": 301}.get(self.path, 404)
        body = b"%d\n" % code
        self.send_response(code)
        if code == 301:
            self.send_header("Location", "/ok")
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        return body

    def log_message(self, format: str, *args: Any) -> None:
        pass


def links_server(test: unittest.TestCase) -> str:
    """Start the links' server on loopback for C{test}; its base URL."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Links)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    test.addCleanup(thread.join, STOP_TIMEOUT)
    test.addCleanup(server.server_close)
    test.addCleanup(server.shutdown)
    return f"http://127.0.0.1:{server.server_address[1]}"


def clean_message() -> bytes:
    message = EmailMessage()
    message["From"] = "Shop <orders@shop.example.com>"
    message["To"] = "dev@example.com"
    message["Subject"] = CLEAN_SUBJECT
    message["Date"] = formatdate(localtime=True)
    message["Message-ID"] = make_msgid(domain="shop.example.com")
    message.set_content("Thank you for your order.\n")
    return message.as_bytes()


def broken_message(links: str, subject: str = BROKEN_SUBJECT) -> bytes:
    """No Message-ID, no Date, HTML only (a flexbox layout: Outlook lacks it), three links."""
    return (f"From: orders@shop.example.com\r\nTo: dev@example.com\r\nSubject: {subject}\r\n"
            "Content-Type: text/html; charset=utf-8\r\n\r\n"
            '<div style="display: flex"><p>Your order:</p>'
            f'<a href="{links}/ok">track it</a> <a href="{links}/missing">invoice</a> '
            f'<a href="{links}/moved">account</a></div>\r\n').encode()


def family_lines(results: list[dict[str, str]]) -> list[str]:
    """What the tab says of one feature: a line per client family lacking it, in order."""
    lacking: dict[str, dict[str, list[str]]] = {}
    for result in results:
        if result["Support"] in ("no", "partial"):
            where = " ".join(filter(None, (result["Platform"], result["Version"])))
            if result["NoteNumber"]:
                where += f" [note {result['NoteNumber']}]"
            lacking.setdefault(result["Family"], {"no": [], "partial": []})[
                result["Support"]].append(where)
    words = {"no": "not supported", "partial": "partly supported"}
    return [family + "".join(f" {words[support]}: {', '.join(where)}"
                             for support, where in found.items() if where)
            for family, found in lacking.items()]


class _ChromiumTest(unittest.TestCase):
    """A page in headless Chromium; page errors and console errors noted."""

    def setUp(self) -> None:
        self.sync_api = load_playwright()
        self.expect = self.sync_api.expect
        self.problems: list[str] = []
        self.page = open_page(self, self.problems)
        self.console_errors: list[tuple[str, str]] = []  # (text, URL)
        self.page.on("console", lambda message: self.console_errors.append(
            (message.text, message.location.get("url", ""))) if message.type == "error" else None)
        self.lint_asked: list[str] = []  # message IDs, one per GET .../lint
        self.page.on("request", self._note_lint)

    def _note_lint(self, request: Any) -> None:
        path = urllib.parse.urlsplit(request.url).path
        if request.method == "GET" and path.endswith("/lint"):
            self.lint_asked.append(urllib.parse.unquote(path.split("/")[-2]))

    def start_daemon(self, sections: dict[str, dict[str, str]] | None = None) -> None:
        self.daemon = Daemon.for_test(self, {"smtp": {"tls": "none", "auth": "none"},
                                             "web": {"auth": "none"}, **(sections or {})})
        self.base = f"http://127.0.0.1:{self.daemon.ports['web']}"

    def api(self, path: str) -> tuple[int, Any]:
        status, body = http_json("GET", self.base + path)
        return status, json.loads(body) if status == 200 else body.decode()

    def send(self, data: bytes) -> None:
        with smtplib.SMTP("127.0.0.1", self.daemon.ports["smtp"], timeout=SMTP_TIMEOUT) as smtp:
            smtp.sendmail("bounces@shop.example.com", ["dev@example.com"], data)

    def open_page(self) -> None:
        self.page.goto(self.base + "/", wait_until="load")
        self.expect(self.page.locator("#live-indicator")).to_have_text("live")

    def row(self, subject: str) -> Any:
        return self.page.locator("#message-list .message-row").filter(
            has=self.page.locator(".subject", has_text=re.compile(f"^{re.escape(subject)}$")))

    def open_checks(self, subject: str, first_tab: str) -> str:
        """Open the message with C{subject} and, once it has loaded (showing C{first_tab}),
        its Checks tab; its ID."""
        row = self.row(subject)
        message_id = row.get_attribute("data-id") or ""
        row.click()
        self.expect(self.page.locator("#message-subject")).to_have_text(subject)
        self.expect(self.page.locator(f"#tab-{first_tab}")).to_have_attribute(
            "aria-selected", "true")
        self.page.locator("#tab-checks").click()
        self.expect(self.page.locator("#panel-checks")).to_be_visible()
        return message_id

    def report(self, extra: str = "") -> None:
        print(f"page problems: {self.problems}\nconsole errors: {self.console_errors}\n"
              f"{extra}daemon log (tail):\n{self.daemon.log_text()[-4000:]}")


class ChecksTabTests(_ChromiumTest):
    def test_list_marker_lint_html_check_and_link_check(self) -> None:
        self.links = links_server(self)
        self.start_daemon()
        try:
            self.check_tab()
        except BaseException:
            self.report()
            raise

    def check_tab(self) -> None:
        expect, page = self.expect, self.page
        self.open_page()
        self.send(clean_message())
        self.send(broken_message(self.links))
        rows = page.locator("#message-list .message-row")
        expect(rows).to_have_count(2)
        clean_id = self.row(CLEAN_SUBJECT).get_attribute("data-id") or ""
        broken_id = self.row(BROKEN_SUBJECT).get_attribute("data-id") or ""
        self.assertEqual(self.api(f"/api/v1/message/{clean_id}/lint"),
                         (200, {"Findings": [], "Errors": 0, "Warnings": 0}))
        status, lint = self.api(f"/api/v1/message/{broken_id}/lint")
        self.assertEqual((status, lint["Errors"]), (200, 2), lint)

        # The list marks the broken message's row (lint asked by the page, not at intake).
        broken_row, clean_row = self.row(BROKEN_SUBJECT), self.row(CLEAN_SUBJECT)
        expect(broken_row.locator(".lint-badge")).to_have_attribute("title", BADGE_TITLE)
        expect(broken_row).to_have_class(re.compile(r"\blint-errors\b"))

        # The Checks tab of the broken message: lint as the route says, errors first.
        self.open_checks(BROKEN_SUBJECT, "html")
        expect(broken_row).not_to_have_class(re.compile(r"\bunread\b"))  # its row was rebuilt
        expect(broken_row.locator(".lint-badge")).to_have_attribute("title", BADGE_TITLE)
        expect(page.locator("#lint-summary")).to_have_text(
            f"2 errors, {lint['Warnings']} warning{'' if lint['Warnings'] == 1 else 's'}")
        order = {"error": 0, "warning": 1, "info": 2}
        wanted = sorted(lint["Findings"], key=lambda f: order[f["Severity"]])
        shown = page.locator("#lint-findings li.finding").evaluate_all(_FINDINGS)
        self.assertEqual([(f["className"], f["severity"], f["field"], f["sentence"],
                           f["reference"], f["code"]) for f in shown],
                         [(f"finding sev-{f['Severity']}", f["Severity"], f["Field"],
                           f["Message"], f"{f['Reference']} · {f['Code']}", f["Code"])
                          for f in wanted])
        self.assertEqual({f["code"] for f in shown[:2]}, {"missing-date", "missing-message-id"})
        self.assertTrue(any("Message-ID" in f["sentence"] for f in shown[:2]), shown)

        # The HTML check: the overall score, and the client families lacking flexbox.
        status, html_check = self.api(f"/api/v1/message/{broken_id}/html-check")
        self.assertEqual(status, 200, html_check)
        summary = page.locator("#htmlcheck-summary")
        expect(summary).to_contain_text(re.compile(r"^\d+(\.\d)?% supported, "))
        expect(page.locator("#htmlcheck-score")).to_be_visible()
        self.assertEqual(float(page.locator("#htmlcheck-score").get_attribute("value") or -1),
                         float(html_check["Total"]["Supported"]))
        titles = page.locator("#htmlcheck-warnings .feature-title").evaluate_all(_LIST_TEXTS)
        self.assertEqual(len(titles), len(html_check["Warnings"]))
        for title, warning in zip(titles, html_check["Warnings"], strict=True):
            self.assertTrue(title.startswith(warning["Title"]), (title, warning["Title"]))
        families = page.locator("#htmlcheck-warnings li.family").evaluate_all(_LIST_TEXTS)
        wanted_families = [line for warning in html_check["Warnings"]
                           for line in family_lines(warning["Results"])]
        self.assertTrue(wanted_families, html_check["Warnings"])
        self.assertEqual(families, wanted_families)

        # The link check runs only on a click: each link's status, the 404 marked broken.
        self.assertEqual(page.locator("#linkcheck-table tbody tr").count(), 0)
        for follow in (False, True):
            status, checked = self.api(f"/api/v1/message/{broken_id}/link-check"
                                       + ("?follow=true" if follow else ""))
            self.assertEqual(status, 200, checked)
            page.locator("#link-follow").set_checked(follow)
            page.locator("#btn-link-check").click()
            expect(page.locator("#linkcheck-summary")).to_have_text("3 links, 1 broken.")
            links = page.locator("#linkcheck-table tbody tr").evaluate_all(_LINK_ROWS)
            codes = {"/ok": 200, "/missing": 404, "/moved": 200 if follow else 301}
            self.assertEqual(links, [
                {"bad": code == 404, "code": f"Broken: ✗ {code}" if code == 404 else str(code),
                 "status": link["Status"], "url": self.links + path}
                for (path, code), link in zip(codes.items(), checked["Links"], strict=True)])
            self.assertEqual([link["StatusCode"] for link in checked["Links"]],
                             list(codes.values()))
        expect(page.locator("#check-spam")).to_be_hidden()  # [spamassassin] host is empty

        # The clean message: no findings; no HTML, so the HTML check's reason.
        page.keyboard.press("Escape")
        self.open_checks(CLEAN_SUBJECT, "text")
        expect(page.locator("#lint-summary")).to_have_text(
            "No findings: real servers should accept this message unchanged.")
        expect(page.locator("#lint-findings li")).to_have_count(0)
        status, reason = self.api(f"/api/v1/message/{clean_id}/html-check")
        self.assertEqual(status, 400)
        expect(page.locator("#htmlcheck-summary")).to_have_text(f"No HTML check: {reason}.")
        expect(page.locator("#htmlcheck-score")).to_be_hidden()
        self.assertEqual(page.locator("#linkcheck-table tbody tr").count(), 0)

        # A broken message arriving live is marked too; the clean one never is.
        self.send(broken_message(self.links, LIVE_SUBJECT))
        expect(rows).to_have_count(3)
        expect(self.row(LIVE_SUBJECT).locator(".lint-badge")).to_have_attribute(
            "title", BADGE_TITLE)
        live_id = self.row(LIVE_SUBJECT).get_attribute("data-id") or ""
        expect(clean_row.locator(".lint-badge")).to_have_count(0)
        expect(clean_row).not_to_have_class(re.compile(r"\blint-errors\b"))
        # Each message's lint asked once for the list (rebuilt rows kept their answer), and
        # once more for each Checks tab opened.
        self.assertEqual(sorted(self.lint_asked), sorted([broken_id, broken_id, clean_id,
                                                          clean_id, live_id]))
        self.assertEqual(self.problems, [])
        expected_errors = [text for text, url in self.console_errors
                           if url.endswith(f"/api/v1/message/{clean_id}/html-check")]
        self.assertEqual(len(expected_errors), 1, self.console_errors)  # the 400 above
        self.assertEqual([e for e in self.console_errors if e[0] not in expected_errors
                          and not e[1].endswith("/favicon.ico")], [])


class Spamd:
    """A real spamd on a free loopback port: local tests only, no user config, one child."""

    def __init__(self, test: unittest.TestCase) -> None:
        if not os.access(SPAMD, os.X_OK):
            problem = f"{SPAMD} is missing (apt-get install spamd)"
            if os.environ.get("CI") == "true":
                raise AssertionError(problem)
            raise unittest.SkipTest(problem)
        home = tempfile.mkdtemp(prefix="mailsink-spamd-")
        test.addCleanup(shutil.rmtree, home, True)
        self.port = free_port()
        self.log_path = os.path.join(home, "spamd.log")
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [SPAMD, "--local", "--nouser-config", "--listen-ip=127.0.0.1",
                 f"--port={self.port}", "--allowed-ips=127.0.0.1", "--max-children=1",
                 "--min-children=1", "--syslog=stderr", f"--helper-home-dir={home}"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True, env={**os.environ, "HOME": home})
        test.addCleanup(self.stop)
        self._wait_listening()

    def _wait_listening(self) -> None:
        deadline = time.monotonic() + SPAMD_START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"spamd exited ({self.process.returncode}): {self.log()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1.0).close()
                return
            except OSError:
                with contextlib.suppress(subprocess.TimeoutExpired):  # a bounded wait on spamd
                    self.process.wait(timeout=0.1)
        raise AssertionError(f"spamd did not listen within {SPAMD_START_TIMEOUT} s: {self.log()}")

    def log(self) -> str:
        with open(self.log_path, encoding="utf-8", errors="replace") as stream:
            return stream.read()[-3000:]

    def stop(self) -> None:
        """SIGTERM to spamd's own process group (parent and child), SIGKILL if it stays."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=STOP_TIMEOUT)


class SpamSectionTests(_ChromiumTest):
    def test_spam_score_and_rules(self) -> None:
        spamd = Spamd(self)
        self.start_daemon({"spamassassin": {"host": f"127.0.0.1:{spamd.port}"}})
        try:
            self.check_spam()
        except BaseException:
            self.report(f"spamd log (tail):\n{spamd.log()}\n")
            raise

    def check_spam(self) -> None:
        expect, page = self.expect, self.page
        self.open_page()
        message = EmailMessage()
        message["From"] = "orders@shop.example.com"
        message["To"] = "dev@example.com"
        message["Subject"] = "Checks e2e: GTUBE"
        message["Date"] = formatdate(localtime=True)
        message["Message-ID"] = make_msgid(domain="shop.example.com")
        message.set_content(f"This is the GTUBE test:\n\n{GTUBE}\n")
        self.send(message.as_bytes())
        expect(page.locator("#message-list .message-row")).to_have_count(1)
        message_id = self.open_checks("Checks e2e: GTUBE", "text")
        status, verdict = self.api(f"/api/v1/message/{message_id}/sa-check")
        self.assertEqual((status, verdict["Error"], verdict["IsSpam"]), (200, "", True), verdict)
        expect(page.locator("#check-spam")).to_be_visible()
        rules = sorted(verdict["Rules"], key=lambda rule: -rule["Score"])
        expect(page.locator("#spam-summary")).to_have_text(
            f"Score {verdict['Score']:g}: SpamAssassin calls it spam "
            f"({len(rules)} rule{'' if len(rules) == 1 else 's'} matched).")
        expect(page.locator("#spam-summary")).to_have_class(re.compile(r"\bis-spam\b"))
        shown = page.locator("#spam-rules tbody tr").evaluate_all(
            "(rows) => rows.map((tr) => [...tr.cells].map((td) => td.textContent))")
        self.assertIn("GTUBE", [name for _, name, _ in shown])
        self.assertEqual(shown, [[f"{rule['Score']:g}", rule["Name"], rule["Description"]]
                                 for rule in rules])
        self.assertEqual(self.problems, [])
