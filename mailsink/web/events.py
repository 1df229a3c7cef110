"""
Live updates: index events fanned out to browsers over Server-Sent Events (mailsink's own
page, C{/api/v1/events}) and WebSocket (Mailpit's C{/api/events}), in Mailpit's shape
C{{"Type": "new"|"update"|"delete"|"truncate"|"stats", "Data": ...}}, and mailsink's
C{session} (an SMTP session ended; its summary as C{GET /api/v1/sessions} lists it).

Each listener sees only events about the mailboxes it may read.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection
from typing import Any

import attrs
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from mailsink.message.shapes import Summary
from mailsink.sessions.record import Session

log = Logger()

KEEPALIVE = 15.0
"""Seconds between SSE comments that keep idle connections (and proxies) open."""


@attrs.define(eq=False)
class _Listener:
    send: Callable[[str], None]
    mailboxes: Collection[str] | None
    sessions_of: str | None = None
    """Whose sessions' events it gets (None: everyone's), as L{Viewer.sessions_of}."""


class EventHub:
    """Turns index events into JSON lines for every open SSE or WebSocket listener."""

    def __init__(self, clock: IReactorTime) -> None:
        self._listeners: set[_Listener] = set()
        self._keepalive = LoopingCall(self._ping)
        self._keepalive.clock = clock
        self._sse_requests: set[Any] = set()

    def start(self) -> None:
        self._keepalive.start(KEEPALIVE, now=False)

    def stop(self) -> None:
        if self._keepalive.running:
            self._keepalive.stop()
        for request in list(self._sse_requests):
            request.finish()

    def index_event(self, kind: str, payload: Any) -> None:
        """The index's subscriber callback (reactor thread)."""
        for listener in list(self._listeners):
            data = _data_for(kind, payload, listener)
            if data is not _SKIP:
                listener.send(json.dumps({"Type": kind, "Data": data}))

    def add(self, send: Callable[[str], None], mailboxes: Collection[str] | None,
            sessions_of: str | None = None) -> _Listener:
        listener = _Listener(send, mailboxes, sessions_of)
        self._listeners.add(listener)
        return listener

    def remove(self, listener: _Listener) -> None:
        self._listeners.discard(listener)

    def serve_sse(self, request: Any, mailboxes: Collection[str] | None,
                  sessions_of: str | None = None) -> None:
        """Hold C{request} open as an event stream until the client goes."""
        request.setHeader(b"Content-Type", b"text/event-stream; charset=utf-8")
        request.setHeader(b"Cache-Control", b"no-store")
        request.setHeader(b"X-Accel-Buffering", b"no")
        request.write(b": mailsink events\n\n")

        def send(line: str) -> None:
            request.write(b"data: " + line.encode("utf-8") + b"\n\n")

        listener = self.add(send, mailboxes, sessions_of)
        self._sse_requests.add(request)

        def gone(_: object) -> None:
            self.remove(listener)
            self._sse_requests.discard(request)

        request.notifyFinish().addBoth(gone)

    def _ping(self) -> None:
        for request in list(self._sse_requests):
            request.write(b": keep-alive\n\n")


_SKIP = object()


def _data_for(kind: str, payload: Any, listener: _Listener) -> Any:
    mailboxes = listener.mailboxes
    if kind in ("new", "update"):
        summary: Summary = payload
        if mailboxes is not None and summary.mailbox not in mailboxes:
            return _SKIP
        return summary.to_json()
    if kind == "delete":
        return {"IDs": list(payload)}
    if kind == "session":
        session: Session = payload
        if listener.sessions_of is not None and not (session.logged_in
                                                     and session.user == listener.sessions_of):
            return _SKIP
        return session.summary_json()
    return payload


class EventsWebSocket:
    """One WebSocket client of C{/api/events}: only listens."""

    def __init__(self, hub: EventHub, mailboxes: Collection[str] | None,
                 sessions_of: str | None = None) -> None:
        self._hub = hub
        self._mailboxes = mailboxes
        self._sessions_of = sessions_of
        self._listener: _Listener | None = None

    def negotiationStarted(self, transport: Any) -> None:
        self._listener = self._hub.add(transport.sendTextMessage, self._mailboxes,
                                       self._sessions_of)

    def negotiationFinished(self) -> None:
        pass

    def pongReceived(self, payload: bytes) -> None:
        pass

    def textMessageReceived(self, message: str) -> None:
        pass

    def bytesMessageReceived(self, data: bytes) -> None:
        pass

    def connectionLost(self, reason: Any) -> None:
        if self._listener is not None:
            self._hub.remove(self._listener)
