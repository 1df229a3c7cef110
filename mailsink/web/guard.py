"""
The one door of the web listener: every request but the health probes is admitted by
L{Access} before any route sees it.

One resource in front of the whole Klein application, not a check in each route, so a page,
a static file, an unknown path or a route added later cannot be served without credentials
when C{[web] auth = required}. Orchestrators probe C{/livez} and C{/readyz} without
credentials, so those two stay open.
"""

from __future__ import annotations

from typing import Any, cast

from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource, Resource
from twisted.web.server import NOT_DONE_YET, Request

from mailsink.web.access import Access

log = Logger()

OPEN_PATHS = frozenset({b"/livez", b"/readyz"})
"""
Paths served to anyone: liveness and readiness probes (the exact path, nothing under it),
below C{[web] base_path} (the path sent, less what L{mailsink.web.prefix.BasePath} moved
to C{prepath}).
"""


class Guard(Resource):
    """Renders C{wrapped} for requests L{Access} admits; answers the others 401."""

    isLeaf = True

    def __init__(self, access: Access, wrapped: IResource) -> None:
        super().__init__()
        self._access = access
        self._wrapped = wrapped

    def render(self, request: IRequest) -> Any:
        if _below_base_path(request) in OPEN_PATHS:
            return self._wrapped.render(request)
        served = cast(Request, request)  # what Site hands a resource; IRequest lacks render
        gone: list[Failure] = []
        served.notifyFinish().addErrback(gone.append)
        deciding = self._access.admit(request)

        def decided(admitted: bool) -> None:
            if not gone:  # a client that left while its password was checked gets nothing
                served.render(self._wrapped if admitted else _DENIED)

        def failed(failure: Failure) -> None:
            if gone:
                log.failure("serving {path} failed", failure,
                            path=request.path.decode("latin-1"))
            else:
                served.processingFailed(failure)  # logs it

        deciding.addCallback(decided).addErrback(failed)
        return NOT_DONE_YET


def _below_base_path(request: IRequest) -> bytes:
    """The path as sent (not unquoted) less the prefix's segments, now in C{prepath}."""
    segments = request.path.split(b"/")[1:]
    return b"/" + b"/".join(segments[len(request.prepath):])


class _Denied(Resource):
    """The body of a 401 (L{Access} has set its status and challenge), for any method."""

    isLeaf = True

    def render(self, request: IRequest) -> bytes:
        return b"authentication required"


_DENIED = _Denied()
