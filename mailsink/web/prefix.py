"""
C{[web] base_path}: the whole web listener served under one URL path prefix, for a reverse
proxy that forwards C{/mailsink/} unchanged (Mailpit's C{--webroot}).

One resource in front of everything, so no route knows the prefix: it moves the prefix's
segments from C{postpath} to C{prepath}, and Klein routes the rest as if at the root (the
page's own URLs are relative, so they follow). Outside the prefix there is nothing: 404,
except the prefix without its final slash, which is redirected to it, and the paths served
at the root as well (the health probes, for whoever probes the backend directly).
"""

from __future__ import annotations

from typing import Any

from twisted.web.iweb import IRequest
from twisted.web.resource import IResource, Resource


class BasePath(Resource):
    """Renders C{wrapped} for requests under C{base_path}; see the module docstring."""

    isLeaf = True

    def __init__(self, base_path: str, wrapped: IResource,
                 also_at_root: frozenset[bytes] = frozenset()) -> None:
        """
        @param base_path: as L{mailsink.values.parse_base_path} gives it, e.g. C{/mailsink/}.
        @param also_at_root: exact paths (e.g. C{b"/livez"}) served outside the prefix too.
        """
        super().__init__()
        self._segments = [segment.encode() for segment in base_path.split("/") if segment]
        self._wrapped = wrapped
        self._also_at_root = also_at_root

    def render(self, request: IRequest) -> Any:
        count = len(self._segments)
        postpath: list[bytes] = request.postpath
        if postpath[:count] == self._segments and len(postpath) > count:
            request.prepath.extend(postpath[:count])
            request.postpath = postpath[count:]
            return self._wrapped.render(request)
        if request.path in self._also_at_root:  # the path as sent: /%6civez is no probe
            return self._wrapped.render(request)
        request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
        if postpath == self._segments:
            # Relative, so it holds whatever path a proxy in front maps to this one.
            _, question, query = request.uri.partition(b"?")
            request.setResponseCode(302)
            request.setHeader(b"Location", self._segments[-1] + b"/" + question + query)
            return b"moved to the path with a final slash"
        request.setResponseCode(404)
        return b"not found: this server serves under " + b"/".join([b"", *self._segments, b""])
