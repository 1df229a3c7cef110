"""
The webhook (C{[web] webhook_url}): one POST of Mailpit's MessageSummary per new message,
rate-limited, bounded, failures logged, intake never affected.

Most tests drive L{Webhook} with a fake HTTP client and a L{Clock}; one uses treq's
L{StubTreq} for the real request shape; one runs the real daemon against a recording HTTP
server on loopback; one checks that a bad URL stops start-up naming C{[web] webhook_url}.
"""

from __future__ import annotations

import json
import smtplib
import threading
import time
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

from daemon import Daemon, run_twistd
from treq.testing import StubTreq
from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.task import Clock
from twisted.logger import Logger, formatEvent
from twisted.trial.unittest import TestCase
from twisted.web.resource import Resource

from mailsink.config import ConfigError
from mailsink.message.shapes import Address, Facts, Summary
from mailsink.web import webhook as module
from mailsink.web.webhook import Webhook, check_url

URL = "http://hooks.example/mail"
SECRET = "the secret body of the message"


def summary(number: int) -> Summary:
    facts = Facts(message_id=f"m{number}@x", sender=Address("A", "a@x"),
                  to=(Address("", "b@x"),), subject=f"subject {number}", snippet=SECRET)
    return Summary(f"id{number}", "", False, 1_700_000_000.0 + number, 100 + number, facts)


class FakeResponse:
    length = 0

    def __init__(self, code: int) -> None:
        self.code = code


class FakeClient:
    """Records posts; each answers when the test says (or at once, with C{code})."""

    def __init__(self, code: int | None = 200) -> None:
        self.code = code
        self.posts: list[tuple[str, bytes, Any, dict[str, Any]]] = []
        self.pending: list[Deferred[Any]] = []

    def post(self, url: str, data: bytes, headers: Any, **kwargs: Any) -> Deferred[Any]:
        self.posts.append((url, data, headers, kwargs))
        if self.code is not None:
            return succeed(FakeResponse(self.code))
        answer: Deferred[Any] = Deferred()
        self.pending.append(answer)
        return answer


class WebhookTests(TestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1_000)
        self.events: list[dict[str, Any]] = []
        self.patch(module, "log", Logger(observer=self.events.append))

    def lines(self) -> list[str]:
        return [formatEvent(event) for event in self.events]

    def hook(self, client: Any, **kwargs: Any) -> Webhook:
        hook = Webhook(URL, client, self.clock, **kwargs)
        self.addCleanup(hook.stop)
        return hook

    def test_one_post_per_new_message(self) -> None:
        client = FakeClient()
        hook = self.hook(client)
        hook.index_event("new", summary(1))
        hook.index_event("new", summary(2))
        self.assertEqual(len(client.posts), 2)
        url, body, headers, kwargs = client.posts[0]
        self.assertEqual(url, URL)
        self.assertEqual(json.loads(body), summary(1).to_json())
        self.assertEqual(json.loads(client.posts[1][1])["ID"], "id2")
        self.assertEqual(headers, {b"Content-Type": [b"application/json"]})
        self.assertFalse(kwargs["allow_redirects"])
        self.assertEqual(self.lines(), [])

    def test_other_events_do_not_post(self) -> None:
        client = FakeClient()
        hook = self.hook(client)
        hook.index_event("update", summary(1))
        hook.index_event("delete", ["id1"])
        hook.index_event("truncate", None)
        hook.index_event("stats", {"Total": 1})
        self.assertEqual(client.posts, [])
        self.assertEqual(hook.queued, 0)

    def test_rate_limit(self) -> None:
        client = FakeClient()
        hook = self.hook(client, rate=5)
        for number in range(20):
            hook.index_event("new", summary(number))
        self.assertEqual(len(client.posts), 5)
        self.assertEqual(hook.queued, 15)
        self.clock.advance(0.5)
        self.assertLessEqual(len(client.posts), 8)
        self.clock.advance(0.5)
        self.assertEqual(len(client.posts), 10)
        for _ in range(20):
            self.clock.advance(0.1)
        self.assertEqual(len(client.posts), 20)
        ids = [json.loads(post[1])["ID"] for post in client.posts]
        self.assertEqual(ids, [f"id{number}" for number in range(20)])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_in_flight_bound(self) -> None:
        client = FakeClient(code=None)
        hook = self.hook(client, max_in_flight=2)
        for number in range(4):
            hook.index_event("new", summary(number))
        self.assertEqual(len(client.posts), 2)
        self.assertEqual(hook.in_flight, 2)
        client.pending[0].callback(FakeResponse(204))
        self.assertEqual(len(client.posts), 3)
        self.assertEqual(self.lines(), [])

    def test_queue_bound_drops_with_one_warning(self) -> None:
        client = FakeClient()
        hook = self.hook(client, rate=1, queue_limit=3)
        for number in range(10):
            hook.index_event("new", summary(number))
        self.assertEqual(len(client.posts), 1)
        self.assertEqual(hook.queued, 3)
        warnings = [line for line in self.lines() if "dropping" in line]
        self.assertEqual(len(warnings), 1)
        self.assertIn(URL, warnings[0])
        for _ in range(3):
            self.clock.advance(1)
        self.assertEqual(len(client.posts), 4)
        self.assertTrue(any("6 messages were not posted" in line for line in self.lines()))
        # A later burst warns again.
        for number in range(10, 20):
            hook.index_event("new", summary(number))
        self.assertEqual(len([line for line in self.lines() if "dropping" in line]), 2)

    def test_server_error_logged(self) -> None:
        client = FakeClient(code=500)
        hook = self.hook(client)
        hook.index_event("new", summary(1))
        hook.index_event("new", summary(2))
        lines = self.lines()
        self.assertEqual(lines, [f"webhook {URL}: HTTP 500"] * 2)
        self.assertEqual(hook.in_flight, 0)

    def test_connection_error_logged(self) -> None:
        client = FakeClient(code=None)
        hook = self.hook(client)
        hook.index_event("new", summary(1))
        client.pending[0].errback(ConnectionRefusedError("nobody listens"))
        [line] = self.lines()
        self.assertTrue(line.startswith(f"webhook {URL}: ConnectionRefusedError"), line)
        self.assertNotIn(SECRET, line)
        self.assertEqual(hook.in_flight, 0)

    def test_timeout_logged_and_next_goes(self) -> None:
        client = FakeClient(code=None)
        hook = self.hook(client, max_in_flight=1, timeout=10)
        hook.index_event("new", summary(1))
        hook.index_event("new", summary(2))
        self.assertEqual(len(client.posts), 1)
        self.clock.advance(10)
        self.assertEqual(self.lines(), [f"webhook {URL}: no answer within 10 s"])
        self.assertEqual(len(client.posts), 2)

    def test_client_raising_does_not_reach_intake(self) -> None:
        class Broken:
            def post(self, *args: Any, **kwargs: Any) -> Any:
                raise ValueError("broken client")

        hook = self.hook(Broken())
        hook.index_event("new", summary(1))
        [line] = self.lines()
        self.assertIn("broken client", line)

    def test_credentials_not_logged(self) -> None:
        client = FakeClient(code=503)
        hook = Webhook("https://user:pw@hooks.example/x", client, self.clock)
        hook.index_event("new", summary(1))
        self.assertEqual(client.posts[0][0], "https://user:pw@hooks.example/x")
        self.assertEqual(self.lines(), ["webhook https://***@hooks.example/x: HTTP 503"])

    def test_with_treq(self) -> None:
        received: list[tuple[bytes, bytes | None, bytes]] = []

        class Hook(Resource):
            isLeaf = True

            def render_POST(self, request: Any) -> bytes:
                received.append((request.method, request.getHeader(b"content-type"),
                                 request.content.read()))
                request.setResponseCode(202)
                return b"ok"

        stub = StubTreq(Hook())
        hook = self.hook(stub)
        hook.index_event("new", summary(7))
        stub.flush()
        [(method, content_type, body)] = received
        self.assertEqual((method, content_type), (b"POST", b"application/json"))
        self.assertEqual(json.loads(body), summary(7).to_json())
        self.assertEqual(hook.in_flight, 0)
        self.assertEqual(self.lines(), [])


class CheckURLTests(TestCase):
    def test_good(self) -> None:
        for url in ("http://127.0.0.1:9/x", "https://hooks.example/a?b=c", "http://[::1]/"):
            self.assertEqual(check_url("web", url), url)

    def test_bad(self) -> None:
        for url in ("ftp://hooks.example/", "hooks.example/x", "http://", "http:///path",
                    "http://host:notaport/", "javascript:alert(1)"):
            with self.assertRaises(ConfigError) as caught:
                check_url("web:two", url)
            self.assertTrue(str(caught.exception).startswith("[web:two] webhook_url: "),
                            str(caught.exception))


class _Recorder(BaseHTTPRequestHandler):
    posts: list[tuple[str, str | None, bytes]]

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length)
        self.posts.append((self.path, self.headers.get("Content-Type"), body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


class EndToEndTests(TestCase):
    def test_daemon_posts_new_message(self) -> None:
        posts: list[tuple[str, str | None, bytes]] = []
        handler = type("Handler", (_Recorder,), {"posts": posts})
        server = HTTPServer(("127.0.0.1", 0), handler)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        self.addCleanup(thread.join, 5)
        self.addCleanup(server.server_close)
        self.addCleanup(server.shutdown)
        url = f"http://127.0.0.1:{server.server_address[1]}/hook"
        daemon = Daemon.for_test(self, {"smtp": {"tls": "none"},
                                        "web": {"webhook_url": url}})
        message = EmailMessage()
        message["From"] = "sender@example.com"
        message["To"] = "rcpt@example.com"
        message["Subject"] = "Webhook e2e"
        message.set_content(SECRET)
        with smtplib.SMTP("127.0.0.1", daemon.ports["smtp"], timeout=10) as smtp:
            smtp.send_message(message)
        deadline = time.monotonic() + 5
        while not posts and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertEqual(len(posts), 1, daemon.log_text())
        path, content_type, body = posts[0]
        self.assertEqual((path, content_type), ("/hook", "application/json"))
        summary = json.loads(body)
        self.assertEqual(summary["Subject"], "Webhook e2e")
        self.assertEqual(summary["To"], [{"Name": "", "Address": "rcpt@example.com"}])
        self.assertIn("ID", summary)

    def test_bad_url_stops_startup(self) -> None:
        daemon = Daemon.for_test(self, {"smtp": {"tls": "none"},
                                        "web": {"webhook_url": "ftp://hooks.example/"}},
                                 start=False)
        result = run_twistd(["-n", "--pidfile=", "mailsink", "-c", daemon.config_path],
                            cwd=daemon.root)
        self.assertNotEqual(result.returncode, 0, result.stdout)
        self.assertIn("[web] webhook_url", result.stdout)
        self.assertNotIn("Traceback", result.stdout)
