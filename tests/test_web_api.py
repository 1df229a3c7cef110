"""
The web API's routes driven in memory with treq's StubTreq (no socket): shapes, errors,
read state, deletion, `latest`, access rules, safety headers, and the OpenAPI document
checked against the routes. The index is a small synchronous fake; the messages are real
files parsed by mailsink.message.mime.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import tempfile
from email.message import EmailMessage
from typing import Any

import attrs
from treq.testing import StubTreq
from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase

from mailsink.auth.environment import EnvironmentChecker
from mailsink.index.message_index import Page, Stats
from mailsink.message import mime
from mailsink.message.shapes import Summary
from mailsink.metrics import Metrics
from mailsink.web.access import Access
from mailsink.web.app import OPENAPI, WebApp
from mailsink.web.events import EventHub


class FakeIndex:
    """Synchronous stand-in for the index: summaries in a dict, files on disk."""

    is_ready = True

    def __init__(self) -> None:
        self.summaries: dict[str, Summary] = {}
        self.paths: dict[str, str] = {}

    def add(self, summary: Summary, path: str) -> None:
        self.summaries[summary.id] = summary
        self.paths[summary.id] = path

    def caught_up(self) -> Deferred[None]:
        return succeed(None)

    def _visible(self, mailboxes: Any) -> list[Summary]:
        found = [s for s in self.summaries.values()
                 if mailboxes is None or s.mailbox in mailboxes]
        return sorted(found, key=lambda s: (s.created, s.id), reverse=True)

    def _matching(self, query: str | None, mailboxes: Any) -> list[Summary]:
        return [s for s in self._visible(mailboxes)
                if not query or query.lower() in s.facts.subject.lower()]

    def page(self, query: str, start: int, limit: int, mailboxes: Any) -> Deferred[Page]:
        visible, matching = self._visible(mailboxes), self._matching(query, mailboxes)
        return succeed(Page(len(visible), sum(not s.read for s in visible), len(matching),
                            sum(not s.read for s in matching), matching[start:start + limit]))

    def get(self, message_id: str, mailboxes: Any) -> Deferred[Summary | None]:
        summary = self.summaries.get(message_id)
        if summary is None or (mailboxes is not None and summary.mailbox not in mailboxes):
            return succeed(None)
        return succeed(summary)

    def latest(self, query: str, mailboxes: Any) -> Deferred[Summary | None]:
        matching = self._matching(query, mailboxes)
        return succeed(matching[0] if matching else None)

    def path(self, message_id: str, mailboxes: Any) -> Deferred[str | None]:
        return succeed(self.paths.get(message_id))

    def _select(self, ids: list[str] | None, query: str | None, mailboxes: Any) -> list[Summary]:
        return [s for s in self._matching(query, mailboxes) if ids is None or s.id in ids]

    def set_read(self, ids: list[str] | None, read: bool, query: str | None,
                 mailboxes: Any) -> Deferred[int]:
        chosen = self._select(ids, query, mailboxes)
        for summary in chosen:
            self.summaries[summary.id] = attrs.evolve(summary, read=read)
        return succeed(len(chosen))

    def delete(self, ids: list[str] | None, query: str | None, mailboxes: Any) -> Deferred[int]:
        chosen = self._select(ids, query, mailboxes)
        for summary in chosen:
            del self.summaries[summary.id]
            os.unlink(self.paths.pop(summary.id))
        return succeed(len(chosen))

    def stats(self, mailboxes: Any) -> Deferred[Stats]:
        visible = self._visible(mailboxes)
        return succeed(Stats("/x/index.sqlite3", 1234, len(visible),
                             sum(not s.read for s in visible), 0, 0))

    def tag_counts(self, mailboxes: Any) -> Deferred[dict[str, int]]:
        counts: dict[str, int] = {}
        for summary in self._visible(mailboxes):
            for tag in summary.facts.tags:
                counts[tag] = counts.get(tag, 0) + 1
        return succeed(counts)


def message_bytes(subject: str, html: str | None = None, attachment: bool = False) -> bytes:
    message = EmailMessage()
    message["From"] = "App <app@example.com>"
    message["To"] = "dev@example.com"
    message["Subject"] = subject
    message["Message-ID"] = f"<{subject.replace(' ', '-')}@example.com>"
    message.set_content(f"text of {subject}\n")
    if html is not None:
        message.add_alternative(html, subtype="html")
    if attachment:
        message.add_attachment(b"%PDF-1.4 fake", maintype="application", subtype="pdf",
                               filename="report.pdf")
    trace = (b"Return-Path: <app@example.com>\nDelivered-To: dev@example.com\n"
             b"Delivered-To: hidden@example.com\n"
             b"Received: from laptop (unknown [127.0.0.1])\n"
             b"\t(using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits))\n"
             b"\tby localhost (mailsink, listener smtp:submission) with ESMTPS id M1\n"
             b"\tfor <dev@example.com>; Mon, 23 Nov 2026 18:00:00 +0000 (UTC)\n")
    return trace + message.as_bytes().replace(b"\r\n", b"\n")


class WebTestCase(TestCase):
    auth_required = False
    isolation = "none"

    def setUp(self) -> None:
        self.folder = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.folder)
        self.index = FakeIndex()
        self.metrics = Metrics()
        self.hub = EventHub(Clock())
        checker = EnvironmentChecker("alice:wonderland boss:chief")
        access = Access(self.auth_required, checker, self.isolation, ["boss"])
        self.web = WebApp(self.index, access, self.hub, self.metrics, maybeDeferred)
        self.treq = StubTreq(self.web.resource())
        self.count = 0

    def store(self, raw: bytes, mailbox: str = "", read: bool = False) -> str:
        self.count += 1
        message_id = f"17000000{self.count:02d}.M1P1Q{self.count}.host"
        path = os.path.join(self.folder, message_id)
        with open(path, "wb") as stream:
            stream.write(raw)
        summary = Summary(message_id, mailbox, read, 1_700_000_000 + self.count, len(raw),
                          mime.facts(raw))
        self.index.add(summary, path)
        return message_id

    def request(self, method: str, url: str, **kwargs: Any) -> tuple[Any, bytes]:
        response = self.successResultOf(self.treq.request(method, "http://sink" + url,
                                                          **kwargs))
        body = self.successResultOf(response.content())
        return response, body

    def get_json(self, url: str, **kwargs: Any) -> Any:
        response, body = self.request("GET", url, **kwargs)
        self.assertEqual(response.code, 200, body)
        return json.loads(body)


JSON = {"Content-Type": ["application/json"]}


class ListAndSearchTests(WebTestCase):
    def test_list_shape_newest_first(self) -> None:
        first = self.store(message_bytes("first"))
        second = self.store(message_bytes("second", attachment=True), read=True)
        listed = self.get_json("/api/v1/messages")
        self.assertEqual({k: v for k, v in listed.items() if k != "messages"},
                         {"total": 2, "unread": 1, "count": 2, "messages_count": 2,
                          "messages_unread": 1, "start": 0, "tags": []})
        self.assertEqual([m["ID"] for m in listed["messages"]], [second, first])
        summary = listed["messages"][0]
        self.assertEqual(sorted(summary), sorted([
            "ID", "MessageID", "Read", "From", "To", "Cc", "Bcc", "ReplyTo", "Subject",
            "Created", "Username", "Tags", "Size", "Attachments", "Snippet", "Mailbox"]))
        self.assertEqual(summary["Mailbox"], "")
        self.assertEqual(summary["From"], {"Name": "App", "Address": "app@example.com"})
        self.assertEqual(summary["Bcc"], [{"Name": "", "Address": "hidden@example.com"}])
        self.assertEqual(summary["Attachments"], 1)
        self.assertTrue(summary["Read"])

    def test_paging_and_bad_arguments(self) -> None:
        for n in range(5):
            self.store(message_bytes(f"m{n}"))
        listed = self.get_json("/api/v1/messages?start=1&limit=2")
        self.assertEqual((listed["start"], listed["count"], listed["total"]), (1, 2, 5))
        response, body = self.request("GET", "/api/v1/messages?limit=-3")
        self.assertEqual((response.code, body),
                         (400, b"limit must be a whole number of 0 or more"))

    def test_search_counts_matches(self) -> None:
        self.store(message_bytes("invoice 1"))
        self.store(message_bytes("welcome"))
        found = self.get_json("/api/v1/search?query=invoice")
        self.assertEqual((found["total"], found["messages_count"], found["count"]), (2, 1, 1))
        response, body = self.request("GET", "/api/v1/search")
        self.assertEqual((response.code, body), (400, b"query is required"))


class MessageTests(WebTestCase):
    def test_message_shape_marks_read_and_has_transport(self) -> None:
        message_id = self.store(message_bytes("hello", html="<p>hi</p>"))
        message = self.get_json(f"/api/v1/message/{message_id}")
        self.assertEqual(message["Subject"], "hello")
        self.assertEqual(message["Text"], "text of hello\n")
        self.assertIn("<p>hi</p>", message["HTML"])
        self.assertEqual(message["ReturnPath"], "app@example.com")
        self.assertEqual(message["Transport"]["TLS"], {"Version": "TLSv1.3",
                                                       "Cipher": "TLS_AES_256_GCM_SHA384"})
        self.assertEqual(message["Transport"]["Listener"], "smtp:submission")
        self.assertEqual(message["Transport"]["RcptTo"], ["dev@example.com",
                                                          "hidden@example.com"])
        self.assertTrue(self.index.summaries[message_id].read)

    def test_latest(self) -> None:
        self.store(message_bytes("older"))
        newest = self.store(message_bytes("newest"))
        self.assertEqual(self.get_json("/api/v1/message/latest")["ID"], newest)
        response, _ = self.request("GET", "/api/v1/message/latest?query=nothing-matches")
        self.assertEqual(response.code, 404)

    def test_unknown_ids_are_404_never_paths(self) -> None:
        self.store(message_bytes("x"))
        for url in ("/api/v1/message/nope", "/api/v1/message/..%2F..%2Fetc%2Fpasswd/raw",
                    "/view/nope.html", "/view/%2Fetc%2Fpasswd.txt"):
            response, _ = self.request("GET", url)
            self.assertEqual(response.code, 404, url)

    def test_headers_raw_and_download(self) -> None:
        raw = message_bytes("source")
        message_id = self.store(raw)
        headers = self.get_json(f"/api/v1/message/{message_id}/headers")
        self.assertEqual(headers["Subject"], ["source"])
        self.assertEqual(headers["Delivered-To"], ["dev@example.com", "hidden@example.com"])
        response, body = self.request("GET", f"/api/v1/message/{message_id}/raw")
        self.assertEqual(body, raw)
        self.assertEqual(response.headers.getRawHeaders("Content-Type"),
                         ["text/plain; charset=utf-8"])
        response, _ = self.request("GET", f"/api/v1/message/{message_id}/raw?dl=1")
        self.assertEqual(response.headers.getRawHeaders("Content-Disposition"),
                         [f'attachment; filename="{message_id}.eml"'])

    def test_a_file_renamed_between_finding_and_reading_is_found_again(self) -> None:
        """Another request marked it read (new/ to cur/) just after its path was looked up."""
        raw = message_bytes("moved")
        message_id = self.store(raw)
        old_path = self.index.paths[message_id]
        answers = [old_path, old_path + ":2,S"]
        os.rename(old_path, answers[1])
        self.index.path = lambda mid, mailboxes: succeed(answers.pop(0))  # type: ignore
        response, body = self.request("GET", f"/api/v1/message/{message_id}/raw")
        self.assertEqual((response.code, body), (200, raw))

    def test_attachment_part_is_downloaded_and_sandboxed(self) -> None:
        message_id = self.store(message_bytes("files", attachment=True))
        [attachment] = self.get_json(f"/api/v1/message/{message_id}")["Attachments"]
        response, body = self.request(
            "GET", f"/api/v1/message/{message_id}/part/{attachment['PartID']}")
        self.assertEqual(body, b"%PDF-1.4 fake")
        self.assertEqual(response.headers.getRawHeaders("Content-Type"), ["application/pdf"])
        self.assertEqual(response.headers.getRawHeaders("Content-Disposition"),
                         ['attachment; filename="report.pdf"'])
        self.assertIn("sandbox", response.headers.getRawHeaders("Content-Security-Policy")[0])
        response, _ = self.request("GET", f"/api/v1/message/{message_id}/part/9.9")
        self.assertEqual(response.code, 404)

    def test_html_view_forbids_scripts_and_remote_loads(self) -> None:
        message_id = self.store(message_bytes(
            "evil", html='<script>alert(1)</script><img src="https://tracker.example/p.gif">'))
        response, body = self.request("GET", f"/view/{message_id}.html")
        policy = response.headers.getRawHeaders("Content-Security-Policy")[0]
        self.assertIn("default-src 'none'", policy)
        self.assertNotIn("script-src", policy)
        self.assertIn("img-src 'self' data:", policy)
        response, _ = self.request("GET", f"/view/{message_id}.html?remote=1")
        remote_policy = response.headers.getRawHeaders("Content-Security-Policy")[0]
        self.assertIn("img-src * data:", remote_policy)
        self.assertNotIn("script-src", remote_policy)
        response, body = self.request("GET", f"/view/{message_id}.txt")
        self.assertEqual(body, b"text of evil\n")

    def test_every_response_says_nosniff(self) -> None:
        message_id = self.store(message_bytes("n"))
        for url in ("/livez", "/api/v1/messages", f"/api/v1/message/{message_id}/raw",
                    "/api/v1/message/missing", "/metrics"):
            response, _ = self.request("GET", url)
            self.assertEqual(response.headers.getRawHeaders("X-Content-Type-Options"),
                             ["nosniff"], url)


class ChangeTests(WebTestCase):
    def test_mark_read_unread_by_ids_search_and_all(self) -> None:
        one = self.store(message_bytes("alpha"))
        two = self.store(message_bytes("beta"))
        response, body = self.request("PUT", "/api/v1/messages", headers=JSON,
                                      data=json.dumps({"IDs": [one], "Read": True}))
        self.assertEqual((response.code, body), (200, b"ok"))
        self.assertTrue(self.index.summaries[one].read)
        self.request("PUT", "/api/v1/messages", headers=JSON,
                     data=json.dumps({"Search": "beta", "Read": True}))
        self.assertTrue(self.index.summaries[two].read)
        self.request("PUT", "/api/v1/messages", headers=JSON, data=json.dumps({"Read": False}))
        self.assertFalse(self.index.summaries[one].read or self.index.summaries[two].read)
        # As Mailpit: an empty IDs list means all, and Read defaults to false.
        self.request("PUT", "/api/v1/messages", headers=JSON,
                     data=json.dumps({"IDs": [], "Read": True}))
        self.assertTrue(self.index.summaries[one].read and self.index.summaries[two].read)
        self.request("PUT", "/api/v1/messages", headers=JSON, data=json.dumps({"IDs": [one]}))
        self.assertEqual((self.index.summaries[one].read, self.index.summaries[two].read),
                         (False, True))

    def test_state_changes_need_json(self) -> None:
        one = self.store(message_bytes("alpha"))
        for headers, data in (({"Content-Type": ["application/x-www-form-urlencoded"]},
                               "IDs=x&Read=true"), (JSON, "not json"), (JSON, "[1]"),
                              (JSON, json.dumps({"IDs": [one], "Read": "yes"})),
                              (JSON, json.dumps({"IDs": "x", "Read": True}))):
            response, body = self.request("PUT", "/api/v1/messages", headers=headers,
                                          data=data)
            self.assertEqual(response.code, 400, body)
        self.assertFalse(self.index.summaries[one].read)
        response, _ = self.request("POST", "/api/v1/messages", headers=JSON, data="{}")
        self.assertEqual(response.code, 405)

    def test_delete_by_ids_by_search_and_all(self) -> None:
        one = self.store(message_bytes("alpha"))
        self.store(message_bytes("beta"))
        self.store(message_bytes("gamma"))
        self.request("DELETE", "/api/v1/messages", headers=JSON, data=json.dumps({"IDs": [one]}))
        self.assertNotIn(one, self.index.summaries)
        self.request("DELETE", "/api/v1/search?query=beta")
        self.assertEqual([s.facts.subject for s in self.index.summaries.values()], ["gamma"])
        response, body = self.request("DELETE", "/api/v1/messages")
        self.assertEqual((response.code, body, self.index.summaries), (200, b"ok", {}))
        self.assertEqual(self.metrics.total(self.metrics.deleted), 3)


class AccessTests(WebTestCase):
    auth_required = True
    isolation = "user"

    def auth(self, user: str, password: str) -> dict[str, list[str]]:
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        return {"Authorization": [f"Basic {token}"]}

    def test_basic_auth_required(self) -> None:
        for path in ("/api/v1/messages", "/api/v1/webui"):
            response, _ = self.request("GET", path)
            self.assertEqual(response.code, 401, path)
        response, _ = self.request("GET", "/api/v1/messages")
        self.assertEqual(response.code, 401)
        self.assertEqual(response.headers.getRawHeaders("WWW-Authenticate"),
                         ['Basic realm="mailsink", charset="UTF-8"'])
        response, _ = self.request("GET", "/api/v1/messages",
                                   headers=self.auth("alice", "wrong"))
        self.assertEqual(response.code, 401)

    def test_users_see_their_own_mailbox_admins_all(self) -> None:
        self.store(message_bytes("for alice"), mailbox="alice")
        self.store(message_bytes("shared"))
        alice = self.get_json("/api/v1/messages", headers=self.auth("alice", "wonderland"))
        self.assertEqual([m["Subject"] for m in alice["messages"]], ["for alice"])
        boss = self.get_json("/api/v1/messages", headers=self.auth("boss", "chief"))
        self.assertEqual(boss["total"], 2)
        shared_id = next(s.id for s in self.index.summaries.values() if s.mailbox == "")
        response, _ = self.request("GET", f"/api/v1/message/{shared_id}",
                                   headers=self.auth("alice", "wonderland"))
        self.assertEqual(response.code, 404)


class ServerTests(WebTestCase):
    def test_health_info_webui_metrics(self) -> None:
        self.store(message_bytes("x"))
        self.assertEqual(self.request("GET", "/livez")[1], b"ok")
        self.assertEqual(self.request("GET", "/readyz")[1], b"ok")
        self.index.is_ready = False
        self.assertEqual(self.request("GET", "/readyz")[0].code, 503)
        info = self.get_json("/api/v1/info")
        self.assertEqual((info["Messages"], info["Unread"]), (1, 1))
        self.assertEqual(sorted(info["RuntimeStats"]), sorted([
            "Uptime", "Memory", "MessagesDeleted", "SMTPAccepted", "SMTPAcceptedSize",
            "SMTPRejected", "SMTPIgnored"]))
        self.assertFalse(self.get_json("/api/v1/webui")["MessageRelay"]["Enabled"])
        self.metrics.received.labels("smtp").inc()
        _response, body = self.request("GET", "/metrics")
        self.assertIn(b'mailsink_messages_received_total{listener="smtp"} 1.0', body)

    def test_openapi_document_matches_the_routes(self) -> None:
        with open(OPENAPI) as stream:
            documented = {(path, method.upper()) for path, methods in
                          json.load(stream)["paths"].items() for method in methods}
        served = set()
        for rule in self.web.app.url_map.iter_rules():
            path = rule.rule.replace("<string:message_id>", "{ID}").replace(
                "<string:part_id>", "{PartID}").replace("<string:session_id>", "{ID}").replace(
                "<string:tag>", "{Tag}")
            for method in rule.methods or ():
                if method in ("HEAD", "OPTIONS"):
                    continue
                if path == "/view/<string:name>":
                    served |= {("/view/{ID}.html", method), ("/view/{ID}.txt", method)}
                elif path not in ("/", "/static/", "/static/<path:__rest__>"):
                    served.add((path, method))
        self.assertEqual(served, documented)
        self.assertEqual(self.get_json("/api/v1/swagger.json")["openapi"], "3.0.3")


class EventTests(WebTestCase):
    def test_sse_stream_carries_index_events_for_visible_mailboxes(self) -> None:
        response = self.successResultOf(self.treq.get("http://sink/api/v1/events",
                                                      unbuffered=True))
        chunks: list[bytes] = []
        response.deliverBody(_Collector(chunks))
        message_id = self.store(message_bytes("live"))
        self.hub.index_event("new", self.index.summaries[message_id])
        self.hub.index_event("delete", [message_id])
        self.treq.flush()
        events = [json.loads(line[6:]) for line in b"".join(chunks).decode().split("\n\n")
                  if line.startswith("data: ")]
        self.assertEqual([e["Type"] for e in events], ["new", "delete"])
        self.assertEqual(events[0]["Data"]["Subject"], "live")
        self.assertEqual(events[1]["Data"], {"IDs": [message_id]})


class _Collector:
    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks

    def makeConnection(self, transport: Any) -> None:
        pass

    def dataReceived(self, data: bytes) -> None:
        self.chunks.append(data)

    def connectionLost(self, reason: Any) -> None:
        pass

