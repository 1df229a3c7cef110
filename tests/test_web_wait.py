"""
Waiting for mail in the API (C{?wait=}), in memory: the routes through StubTreq (and one raw
HTTP connection on a StringTransport, to hang up) with the fake index of test_web_api and a
Clock for the timers; then L{Waiting} itself against an index whose answers the test holds.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from treq.testing import StubTreq
from twisted.internet.address import IPv4Address
from twisted.internet.defer import CancelledError, Deferred, maybeDeferred
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase
from twisted.web.server import Site
from twisted.web.test.requesthelper import DummyRequest

from mailsink.index.codec import Page
from mailsink.message.shapes import Facts, Summary
from mailsink.metrics import Metrics
from mailsink.web.app import WebApp
from mailsink.web.waiting import MATCH_LIMIT, Question, Waiting
from tests.test_web_api import WebTestCase, message_bytes


def waiting_gauge(metrics: Metrics) -> float | None:
    """What C{/metrics} says of C{mailsink_api_waiting}."""
    return metrics.registry.get_sample_value("mailsink_api_waiting")


class WaitingWeb:
    """Mixin: the web app of a L{WebTestCase} with a L{Waiting} on a Clock."""

    index: Any
    metrics: Metrics
    web: WebApp
    treq: Any  # StubTreq makes its methods at run time

    def setUp(self) -> None:
        super().setUp()  # type: ignore[misc]
        self.clock = Clock()
        self.waiting = Waiting(self.index, self.clock, self.metrics)
        self.web = WebApp(self.index, self.web.access, self.web.hub, self.metrics,
                          maybeDeferred, waiting=self.waiting)
        self.treq = StubTreq(self.web.resource())
        self.asked: list[tuple[Any, ...]] = []
        page = self.index.page

        def counted(*args: Any) -> Deferred[Page]:
            self.asked.append(args)
            return page(*args)

        self.index.page = counted

    def deliver(self, subject: str, mailbox: str = "") -> None:
        """Store a message and tell L{Waiting} as the index would; one reactor turn passes."""
        message_id = self.store(message_bytes(subject), mailbox)  # type: ignore[attr-defined]
        self.waiting.index_event("new", self.index.summaries[message_id])
        self.clock.advance(0)
        self.treq.flush()

    def start(self, url: str, **kwargs: Any) -> Deferred[Any]:
        return self.treq.request("GET", "http://sink" + url, **kwargs)

    def answer(self, pending: Deferred[Any]) -> tuple[int, bytes]:
        self.treq.flush()
        response = self.successResultOf(pending)  # type: ignore[attr-defined]
        return response.code, self.successResultOf(response.content())  # type: ignore[attr-defined]

    def waiting_now(self) -> float | None:
        return waiting_gauge(self.metrics)


class WaitRouteTests(WaitingWeb, WebTestCase):
    def test_answered_when_a_matching_message_arrives(self) -> None:
        pending = self.start("/api/v1/search?query=invoice&wait=30")
        self.assertNoResult(pending)
        self.assertEqual((self.waiting_now(), len(self.asked)), (1, 1))
        self.deliver("welcome")
        self.assertNoResult(pending)
        self.assertEqual(len(self.asked), 1)  # not matching: the index was not asked again
        self.deliver("invoice 7")
        code, body = self.answer(pending)
        found = json.loads(body)
        self.assertEqual((code, found["messages_count"], found["total"]), (200, 1, 2))
        self.assertEqual([m["Subject"] for m in found["messages"]], ["invoice 7"])
        self.assertEqual((self.clock.seconds(), self.waiting_now()), (0, 0))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_a_message_that_already_matches_answers_at_once(self) -> None:
        self.store(message_bytes("invoice 1"))
        code, body = self.answer(self.start("/api/v1/search?query=invoice&wait=30"))
        self.assertEqual((code, json.loads(body)["count"]), (200, 1))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_a_flood_of_updates_asks_the_index_instead_of_matching_each(self) -> None:
        """Mark-all-read of 10,000 messages: no in-memory matching per waiter and message."""
        pending = [self.start("/api/v1/search?query=invoice&wait=30") for _ in range(3)]
        self.deliver("welcome")
        summary = next(iter(self.index.summaries.values()))
        del self.asked[:]
        for _ in range(MATCH_LIMIT + 1):
            self.waiting.index_event("update", summary)
        self.clock.advance(0)
        self.assertEqual(len(self.asked), 1)  # one question, asked once
        for answer in pending:
            self.assertNoResult(answer)

    def test_count_waits_for_that_many(self) -> None:
        self.store(message_bytes("invoice 1"))
        pending = self.start("/api/v1/search?query=invoice&wait=30&count=3")
        self.deliver("invoice 2")
        self.assertNoResult(pending)
        self.deliver("invoice 3")
        code, body = self.answer(pending)
        self.assertEqual((code, json.loads(body)["messages_count"]), (200, 3))

    def test_time_up_answers_the_usual_page(self) -> None:
        pending = self.start("/api/v1/search?query=invoice&wait=2.5&count=2")
        self.deliver("welcome")
        self.deliver("invoice 1")
        self.clock.advance(2.4)
        self.assertNoResult(pending)
        self.clock.advance(0.1)
        code, body = self.answer(pending)
        found = json.loads(body)
        self.assertEqual((code, found["total"], found["messages_count"]), (200, 2, 1))
        self.assertEqual(self.waiting_now(), 0)

    def test_time_up_with_nothing_is_mailpits_empty_answer(self) -> None:
        pending = self.start("/api/v1/messages?wait=1")
        self.clock.advance(1)
        code, body = self.answer(pending)
        self.assertEqual((code, json.loads(body)),
                         (200, {"total": 0, "unread": 0, "count": 0, "messages_count": 0,
                                "messages_unread": 0, "start": 0, "tags": [],
                                "messages": []}))

    def test_messages_wait_for_any_message(self) -> None:
        pending = self.start("/api/v1/messages?wait=10&limit=1")
        self.deliver("anything")
        code, body = self.answer(pending)
        self.assertEqual((code, [m["Subject"] for m in json.loads(body)["messages"]]),
                         (200, ["anything"]))

    def test_latest_waits_and_time_up_is_404(self) -> None:
        pending = self.start("/api/v1/message/latest?query=invoice&wait=10")
        self.deliver("welcome")
        self.assertNoResult(pending)
        self.deliver("invoice 9")
        code, body = self.answer(pending)
        self.assertEqual((code, json.loads(body)["Subject"]), (200, "invoice 9"))
        pending = self.start("/api/v1/message/latest?query=receipt&wait=3")
        self.clock.advance(3)
        self.assertEqual(self.answer(pending), (404, b"message not found"))

    def test_latest_with_count(self) -> None:
        pending = self.start("/api/v1/message/latest?wait=10&count=2")
        self.deliver("one")
        self.assertNoResult(pending)
        self.deliver("two")
        code, body = self.answer(pending)
        self.assertEqual((code, json.loads(body)["Subject"]), (200, "two"))

    def test_other_latest_routes_wait_too(self) -> None:
        pending = self.start("/api/v1/message/latest/raw?query=invoice&wait=10")
        self.deliver("invoice 3")
        code, body = self.answer(pending)
        self.assertEqual(code, 200)
        self.assertIn(b"Subject: invoice 3", body)

    def test_waiters_with_the_same_question_share_one_query(self) -> None:
        pending = [self.start("/api/v1/search?query=invoice&wait=30") for _ in range(5)]
        other = self.start("/api/v1/search?query=invoice&wait=30&limit=1")
        del self.asked[:]
        self.deliver("invoice 1")
        self.assertEqual(len(self.asked), 2)
        for each in [*pending, other]:
            self.assertEqual(self.answer(each)[0], 200)

    def test_bad_wait_and_count(self) -> None:
        for query, reason in [("wait=61", b"wait must be at most 60 seconds"),
                              ("wait=600", b"wait must be at most 60 seconds"),
                              ("wait=abc", b"wait must be a number of seconds"),
                              ("wait=-1", b"wait must be a number of seconds"),
                              ("wait=1e3", b"wait must be a number of seconds"),
                              ("wait=5&count=0", b"count must be 1 or more"),
                              ("wait=5&count=x", b"count must be a whole number of 0 or more")]:
            code, body = self.answer(self.start(f"/api/v1/search?query=a&{query}"))
            self.assertEqual((code, body), (400, reason), query)
        self.assertEqual((self.waiting_now(), self.clock.getDelayedCalls()), (0, []))

    def test_sixty_seconds_is_allowed(self) -> None:
        pending = self.start("/api/v1/messages?wait=60")
        self.clock.advance(59.9)
        self.assertNoResult(pending)
        self.clock.advance(0.1)
        self.assertEqual(self.answer(pending)[0], 200)

    def test_without_wait_nothing_changes(self) -> None:
        for url in ("/api/v1/messages", "/api/v1/messages?count=5",
                    "/api/v1/search?query=x", "/api/v1/search?query=x&wait="):
            code, body = self.answer(self.start(url))
            self.assertEqual((code, json.loads(body)["count"]), (200, 0), url)
        self.assertEqual(self.answer(self.start("/api/v1/message/latest?count=2")),
                         (404, b"message not found"))
        self.assertEqual((self.waiting_now(), self.clock.getDelayedCalls()), (0, []))

    def test_a_client_that_hangs_up_releases_its_waiter(self) -> None:
        site = Site(self.web.resource(), reactor=MemoryReactorClock())
        channel = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
        transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 40000))
        channel.makeConnection(transport)
        channel.dataReceived(b"GET /api/v1/search?query=invoice&wait=30 HTTP/1.1\r\n"
                             b"Host: sink\r\n\r\n")
        self.assertEqual((self.waiting_now(), len(self.clock.getDelayedCalls())), (1, 1))
        channel.connectionLost(Failure(ConnectionDone()))
        self.assertEqual((self.waiting_now(), self.clock.getDelayedCalls()), (0, []))
        del self.asked[:]
        self.deliver("invoice 1")
        self.assertEqual((self.asked, transport.value()), ([], b""))


class NoWaitingTests(WebTestCase):
    def test_a_listener_without_waiting_says_so(self) -> None:
        response, body = self.request("GET", "/api/v1/messages?wait=1")
        self.assertEqual((response.code, body), (400, b"this listener cannot wait for mail"))


class WaitIsolationTests(WaitingWeb, WebTestCase):
    auth_required = True
    isolation = "user"

    def auth(self, user: str, password: str) -> dict[str, list[str]]:
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        return {"Authorization": [f"Basic {token}"]}

    def test_a_viewer_waits_for_mail_it_may_read(self) -> None:
        alice = self.auth("alice", "wonderland")
        pending = self.start("/api/v1/messages?wait=30", headers=alice)
        self.deliver("for bob", mailbox="bob")
        self.deliver("shared")
        self.assertNoResult(pending)
        self.assertEqual(len(self.asked), 1)
        self.deliver("for alice", mailbox="alice")
        code, body = self.answer(pending)
        found = json.loads(body)
        self.assertEqual((code, found["total"]), (200, 1))
        self.assertEqual([m["Subject"] for m in found["messages"]], ["for alice"])
        boss = self.start("/api/v1/search?query=bob&wait=30", headers=self.auth("boss", "chief"))
        self.assertEqual(self.answer(boss)[0], 200)


def summary(subject: str, mailbox: str = "", read: bool = False) -> Summary:
    return Summary(f"id-{subject}", mailbox, read, 1_700_000_000.0, 100,
                   Facts(subject=subject))


class HeldIndex:
    """An index whose answers the test gives: each C{page} call is a held Deferred."""

    def __init__(self, ready: bool = True) -> None:
        self.is_ready = ready
        self.asked: list[tuple[Any, ...]] = []
        self.answers: list[Deferred[Page]] = []
        self.ready: Deferred[None] = Deferred()

    def page(self, *args: Any) -> Deferred[Page]:
        self.asked.append(args)
        self.answers.append(Deferred())
        return self.answers[-1]

    def when_ready(self) -> Deferred[None]:
        return self.ready


def page(matches: int) -> Page:
    return Page(matches, 0, matches, 0, [])


class WaitingTests(TestCase):
    def setUp(self) -> None:
        self.index = HeldIndex()
        self.clock = Clock()
        self.metrics = Metrics()
        self.waiting = Waiting(self.index, self.clock, self.metrics)

    def wait(self, query: str = "invoice", count: int = 1, seconds: float = 30,
             request: DummyRequest | None = None) -> Deferred[Page]:
        served: Any = request or DummyRequest([])
        return self.waiting.until(served, Question(query, None, 0, 50), count, seconds)

    def event(self, kind: str, payload: Any) -> None:
        self.waiting.index_event(kind, payload)
        self.clock.advance(0)

    def test_a_message_arriving_while_the_index_is_asked_asks_once_more(self) -> None:
        answer = self.wait()
        self.event("new", summary("invoice 1"))
        self.event("new", summary("invoice 2"))
        self.assertEqual(len(self.index.asked), 1)
        self.index.answers[0].callback(page(0))
        self.assertEqual(len(self.index.asked), 2)
        self.assertNoResult(answer)
        self.index.answers[1].callback(page(2))
        self.assertEqual(self.successResultOf(answer).matches, 2)

    def test_a_batch_of_events_is_one_query(self) -> None:
        answer = self.wait(count=3)
        self.index.answers[0].callback(page(0))
        for n in range(3):
            self.waiting.index_event("new", summary(f"invoice {n}"))
        self.waiting.index_event("delete", ["x"])
        self.clock.advance(0)
        self.assertEqual(len(self.index.asked), 2)
        self.index.answers[1].callback(page(3))
        self.successResultOf(answer)

    def test_update_events_wake_too(self) -> None:
        answer = self.wait("is:read")
        self.index.answers[0].callback(page(0))
        self.event("new", summary("x", read=False))
        self.assertEqual(len(self.index.asked), 1)
        self.event("update", summary("x", read=True))
        self.index.answers[1].callback(page(1))
        self.successResultOf(answer)

    def test_time_up_while_asking_answers_with_that_answer(self) -> None:
        answer = self.wait(count=5, seconds=1)
        self.clock.advance(1)
        self.assertNoResult(answer)
        self.index.answers[0].callback(page(2))
        self.assertEqual(self.successResultOf(answer).matches, 2)
        self.assertEqual(len(self.index.asked), 1)

    def test_hanging_up_releases_the_waiter(self) -> None:
        request = DummyRequest([])
        answer = self.wait(request=request)
        self.index.answers[0].callback(page(0))
        request.processingFailed(Failure(ConnectionDone()))
        self.failureResultOf(answer, CancelledError)
        self.assertEqual((waiting_gauge(self.metrics), self.clock.getDelayedCalls()),
                         (0, []))
        self.event("new", summary("invoice 1"))
        self.assertEqual(len(self.index.asked), 1)

    def test_cancelling_releases_the_waiter(self) -> None:
        answer = self.wait()
        answer.cancel()
        self.failureResultOf(answer, CancelledError)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.index.answers[0].callback(page(1))  # the answer of a query still running
        self.assertEqual(waiting_gauge(self.metrics), 0)

    def test_an_index_failure_fails_the_request(self) -> None:
        answer = self.wait()
        self.index.answers[0].errback(Failure(RuntimeError("disk on fire")))
        self.failureResultOf(answer, RuntimeError)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_an_index_still_being_built_is_asked_again_when_ready(self) -> None:
        self.index.is_ready = False
        answer = self.wait()
        self.index.answers[0].callback(page(0))
        self.index.ready.callback(None)
        self.assertEqual(len(self.index.asked), 2)
        self.index.answers[1].callback(page(1))
        self.successResultOf(answer)

    def test_events_without_waiters_cost_nothing(self) -> None:
        self.waiting.index_event("new", summary("invoice"))
        self.assertEqual(self.clock.getDelayedCalls(), [])

