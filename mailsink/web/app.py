"""
The web view and the Mailpit-compatible JSON API, as one Klein application.

Given its collaborators (index, message parser, access rules, metrics, event hub) and no
globals, so tests drive it with C{treq.testing.StubTreq}. File reads and MIME parsing run
off the reactor thread (C{run_blocking}); the index answers from its own thread.
"""

from __future__ import annotations

import functools
import json
import os
import re
import time
from collections.abc import Callable
from typing import Any, cast

from klein import Klein
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.web.iweb import IRequest
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET
from twisted.web.static import File
from twisted.web.websocket import WebSocketResource

from mailsink import __version__, index_codec, mime
from mailsink.chaos import Chaos
from mailsink.delivery import Envelope, trace_headers
from mailsink.maildir import Maildir, StoreError
from mailsink.messages import MessageView, Summary
from mailsink.metrics import Metrics
from mailsink.relay.pool import RelayService
from mailsink.sentences import Diagnosis
from mailsink.web.access import Access, Viewer
from mailsink.web.compose import Composed, SendError, compose
from mailsink.web.events import EventHub, EventsWebSocket
from mailsink.web.requests import BadRequest, json_body, page_arguments, query_argument

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

RunBlocking = Callable[[Callable[[], Any]], Deferred[Any]]


class NotFound(Exception):
    """No such message (or part) for this viewer."""


def _for_viewer(route: Callable[..., Any]) -> Callable[..., Deferred[Any]]:
    """Run C{route(self, request, viewer, ...)} once L{Access} knows who asks (else 401)."""

    @functools.wraps(route)
    @inlineCallbacks
    def checked(self: WebApp, request: IRequest, *args: Any, **kwargs: Any) -> Any:
        viewer = yield self.access.viewer(request)
        if viewer is None:
            return b"authentication required"
        result = yield route(self, request, viewer, *args, **kwargs)
        return result

    return checked


class WebApp:
    """Routes of the page and the API (see C{shared/mailpit-api.md})."""

    app = Klein()

    def __init__(self, index: Any, access: Access, hub: EventHub, metrics: Metrics,
                 run_blocking: RunBlocking, chaos: Chaos | None = None,
                 maildir: Maildir | None = None,
                 hostname: str = "localhost", listener: str = "web",
                 max_message_size: int = 25 * 1024 * 1024,
                 relay: RelayService | None = None) -> None:
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

    def resource(self) -> Resource:
        """The root resource: every route, each response marked C{nosniff}."""
        return _SecurityHeaders(self.app.resource())

    # Plumbing.

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

    @inlineCallbacks
    def _summary(self, message_id: str, viewer: Viewer, request: IRequest) -> Any:
        """The message named in the URL (C{latest}: the newest, or newest matching)."""
        if message_id == "latest":
            summary = yield self.index.latest(query_argument(request), viewer.mailboxes)
        else:
            summary = yield self.index.get(message_id, viewer.mailboxes)
        if summary is None:
            raise NotFound(message_id)
        return summary

    @inlineCallbacks
    def _raw(self, summary: Summary, viewer: Viewer) -> Any:
        path = yield self.index.path(summary.id, viewer.mailboxes)
        if path is None:
            raise NotFound(summary.id)
        try:
            raw = yield self.run_blocking(lambda: _read(path))
        except FileNotFoundError:
            raise NotFound(summary.id) from None
        return raw

    @inlineCallbacks
    def _view(self, summary: Summary, viewer: Viewer) -> Any:
        raw = yield self._raw(summary, viewer)
        view = yield self.run_blocking(lambda: mime.view(raw))
        return view

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
        return File(STATIC)

    @app.route("/api/v1/swagger.json", methods=["GET"])
    def swagger(self, request: IRequest) -> bytes:
        request.setHeader(b"Content-Type", b"application/json; charset=utf-8")
        with open(OPENAPI, "rb") as stream:
            return stream.read()

    # Lists and search.

    @app.route("/api/v1/messages", methods=["GET"])
    @_for_viewer
    @inlineCallbacks
    def list_messages(self, request: IRequest, viewer: Viewer) -> Any:
        start, limit = page_arguments(request)
        page = yield self.index.page("", start, limit, viewer.mailboxes)
        return self._json(request, _page_json(page, start))

    @app.route("/api/v1/search", methods=["GET"])
    @_for_viewer
    @inlineCallbacks
    def search(self, request: IRequest, viewer: Viewer) -> Any:
        start, limit = page_arguments(request)
        query = query_argument(request)
        if not query:
            raise BadRequest("query is required")
        page = yield self.index.page(query, start, limit, viewer.mailboxes)
        return self._json(request, _page_json(page, start))

    @app.route("/api/v1/messages", methods=["PUT"])
    @_for_viewer
    @inlineCallbacks
    def set_read(self, request: IRequest, viewer: Viewer) -> Any:
        body = json_body(request, required=True)
        read = body.get("Read")
        if not isinstance(read, bool):
            raise BadRequest("Read must be true or false")
        ids, search = _ids(body), body.get("Search") or None
        if search is not None and not isinstance(search, str):
            raise BadRequest("Search must be a string")
        yield self.index.set_read(ids, read, search, viewer.mailboxes)
        return self._ok(request)

    @app.route("/api/v1/messages", methods=["DELETE"])
    @_for_viewer
    @inlineCallbacks
    def delete_messages(self, request: IRequest, viewer: Viewer) -> Any:
        ids = _ids(json_body(request, required=False))
        deleted = yield self.index.delete(ids or None, None, viewer.mailboxes)
        self.metrics.deleted.labels("api").inc(deleted)
        return self._ok(request)

    @app.route("/api/v1/search", methods=["DELETE"])
    @_for_viewer
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
    @_for_viewer
    @inlineCallbacks
    def message(self, request: IRequest, viewer: Viewer, message_id: str) -> Any:
        summary = yield self._summary(message_id, viewer, request)
        view = yield self._view(summary, viewer)
        if not summary.read:
            yield self.index.set_read([summary.id], True, None, viewer.mailboxes)
        return self._json(request, view.to_json(summary))

    @app.route("/api/v1/message/<string:message_id>/headers", methods=["GET"])
    @_for_viewer
    @inlineCallbacks
    def headers(self, request: IRequest, viewer: Viewer, message_id: str) -> Any:
        summary = yield self._summary(message_id, viewer, request)
        view = yield self._view(summary, viewer)
        return self._json(request, view.headers)

    @app.route("/api/v1/message/<string:message_id>/raw", methods=["GET"])
    @_for_viewer
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
    @_for_viewer
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
    @_for_viewer
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
    @_for_viewer
    @inlineCallbacks
    def info(self, request: IRequest, viewer: Viewer) -> Any:
        stats = yield self.index.stats(viewer.mailboxes)
        metrics = self.metrics
        return self._json(request, {
            "Version": __version__,
            "LatestVersion": "",
            "Database": stats.path,
            "DatabaseSize": stats.size,
            "Messages": stats.total,
            "Unread": stats.unread,
            "Tags": {},
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
    def webui(self, request: IRequest) -> bytes:
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
            "SpamAssassin": False,
            "ChaosEnabled": self.chaos is not None,
            "DuplicatesIgnored": False,
            "HideDeleteAllButton": False,
        })

    # Chaos (fault injection).

    def _enabled_chaos(self) -> Chaos:
        if self.chaos is None:
            raise BadRequest("Chaos is not enabled")
        return self.chaos

    @app.route("/api/v1/chaos", methods=["GET"])
    @_for_viewer
    def get_chaos(self, request: IRequest, viewer: Viewer) -> bytes:
        return self._json(request, self._enabled_chaos().to_json())

    @app.route("/api/v1/chaos", methods=["PUT"])
    @_for_viewer
    def set_chaos(self, request: IRequest, viewer: Viewer) -> bytes:
        chaos = self._enabled_chaos()
        try:
            chaos.set_triggers(json_body(request, required=False))
        except ValueError as error:
            raise BadRequest(str(error)) from None
        return self._json(request, chaos.to_json())

    # Sending (the message is stored here, as if received).

    @app.route("/api/v1/send", methods=["POST"])
    @_for_viewer
    @inlineCallbacks
    def send(self, request: IRequest, viewer: Viewer) -> Any:
        maildir = self.maildir
        if maildir is None:
            return self._send_error(request, "sending is not available")
        try:
            body = _send_body(request, self.max_message_size)
            composed: Composed = yield self.run_blocking(lambda: compose(
                body, hostname=self.hostname, max_size=self.max_message_size))
        except SendError as error:
            return self._send_error(request, str(error))
        address = request.getClientAddress()
        envelope = Envelope(mail_from=composed.mail_from, recipients=composed.recipients,
                            helo=None, client_address=getattr(address, "host", "unknown"),
                            protocol="HTTP", user=viewer.user, listener=self.listener)
        message = maildir.new_message()
        message.write(trace_headers(envelope, self.hostname, message.name))
        message.write(composed.message)
        try:
            name = yield message.finish()
        except StoreError as error:
            return self._send_error(request, f"the message could not be stored: {error}", 500)
        self.metrics.received.labels(self.listener).inc()
        self.metrics.received_bytes.labels(self.listener).inc(message.size)
        return self._json(request, {"ID": index_codec.message_id(name)})

    def _send_error(self, request: IRequest, text: str, code: int = 400) -> bytes:
        request.setResponseCode(code)
        return self._json(request, {"Error": text})

    # Relaying (to the [relay] server).

    def _relay(self) -> RelayService:
        if self.relay is None:
            raise BadRequest("relay is not configured: set [relay] host")
        return self.relay

    @app.route("/api/v1/message/<string:message_id>/release", methods=["POST"])
    @_for_viewer
    @inlineCallbacks
    def release(self, request: IRequest, viewer: Viewer, message_id: str) -> Any:
        relay = self._relay()
        recipients = _release_recipients(json_body(request, required=True))
        refusal = relay.policy.refusal(recipients)
        if refusal is not None:
            raise BadRequest(refusal)
        summary = yield self._summary(message_id, viewer, request)
        raw = yield self._raw(summary, viewer)
        try:
            yield relay.release(raw, recipients)
        except Diagnosis as diagnosis:
            raise BadRequest(str(diagnosis)) from None
        return self._ok(request)

    @app.route("/api/v1/relay/test", methods=["POST"])
    @_for_viewer
    @inlineCallbacks
    def relay_test(self, request: IRequest, viewer: Viewer) -> Any:
        relay = self._relay()
        try:
            yield relay.test()
        except Diagnosis as diagnosis:
            return self._json(request, {"status": "error", "message": str(diagnosis)})
        return self._json(request, {"status": "ok", "message": "SMTP connection successful"})

    # Live updates.

    @app.route("/api/v1/events", methods=["GET"])
    @_for_viewer
    def events(self, request: IRequest, viewer: Viewer) -> Any:
        return _EventStream(self.hub, viewer)

    @app.route("/api/events", methods=["GET"])
    @_for_viewer
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
        self.hub.serve_sse(request, self.viewer.mailboxes)
        return NOT_DONE_YET


class _WebSocketFactory:
    def __init__(self, hub: EventHub, viewer: Viewer) -> None:
        self.hub = hub
        self.viewer = viewer

    def buildProtocol(self, request: IRequest) -> EventsWebSocket:
        return EventsWebSocket(self.hub, self.viewer.mailboxes)


def _page_json(page: Any, start: int) -> dict[str, Any]:
    return {
        "total": page.total,
        "unread": page.unread,
        "count": len(page.messages),
        "messages_count": page.matches,
        "messages_unread": page.matches_unread,
        "start": start,
        "tags": [],
        "messages": [summary.to_json() for summary in page.messages],
    }


def _ids(body: dict[str, Any]) -> list[str] | None:
    ids = body.get("IDs")
    if ids is None:
        return None
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise BadRequest("IDs must be a list of message IDs")
    return ids


def _send_body(request: IRequest, max_size: int) -> Any:
    """The JSON body of a send request; base64 makes it larger than the message."""
    limit = max_size * 4 // 3 + 1024 * 1024
    body = request.content.read(limit + 1) if request.content is not None else b""
    if len(body) > limit:
        raise SendError(f"the request is larger than {limit} bytes; messages may be at most "
                        f"{max_size} bytes ([mailsink] max_message_size)")
    content_type = (request.getHeader(b"Content-Type") or b"").split(b";")[0].strip().lower()
    if content_type != b"application/json":
        raise SendError("the body must be JSON (Content-Type: application/json)")
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError) as error:
        raise SendError(f"the body is not valid JSON: {error}") from None


def _release_recipients(body: dict[str, Any]) -> list[str]:
    """The C{To} list of a release request: addresses, at least one."""
    to = body.get("To")
    if not isinstance(to, list) or not to or not all(
            isinstance(address, str) and address.strip() for address in to):
        raise BadRequest("To must be a list of one or more addresses")
    addresses = [address.strip() for address in to]
    for address in addresses:
        if any(c in address for c in "\r\n<> ") or "@" not in address:
            raise BadRequest(f"{address!r} is not an email address")
    return addresses


def _read(path: str) -> bytes:
    with open(path, "rb") as stream:
        return stream.read()


def _resident_bytes() -> int:
    try:
        with open("/proc/self/statm") as stream:
            return int(stream.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0
