"""
Mailpit's C{POST /api/v1/send}: the message builder (mailsink.web.compose) on its own,
then the route driven with StubTreq, storing into a real temporary Maildir.
"""

from __future__ import annotations

import base64
import email
import email.policy
import json
import os
import shutil
import tempfile
from email.message import EmailMessage
from typing import Any

from treq.testing import StubTreq
from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase

from mailsink.metrics import Metrics
from mailsink.store.maildir import Maildir
from mailsink.web.access import Access
from mailsink.web.app import WebApp
from mailsink.web.compose import SendError, compose
from mailsink.web.events import EventHub

PNG = b"\x89PNG\r\n\x1a\nnot really"
JSON = {"Content-Type": ["application/json"]}


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def request(**fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"From": {"Email": "app@example.com", "Name": "The App"},
                            "To": [{"Email": "dev@example.com"}], "Subject": "Hello",
                            "Text": "plain text\n"}
    body.update(fields)
    return body


def parse(raw: bytes) -> EmailMessage:
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


class ComposeTests(TestCase):
    def build(self, max_size: int = 1024 * 1024, **fields: Any) -> tuple[Any, EmailMessage]:
        composed = compose(request(**fields), hostname="sink.test", max_size=max_size,
                           now=1_800_000_000)
        return composed, parse(composed.message)

    def refused(self, body: Any, max_size: int = 1024 * 1024) -> str:
        with self.assertRaises(SendError) as caught:
            compose(body, hostname="sink.test", max_size=max_size)
        return str(caught.exception)

    def test_addresses_with_names_and_bcc_in_the_envelope_only(self) -> None:
        composed, message = self.build(
            From={"Email": "app@example.com", "Name": "Zoë App"},
            To=[{"Email": "dev@example.com", "Name": "Dev, Team"}, {"Email": "b@example.com"}],
            Cc=[{"Email": "cc@example.com", "Name": "Copy"}],
            Bcc=[{"Email": "hidden@example.com"}, "also-hidden@example.com"],
            ReplyTo=[{"Email": "reply@example.com", "Name": "Replies"}])
        self.assertEqual(composed.mail_from, "app@example.com")
        self.assertEqual(composed.recipients, ("dev@example.com", "b@example.com",
                                               "cc@example.com", "hidden@example.com",
                                               "also-hidden@example.com"))
        self.assertEqual(message["From"].addresses[0].display_name, "Zoë App")
        self.assertEqual([a.display_name for a in message["To"].addresses],
                         ["Dev, Team", ""])
        self.assertEqual(str(message["Cc"]), "Copy <cc@example.com>")
        self.assertEqual(str(message["Reply-To"]), "Replies <reply@example.com>")
        self.assertIsNone(message["Bcc"])
        self.assertNotIn(b"hidden", composed.message)
        self.assertNotIn(b"\r\n", composed.message)

    def test_date_and_message_id_generated(self) -> None:
        _composed, message = self.build()
        self.assertEqual(message["Date"], "Fri, 15 Jan 2027 08:00:00 +0000")
        self.assertTrue(message["Message-ID"].endswith("@sink.test>"))
        self.assertEqual(message["Subject"], "Hello")
        self.assertEqual(message.get_content_type(), "text/plain")
        self.assertEqual(message.get_content(), "plain text\n")

    def test_text_and_html_are_alternatives(self) -> None:
        _composed, message = self.build(HTML="<p>rich</p>")
        self.assertEqual(message.get_content_type(), "multipart/alternative")
        text = message.get_body(preferencelist=("plain",))
        html = message.get_body(preferencelist=("html",))
        assert text is not None and html is not None
        self.assertEqual(text.get_content(), "plain text\n")
        self.assertEqual(html.get_content(), "<p>rich</p>\n")

    def test_html_only(self) -> None:
        _composed, message = self.build(Text="", HTML="<p>rich</p>")
        self.assertEqual(message.get_content_type(), "text/html")

    def test_attachments_and_inline_parts(self) -> None:
        _composed, message = self.build(HTML='<img src="cid:logo">', Attachments=[
            {"Content": b64(PNG), "Filename": "logo.png", "ContentID": "logo"},
            {"Content": b64(b"%PDF-1.4"), "Filename": "report.pdf"},
            {"Content": b64(b"x,y\n"), "Filename": "data.bin", "ContentType": "text/csv"}])
        self.assertEqual(message.get_content_type(), "multipart/mixed")
        related = [p for p in message.walk() if p.get_content_type() == "multipart/related"]
        self.assertEqual(len(related), 1)
        inline = [p for p in related[0].iter_parts() if p.get_content_type() == "image/png"]
        self.assertEqual(len(inline), 1)
        self.assertEqual(inline[0]["Content-ID"], "<logo>")
        self.assertEqual(inline[0].get_content_disposition(), "inline")
        self.assertEqual(inline[0].get_content(), PNG)
        attached = {p.get_filename(): p for p in message.iter_attachments()}
        self.assertEqual(set(attached), {"report.pdf", "data.bin"})
        self.assertEqual(attached["report.pdf"].get_content_type(), "application/pdf")
        self.assertEqual(attached["report.pdf"].get_content(), b"%PDF-1.4")
        self.assertEqual(attached["data.bin"].get_content_type(), "text/csv")

    def test_inline_part_without_html(self) -> None:
        _composed, message = self.build(Attachments=[
            {"Content": b64(PNG), "Filename": "logo.png", "ContentID": "<logo>"}])
        parts = [p for p in message.walk() if p.get_content_type() == "image/png"]
        self.assertEqual(parts[0]["Content-ID"], "<logo>")
        self.assertEqual(parts[0].get_content_disposition(), "inline")

    def test_headers_and_tags(self) -> None:
        _composed, message = self.build(
            Headers={"X-IP": "1.2.3.4", "Message-ID": "<given@example.com>",
                     "Subject": "Replaced"},
            Tags=["Tag 1", " Tag 2 ", "", "Tag 1"])
        self.assertEqual(message["X-IP"], "1.2.3.4")
        self.assertEqual(message.get_all("Message-ID"), ["<given@example.com>"])
        self.assertEqual(message.get_all("Subject"), ["Replaced"])
        self.assertEqual(message["X-Tags"], "Tag 1, Tag 2")

    def test_bad_headers(self) -> None:
        self.assertIn("Content-Type", self.refused(request(Headers={"Content-Type": "x/y"})))
        self.assertIn("not a valid header name",
                      self.refused(request(Headers={"Bad Name": "x"})))
        self.assertIn("one line", self.refused(request(Headers={"X-A": "a\r\nBcc: x"})))
        self.assertIn("Tags", self.refused(request(Tags="one")))

    def test_bad_base64(self) -> None:
        error = self.refused(request(Attachments=[{"Content": "not base64!",
                                                   "Filename": "a.bin"}]))
        self.assertEqual(error, "Attachments[0].Content is not valid base64")
        self.assertIn("Filename is required",
                      self.refused(request(Attachments=[{"Content": b64(b"x")}])))

    def test_missing_or_invalid_from(self) -> None:
        body = request()
        del body["From"]
        self.assertEqual(self.refused(body), "From.Email is required")
        self.assertEqual(self.refused(request(From={"Name": "x"})), "From.Email is required")
        self.assertIn("not a valid email address",
                      self.refused(request(From={"Email": "not an address"})))
        self.assertIn("not a valid email address",
                      self.refused(request(To=[{"Email": "a@b@c"}])))

    def test_no_recipients(self) -> None:
        self.assertEqual(self.refused(request(To=[])),
                         "at least one recipient (To, Cc or Bcc) is required")
        self.assertIn("must be a list", self.refused(request(To="dev@example.com")))

    def test_too_big(self) -> None:
        error = self.refused(request(Attachments=[{"Content": b64(b"x" * 5000),
                                                   "Filename": "big.bin"}]), max_size=4096)
        self.assertIn("max_message_size", error)
        self.assertIn("max_message_size", self.refused(request(Text="x" * 5000), 4096))

    def test_body_must_be_an_object(self) -> None:
        self.assertEqual(self.refused([]), "the body must be a JSON object")


class NoIndex:
    is_ready = True

    def caught_up(self) -> Deferred[None]:
        return succeed(None)


class SendRouteTests(TestCase):
    def setUp(self) -> None:
        self.folder = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.folder)
        self.delivered: list[str] = []
        self.maildir = Maildir(self.folder, maybeDeferred, self.delivered.append)
        self.maildir.create()
        self.metrics = Metrics()
        self.treq = self.client(self.maildir)

    def client(self, maildir: Maildir | None, max_size: int = 1024 * 1024) -> StubTreq:
        access = Access(False, None, "none", [])
        web = WebApp(NoIndex(), access, EventHub(Clock()), self.metrics, maybeDeferred,
                     maildir=maildir, hostname="sink.test", listener="web:api",
                     max_message_size=max_size)
        return StubTreq(web.resource())

    def post(self, body: Any, treq: StubTreq | None = None,
             headers: Any = JSON) -> tuple[int, Any, bytes]:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        response = self.successResultOf((treq or self.treq).request(
            "POST", "http://sink/api/v1/send", data=data, headers=headers))
        raw = self.successResultOf(response.content())
        content_type = response.headers.getRawHeaders(b"Content-Type")[0]
        self.assertTrue(content_type.startswith(b"application/json"), raw)
        return response.code, json.loads(raw), raw

    def stored(self) -> list[str]:
        return os.listdir(os.path.join(self.folder, "new"))

    def test_message_is_stored_with_trace_headers_and_named_by_the_id(self) -> None:
        code, answer, _raw = self.post(request(
            Cc=[{"Email": "cc@example.com"}], Bcc=["hidden@example.com"],
            HTML="<p>hi</p>", Tags=["api"]))
        self.assertEqual(code, 200)
        self.assertEqual(self.stored(), [answer["ID"]])
        path = os.path.join(self.folder, "new", answer["ID"])
        self.assertEqual(self.delivered, [path])
        self.assertEqual(os.listdir(os.path.join(self.folder, "tmp")), [])
        with open(path, "rb") as stream:
            raw = stream.read()
        self.assertTrue(raw.startswith(b"Return-Path: <app@example.com>\n"
                                       b"Delivered-To: dev@example.com\n"
                                       b"Delivered-To: cc@example.com\n"
                                       b"Delivered-To: hidden@example.com\n"
                                       b"Received: from [127.0.0.1] (unknown [127.0.0.1])\n"),
                        raw[:300])
        self.assertIn(b"by sink.test (mailsink, listener web:api) with HTTP id", raw)
        message = parse(raw)
        self.assertEqual(message["Subject"], "Hello")
        self.assertEqual(message["X-Tags"], "api")
        self.assertEqual(message.get_content_type(), "multipart/alternative")
        self.assertEqual(self.metrics.total(self.metrics.received), 1)

    def test_errors_are_json_400(self) -> None:
        body = request()
        del body["From"]
        cases: list[tuple[Any, Any, str]] = [
            (body, JSON, "From.Email is required"),
            (request(To=[]), JSON, "at least one recipient (To, Cc or Bcc) is required"),
            (request(Attachments=[{"Content": "@@", "Filename": "a"}]), JSON,
             "Attachments[0].Content is not valid base64"),
            (b"{not json", JSON, "the body is not valid JSON"),
            (request(), {"Content-Type": ["text/plain"]}, "Content-Type: application/json"),
        ]
        for sent, headers, error in cases:
            code, answer, _raw = self.post(sent, headers=headers)
            self.assertEqual(code, 400)
            self.assertIn(error, answer["Error"])
        self.assertEqual(self.stored(), [])

    def test_too_big_is_400(self) -> None:
        code, answer, _raw = self.post(request(Text="x" * 5000),
                                       treq=self.client(self.maildir, max_size=4096))
        self.assertEqual(code, 400)
        self.assertIn("[mailsink] max_message_size", answer["Error"])
        self.assertEqual(self.stored(), [])

    def test_not_available_without_a_maildir(self) -> None:
        code, answer, _raw = self.post(request(), treq=self.client(None))
        self.assertEqual((code, answer), (400, {"Error": "sending is not available"}))
