"""
In memory (StubTreq): the web routes and [mailbox:NAME] sections: who sees which mailbox,
C{?mailbox=} and its 404, C{Mailbox} in the JSON, C{GET /api/v1/mailboxes}.
"""

from __future__ import annotations

import base64
from typing import Any

from test_web_api import FakeIndex, WebTestCase, message_bytes
from treq.testing import StubTreq
from twisted.internet.defer import Deferred, succeed

from mailsink.store.mailboxes import MailboxRule, compile_recipients
from mailsink.web.access import Access
from mailsink.web.app import WebApp

RULES = (MailboxRule("shop", compile_recipients("x"), ("alice",)),
         MailboxRule("ops", compile_recipients("y"), ("carol",)))


class CountingIndex(FakeIndex):
    """The fake index, with the per-mailbox counts the mailbox list asks for."""

    def mailbox_counts(self) -> Deferred[dict[str, tuple[int, int]]]:
        counts: dict[str, tuple[int, int]] = {}
        for summary in self.summaries.values():
            total, unread = counts.get(summary.mailbox, (0, 0))
            counts[summary.mailbox] = (total + 1, unread + (not summary.read))
        return succeed(counts)


class MailboxRouteTests(WebTestCase):
    auth_required = True

    def setUp(self) -> None:
        super().setUp()
        self.index = CountingIndex()
        access = Access(True, self.web.access.checker, "none", ["boss"], RULES)
        self.web = WebApp(self.index, access, self.hub, self.metrics, self.web.run_blocking)
        self.treq = StubTreq(self.web.resource())
        self.store(message_bytes("shared one"))
        self.store(message_bytes("shop one"), mailbox="shop")
        self.store(message_bytes("shop two"), mailbox="shop", read=True)
        self.store(message_bytes("ops one"), mailbox="ops")

    def as_user(self, user: str) -> dict[str, Any]:
        password = {"alice": "wonderland", "boss": "chief"}[user]
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        return {"headers": {"Authorization": [f"Basic {token}"]}}

    def subjects(self, user: str, url: str) -> list[str]:
        page = self.get_json(url, **self.as_user(user))
        return sorted(m["Subject"] for m in page["messages"])

    def test_who_sees_what(self) -> None:
        self.assertEqual(self.subjects("alice", "/api/v1/messages"),
                         ["shared one", "shop one", "shop two"])
        self.assertEqual(self.subjects("boss", "/api/v1/messages"),
                         ["ops one", "shared one", "shop one", "shop two"])

    def test_mailbox_parameter(self) -> None:
        self.assertEqual(self.subjects("alice", "/api/v1/messages?mailbox=shop"),
                         ["shop one", "shop two"])
        self.assertEqual(self.subjects("alice", "/api/v1/messages?mailbox="), ["shared one"])
        self.assertEqual(self.subjects("boss", "/api/v1/search?query=one&mailbox=ops"),
                         ["ops one"])
        self.assertEqual(self.subjects("boss", "/api/v1/messages?mailbox=unknown"), [])
        response, body = self.request("GET", "/api/v1/messages?mailbox=ops",
                                      **self.as_user("alice"))
        self.assertEqual((response.code, body), (404, b"mailbox not found"))

    def test_mailbox_in_json(self) -> None:
        page = self.get_json("/api/v1/messages?mailbox=shop", **self.as_user("alice"))
        self.assertEqual({m["Mailbox"] for m in page["messages"]}, {"shop"})
        message = self.get_json(f"/api/v1/message/{page['messages'][0]['ID']}",
                                **self.as_user("alice"))
        self.assertEqual(message["Mailbox"], "shop")

    def test_mailbox_list(self) -> None:
        self.assertEqual(self.get_json("/api/v1/mailboxes", **self.as_user("alice")),
                         {"Mailboxes": [{"Name": "", "Total": 1, "Unread": 1},
                                        {"Name": "shop", "Total": 2, "Unread": 1}]})
        self.store(message_bytes("stray"), mailbox="old-user")
        self.assertEqual(
            [m["Name"] for m in self.get_json("/api/v1/mailboxes",
                                               **self.as_user("boss"))["Mailboxes"]],
            ["", "shop", "ops", "old-user"])
