"""
The mailboxes a viewer may see, with their counts, for the web view's mailbox switcher:
C{GET /api/v1/mailboxes}. C{?mailbox=NAME} on other routes is L{Access.viewer}'s.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import inlineCallbacks
from twisted.web.iweb import IRequest

from mailsink.web.access import NoSuchMailbox, Viewer
from mailsink.web.routing import Routes, app, for_viewer


class MailboxRoutes(Routes):
    """The mailbox list route and the answer to a mailbox the viewer may not see."""

    @app.handle_errors(NoSuchMailbox)
    def _no_such_mailbox(self, request: IRequest, failure: Any) -> bytes:
        request.setResponseCode(404)
        request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
        return b"mailbox not found"

    @app.route("/api/v1/mailboxes", methods=["GET"])
    @for_viewer
    @inlineCallbacks
    def mailboxes(self, request: IRequest, viewer: Viewer) -> Any:
        counts = yield self.index.mailbox_counts()
        rules = [rule.name for rule in self.access.rules]
        if viewer.mailboxes is not None:
            names = list(viewer.mailboxes)
        else:
            names = list(dict.fromkeys(["", *rules, *sorted(counts)]))
        return self._json(request, {"Mailboxes": [
            {"Name": name, "Total": counts.get(name, (0, 0))[0],
             "Unread": counts.get(name, (0, 0))[1]}
            for name in names]})
