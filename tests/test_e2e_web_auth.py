"""
End-to-end: C{[web] auth = required} protects every path the web listener serves.

The real daemon (C{twistd -n mailsink}) with C{isolation = user}, a password file (a
bcrypt entry, checked in a thread, and a C{{PLAIN}} one) and one message sent over SMTP.
Every route of the Klein app (read from its C{url_map}, so a route added later is covered
without touching this test; path variables filled with the real message ID), every static
file and some unknown paths are asked with urllib and with curl: without credentials and
with wrong ones the answer is 401 with the Basic challenge, with the right ones it is not.
Only C{/livez} and C{/readyz} answer without credentials. The event streams (SSE and a real
WebSocket handshake) are held to the same rule, users still see only their own mailbox,
and headless Chromium, given the credentials once, shows the live page and the message.
"""

from __future__ import annotations

import base64
import json
import os
import re
import select
import shutil
import smtplib
import socket
import subprocess
import time
import unittest
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any, ClassVar

from daemon import Daemon
from test_e2e_web import (
    CHROMIUM,
    CHROMIUM_ARGS,
    LAUNCH_TIMEOUT_MS,
    STEP_TIMEOUT_MS,
    SUBJECT,
    html_message,
    load_playwright,
)

from mailsink.auth.passwords import hash_bcrypt
from mailsink.web.app import STATIC  # importing it registers every route on the one app
from mailsink.web.routing import app

ADMIN, ADMIN_PASSWORD = "boss", "chief-secret"
USER, USER_PASSWORD = "alice", "wonderland"
WRONG = (ADMIN, "not-the-password")
OPEN = ("/livez", "/readyz")
CHALLENGE = 'Basic realm="mailsink"'
TIMEOUT = 10.0
"""Bound on every request and every curl run."""
NOT_JSON = b"not json"
"""The body of every state-changing request: refused before anything changes."""
EXTRA_PATHS = ("/no/such/page", "/api/v1/no-such-route", "/livez/", "/readyz/more", "/view/",
               "/api/v1/message/latest", "/api/v1/message/latest/raw", "/static/missing.css")
"""Paths that are no route of their own (or are one with a twist) and must be guarded too."""
_VARIABLE = re.compile(r"<(?:[^:<>]+:)?([^<>]+)>")
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class Answer:
    """A status and the headers of an HTTP answer, from whichever client."""

    def __init__(self, status: int, headers: dict[str, str]) -> None:
        self.status = status
        self.headers = {name.lower(): value for name, value in headers.items()}


def static_files() -> list[str]:
    """Every file the page may load from C{/static/}, as a path below it."""
    return sorted(os.path.relpath(os.path.join(folder, name), STATIC).replace(os.sep, "/")
                  for folder, _, names in os.walk(STATIC) for name in names)


def filled(rule: str, message_id: str) -> str:
    """A rule's path with its variables filled: a real message, its view, a real file."""
    values = {"name": f"{message_id}.html", "part_id": "1", "__rest__": static_files()[0]}
    return _VARIABLE.sub(lambda match: values.get(match[1], message_id), rule)


def guarded_requests(message_id: str) -> Iterator[tuple[str, str]]:
    """(method, path): every route and method of the app but the probes, then more paths."""
    for rule in app.url_map.iter_rules():
        for method in sorted(rule.methods or ()):
            if rule.rule not in OPEN:
                yield method, filled(rule.rule, message_id)
    for name in static_files():
        yield "GET", f"/static/{name}"
    for path in EXTRA_PATHS:
        yield "GET", path


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


class WebAuthTests(unittest.TestCase):
    daemon: ClassVar[Daemon]
    base: ClassVar[str]
    message_id: ClassVar[str]

    @classmethod
    def setUpClass(cls) -> None:
        daemon = Daemon({"mailsink": {"isolation": "user"},
                         "smtp": {"tls": "none", "auth": "none"},
                         "web": {"auth": "required"},
                         "auth": {"password_file": "passwords", "admins": ADMIN}})
        cls.addClassCleanup(daemon.close)
        with open(os.path.join(daemon.root, "passwords"), "w", encoding="utf-8") as stream:
            stream.write(f"{ADMIN}:{hash_bcrypt(ADMIN_PASSWORD.encode(), rounds=4)}\n"
                         f"{USER}:{{PLAIN}}{USER_PASSWORD}\n")
        daemon.start()
        cls.daemon = daemon
        cls.base = f"http://127.0.0.1:{daemon.ports['web']}"
        with smtplib.SMTP("127.0.0.1", daemon.ports["smtp"], timeout=TIMEOUT) as client:
            client.send_message(html_message(), from_addr="app@example.com",
                                to_addrs=["dev@example.com"])
        listed = cls.get_json("/api/v1/messages", (ADMIN, ADMIN_PASSWORD))
        cls.message_id = listed["messages"][0]["ID"]

    def setUp(self) -> None:
        if not self.daemon.running:
            self.fail(f"the daemon is gone; log:\n{self.daemon.log_text()[-4000:]}")

    # Clients.

    @classmethod
    def get_json(cls, path: str, credentials: tuple[str, str]) -> Any:
        answer, body = cls.urllib("GET", path, credentials, read=True)
        assert answer.status == 200, (path, answer.status, body)
        return json.loads(body)

    @classmethod
    def urllib(cls, method: str, path: str, credentials: tuple[str, str] | None = None, *,
               answer_challenge: bool = False, read: bool = False) -> tuple[Answer, bytes]:
        """
        One request. With C{answer_challenge}, the credentials are given only when the
        server asks (urllib's Basic handler, as a browser does); else they are sent at once.
        """
        data = None if method in ("GET", "HEAD") else NOT_JSON
        request = urllib.request.Request(cls.base + path, data=data, method=method)
        if data is not None:
            request.add_header("Content-Type", "text/plain")
        opener = _DIRECT
        if credentials is not None and answer_challenge:
            passwords = urllib.request.HTTPPasswordMgrWithDefaultRealm()
            passwords.add_password(None, cls.base + "/", *credentials)
            opener = urllib.request.build_opener(
                urllib.request.ProxyHandler({}), urllib.request.HTTPBasicAuthHandler(passwords))
        elif credentials is not None:
            request.add_header("Authorization", basic(*credentials))
        try:
            response = opener.open(request, timeout=TIMEOUT)
        except urllib.error.HTTPError as error:
            with error:
                return Answer(error.code, dict(error.headers.items())), error.read()
        with response:  # an event stream never ends: its headers are the answer
            body = response.read() if read else b""
            return Answer(response.status, dict(response.headers.items())), body

    @classmethod
    def curl(cls, method: str, path: str, credentials: tuple[str, str] | None = None) -> Answer:
        """One request with curl; its status and headers (read as they come, streams too)."""
        command = ["curl", "-sS", "--noproxy", "*", "--max-time", str(TIMEOUT)]
        if method == "HEAD":
            command += ["--head"]
        else:
            command += ["-o", "/dev/null", "-D", "-", "-X", method]
        if method not in ("GET", "HEAD"):
            command += ["-H", "Content-Type: text/plain", "--data-binary", NOT_JSON.decode()]
        if credentials is not None:
            command += ["-u", ":".join(credentials)]
        process = subprocess.Popen([*command, cls.base + path], stdout=subprocess.PIPE,
                                   stdin=subprocess.DEVNULL)
        try:
            head = _read_head(process, time.monotonic() + TIMEOUT)
        finally:
            process.kill()
            process.wait(TIMEOUT)
        status_line, *lines = head.decode("latin-1").split("\r\n")
        headers = dict(line.split(": ", 1) for line in lines if ": " in line)
        return Answer(int(status_line.split()[1]), headers)

    def websocket_status(self, credentials: tuple[str, str] | None) -> int:
        """The status of a WebSocket handshake on C{/api/events}."""
        lines = ["GET /api/events HTTP/1.1", f"Host: 127.0.0.1:{self.daemon.ports['web']}",
                 "Upgrade: websocket", "Connection: Upgrade",
                 "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Version: 13"]
        if credentials is not None:
            lines.append(f"Authorization: {basic(*credentials)}")
        with socket.create_connection(("127.0.0.1", self.daemon.ports["web"]),
                                      timeout=TIMEOUT) as connection:
            connection.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
            head = b""
            while b"\r\n" not in head:
                chunk = connection.recv(4096)
                if not chunk:
                    break
                head += chunk
        return int(head.split(b" ", 2)[1])

    def require_curl(self) -> None:
        """Skip without curl, unless under CI (C{.ci/run} installs it)."""
        if shutil.which("curl") is None and os.environ.get("CI") != "true":
            self.skipTest("curl is not installed (apt-get install curl)")

    # Checks.

    def assert_challenged(self, answer: Answer, where: str) -> None:
        self.assertEqual(answer.status, 401, where)
        challenge = answer.headers.get("www-authenticate", "")
        self.assertTrue(challenge.startswith(CHALLENGE), (where, challenge))

    def assert_served(self, answer: Answer, where: str) -> None:
        self.assertNotEqual(answer.status, 401, where)
        self.assertLess(answer.status, 500, where)
        self.assertNotIn("www-authenticate", answer.headers, where)

    def test_every_path_needs_the_right_credentials_urllib(self) -> None:
        asked = list(guarded_requests(self.message_id))
        self.assertIn(("GET", "/"), asked)
        self.assertIn(("GET", "/metrics"), asked)
        self.assertIn(("GET", "/api/v1/events"), asked)
        self.assertIn(("GET", f"/view/{self.message_id}.html"), asked)
        for method, path in asked:
            where = f"urllib {method} {path}"
            self.assert_challenged(self.urllib(method, path)[0], where + " (none)")
            self.assert_challenged(self.urllib(method, path, WRONG)[0], where + " (wrong)")
            self.assert_challenged(self.urllib(method, path, WRONG, answer_challenge=True)[0],
                                   where + " (wrong, on challenge)")
            answer, _ = self.urllib(method, path, (ADMIN, ADMIN_PASSWORD),
                                    answer_challenge=True)
            self.assert_served(answer, where)
        self.assertEqual(self.get_json("/api/v1/messages", (ADMIN, ADMIN_PASSWORD))["total"], 1)

    def test_every_path_needs_the_right_credentials_curl(self) -> None:
        self.require_curl()
        for method, path in guarded_requests(self.message_id):
            where = f"curl {method} {path}"
            self.assert_challenged(self.curl(method, path), where + " (none)")
            self.assert_challenged(self.curl(method, path, WRONG), where + " (wrong)")
            self.assert_served(self.curl(method, path, (ADMIN, ADMIN_PASSWORD)), where)

    def test_probes_stay_open(self) -> None:
        self.require_curl()
        for path in OPEN:
            for credentials in (None, WRONG):
                answer, body = self.urllib("GET", path, credentials, read=True)
                self.assertEqual((answer.status, body), (200, b"ok"), path)
                self.assertEqual(self.curl("GET", path, credentials).status, 200, path)

    def test_right_credentials_serve_page_files_message_and_streams(self) -> None:
        admin = (ADMIN, ADMIN_PASSWORD)
        answer, page = self.urllib("GET", "/", admin, read=True)
        self.assertEqual(answer.status, 200)
        scripts = re.findall(rb'<script[^>]* src="(static/[^"]+)"', page)  # relative to /
        self.assertTrue(scripts, page)
        for script in scripts:
            answer, code = self.urllib("GET", "/" + script.decode(), admin, read=True)
            self.assertEqual(answer.status, 200, script)
            self.assertTrue(code, script)
        answer, view = self.urllib("GET", f"/view/{self.message_id}.html", admin, read=True)
        self.assertEqual(answer.status, 200)
        self.assertIn(b"Hello from SMTP", view)
        answer, _ = self.urllib("GET", "/api/v1/events", admin)
        self.assertEqual(answer.status, 200)
        self.assertTrue(answer.headers["content-type"].startswith("text/event-stream"))
        self.assertEqual(self.websocket_status(None), 401)
        self.assertEqual(self.websocket_status(WRONG), 401)
        self.assertEqual(self.websocket_status(admin), 101)

    def test_users_still_see_only_their_own_mailbox(self) -> None:
        user = (USER, USER_PASSWORD)
        self.assertEqual(self.get_json("/api/v1/messages", user)["total"], 0)
        answer, _ = self.urllib("GET", f"/api/v1/message/{self.message_id}", user)
        self.assertEqual(answer.status, 404)
        answer, _ = self.urllib("GET", "/", user)
        self.assertEqual(answer.status, 200)

    def test_browser_logs_in_once_and_the_page_reuses_it(self) -> None:
        sync_api = load_playwright()
        playwright = sync_api.sync_playwright().start()
        self.addCleanup(playwright.stop)
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS,
                                             timeout=LAUNCH_TIMEOUT_MS)
        self.addCleanup(browser.close)

        # Without credentials to give, the login prompt is dismissed: no page.
        anonymous = browser.new_context()
        anonymous.set_default_timeout(STEP_TIMEOUT_MS)
        refused_page = anonymous.new_page()
        seen: list[Any] = []
        refused_page.on("response", lambda response: seen.append(response))
        with self.assertRaisesRegex(sync_api.Error, "ERR_INVALID_AUTH_CREDENTIALS"):
            refused_page.goto(self.base + "/")
        self.assertEqual([(r.status, r.url) for r in seen], [(401, self.base + "/")])
        self.assertTrue(seen[0].headers["www-authenticate"].startswith(CHALLENGE))

        since = len(self.daemon.log_text())
        context = browser.new_context(http_credentials={"username": ADMIN,
                                                        "password": ADMIN_PASSWORD})
        context.set_default_timeout(STEP_TIMEOUT_MS)
        page = context.new_page()
        problems: list[str] = []
        page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
        opened = page.goto(self.base + "/", wait_until="load")
        self.assertIsNotNone(opened)
        self.assertEqual(opened.status, 200)
        expect = sync_api.expect
        expect(page.locator("#live-indicator")).to_have_text("live")  # the SSE stream is open
        rows = page.locator("#message-list .message-row")
        expect(rows).to_have_count(1)
        rows.first.click()
        expect(page.locator("#message-subject")).to_have_text(SUBJECT)
        expect(page.frame_locator("#html-frame").locator("#hello")).to_have_text(
            "Hello from SMTP")
        self.assertEqual(problems, [])

        # The daemon's access log (a line per finished request): one challenge, for the
        # page; then the page's files, API calls and message frame came with the login
        # (the event stream too: it is "live", and a refusal would be a logged 401).
        frame = f'"GET /view/{self.message_id}.html HTTP/1.1" 200 '
        log = self.daemon.wait_for_log(lambda text: frame in text, since=since)
        browser_lines = [line for line in log.splitlines() if "HeadlessChrome" in line]
        refused = [line for line in browser_lines if re.search(r'HTTP/1\.1" 401 ', line)]
        self.assertEqual(len(refused), 1, refused)
        self.assertIn('"GET / HTTP/1.1" 401 ', refused[0])
        for request in ("GET /static/", "GET /api/v1/messages",
                        f"GET /view/{self.message_id}.html"):
            self.assertTrue(any(f'"{request}' in line and '" 200 ' in line
                                for line in browser_lines), (request, browser_lines))


def _read_head(process: subprocess.Popen[bytes], deadline: float) -> bytes:
    """The header block curl printed, read as it arrives (an event stream never ends)."""
    assert process.stdout is not None
    descriptor = process.stdout.fileno()
    received = b""
    while b"\r\n\r\n" not in received:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"curl gave no complete headers in time: {received!r}")
        readable, _, _ = select.select([descriptor], [], [], remaining)
        if readable:
            chunk = os.read(descriptor, 65536)
            if not chunk:
                raise AssertionError(f"curl ended without complete headers: {received!r}")
            received += chunk
    return received.split(b"\r\n\r\n", 1)[0]
