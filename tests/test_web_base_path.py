"""
C{[web] base_path} in memory (L{mailsink.web.prefix.BasePath} in front of the whole app):
the page, the API, the message HTML and its C{cid:} images, and the event stream under
the prefix; nothing outside it but a redirect to the prefix and the probes; the guard of
C{auth = required} in front of everything under it but the probes. The page's own URLs
are relative, so they follow the prefix (tests/test_e2e_nginx.py runs it in Chromium).
"""

from __future__ import annotations

import json
import re
from email.message import EmailMessage
from typing import Any
from urllib.parse import urljoin

from test_web_api import WebTestCase, _Collector, message_bytes
from test_web_guard import basic
from treq.testing import StubTreq
from twisted.trial.unittest import TestCase
from twisted.web.resource import Resource
from twisted.web.test.requesthelper import DummyRequest

from mailsink.web.prefix import BasePath

BASE = "/mailsink/"
PNG = b"\x89PNG\r\n\x1a\n fake image"


def cid_message() -> bytes:
    """An HTML message showing an inline image by its Content-ID."""
    message = EmailMessage()
    message["From"] = "app@example.com"
    message["To"] = "dev@example.com"
    message["Subject"] = "with a logo"
    message.set_content("text")
    message.add_alternative('<p><img src="cid:logo@example.com"></p>', subtype="html")
    html = message.get_payload()[1]
    html.add_related(PNG, maintype="image", subtype="png", cid="<logo@example.com>")
    return message.as_bytes()


class PrefixedTestCase(WebTestCase):
    base_path = BASE

    def setUp(self) -> None:
        super().setUp()
        self.treq = StubTreq(self.web.resource(self.base_path))


class UnderThePrefixTests(PrefixedTestCase):
    def test_page_and_its_relative_urls(self) -> None:
        response, body = self.request("GET", BASE)
        self.assertEqual(response.code, 200)
        self.assertIn("default-src 'self'",
                      response.headers.getRawHeaders("Content-Security-Policy")[0])
        self.assertIn(b'<script type="module" src="static/js/main.js">', body)
        self.assertIn(b'href="static/style.css"', body)
        self.assertIsNone(re.search(rb'(?:src|href)="/', body), "an absolute URL in the page")

    def test_api_under_the_prefix(self) -> None:
        message_id = self.store(message_bytes("prefixed"))
        listed = self.get_json(BASE + "api/v1/messages")
        self.assertEqual([m["ID"] for m in listed["messages"]], [message_id])
        self.assertEqual(self.get_json(f"{BASE}api/v1/message/{message_id}")["Subject"],
                         "prefixed")
        self.assertEqual(self.get_json(BASE + "api/v1/search?query=prefix")["messages_count"], 1)
        response, _ = self.request("DELETE", BASE + "api/v1/messages", data=b"{}",
                                   headers={"Content-Type": ["application/json"]})
        self.assertEqual((response.code, self.index.summaries), (200, {}))
        response, _ = self.request("GET", BASE + "api/v1/no-such-route")
        self.assertEqual(response.code, 404)

    def test_message_html_and_its_cid_image(self) -> None:
        """The image's URL, relative to the HTML's, lands under the prefix."""
        message_id = self.store(cid_message())
        view_url = f"http://sink{BASE}view/{message_id}.html"
        response, html = self.request("GET", f"{BASE}view/{message_id}.html")
        self.assertEqual(response.code, 200)
        found = re.search(rb'<img src="([^"]+)"', html)
        assert found is not None, html
        image_url = urljoin(view_url, found[1].decode())
        self.assertTrue(image_url.startswith(f"http://sink{BASE}api/v1/message/"), image_url)
        response, image = self.request("GET", image_url[len("http://sink"):])
        self.assertEqual((response.code, image), (200, PNG))

    def test_event_stream_under_the_prefix(self) -> None:
        response = self.successResultOf(self.treq.get(f"http://sink{BASE}api/v1/events",
                                                      unbuffered=True))
        self.assertEqual(response.code, 200)
        chunks: list[bytes] = []
        response.deliverBody(_Collector(chunks))
        message_id = self.store(message_bytes("live"))
        self.hub.index_event("new", self.index.summaries[message_id])
        self.treq.flush()
        events = [json.loads(line[6:]) for line in b"".join(chunks).decode().split("\n\n")
                  if line.startswith("data: ")]
        self.assertEqual([(e["Type"], e["Data"]["ID"]) for e in events], [("new", message_id)])

    def test_a_deeper_prefix(self) -> None:
        self.treq = StubTreq(self.web.resource("/tools/mail/"))
        message_id = self.store(message_bytes("deep"))
        listed = self.get_json("/tools/mail/api/v1/messages")
        self.assertEqual([m["ID"] for m in listed["messages"]], [message_id])
        for outside in ("/tools/api/v1/messages", "/mail/api/v1/messages",
                        "/api/v1/messages"):
            response, _ = self.request("GET", outside)
            self.assertEqual(response.code, 404, outside)
        response, _ = self.request("GET", "/tools/mail", allow_redirects=False)
        self.assertEqual((response.code, response.headers.getRawHeaders("Location")),
                         (302, ["mail/"]))


class OutsideThePrefixTests(PrefixedTestCase):
    def test_nothing_outside_the_prefix(self) -> None:
        self.store(message_bytes("hidden"))
        for path in ("/", "/api/v1/messages", "/api/v1/events", "/api/events",
                     "/static/js/main.js", "/view/x.html", "/metrics", "/mailsinkx/",
                     "/other/mailsink/", "/mailsink.html", "/livez/", "/readyz/x"):
            response, body = self.request("GET", path)
            self.assertEqual(response.code, 404, path)
            self.assertEqual(body, b"not found: this server serves under /mailsink/", path)
            self.assertEqual(response.headers.getRawHeaders("X-Content-Type-Options"),
                             ["nosniff"], path)
        self.assertEqual(len(self.index.summaries), 1)

    def test_the_prefix_without_its_slash_is_redirected(self) -> None:
        """Relative Location, so it holds behind a proxy that maps another path to this one."""
        for path, location in [("/mailsink", "mailsink/"),
                               ("/mailsink?a=1&b=2", "mailsink/?a=1&b=2")]:
            response, _ = self.request("GET", path, allow_redirects=False)
            self.assertEqual((response.code, response.headers.getRawHeaders("Location")),
                             (302, [location]), path)
            self.assertEqual(urljoin("http://proxy/x" + path, location),
                             "http://proxy/x/mailsink/" + path[len("/mailsink"):])

    def test_probes_at_the_root_and_under_the_prefix(self) -> None:
        for path in ("/livez", "/readyz", BASE + "livez", BASE + "readyz"):
            response, body = self.request("GET", path)
            self.assertEqual((response.code, body), (200, b"ok"), path)


class RootTests(PrefixedTestCase):
    base_path = "/"

    def test_the_default_serves_at_the_root(self) -> None:
        message_id = self.store(message_bytes("root"))
        self.assertEqual([m["ID"] for m in self.get_json("/api/v1/messages")["messages"]],
                         [message_id])
        response, _ = self.request("GET", "/mailsink/api/v1/messages")
        self.assertEqual(response.code, 404)


class GuardedTests(PrefixedTestCase):
    auth_required = True

    def test_everything_under_the_prefix_asks_for_credentials(self) -> None:
        for path in (BASE, BASE + "api/v1/messages", BASE + "static/js/main.js",
                     BASE + "api/v1/events", BASE + "view/x.html", BASE + "%6civez",
                     BASE + "livez/", BASE + "metrics"):
            response, body = self.request("GET", path)
            self.assertEqual((response.code, body), (401, b"authentication required"), path)
        response, _ = self.request("GET", BASE + "api/v1/messages",
                                   headers=basic("alice", "wonderland"))
        self.assertEqual(response.code, 200)

    def test_probes_stay_open(self) -> None:
        for path in ("/livez", "/readyz", BASE + "livez", BASE + "readyz",
                     "/mail%73ink/livez"):
            response, body = self.request("GET", path)
            self.assertEqual((response.code, body), (200, b"ok"), path)
        response, _ = self.request("GET", "/%6civez")
        self.assertEqual(response.code, 404)

    def test_outside_the_prefix_is_not_found_without_credentials(self) -> None:
        response, _ = self.request("GET", "/api/v1/messages")
        self.assertEqual(response.code, 404)


class BasePathResourceTests(TestCase):
    """The resource alone: what the wrapped resource sees."""

    def test_prefix_moves_to_prepath(self) -> None:
        seen: list[tuple[list[bytes], list[bytes]]] = []

        class Behind(Resource):
            isLeaf = True

            def render(self, request: Any) -> bytes:
                seen.append((list(request.prepath), list(request.postpath)))
                return b""

        resource = BasePath("/a/b/", Behind())
        for postpath in ([b"a", b"b", b""], [b"a", b"b", b"api", b"v1"], [b"a", b"c", b""]):
            request = DummyRequest(postpath)
            request.path = b"/" + b"/".join(postpath)
            resource.render(request)
        self.assertEqual(seen, [([b"a", b"b"], [b""]), ([b"a", b"b"], [b"api", b"v1"])])
