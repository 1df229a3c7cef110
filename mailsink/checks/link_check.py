"""
The link check: the HTTP status of each link L{mailsink.checks.links} found, asked with treq
on the reactor (never blocking it), as Mailpit's C{LinkCheckResponse}.

Each link gets a HEAD request, and a GET when the server refuses HEAD (any 4xx or 5xx
answer: servers without HEAD say 405 or 501, but some say 400, 403 or 404); a GET's body is
never read, the connection is dropped once the status line and headers are in. A redirect
is the link's answer unless C{follow} is asked, then up to L{MAX_REDIRECTS} are followed.
At most L{MAX_PARALLEL} links are checked at a time, for the whole daemon, and each link
gets L{LINK_TIMEOUT} seconds for all its requests. A link that cannot be reached (no such
host, connection refused, no answer, TLS failure, more than 256 KiB of headers) is a result
with C{StatusCode} 0 and a C{Status} saying why, never a failure of the check. Only http and
https URLs are ever requested, redirect targets included.
"""

from __future__ import annotations

from collections.abc import Sequence
from http import HTTPStatus
from typing import Any

import attrs
from hyperlink import EncodedURL
from OpenSSL import SSL
from treq.client import HTTPClient
from twisted.internet import defer
from twisted.internet import error as net
from twisted.internet.defer import (
    Deferred,
    DeferredSemaphore,
    FirstError,
    gatherResults,
    inlineCallbacks,
)
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from twisted.web.client import Agent, HTTPConnectionPool, ResponseFailed
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgent

from mailsink import __version__
from mailsink.checks.capped_endpoints import MAX_RECEIVED, CappedEndpoints

MAX_PARALLEL = 5
"""Links checked at once, across every link check the daemon runs."""
LINK_TIMEOUT = 10.0
"""Seconds for one link: its HEAD, GET and redirects together."""
MAX_REDIRECTS = 5
"""Redirects followed for one link with C{follow}; one more is a failure."""
REDIRECTS = frozenset((301, 302, 303, 307, 308))
USER_AGENT = f"mailsink/{__version__} link check".encode()


@attrs.frozen
class LinkStatus:
    """One link's result (Mailpit's C{Link})."""

    url: str
    status_code: int
    """The HTTP status; 0 when there was none (see L{status})."""
    status: str
    """The status's reason phrase, or why there was no status."""

    @property
    def is_error(self) -> bool:
        """Counted in C{Errors}, as Mailpit counts: no answer, or a 4xx or 5xx one."""
        return self.status_code == 0 or self.status_code >= 400

    def to_json(self) -> dict[str, Any]:
        return {"URL": self.url, "StatusCode": self.status_code, "Status": self.status}


@attrs.frozen
class LinkReport:
    """Every link's result, in the order they were found (Mailpit's C{LinkCheckResponse})."""

    links: tuple[LinkStatus, ...]

    def to_json(self) -> dict[str, Any]:
        return {"Errors": sum(link.is_error for link in self.links),
                "Links": [link.to_json() for link in self.links]}


class LinkProblem(Exception):
    """A link that got no HTTP status; the text is its C{Status}."""


class LinkChecker:
    """Checks links over one agent, at most L{MAX_PARALLEL} at a time for all callers."""

    def __init__(self, agent: IAgent, clock: IReactorTime) -> None:
        self._agent = agent
        self._clock = clock
        self._slots = DeferredSemaphore(MAX_PARALLEL)

    @classmethod
    def on(cls, reactor: Any) -> LinkChecker:
        """A checker whose connections are never reused (each link is its own visit)."""
        pool = HTTPConnectionPool(reactor, persistent=False)
        return cls(Agent.usingEndpointFactory(reactor, CappedEndpoints(reactor), pool=pool),
                   reactor)

    def check(self, urls: Sequence[str], follow: bool) -> Deferred[LinkReport]:
        """
        The status of each of C{urls}; never fails. Cancelling it cancels the requests
        under way and the ones waiting for a slot.
        """
        run = _Run(HTTPClient(self._agent), follow)  # a cookie jar of this check's own
        checks = [self._slots.run(self._check_link, run, url) for url in urls]
        done: Deferred[Any] = gatherResults(checks, consumeErrors=True)
        done.addErrback(_first_error)  # only a cancellation gets here

        def cancel(report: Deferred[LinkReport]) -> None:
            run.cancelled = True  # links not started yet never start
            done.cancel()

        report: Deferred[LinkReport] = Deferred(cancel)
        done.addCallback(lambda links: LinkReport(tuple(links)))
        done.addBoth(lambda result: None if report.called else report.callback(result))
        return report

    @inlineCallbacks
    def _check_link(self, run: _Run, url: str) -> Any:
        if run.cancelled:
            raise defer.CancelledError()
        deadline = self._clock.seconds() + LINK_TIMEOUT
        target = url
        try:
            for _ in range(MAX_REDIRECTS + 1):
                code, phrase, location = yield self._status(run.client, target, deadline)
                if not (run.follow and code in REDIRECTS and location):
                    return LinkStatus(url, code, _status_text(code, phrase))
                target = _redirect_target(target, location)
            raise LinkProblem(f"more than {MAX_REDIRECTS} redirects")
        except Exception as error:  # every failure is this link's result
            if run.cancelled:
                raise defer.CancelledError() from None  # nobody waits for the answer
            return LinkStatus(url, 0, failure_status(error))

    @inlineCallbacks
    def _status(self, client: HTTPClient, url: str, deadline: float) -> Any:
        """(code, reason phrase, Location) of C{url}: HEAD, or GET if HEAD is refused."""
        response = yield self._request(client, "HEAD", url, deadline)
        if response.code >= 400:
            response = yield self._request(client, "GET", url, deadline)
        location = response.headers.getRawHeaders(b"location", [b""])[0]
        return response.code, response.phrase, location.decode("latin-1").strip()

    def _request(self, client: HTTPClient, method: str, url: str,
                 deadline: float) -> Deferred[Any]:
        """One request, bounded by the link's deadline; its body, if any, is dropped."""
        left = deadline - self._clock.seconds()
        if left <= 0:
            return defer.fail(defer.TimeoutError())
        headers = Headers({b"User-Agent": [USER_AGENT]})  # the agents below may add to it
        requested = client.request(method, http_url(url), headers=headers,
                                   allow_redirects=False, unbuffered=True)
        requested.addTimeout(left, self._clock, onTimeoutCancel=_timed_out)
        return requested.addCallback(_drop_body)


@attrs.define
class _Run:
    """One call of L{LinkChecker.check}."""

    client: HTTPClient
    follow: bool
    cancelled: bool = False


def http_url(url: str) -> EncodedURL:
    """C{url} ready to request (IDNA host, percent-encoded); L{LinkProblem} unless http(s)."""
    try:
        parsed = EncodedURL.from_text(url)
        valid = parsed.scheme.lower() in ("http", "https") and bool(parsed.host)
        if valid and not 0 < (parsed.port or 80) < 65536:
            valid = False
        if valid:
            return parsed.replace(scheme=parsed.scheme.lower()).to_uri()
    except (ValueError, UnicodeError):
        pass
    raise LinkProblem("not a valid http(s) URL")


def _redirect_target(url: str, location: str) -> str:
    """Where a redirect from C{url} leads; L{LinkProblem} if it leaves http(s)."""
    try:
        target = EncodedURL.from_text(url).click(location).to_text()
    except (ValueError, UnicodeError):
        raise LinkProblem(f"redirects to {location!r}, which is not a valid URL") from None
    if not target.lower().startswith(("http://", "https://")):
        raise LinkProblem(f"redirects to {location}, which is not an http(s) URL; not followed")
    return target


def _timed_out(result: object, timeout: float) -> Failure:
    """A request cancelled at the deadline failed for that, however the agent says it."""
    return Failure(defer.TimeoutError())


def _first_error(failure: Failure) -> Failure:
    failure.trap(FirstError)
    first: FirstError = failure.value  # type: ignore[assignment]
    return first.subFailure


def _drop_body(response: Any) -> Any:
    response.deliverBody(_Discard())
    return response


class _Discard(Protocol):
    """Takes a response body by closing the connection: only the status matters."""

    def connectionMade(self) -> None:
        self.transport.stopProducing()  # type: ignore[union-attr]


def _status_text(code: int, phrase: bytes) -> str:
    """The standard reason phrase (as Mailpit gives), else the server's own."""
    try:
        return HTTPStatus(code).phrase
    except ValueError:
        return phrase.decode("latin-1")


def failure_status(error: BaseException) -> str:
    """Why a link got no HTTP status, in a few words (a link's C{Status})."""
    if isinstance(error, LinkProblem):
        return str(error)
    if isinstance(error, net.DNSLookupError):
        return "no such host"
    if isinstance(error, net.ConnectionRefusedError):
        return "connection refused"
    if isinstance(error, (defer.TimeoutError, net.TimeoutError)):
        return f"no answer within {LINK_TIMEOUT:g} s"
    if isinstance(error, net.TCPTimedOutError):
        return "connection timed out"
    if isinstance(error, net.NoRouteError):
        return "no route to host"
    if isinstance(error, ResponseFailed):
        return _response_failed(error)
    if isinstance(error, net.ConnectError):
        return f"cannot connect: {error.osError or error}"
    return f"request failed: {error}"


def _response_failed(error: ResponseFailed) -> str:
    """The first reason that says something: TLS, or the connection closing."""
    reasons: list[Failure] = list(error.reasons)
    for reason in reasons:
        if isinstance(reason.value, SSL.Error):
            return f"TLS failed: {_ssl_reason(reason.value)}"
        if type(reason.value).__name__ == "VerificationError":  # service_identity's
            return "TLS failed: the certificate is not for this host"
    if any(reason.check(net.ConnectionAborted) for reason in reasons):  # capped_endpoints
        return f"answer too large (over {MAX_RECEIVED // 1024} KiB before the body)"
    if any(reason.check(net.ConnectionDone, net.ConnectionLost) for reason in reasons):
        return "the connection closed before an answer"
    return f"no valid HTTP answer: {reasons[0].getErrorMessage() if reasons else error}"


def _ssl_reason(error: BaseException) -> str:
    """OpenSSL's words for a failure (the last reason of its error queue)."""
    queue = error.args[0] if error.args else None
    if isinstance(queue, list) and queue and isinstance(queue[-1], tuple):
        return str(queue[-1][-1])
    return str(error) or type(error).__name__
