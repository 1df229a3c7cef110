"""
The one Klein application and what every group of web routes shares.

The routes live in more than one module (L{mailsink.web.app}, L{mailsink.web.actions}),
each a class that L{WebApp} inherits; they all register on L{app}, so the one resource
serves them all. Here: the collaborators the routes are given, who asks (L{for_viewer}),
answering JSON, and finding the message a URL names.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from typing import Any

from klein import Klein
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.web.iweb import IRequest

from mailsink.chaos import Chaos
from mailsink.checks.link_check import LinkChecker
from mailsink.checks.spamc import Spamd
from mailsink.index.codec import Page
from mailsink.message import mime
from mailsink.message.shapes import Summary
from mailsink.metrics import Metrics
from mailsink.relay.pool import RelayService
from mailsink.sessions.store import SessionLog, no_sessions
from mailsink.store.maildir import Maildir
from mailsink.threads import RunBlocking
from mailsink.web.access import Access, Viewer
from mailsink.web.events import EventHub
from mailsink.web.requests import BadRequest, query_argument, wait_arguments
from mailsink.web.waiting import Question, Waiting

app = Klein()
"""Every route and error handler, whichever module defines it."""

_NO_SESSIONS = no_sessions()


class NotFound(Exception):
    """No such message (or part) for this viewer."""


def for_viewer(route: Callable[..., Any]) -> Callable[..., Deferred[Any]]:
    """Run C{route(self, request, viewer, ...)} as the viewer the guard admitted."""

    @functools.wraps(route)
    @inlineCallbacks
    def checked(self: Routes, request: IRequest, *args: Any, **kwargs: Any) -> Any:
        viewer = self.access.viewer(request)  # Guard admitted every request first
        yield self.index.caught_up()  # what was delivered before the request is in it
        result = yield route(self, request, viewer, *args, **kwargs)
        return result

    return checked


class Routes:
    """The base of every route group: the collaborators and the helpers routes share."""

    app = app

    def __init__(self, index: Any, access: Access, hub: EventHub, metrics: Metrics,
                 run_blocking: RunBlocking, chaos: Chaos | None = None,
                 maildir: Maildir | None = None,
                 hostname: str = "localhost", listener: str = "web",
                 max_message_size: int = 25 * 1024 * 1024,
                 relay: RelayService | None = None,
                 sessions: SessionLog | None = None,
                 links: LinkChecker | None = None,
                 spamd: Spamd | None = None,
                 waiting: Waiting | None = None) -> None:
        self.index = index
        self.access = access
        self.hub = hub
        self.metrics = metrics
        self.run_blocking = run_blocking
        self.chaos = chaos
        """Fault injection, when C{[mailsink] chaos = true}; None otherwise."""
        self.relay = relay
        """The C{[relay]} server, when C{host} is set; None otherwise."""
        self.maildir = maildir
        """Where C{POST /api/v1/send} stores messages; None: sending is not available."""
        self.hostname = hostname
        self.listener = listener
        self.max_message_size = max_message_size
        self.sessions: Any = sessions if sessions is not None else _NO_SESSIONS
        """The SMTP sessions kept (L{mailsink.sessions}); an empty log when none are."""
        self.links = links
        """Checks the links of C{link-check}; None: that check is not available."""
        self.spamd = spamd
        """The spamd of C{[spamassassin] host}; None: the spam check is off."""
        self.waiting = waiting
        """Holds C{?wait=} requests until mail comes; None: C{wait} is answered 400."""

    @app.handle_errors(BadRequest)
    def _bad_request(self, request: IRequest, failure: Any) -> bytes:
        request.setResponseCode(400)
        request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
        return str(failure.value).encode("utf-8")

    @app.handle_errors(NotFound)
    def _not_found(self, request: IRequest, failure: Any) -> bytes:
        request.setResponseCode(404)
        request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
        return b"message not found"

    def _json(self, request: IRequest, value: Any) -> bytes:
        request.setHeader(b"Content-Type", b"application/json; charset=utf-8")
        request.setHeader(b"Cache-Control", b"no-store")
        return json.dumps(value).encode("utf-8")

    def _ok(self, request: IRequest) -> bytes:
        request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
        return b"ok"

    def _page(self, request: IRequest, query: str, start: int, limit: int,
              viewer: Viewer) -> Deferred[Page]:
        """A page of the list or a search; with C{?wait=}, once enough messages match."""
        wait = wait_arguments(request)
        if wait is None:
            return self.index.page(query, start, limit, viewer.mailboxes)
        if self.waiting is None:
            raise BadRequest("this listener cannot wait for mail")
        seconds, count = wait
        mailboxes = None if viewer.mailboxes is None else frozenset(viewer.mailboxes)
        return self.waiting.until(request, Question(query, mailboxes, start, limit), count,
                                  seconds)

    @inlineCallbacks
    def _summary(self, message_id: str, viewer: Viewer, request: IRequest) -> Any:
        """
        The message named in the URL (C{latest}: the newest, or newest matching; with
        C{?wait=}, once enough messages match).
        """
        if message_id == "latest" and wait_arguments(request) is not None:
            page = yield self._page(request, query_argument(request), 0, 1, viewer)
            summary = page.messages[0] if page.messages else None
        elif message_id == "latest":
            summary = yield self.index.latest(query_argument(request), viewer.mailboxes)
        else:
            summary = yield self.index.get(message_id, viewer.mailboxes)
        if summary is None:
            raise NotFound(message_id)
        return summary

    @inlineCallbacks
    def _raw(self, summary: Summary, viewer: Viewer) -> Any:
        """
        The message's bytes. Its file may be renamed between finding and reading it (another
        request marking it read moves it from C{new/} to C{cur/}): then it is looked up once
        more, after the index has followed the rename.
        """
        for _ in range(2):
            path = yield self.index.path(summary.id, viewer.mailboxes)
            if path is None:
                break
            try:
                raw = yield self.run_blocking(functools.partial(_read, path))
            except FileNotFoundError:
                continue
            return raw
        raise NotFound(summary.id)

    @inlineCallbacks
    def _view(self, summary: Summary, viewer: Viewer) -> Any:
        raw = yield self._raw(summary, viewer)
        view = yield self.run_blocking(lambda: mime.view(raw))
        return view


def _read(path: str) -> bytes:
    with open(path, "rb") as stream:
        return stream.read()
