"""
End to end behind a real reverse proxy: Debian's nginx, started here with its own config on
a free loopback port, forwarding C{/mailsink/} to the real daemon (C{[web] base_path =
/mailsink/}, C{auth = required}), as README.rst's example does.

Through nginx, headless Chromium (see tests/test_e2e_web.py) loads the page, sees a message
sent with smtplib appear live (the event stream through the proxy), opens it
(its HTML in the frame, an attachment link under the prefix); a raw WebSocket handshake on
C{/mailsink/api/events} is upgraded through nginx and carries the next message's event.
Directly at the daemon, nothing is served outside the prefix but the probes.

Without nginx the test is skipped, unless C{CI=true}: then it fails.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import shutil
import signal
import smtplib
import socket
import struct
import subprocess
import tempfile
import time
import unittest
import urllib.error
import urllib.request
from email.message import EmailMessage
from typing import Any

from daemon import Daemon, free_port
from test_e2e_web import (
    ATTACHMENT,
    SUBJECT,
    attached_message,
    load_playwright,
    open_page,
    plain_message,
)

NGINX = "/usr/sbin/nginx"
PREFIX = "/mailsink/"
USER, PASSWORD = "alice", "wonderland"
START_TIMEOUT = 15.0
"""Seconds nginx may take to answer through to the daemon."""
STOP_TIMEOUT = 10.0
TIMEOUT = 10.0
"""Bound on each request, SMTP conversation and WebSocket read."""
POLL_INTERVAL = 0.05
_WEBSOCKET_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))

NGINX_CONF = """\
daemon off;
master_process off;
pid {root}/nginx.pid;
error_log {root}/error.log info;
events {{ worker_connections 64; }}
http {{
    access_log {root}/access.log;
    client_body_temp_path {root}/client_body;
    proxy_temp_path {root}/proxy;
    fastcgi_temp_path {root}/fastcgi;
    uwsgi_temp_path {root}/uwsgi;
    scgi_temp_path {root}/scgi;
    map $http_upgrade $connection_upgrade {{
        default upgrade;
        ''      close;
    }}
    server {{
        listen 127.0.0.1:{port};
        location /mailsink/ {{
            proxy_pass http://127.0.0.1:{backend};
            proxy_http_version 1.1;
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_buffering off;
            proxy_read_timeout 1h;
        }}
    }}
}}
"""
"""README.rst's example, with every path nginx writes in the test's own folder."""


class Nginx:
    """One nginx in the foreground, in its own process group, proxying to C{backend}."""

    def __init__(self, backend: int) -> None:
        self.root = tempfile.mkdtemp(prefix="mailsink-nginx-")
        self.backend = backend
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, attempts: int = 3) -> None:
        """Start on a free port (another if it was taken meanwhile) and wait until it proxies."""
        for _ in range(attempts):
            self.port = free_port()
            conf = os.path.join(self.root, "nginx.conf")
            with open(conf, "w", encoding="utf-8") as stream:
                stream.write(NGINX_CONF.format(root=self.root, port=self.port,
                                               backend=self.backend))
            with open(os.path.join(self.root, "output.log"), "ab") as output:
                self.process = subprocess.Popen(
                    [NGINX, "-e", os.path.join(self.root, "error.log"), "-p", self.root,
                     "-c", conf], stdin=subprocess.DEVNULL, stdout=output,
                    stderr=subprocess.STDOUT, start_new_session=True)
            if self._wait_ready():
                return
            if "Address already in use" not in self.log():
                break
        raise AssertionError(f"nginx did not start; its log:\n{self.log()}")

    def _wait_ready(self) -> bool:
        """True once C{GET /mailsink/readyz} answers 200 through nginx; False if it exited."""
        assert self.process is not None
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            url = f"http://127.0.0.1:{self.port}{PREFIX}readyz"
            with contextlib.suppress(OSError), _DIRECT.open(url, timeout=TIMEOUT) as response:
                if response.status == 200:  # (a 502 until the daemon answers: an OSError)
                    return True
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=POLL_INTERVAL)
        raise AssertionError(f"nginx did not proxy within {START_TIMEOUT} s:\n{self.log()}")

    def paths_outside(self, prefix: str) -> list[str]:
        """The paths of requests nginx logged that were not under C{prefix}."""
        with open(os.path.join(self.root, "access.log"), encoding="utf-8") as stream:
            paths = [line.split('"')[1].split()[1] for line in stream if '"' in line]
        return [path for path in paths if not path.startswith(prefix)]

    def log(self) -> str:
        texts = []
        for name in ("output.log", "error.log"):
            with contextlib.suppress(OSError), open(os.path.join(self.root, name),
                                                    encoding="utf-8", errors="replace") as f:
                texts.append(f.read())
        return "\n".join(texts)

    def close(self) -> None:
        """SIGTERM to its process group, SIGKILL if that does not do; delete its folder."""
        process = self.process
        if process is not None and process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=STOP_TIMEOUT)
        shutil.rmtree(self.root, ignore_errors=True)


def authorization() -> str:
    return "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()


def get(url: str, credentials: bool = True) -> tuple[int, dict[str, str], bytes]:
    """GET C{url} (no proxy from the environment, no redirect followed)."""

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: Any) -> None:
            return None

    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), NoRedirect())
    request = urllib.request.Request(url)
    if credentials:
        request.add_header("Authorization", authorization())
    try:
        with opener.open(request, timeout=TIMEOUT) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def send(port: int, message: EmailMessage) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=TIMEOUT) as client:
        client.send_message(message, from_addr="app@example.com", to_addrs=["dev@example.com"])


class WebSocketClient:
    """The client side of RFC 6455, just enough to open and read text frames."""

    def __init__(self, port: int, path: str) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        key = base64.b64encode(os.urandom(16))
        self.sock.sendall(b"GET " + path.encode() + b" HTTP/1.1\r\n"
                          b"Host: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                          b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: " + key + b"\r\n"
                          b"Authorization: " + authorization().encode() + b"\r\n\r\n")
        self.buffer = b""
        while b"\r\n\r\n" not in self.buffer:
            self._fill()
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        self.status_line, *lines = head.decode("latin-1").split("\r\n")
        self.headers = {name.lower(): value.strip()
                        for name, _, value in (line.partition(":") for line in lines)}
        self.expected_accept = base64.b64encode(
            hashlib.sha1(key + _WEBSOCKET_GUID).digest()).decode()

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise AssertionError(f"the WebSocket closed; got {self.buffer!r}")
        self.buffer += chunk

    def _take(self, count: int) -> bytes:
        while len(self.buffer) < count:
            self._fill()
        taken, self.buffer = self.buffer[:count], self.buffer[count:]
        return taken

    def text_frame(self) -> str:
        """The next text frame's text (the server's frames are never masked or split here)."""
        while True:
            first, second = self._take(2)
            length = second & 0x7F
            if length == 126:
                (length,) = struct.unpack("!H", self._take(2))
            elif length == 127:
                (length,) = struct.unpack("!Q", self._take(8))
            payload = self._take(length)
            if first & 0x0F == 0x1:
                return payload.decode("utf-8")

    def close(self) -> None:
        self.sock.close()


class BehindNginxTests(unittest.TestCase):
    def setUp(self) -> None:
        if not os.access(NGINX, os.X_OK):
            problem = f"{NGINX} is missing (apt-get install nginx)"
            if os.environ.get("CI") == "true":
                raise AssertionError(problem)
            raise unittest.SkipTest(problem)
        self.daemon = Daemon.for_test(
            self, {"smtp": {"tls": "none", "auth": "none"},
                   "web": {"auth": "required", "base_path": PREFIX}},
            env={"MAILSINK_AUTH": f"{USER}:{PASSWORD}"})
        self.backend = f"http://127.0.0.1:{self.daemon.ports['web']}"
        self.nginx = Nginx(self.daemon.ports["web"])
        self.addCleanup(self.nginx.close)
        self.nginx.start()
        self.proxied = f"http://127.0.0.1:{self.nginx.port}{PREFIX}"

    def report(self) -> str:
        return (f"daemon log (tail):\n{self.daemon.log_text()[-3000:]}\n"
                f"nginx log (tail):\n{self.nginx.log()[-3000:]}")

    def test_page_list_message_and_live_update(self) -> None:
        expect = load_playwright().expect
        problems: list[str] = []
        page = open_page(self, problems,
                         http_credentials={"username": USER, "password": PASSWORD})
        page.on("response", lambda response: problems.append(
            f"{response.status} {response.url}") if response.status >= 400 else None)
        outside: list[str] = []
        page.on("request", lambda request: outside.append(request.url)
                if not request.url.startswith(self.proxied) else None)
        try:
            self.check_page(expect, page)
        except BaseException:
            print(f"page problems: {problems}\n{self.report()}")
            raise
        self.assertEqual(problems, [])
        self.assertEqual(outside, [], "requests outside the prefix")
        self.assertEqual(self.nginx.paths_outside(PREFIX), [])  # e.g. /favicon.ico

    def check_page(self, expect: Any, page: Any) -> None:
        send(self.daemon.ports["smtp"], plain_message())
        page.goto(self.proxied, wait_until="load")
        live = page.locator("#live-indicator")
        expect(live).to_have_text("live")
        rows = page.locator("#message-list .message-row")
        expect(rows).to_have_count(1)  # the list, through nginx

        # A live update: the event stream through nginx.
        send(self.daemon.ports["smtp"], attached_message())
        expect(rows).to_have_count(2)
        row = rows.first
        expect(row).to_contain_text(SUBJECT)
        message_id = row.get_attribute("data-id")

        # Open it: its HTML in the frame, its attachment, all under the prefix.
        row.click()
        expect(page.locator("#message-subject")).to_have_text(SUBJECT)
        expect(page.locator("#html-frame")).to_have_attribute(
            "src", f"{PREFIX}view/{message_id}.html")
        hello = page.frame_locator("#html-frame").locator("#hello")
        expect(hello).to_have_text("Hello from SMTP")
        page.locator('[data-tab="attachments"]').click()
        link = page.locator("#attachment-list a")
        href = link.get_attribute("href") or ""
        self.assertTrue(href.startswith(f"{PREFIX}api/v1/message/{message_id}/part/"), href)
        status, _, body = get(f"http://127.0.0.1:{self.nginx.port}{href}")
        self.assertEqual((status, body), (200, ATTACHMENT))
        page.locator('[data-tab="raw"]').click()
        expect(page.locator("#raw-body")).to_contain_text(f"Subject: {SUBJECT}")
        self.assertTrue(page.url.startswith(self.proxied), page.url)

    def test_websocket_through_nginx(self) -> None:
        client = WebSocketClient(self.nginx.port, f"{PREFIX}api/events")
        self.addCleanup(client.close)
        self.assertIn(" 101 ", client.status_line, self.report())
        self.assertEqual(client.headers.get("upgrade", "").lower(), "websocket")
        self.assertEqual(client.headers.get("sec-websocket-accept"), client.expected_accept)
        send(self.daemon.ports["smtp"], plain_message())
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            event = json.loads(client.text_frame())
            if event["Type"] == "new":
                self.assertEqual(event["Data"]["Subject"], plain_message()["Subject"])
                return
        self.fail(f"no 'new' event within {TIMEOUT} s")

    def test_paths_through_nginx_and_at_the_daemon(self) -> None:
        at_nginx = f"http://127.0.0.1:{self.nginx.port}"
        status, headers, _ = get(f"{at_nginx}/mailsink")  # nginx's own redirect
        self.assertEqual((status, headers.get("Location", "").endswith("/mailsink/")),
                         (301, True), headers)
        status, headers, body = get(f"{self.proxied}static/js/api.js")
        self.assertEqual((status, headers.get("Content-Type")),
                         (200, "text/javascript; charset=utf-8"))
        self.assertIn(b"import.meta.url", body)
        status, _, _ = get(self.proxied, credentials=False)
        self.assertEqual(status, 401)
        # At the daemon: the probes at the root too, nothing else outside the prefix.
        for path, expected in [("/readyz", 200), ("/livez", 200), ("/mailsink/livez", 200),
                               ("/", 404), ("/api/v1/messages", 404),
                               ("/static/js/main.js", 404)]:
            status, _, _ = get(self.backend + path, credentials=False)
            self.assertEqual(status, expected, path)
        status, headers, _ = get(self.backend + "/mailsink")
        self.assertEqual((status, headers.get("Location")), (302, "mailsink/"))
