"""
The SMTP sessions in the API: C{GET /api/v1/sessions}, C{GET /api/v1/session/{ID}} and
C{DELETE /api/v1/sessions} (see L{mailsink.sessions}).

With C{isolation = user} and web auth, a user sees only the sessions they logged in with;
admins (and everyone when there is no isolation) see all, anonymous ones included.
"""

from __future__ import annotations

import time
from typing import Any

from twisted.internet.defer import inlineCallbacks
from twisted.web.iweb import IRequest

from mailsink.sessions.record import OUTCOMES
from mailsink.sessions.store import SessionFilter
from mailsink.web.access import Viewer
from mailsink.web.requests import BadRequest, page_arguments
from mailsink.web.routing import Routes, app, for_viewer

RECENT = 300.0
"""Seconds within which a failed session counts for the page's banner."""


def _visible_to(viewer: Viewer) -> SessionFilter:
    return SessionFilter(user=viewer.sessions_of)


def _text_argument(request: IRequest, name: bytes) -> str:
    values = request.args.get(name) or [b""]
    return values[0].decode("utf-8", "replace").strip()


class SessionRoutes(Routes):
    """The routes of the sessions list and one session."""

    @app.route("/api/v1/sessions", methods=["GET"])
    @for_viewer
    @inlineCallbacks
    def list_sessions(self, request: IRequest, viewer: Viewer) -> Any:
        start, limit = page_arguments(request)
        outcome = _text_argument(request, b"outcome")
        if outcome and outcome not in OUTCOMES:
            raise BadRequest(f"outcome must be one of {', '.join(OUTCOMES)} (failed means "
                             "refused, failed or dropped)")
        visible = _visible_to(viewer)
        chosen = SessionFilter(outcome=outcome, listener=_text_argument(request, b"listener"),
                               user=visible.user)
        total, matching, sessions = yield self.sessions.page(chosen, start, limit)
        recent = yield self.sessions.failed_since(visible, time.time() - RECENT)
        return self._json(request, {
            "total": total, "sessions_count": matching, "count": len(sessions),
            "start": start, "recent_failures": recent,
            "sessions": [session.summary_json() for session in sessions]})

    @app.route("/api/v1/session/<string:session_id>", methods=["GET"])
    @for_viewer
    @inlineCallbacks
    def session(self, request: IRequest, viewer: Viewer, session_id: str) -> Any:
        found = yield self.sessions.get(session_id, _visible_to(viewer))
        if found is None:
            request.setResponseCode(404)
            request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
            return b"session not found"
        return self._json(request, found.to_json())

    @app.route("/api/v1/sessions", methods=["DELETE"])
    @for_viewer
    @inlineCallbacks
    def delete_sessions(self, request: IRequest, viewer: Viewer) -> Any:
        yield self.sessions.delete(_visible_to(viewer))
        return self._ok(request)
