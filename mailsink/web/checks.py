"""
The message check routes: C{GET /api/v1/message/{ID}/lint} (L{mailsink.checks.lint}),
C{/html-check} (L{mailsink.checks.html_check}), C{/link-check}
(L{mailsink.checks.link_check}) and C{/sa-check} (L{mailsink.checks.spamc}).

A check reads the whole message and its work grows with the message's size, so that part
runs in the worker threads (C{run_blocking}), never on the reactor thread; the link and
spam checks then wait on the network on the reactor, without blocking it.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import inlineCallbacks
from twisted.web.iweb import IRequest

from mailsink.checks.html_check import html_check
from mailsink.checks.links import message_links
from mailsink.checks.lint import lint
from mailsink.message import mime
from mailsink.web.access import Viewer
from mailsink.web.requests import BadRequest
from mailsink.web.routing import Routes, app, for_viewer


class CheckRoutes(Routes):
    """The check routes, on the one L{app}; L{mailsink.web.app.WebApp} inherits them."""

    @app.route("/api/v1/message/<string:message_id>/lint", methods=["GET"])
    @for_viewer
    @inlineCallbacks
    def lint(self, request: IRequest, viewer: Viewer, message_id: str) -> Any:
        summary = yield self._summary(message_id, viewer, request)
        raw = yield self._raw(summary, viewer)
        report = yield self.run_blocking(lambda: lint(raw))
        return self._json(request, report.to_json())

    @app.route("/api/v1/message/<string:message_id>/html-check", methods=["GET"])
    @for_viewer
    @inlineCallbacks
    def html_check(self, request: IRequest, viewer: Viewer, message_id: str) -> Any:
        summary = yield self._summary(message_id, viewer, request)
        raw = yield self._raw(summary, viewer)
        report = yield self.run_blocking(lambda: html_check(raw))
        if report is None:  # Mailpit's answer, word for word
            raise BadRequest("message does not contain HTML")
        return self._json(request, report)

    @app.route("/api/v1/message/<string:message_id>/link-check", methods=["GET"])
    @for_viewer
    @inlineCallbacks
    def link_check(self, request: IRequest, viewer: Viewer, message_id: str) -> Any:
        if self.links is None:
            raise BadRequest("the link check is not available")
        follow = (request.args.get(b"follow") or [b""])[0] in (b"true", b"1")
        summary = yield self._summary(message_id, viewer, request)
        raw = yield self._raw(summary, viewer)
        urls = yield self.run_blocking(lambda: _links_of(raw))
        report = yield self.links.check(urls, follow)
        return self._json(request, report.to_json())

    @app.route("/api/v1/message/<string:message_id>/sa-check", methods=["GET"])
    @for_viewer
    @inlineCallbacks
    def sa_check(self, request: IRequest, viewer: Viewer, message_id: str) -> Any:
        if self.spamd is None:  # as Mailpit, which has no such route then
            request.setResponseCode(404)
            request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
            return b"SpamAssassin is not configured: set [spamassassin] host"
        summary = yield self._summary(message_id, viewer, request)
        raw = yield self._raw(summary, viewer)
        result = yield self.spamd.check(raw)
        return self._json(request, result.to_json())


def _links_of(raw: bytes) -> list[str]:
    """The links the link check requests: those of the HTML body, then the text body."""
    view = mime.view(raw)
    return message_links(view.html, view.text)
