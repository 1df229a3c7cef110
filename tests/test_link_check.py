"""
The link check in memory: which links a message yields (mailsink.checks.links, pure), and
how each is checked (mailsink.checks.link_check) against a twisted.web resource behind
treq's RequestTraversalAgent, with a Clock for the deadlines: HEAD then GET, redirects,
at most five at a time, ten seconds a link, failures as results, only http(s) requested.
"""

from __future__ import annotations

from email.message import EmailMessage
from typing import Any

from OpenSSL import SSL
from treq.testing import RequestTraversalAgent
from twisted.internet import defer
from twisted.internet import error as net
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase
from twisted.web.client import ResponseNeverReceived
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from mailsink.checks.link_check import (
    LINK_TIMEOUT,
    LinkChecker,
    LinkReport,
    LinkStatus,
    failure_status,
)
from mailsink.checks.links import MAX_LINKS, html_links, message_links, text_links
from mailsink.message import mime

# Mailpit's own link detection samples (internal/linkcheck), with what it finds in them.
MAILPIT_HTML = """
<html><head>
  <link rel=stylesheet href="http://remote-host/style.css"></link>
  <script async src="https://www.googletagmanager.com/gtag/js?id=ignored"></script>
</head><body><div>
  <p><a href="http://example.com">HTTP link</a></p>
  <p><a href="https://example.com">HTTPS link</a></p>
  <p><a href="HTTPS://EXAMPLE.COM">HTTPS link</a></p>
  <p><a href="http://localhost">Localhost link</a></p>
  <p><a href='https://127.0.0.1'>Single quotes link</a></p>
  <p><img src=https://example.com/image.jpg></p>
  <p href="http://invalid-link.com">This should be ignored</p>
  <p><a href="http://link with spaces">Link with spaces</a></p>
  <p><a href="http://example.com/?blaah=yes&amp;test=true">URL-encoded characters</a></p>
</div></body></html>
"""
MAILPIT_TEXT = """This is a line with http://example.com https://example.com
    HTTPS://EXAMPLE.COM
    [http://localhost]
    www.google.com < ignored
    |||http://example.com/?some=query-string|||
    <https://example.com/ link with spaces>
"""


class HtmlLinkTests(TestCase):
    def test_links_then_stylesheets_then_images_as_mailpit(self) -> None:
        self.assertEqual(list(html_links(MAILPIT_HTML)), [
            "http://example.com", "https://example.com", "HTTPS://EXAMPLE.COM",
            "http://localhost", "https://127.0.0.1", "http://link with spaces",
            "http://example.com/?blaah=yes&test=true",
            "http://remote-host/style.css",
            "https://example.com/image.jpg",
        ])

    def test_only_http_urls_whatever_they_hold(self) -> None:
        html = ('<a href="file:///etc/passwd">f</a>'
                '<a href="data:text/html,http://example.com/inside-data">d</a>'
                '<a href="javascript:location=\'http://example.com/inside-js\'">j</a>'
                '<a href="mailto:someone@example.com?body=http://example.com/x">m</a>'
                '<a href="ftp://example.com/file">ftp</a><a href="/relative">r</a>'
                '<a href="//example.com/scheme-relative">s</a>'
                '<img src="cid:logo@example.com"><img src="data:image/png;base64,iVBO">'
                '<link rel="icon" href="http://example.com/favicon.ico">'
                '<a href="  https://example.com/trimmed\n">t</a><a name="top">no href</a>')
        self.assertEqual(list(html_links(html)), ["https://example.com/trimmed"])

    def test_attribute_and_tag_names_in_any_case(self) -> None:
        html = ('<A HREF="http://example.com/a">a</A><LINK REL="Alternate StyleSheet" '
                'HREF="http://example.com/s.css"/><IMG SRC="http://example.com/i.png"/>')
        self.assertEqual(list(html_links(html)), [
            "http://example.com/a", "http://example.com/s.css", "http://example.com/i.png"])

    def test_broken_html_still_yields_its_links(self) -> None:
        html = '<table><tr><td><a href="http://example.com/a">x<td><img src=http://e.com/i>'
        self.assertEqual(list(html_links(html)), ["http://example.com/a", "http://e.com/i"])


class TextLinkTests(TestCase):
    def test_mailpit_sample(self) -> None:
        self.assertEqual(list(text_links(MAILPIT_TEXT)), [
            "http://example.com", "https://example.com", "HTTPS://EXAMPLE.COM",
            "http://localhost", "http://example.com/?some=query-string",
            "https://example.com/ link with spaces",
        ])

    def test_start_of_text_and_sentence_punctuation(self) -> None:
        text = ("https://example.com/first is first. See https://example.com/docs.\n"
                "Or (https://example.com/paren), or https://example.com/q?a=1&b=2!")
        self.assertEqual(list(text_links(text)), [
            "https://example.com/first", "https://example.com/docs",
            "https://example.com/paren", "https://example.com/q?a=1&b=2"])

    def test_bracketed_url_broken_across_lines(self) -> None:
        text = "Reset: <https://example.com/reset?token=abc\r\ndef>\n"
        self.assertEqual(list(text_links(text)), ["https://example.com/reset?token=abcdef"])

    def test_other_schemes_and_words(self) -> None:
        text = ("file:///etc/passwd data:text/plain,hello ftp://example.com/ "
                "www.example.com xhttp://example.com/ mailto:a@example.com")
        self.assertEqual(list(text_links(text)), [])

    def test_http_inside_another_uri_is_that_uri(self) -> None:
        text = ("data:text/plain,http://example.com/in-data\n"
                "(file://host/share?next=https://example.com/in-file)\n"
                "view-source:http://example.com/in-view-source\n"
                "|||http://example.com/pipes ...https://example.com/dots\n")
        self.assertEqual(list(text_links(text)), [
            "http://example.com/pipes", "https://example.com/dots"])

    def test_many_urls_in_one_long_word(self) -> None:
        text = "x" * 100_000 + "|http://example.com/a" * 20_000
        self.assertEqual(list(text_links(text)), ["http://example.com/a"] * 20_000)


class MessageLinkTests(TestCase):
    def test_html_first_then_text_each_once(self) -> None:
        message = EmailMessage()
        message["Subject"] = "links"
        message.set_content("Visit https://example.com/shared and https://example.com/text\n")
        message.add_alternative('<a href="https://example.com/shared">s</a>'
                                '<img src="https://example.com/logo.png">', subtype="html")
        view = mime.view(message.as_bytes())
        self.assertEqual(message_links(view.html, view.text), [
            "https://example.com/shared", "https://example.com/logo.png",
            "https://example.com/text"])

    def test_at_most_max_links_anchors_first(self) -> None:
        html = "".join(f'<a href="http://example.com/{n}">{n}</a>' for n in range(150))
        html += '<img src="http://example.com/image.png">'
        text = "http://example.com/from-text\n"
        links = message_links(html, text)
        self.assertEqual(links, [f"http://example.com/{n}" for n in range(MAX_LINKS)])

    def test_duplicates_do_not_count_against_the_cap(self) -> None:
        html = '<a href="http://example.com/same">x</a>' * 500
        self.assertEqual(message_links(html, "http://example.com/text"),
                         ["http://example.com/same", "http://example.com/text"])


class Site(Resource):
    """
    Paths: /ok 200, /missing 404, /moved 301 to /ok, /nohead (HEAD 405, GET 200),
    /loop 302 to itself, /to-file 302 to file:///etc/passwd, /hang/* answered only when
    the test says (L{pending}); every request is logged as (method, path).
    """

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.log: list[tuple[str, str]] = []
        self.pending: list[Any] = []

    def render(self, request: Any) -> Any:
        method, path = request.method.decode(), request.path.decode()
        self.log.append((method, path))
        if path.startswith("/hang"):
            self.pending.append(request)
            return NOT_DONE_YET
        redirects = {"/moved": (301, b"/ok"), "/loop": (302, b"/loop"),
                     "/to-file": (302, b"file:///etc/passwd")}
        if path in redirects:
            code, location = redirects[path]
            request.setResponseCode(code)
            request.setHeader(b"Location", location)
        elif path == "/nohead" and method == "HEAD":
            request.setResponseCode(405)
        elif path not in ("/ok", "/nohead"):
            request.setResponseCode(404)
        return b"body"


class CheckerTests(TestCase):
    def setUp(self) -> None:
        self.site = Site()
        self.agent = RequestTraversalAgent(self.site)
        self.clock = Clock()
        self.checker = LinkChecker(self.agent, self.clock)

    def settle(self) -> None:
        """Carry every request and answer across (a GET or redirect starts after a HEAD)."""
        for _ in range(30):
            self.agent.flush()

    def check(self, urls: list[str], follow: bool = False) -> list[tuple[int, str]]:
        checking = self.checker.check([f"http://sink.example{u}" if u.startswith("/") else u
                                       for u in urls], follow)
        self.settle()
        report: LinkReport = self.successResultOf(checking)
        return [(link.status_code, link.status) for link in report.links]

    def test_head_then_get_only_where_head_is_refused(self) -> None:
        self.assertEqual(self.check(["/ok", "/missing", "/nohead", "/moved"]), [
            (200, "OK"), (404, "Not Found"), (200, "OK"), (301, "Moved Permanently")])
        self.assertEqual(sorted(self.site.log), sorted([
            ("HEAD", "/ok"), ("HEAD", "/missing"), ("GET", "/missing"), ("HEAD", "/nohead"),
            ("GET", "/nohead"), ("HEAD", "/moved")]))

    def test_redirects_followed_only_when_asked(self) -> None:
        self.assertEqual(self.check(["/moved"], follow=True), [(200, "OK")])
        self.assertEqual(self.site.log, [("HEAD", "/moved"), ("HEAD", "/ok")])

    def test_redirect_loop_ends(self) -> None:
        self.assertEqual(self.check(["/loop"], follow=True), [(0, "more than 5 redirects")])
        self.assertEqual(self.site.log, [("HEAD", "/loop")] * 6)

    def test_redirect_to_another_scheme_is_not_followed(self) -> None:
        [(code, status)] = self.check(["/to-file"], follow=True)
        self.assertEqual(code, 0)
        self.assertIn("file:///etc/passwd, which is not an http(s) URL", status)
        self.assertEqual(self.site.log, [("HEAD", "/to-file")])
        self.assertEqual(self.check(["/to-file"]), [(302, "Found")])

    def test_other_schemes_are_never_requested(self) -> None:
        urls = ["file:///etc/passwd", "data:text/html,hello", "ftp://example.com/x",
                "javascript:alert(1)", "http://", "http://link with spaces",
                "http://example.com:99999/"]
        self.assertEqual(self.check(urls), [(0, "not a valid http(s) URL")] * len(urls))
        self.assertEqual(self.site.log, [])

    def test_errors_counted_as_mailpit(self) -> None:
        checking = self.checker.check(["http://sink.example/ok", "http://sink.example/missing",
                                       "http://sink.example/moved", "file:///x"], False)
        self.settle()
        self.assertEqual(self.successResultOf(checking).to_json(), {"Errors": 2, "Links": [
            {"URL": "http://sink.example/ok", "StatusCode": 200, "Status": "OK"},
            {"URL": "http://sink.example/missing", "StatusCode": 404, "Status": "Not Found"},
            {"URL": "http://sink.example/moved", "StatusCode": 301,
             "Status": "Moved Permanently"},
            {"URL": "file:///x", "StatusCode": 0, "Status": "not a valid http(s) URL"}]})

    def test_no_links(self) -> None:
        self.assertEqual(self.successResultOf(self.checker.check([], False)).to_json(),
                         {"Errors": 0, "Links": []})

    def test_at_most_five_at_a_time_across_checks(self) -> None:
        first = self.checker.check([f"http://sink.example/hang/{n}" for n in range(8)], False)
        second = self.checker.check(["http://sink.example/hang/other"], False)
        self.settle()
        self.assertEqual(len(self.site.pending), 5)
        for request in self.site.pending[:2]:
            request.write(b"")
            request.finish()
        self.settle()
        self.assertEqual(len(self.site.log), 7)
        self.assertNoResult(first)
        for request in self.site.pending[2:]:
            request.finish()
        self.settle()
        for request in self.site.pending[7:]:
            request.finish()
        self.settle()
        self.assertEqual(len(self.successResultOf(first).links), 8)
        self.assertEqual(len(self.successResultOf(second).links), 1)
        self.assertEqual(len(self.site.log), 9)

    def test_a_link_gets_ten_seconds_then_the_next_one_runs(self) -> None:
        checking = self.checker.check(
            [f"http://sink.example/hang/{n}" for n in range(6)], False)
        self.settle()
        self.clock.advance(LINK_TIMEOUT - 0.1)
        self.settle()
        self.assertEqual(len(self.site.log), 5)
        self.clock.advance(0.1)
        self.settle()
        self.assertEqual(len(self.site.log), 6)
        self.clock.advance(LINK_TIMEOUT)
        self.settle()
        report = self.successResultOf(checking)
        self.assertEqual({(link.status_code, link.status) for link in report.links},
                         {(0, "no answer within 10 s")})

    def test_ten_seconds_cover_all_of_a_links_requests(self) -> None:
        checking = self.checker.check(["http://sink.example/hang/head"], True)
        self.settle()
        self.clock.advance(6)
        head = self.site.pending.pop()
        head.setResponseCode(405)
        head.finish()
        self.settle()
        self.assertEqual(self.site.log, [("HEAD", "/hang/head"), ("GET", "/hang/head")])
        self.clock.advance(4)
        self.settle()
        self.assertEqual(self.successResultOf(checking).links,
                         (LinkStatus("http://sink.example/hang/head", 0,
                                     "no answer within 10 s"),))

    def test_cancelling_the_check_stops_its_requests(self) -> None:
        checking = self.checker.check(
            [f"http://sink.example/hang/{n}" for n in range(7)], False)
        self.settle()
        checking.cancel()
        self.failureResultOf(checking, defer.CancelledError)
        self.settle()
        self.assertEqual(len(self.site.log), 5)
        later = self.checker.check(["http://sink.example/ok"], False)
        self.settle()
        self.assertEqual(self.successResultOf(later).links[0].status_code, 200)


class FailingAgent:
    """An agent whose every request fails with one error (DNS, refused, ...)."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    def request(self, *args: Any, **kwargs: Any) -> defer.Deferred[Any]:
        return defer.fail(self.error)


class FailureTests(TestCase):
    def status_of(self, error: Exception) -> LinkStatus:
        checker = LinkChecker(FailingAgent(error), Clock())  # type: ignore[arg-type]
        report = self.successResultOf(checker.check(["https://shop.example.com/"], False))
        return report.links[0]

    def test_unreachable_hosts_are_results(self) -> None:
        for error, status in [
                (net.DNSLookupError("shop.example.com"), "no such host"),
                (net.ConnectionRefusedError(), "connection refused"),
                (net.NoRouteError(), "no route to host"),
                (net.TCPTimedOutError(), "connection timed out"),
        ]:
            self.assertEqual(self.status_of(error),
                             LinkStatus("https://shop.example.com/", 0, status))

    def test_tls_and_dropped_connections(self) -> None:
        tls = SSL.Error([("SSL routines", "", "certificate verify failed")])
        self.assertEqual(failure_status(ResponseNeverReceived([Failure(tls)])),
                         "TLS failed: certificate verify failed")
        self.assertEqual(failure_status(ResponseNeverReceived([Failure(net.ConnectionDone())])),
                         "the connection closed before an answer")
