"""
Mailpit's tag routes: C{GET /api/v1/tags} (every tag the viewer's messages carry),
C{PUT /api/v1/tags} (C{{"IDs": [...], "Tags": [...]}}: set those messages' tags exactly; an
empty or absent C{Tags} clears), C{PUT /api/v1/tags/{Tag}} (C{{"Name": new}}: rename) and
C{DELETE /api/v1/tags/{Tag}} (take it off every message). Tags are kept as Maildir keywords
(L{mailsink.index.tags}); a folder's 27th tag is refused with a 400 that says so.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import inlineCallbacks
from twisted.web.iweb import IRequest

from mailsink.tags.keywords import TagLimit
from mailsink.tags.names import clean_tag, unique_tags
from mailsink.web.access import Viewer
from mailsink.web.requests import BadRequest, json_body
from mailsink.web.routing import Routes, app, for_viewer


class TagRoutes(Routes):
    """The tag routes, on the one L{app}; L{mailsink.web.app.WebApp} inherits them."""

    @app.route("/api/v1/tags", methods=["GET"])
    @for_viewer
    @inlineCallbacks
    def all_tags(self, request: IRequest, viewer: Viewer) -> Any:
        counts = yield self.index.tag_counts(viewer.mailboxes)
        return self._json(request, list(counts))

    @app.route("/api/v1/tags", methods=["PUT"])
    @for_viewer
    @inlineCallbacks
    def set_tags(self, request: IRequest, viewer: Viewer) -> Any:
        body = json_body(request, required=True)
        ids, tags = body.get("IDs"), body.get("Tags") or []
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise BadRequest("IDs must be a list of message IDs")
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            raise BadRequest("Tags must be a list of tag names")
        if ids:
            try:
                yield self.index.set_tags(ids, list(unique_tags(tags)), viewer.mailboxes)
            except TagLimit as error:
                raise BadRequest(str(error)) from None
        return self._ok(request)

    @app.route("/api/v1/tags/<string:tag>", methods=["PUT"])
    @for_viewer
    @inlineCallbacks
    def rename_tag(self, request: IRequest, viewer: Viewer, tag: str) -> Any:
        name = json_body(request, required=True).get("Name")
        if not isinstance(name, str) or not clean_tag(name):
            raise BadRequest("Name must be a tag name: letters, digits, spaces, '-', '_', '.'")
        renamed = yield self.index.rename_tag(tag, clean_tag(name), viewer.mailboxes)
        if not renamed:
            raise BadRequest(f"tag not found: {tag}")
        return self._ok(request)

    @app.route("/api/v1/tags/<string:tag>", methods=["DELETE"])
    @for_viewer
    @inlineCallbacks
    def delete_tag(self, request: IRequest, viewer: Viewer, tag: str) -> Any:
        yield self.index.delete_tag(tag, viewer.mailboxes)
        return self._ok(request)
