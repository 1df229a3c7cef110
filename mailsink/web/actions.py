"""
The routes that make mailsink act beyond its index: chaos, send, release and relay test.

Chaos sets the faults the SMTP listener injects, send stores a new message in the Maildir,
release and relay test talk to the C{[relay]} server. Each needs a collaborator that is
there only when configured, and answers 400 saying so when it is not; the rest of the API
(L{mailsink.web.app}) reads and marks what the index holds.
"""

from __future__ import annotations

import json
from typing import Any

from twisted.internet.defer import inlineCallbacks
from twisted.web.iweb import IRequest

from mailsink.chaos import Chaos
from mailsink.index import codec as index_codec
from mailsink.relay.pool import RelayService
from mailsink.sentences import Diagnosis
from mailsink.store.delivery import Envelope, trace_headers
from mailsink.store.maildir import StoreError
from mailsink.web.access import Viewer
from mailsink.web.compose import Composed, SendError, compose
from mailsink.web.requests import BadRequest, json_body
from mailsink.web.routing import Routes, app, for_viewer


class ActionRoutes(Routes):
    """Chaos, send, release and relay test, on the one L{app}; L{WebApp} inherits them."""

    # Chaos (fault injection).

    def _enabled_chaos(self) -> Chaos:
        if self.chaos is None:
            raise BadRequest("Chaos is not enabled")
        return self.chaos

    @app.route("/api/v1/chaos", methods=["GET"])
    @for_viewer
    def get_chaos(self, request: IRequest, viewer: Viewer) -> bytes:
        return self._json(request, self._enabled_chaos().to_json())

    @app.route("/api/v1/chaos", methods=["PUT"])
    @for_viewer
    def set_chaos(self, request: IRequest, viewer: Viewer) -> bytes:
        chaos = self._enabled_chaos()
        try:
            chaos.set_triggers(json_body(request, required=False))
        except ValueError as error:
            raise BadRequest(str(error)) from None
        return self._json(request, chaos.to_json())

    # Sending (the message is stored here, as if received).

    @app.route("/api/v1/send", methods=["POST"])
    @for_viewer
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
    @for_viewer
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
    @for_viewer
    @inlineCallbacks
    def relay_test(self, request: IRequest, viewer: Viewer) -> Any:
        if self.relay is None:  # answered in the route's own shape, as every failure is
            return self._json(request, {"status": "error",
                                        "message": "relay is not configured: set [relay] host"})
        relay = self.relay
        try:
            yield relay.test()
        except Diagnosis as diagnosis:
            return self._json(request, {"status": "error", "message": str(diagnosis)})
        return self._json(request, {"status": "ok", "message": "SMTP connection successful"})


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
