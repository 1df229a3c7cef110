"""
The web view and the Mailpit-compatible JSON API, as one Klein application.

Given its collaborators (index, message parser, access rules, metrics, event hub) and no
globals, so tests drive it with C{treq.testing.StubTreq}. File reads and MIME parsing run
off the reactor thread (C{run_blocking}); the index answers from its own thread.
"""

from __future__ import annotations

import os
import re
import time
from typing import Any, cast

from twisted.internet.defer import inlineCallbacks
from twisted.web.iweb import IRequest
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET
from twisted.web.websocket import WebSocketResource

from mailsink import __version__
from mailsink.message import mime
from mailsink.message.shapes import MessageView
from mailsink.web.access import Viewer
from mailsink.web.actions import ActionRoutes
from mailsink.web.checks import CheckRoutes
from mailsink.web.events import EventHub, EventsWebSocket
from mailsink.web.guard import OPEN_PATHS, Guard
from mailsink.web.mailboxes import MailboxRoutes
from mailsink.web.prefix import BasePath
from mailsink.web.requests import BadRequest, json_body, page_arguments, query_argument
from mailsink.web.routing import NotFound, app, for_viewer
from mailsink.web.sessions import SessionRoutes
from mailsink.web.static_files import StaticFiles
from mailsink.web.tags import TagRoutes

STATIC = os.path.join(os.path.dirname(__file__), "static")
OPENAPI = os.path.join(os.path.dirname(__file__), "openapi.json")

# Message HTML may style itself and show its own (cid:) images, nothing more; with
# ?remote=1 the person asked for remote images and styles too. Never scripts.
_HTML_POLICY = ("default-src 'none'; img-src 'self' data:; style-src 'self' 'unsafe-inline' "
                "data:; font-src 'self' data:; form-action 'none'; base-uri 'none'; "
                "frame-ancestors 'self'")
_REMOTE_HTML_POLICY = ("default-src 'none'; img-src * data:; style-src * 'unsafe-inline' "
                       "data:; font-src * data:; form-action 'none'; base-uri 'none'; "
                       "frame-ancestors 'self'")
# The page itself: its own script and styles only; frames only from this origin.
_PAGE_POLICY = ("default-src 'self'; img-src 'self' data:; style-src 'self'; "
                "frame-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; "
                "frame-ancestors 'none'")
# A part (attachment) opened directly must not run in mailsink's origin.
_PART_POLICY = "sandbox; default-src 'none'; img-src 'self' data:; style-src 'unsafe-inline'"
_SAFE_FILENAME = re.compile(r"[^A-Za-z0-9._ -]+")


class WebApp(ActionRoutes, CheckRoutes, SessionRoutes, TagRoutes, MailboxRoutes):
    """Routes of the page and the API (see C{shared/mailpit-api.md}).

    The chaos, send and relay routes are inherited from L{ActionRoutes}, the message checks
    from L{CheckRoutes}, the tag routes from L{TagRoutes}, the collaborators and shared
    helpers from L{mailsink.web.routing.Routes}; all are routes of one L{app}.
    """

    def resource(self, base_path: str = "/") -> Resource:
        """
        The root resource: every route under C{base_path} (the probes at the root too),
        behind the one L{Guard}, each response C{nosniff}.
        """
        guarded = Guard(self.access, self.app.resource())
        return _SecurityHeaders(BasePath(base_path, guarded, also_at_root=OPEN_PATHS))

    # Health, metrics, page.

    @app.route("/livez", methods=["GET"])
    def livez(self, request: IRequest) -> bytes:
        return self._ok(request)

    @app.route("/readyz", methods=["GET"])
    def readyz(self, request: IRequest) -> bytes:
        if not self.index.is_ready:
            request.setResponseCode(503)
            request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
            return b"indexing"
        return self._ok(request)

    @app.route("/metrics", methods=["GET"])
    def metrics_text(self, request: IRequest) -> bytes:
        request.setHeader(b"Content-Type", b"text/plain; version=0.0.4; charset=utf-8")
        return self.metrics.prometheus_text()

    @app.route("/", methods=["GET"])
    def page(self, request: IRequest) -> bytes:
        request.setHeader(b"Content-Type", b"text/html; charset=utf-8")
        request.setHeader(b"Content-Security-Policy", _PAGE_POLICY.encode())
        with open(os.path.join(STATIC, "index.html"), "rb") as stream:
            return stream.read()

    @app.route("/static/", branch=True, methods=["GET"])
    def static(self, request: IRequest) -> Any:
        return StaticFiles(STATIC)

    @app.route("/api/v1/swagger.json", methods=["GET"])
    def swagger(self, request: IRequest) -> bytes:
        request.setHeader(b"Content-Type", b"application/json; charset=utf-8")
        with open(OPENAPI, "rb") as stream:
            return stream.read()

    # Lists and search.

    @app.route("/api/v1/messages", methods=["GET"])
    @for_viewer
    @inlineCallbacks
    def list_messages(self, request: IRequest, viewer: Viewer) -> Any:
        start, limit = page_arguments(request)
        page = yield self._page(request, "", start, limit, viewer)
        tags = yield self.index.tag_counts(viewer.mailboxes)
        return self._json(request, _page_json(page, start, tags))

    @app.route("/api/v1/search", methods=["GET"])
    @for_viewer
    @inlineCallbacks
    def search(self, request: IRequest, viewer: Viewer) -> Any:
        start, limit = page_arguments(request)
        query = query_argument(request)
        if not query:
            raise BadRequest("query is required")
        page = yield self._page(request, query, start, limit, viewer)
        tags = yield self.index.tag_counts(viewer.mailboxes)
        return self._json(request, _page_json(page, start, tags))

    @app.route("/api/v1/messages", methods=["PUT"])
    @for_viewer
    @inlineCallbacks
    def set_read(self, request: IRequest, viewer: Viewer) -> Any:
        body = json_body(request, required=True)
        read = body.get("Read", False)  # Mailpit's default
        if not isinstance(read, bool):
            raise BadRequest("Read must be true or false")
        ids, search = _ids(body) or None, body.get("Search") or None  # neither: all
        if search is not None and not isinstance(search, str):
            raise BadRequest("Search must be a string")
        yield self.index.set_read(ids, read, search, viewer.mailboxes)
        return self._ok(request)

    @app.route("/api/v1/messages", methods=["DELETE"])
    @for_viewer
    @inlineCallbacks
    def delete_messages(self, request: IRequest, viewer: Viewer) -> Any:
        ids = _ids(json_body(request, required=False))
        deleted = yield self.index.delete(ids or None, None, viewer.mailboxes)
        self.metrics.deleted.labels("api").inc(deleted)
        return self._ok(request)

    @app.route("/api/v1/search", methods=["DELETE"])
    @for_viewer
    @inlineCallbacks
    def delete_search(self, request: IRequest, viewer: Viewer) -> Any:
        query = query_argument(request)
        if not query:
            raise BadRequest("query is required")
        deleted = yield self.index.delete(None, query, viewer.mailboxes)
        self.metrics.deleted.labels("api").inc(deleted)
        return self._ok(request)

    # One message.

    @app.route("/api/v1/message/<string:message_id>", methods=["GET"])
    @for_viewer
    @inlineCallbacks
    def message(self, request: IRequest, viewer: Viewer, message_id: str) -> Any:
        summary = yield self._summary(message_id, viewer, request)
        view = yield self._view(summary, viewer)
        if not summary.read:
            yield self.index.set_read([summary.id], True, None, viewer.mailboxes)
        return self._json(request, view.to_json(summary))

    @app.route("/api/v1/message/<string:message_id>/headers", methods=["GET"])
    @for_viewer
    @inlineCallbacks
    def headers(self, request: IRequest, viewer: Viewer, message_id: str) -> Any:
        summary = yield self._summary(message_id, viewer, request)
        view = yield self._view(summary, viewer)
        return self._json(request, view.headers)

    @app.route("/api/v1/message/<string:message_id>/raw", methods=["GET"])
    @for_viewer
    @inlineCallbacks
    def raw(self, request: IRequest, viewer: Viewer, message_id: str) -> Any:
        summary = yield self._summary(message_id, viewer, request)
        raw = yield self._raw(summary, viewer)
        request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
        if request.args.get(b"dl") == [b"1"]:
            request.setHeader(b"Content-Disposition",
                              f'attachment; filename="{summary.id}.eml"'.encode())
        return raw

    @app.route("/api/v1/message/<string:message_id>/part/<string:part_id>", methods=["GET"])
    @for_viewer
    @inlineCallbacks
    def part(self, request: IRequest, viewer: Viewer, message_id: str, part_id: str) -> Any:
        summary = yield self._summary(message_id, viewer, request)
        raw = yield self._raw(summary, viewer)
        found = yield self.run_blocking(lambda: mime.part(raw, part_id))
        if found is None:
            raise NotFound(part_id)
        content_type, filename, payload = found
        request.setHeader(b"Content-Type", content_type.encode("latin-1", "replace"))
        request.setHeader(b"Content-Security-Policy", _PART_POLICY.encode())
        safe = _SAFE_FILENAME.sub("_", filename) or f"part-{part_id}"
        request.setHeader(b"Content-Disposition", f'attachment; filename="{safe}"'.encode())
        return payload

    @app.route("/view/<string:name>", methods=["GET"])
    @for_viewer
    @inlineCallbacks
    def body_view(self, request: IRequest, viewer: Viewer, name: str) -> Any:
        message_id, dot, kind = name.rpartition(".")
        if not dot or kind not in ("html", "txt"):
            raise NotFound(name)
        summary = yield self._summary(message_id, viewer, request)
        view: MessageView = yield self._view(summary, viewer)
        if kind == "txt":
            request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
            return view.text.encode("utf-8")
        remote = request.args.get(b"remote") == [b"1"]
        request.setHeader(b"Content-Type", b"text/html; charset=utf-8")
        request.setHeader(b"Content-Security-Policy",
                          (_REMOTE_HTML_POLICY if remote else _HTML_POLICY).encode())
        return mime.html_with_cid_urls(view.html, summary.id, view).encode("utf-8")

    # About the server.

    @app.route("/api/v1/info", methods=["GET"])
    @for_viewer
    @inlineCallbacks
    def info(self, request: IRequest, viewer: Viewer) -> Any:
        stats = yield self.index.stats(viewer.mailboxes)
        tags = yield self.index.tag_counts(viewer.mailboxes)
        metrics = self.metrics
        return self._json(request, {
            "Version": __version__,
            "LatestVersion": "",
            "Database": stats.path,
            "DatabaseSize": stats.size,
            "Messages": stats.total,
            "Unread": stats.unread,
            "Tags": tags,
            "RuntimeStats": {
                "Uptime": int(time.time() - metrics.started),
                "Memory": _resident_bytes(),
                "MessagesDeleted": metrics.total(metrics.deleted),
                "SMTPAccepted": metrics.total(metrics.received),
                "SMTPAcceptedSize": metrics.total(metrics.received_bytes),
                "SMTPRejected": metrics.total(metrics.rejected),
                "SMTPIgnored": 0,
            },
        })

    @app.route("/api/v1/webui", methods=["GET"])
    @for_viewer
    def webui(self, request: IRequest, viewer: Viewer) -> bytes:
        return self._json(request, {
            "Label": "",
            "MessageRelay": {"Enabled": self.relay is not None,
                             "SMTPServer": self.relay.server if self.relay else "",
                             "AllowedRecipients": self.relay.policy.allowed if self.relay
                             else "",
                             "BlockedRecipients": self.relay.policy.blocked if self.relay
                             else "",
                             "ReturnPath": "", "OverrideFrom": "",
                             "PreserveMessageIDs": False},
            "SpamAssassin": self.spamd is not None,
            "ChaosEnabled": self.chaos is not None,
            "DuplicatesIgnored": False,
            "HideDeleteAllButton": False,
        })

    # Live updates.

    @app.route("/api/v1/events", methods=["GET"])
    @for_viewer
    def events(self, request: IRequest, viewer: Viewer) -> Any:
        return _EventStream(self.hub, viewer)

    @app.route("/api/events", methods=["GET"])
    @for_viewer
    def events_websocket(self, request: IRequest, viewer: Viewer) -> Any:
        return WebSocketResource(cast(Any, _WebSocketFactory(self.hub, viewer)))


class _SecurityHeaders(Resource):
    """Sets the headers every response carries, then lets Klein route the request."""

    isLeaf = True

    def __init__(self, wrapped: Resource) -> None:
        super().__init__()
        self._wrapped = wrapped

    def render(self, request: IRequest) -> Any:
        request.setHeader(b"X-Content-Type-Options", b"nosniff")
        request.setHeader(b"Referrer-Policy", b"no-referrer")
        return self._wrapped.render(request)


class _EventStream(Resource):
    """A response that stays open (Klein would finish a plain return value)."""

    isLeaf = True

    def __init__(self, hub: EventHub, viewer: Viewer) -> None:
        super().__init__()
        self.hub = hub
        self.viewer = viewer

    def render_GET(self, request: IRequest) -> int:
        self.hub.serve_sse(request, self.viewer.mailboxes, self.viewer.sessions_of)
        return NOT_DONE_YET


class _WebSocketFactory:
    def __init__(self, hub: EventHub, viewer: Viewer) -> None:
        self.hub = hub
        self.viewer = viewer

    def buildProtocol(self, request: IRequest) -> EventsWebSocket:
        return EventsWebSocket(self.hub, self.viewer.mailboxes, self.viewer.sessions_of)


def _page_json(page: Any, start: int, tags: dict[str, int]) -> dict[str, Any]:
    return {
        "total": page.total,
        "unread": page.unread,
        "count": len(page.messages),
        "messages_count": page.matches,
        "messages_unread": page.matches_unread,
        "start": start,
        "tags": list(tags),
        "messages": [summary.to_json() for summary in page.messages],
    }


def _ids(body: dict[str, Any]) -> list[str] | None:
    ids = body.get("IDs")
    if ids is None:
        return None
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise BadRequest("IDs must be a list of message IDs")
    return ids


def _resident_bytes() -> int:
    try:
        with open("/proc/self/statm") as stream:
            return int(stream.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0
