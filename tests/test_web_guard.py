"""
The one guard in front of the web listener (L{mailsink.web.guard.Guard}), in memory:
with C{auth = required} every route, method and unknown path answers 401 with the Basic
challenge until the credentials are right, only C{/livez} and C{/readyz} stay open, a slow
password check holds the answer (and a client that left meanwhile gets nothing), and a
route reached without the guard refuses to run rather than run as nobody.
"""

from __future__ import annotations

import base64
import re
from typing import Any

from test_web_api import FakeIndex
from treq.testing import StubTreq
from twisted.cred.error import UnauthorizedLogin
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET
from twisted.web.test.requesthelper import DummyRequest

from mailsink.auth.environment import EnvironmentChecker
from mailsink.metrics import Metrics
from mailsink.web.access import Access
from mailsink.web.app import WebApp
from mailsink.web.events import EventHub
from mailsink.web.guard import OPEN_PATHS, Guard
from mailsink.web.routing import app

CHALLENGE = 'Basic realm="mailsink"'
_VARIABLE = re.compile(r"<(?:[^:<>]+:)?([^<>]+)>")


def every_route() -> list[tuple[str, str]]:
    """(method, path) for each rule and method of the Klein app, variables filled."""
    return [(method, _VARIABLE.sub("x", rule.rule))
            for rule in app.url_map.iter_rules() for method in sorted(rule.methods or ())]


def basic(user: str, password: str) -> dict[str, list[str]]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": [f"Basic {token}"]}


class SlowChecker:
    """A checker whose answers the test gives, like the password file's thread pool."""

    credentialInterfaces = EnvironmentChecker.credentialInterfaces

    def __init__(self) -> None:
        self.pending: list[Deferred[bytes]] = []

    def requestAvatarId(self, credentials: Any) -> Deferred[bytes]:
        self.pending.append(Deferred())
        return self.pending[-1]


class GuardTestCase(TestCase):
    def web(self, access: Access) -> WebApp:
        self.index = FakeIndex()
        return WebApp(self.index, access, EventHub(Clock()), Metrics(), maybeDeferred)

    def request(self, treq: StubTreq, method: str, path: str, **kwargs: Any) -> tuple[Any, bytes]:
        response = self.successResultOf(treq.request(method, "http://sink" + path, **kwargs))
        return response, self.successResultOf(response.content())


class RequiredTests(GuardTestCase):
    def setUp(self) -> None:
        access = Access(True, EnvironmentChecker("alice:wonderland"), "none", [])
        self.treq = StubTreq(self.web(access).resource())

    def assert_challenged(self, method: str, path: str, **kwargs: Any) -> None:
        response, body = self.request(self.treq, method, path, **kwargs)
        where = f"{method} {path}"
        self.assertEqual(response.code, 401, where)
        challenge = response.headers.getRawHeaders("WWW-Authenticate") or [""]
        self.assertTrue(challenge[0].startswith(CHALLENGE), (where, challenge))
        self.assertEqual(body, b"" if method == "HEAD" else b"authentication required", where)

    def test_every_route_and_unknown_path_asks_for_credentials(self) -> None:
        routes = [(m, p) for m, p in every_route() if p.encode() not in OPEN_PATHS]
        self.assertIn(("GET", "/"), routes)
        self.assertIn(("GET", "/api/events"), routes)
        extra = [("GET", "/static/js/main.js"), ("GET", "/no/such/page"), ("POST", "/"),
                 ("GET", "/livez/"), ("GET", "/readyz/x"), ("GET", "/%6civez")]
        for method, path in routes + extra:
            self.assert_challenged(method, path)
            self.assert_challenged(method, path, headers=basic("alice", "wrong"))
            self.assert_challenged(method, path, headers={"Authorization": ["Basic !!"]})
        self.assertEqual(self.index.summaries, {})

    def test_probes_stay_open(self) -> None:
        for path in ("/livez", "/readyz"):
            for headers in ({}, basic("alice", "wrong")):
                response, body = self.request(self.treq, "GET", path, headers=headers)
                self.assertEqual((response.code, body), (200, b"ok"), path)

    def test_the_right_credentials_reach_every_kind_of_path(self) -> None:
        # (static files too, but iosim's transport cannot pull a file: tests/test_e2e_web_auth)
        alice = basic("alice", "wonderland")
        response, body = self.request(self.treq, "GET", "/", headers=alice)
        self.assertEqual(response.code, 200)
        self.assertIn(b"<html", body.lower())
        response, _ = self.request(self.treq, "GET", "/api/v1/messages", headers=alice)
        self.assertEqual(response.code, 200)
        response, _ = self.request(self.treq, "GET", "/no/such/page", headers=alice)
        self.assertEqual(response.code, 404)
        response, _ = self.request(self.treq, "GET", "/metrics", headers=alice)
        self.assertEqual(response.code, 200)


class SlowCheckTests(GuardTestCase):
    def setUp(self) -> None:
        self.checker = SlowChecker()
        self.resource = self.web(Access(True, self.checker, "none", [])).resource()

    def test_the_answer_waits_for_the_check(self) -> None:
        treq = StubTreq(self.resource)
        admitted = treq.get("http://sink/api/v1/messages", headers=basic("alice", "right"))
        refused = treq.get("http://sink/api/v1/messages", headers=basic("alice", "wrong"))
        self.assertNoResult(admitted)
        self.assertNoResult(refused)
        self.checker.pending[0].callback(b"alice")
        self.checker.pending[1].errback(UnauthorizedLogin())
        treq.flush()
        self.assertEqual(self.successResultOf(admitted).code, 200)
        self.assertEqual(self.successResultOf(refused).code, 401)

    def test_a_client_gone_during_the_check_gets_nothing(self) -> None:
        rendered: list[bytes] = []

        class Behind(Resource):
            isLeaf = True

            def render(self, request: Any) -> bytes:
                rendered.append(request.path)
                return b"served"

        guard = Guard(Access(True, self.checker, "none", []), Behind())
        request = DummyRequest([b"api", b"v1", b"messages"])
        request.path = b"/api/v1/messages"
        request.requestHeaders.setRawHeaders(b"Authorization", basic("alice", "right")
                                             ["Authorization"])
        self.assertIs(guard.render(request), NOT_DONE_YET)
        request.processingFailed(Failure(ConnectionDone()))  # the client hung up
        self.checker.pending[0].callback(b"alice")
        self.assertEqual((rendered, request.written), ([], []))


class UnguardedTests(GuardTestCase):
    def test_a_route_without_the_guard_refuses_to_run(self) -> None:
        web = self.web(Access(False, None, "none", []))
        response, _ = self.request(StubTreq(web.app.resource()), "GET", "/api/v1/messages")
        self.assertEqual(response.code, 500)
        self.flushLoggedErrors(KeyError)
