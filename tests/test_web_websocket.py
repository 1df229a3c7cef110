"""
Mailpit's WebSocket route `/api/events`, over a real loopback socket: a client built with
twisted.web.websocket receives index events in Mailpit's {"Type", "Data"} shape.
"""

from __future__ import annotations

import json
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks, succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase
from twisted.web.server import Site
from twisted.web.websocket import WebSocketClientEndpoint

from mailsink.metrics import Metrics
from mailsink.web.access import Access
from mailsink.web.app import WebApp
from mailsink.web.events import EventHub


class Listener:
    """A WebSocket client protocol that hands each text message to a waiting Deferred."""

    def __init__(self) -> None:
        self.messages: list[str] = []
        self.waiting: Deferred[str] | None = None
        self.transport: Any = None

    def negotiationStarted(self, transport: Any) -> None:
        self.transport = transport

    def negotiationFinished(self) -> None:
        pass

    def pongReceived(self, payload: bytes) -> None:
        pass

    def textMessageReceived(self, message: str) -> None:
        self.messages.append(message)
        if self.waiting is not None:
            waiting, self.waiting = self.waiting, None
            waiting.callback(message)

    def bytesMessageReceived(self, data: bytes) -> None:
        pass

    def connectionLost(self, reason: Any) -> None:
        pass

    def next_message(self) -> Deferred[str]:
        self.waiting = Deferred()
        return self.waiting.addTimeout(5, reactor)


class WebSocketTests(TestCase):
    @inlineCallbacks
    def test_events_arrive_in_mailpit_shape(self) -> Any:
        hub = EventHub(Clock())
        web = WebApp(_SettledIndex(), Access(False, None, "none", ()), hub, Metrics(), None)
        port = reactor.listenTCP(0, Site(web.resource()), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        listener = Listener()

        class Factory:
            def buildProtocol(self, url: str) -> Listener:
                return listener

        endpoint = WebSocketClientEndpoint.new(
            reactor, f"http://127.0.0.1:{port.getHost().port}/api/events")
        yield Deferred.fromCoroutine(endpoint.connect(Factory())).addTimeout(5, reactor)
        self.addCleanup(lambda: listener.transport.loseConnection())
        arriving = listener.next_message()
        hub.index_event("delete", ["1.M1P1Q1.host"])
        message = yield arriving
        self.assertEqual(json.loads(message), {"Type": "delete",
                                               "Data": {"IDs": ["1.M1P1Q1.host"]}})


class _SettledIndex:
    """An index with nothing waiting to be indexed (events come from the hub here)."""

    def caught_up(self) -> Deferred[None]:
        return succeed(None)

