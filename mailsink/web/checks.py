"""
The message check routes: C{GET /api/v1/message/{ID}/lint} now (L{mailsink.checks.lint});
the HTML, link and spam checks will join it here.

A check reads the whole message and its work grows with the message's size, so it runs in
the worker threads (C{run_blocking}), never on the reactor thread.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import inlineCallbacks
from twisted.web.iweb import IRequest

from mailsink.checks.lint import lint
from mailsink.web.access import Viewer
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
