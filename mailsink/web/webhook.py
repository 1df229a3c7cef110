"""
The webhook: C{[web] webhook_url} receives a POST of Mailpit's MessageSummary (JSON,
C{Content-Type: application/json}) for each new message, as Mailpit's webhook does.

Intake never waits for it and never fails because of it: L{Webhook.index_event} only queues
the summary. Posts are rate-limited by a token bucket (bursts of up to L{RATE}, then L{RATE}
a second), at most L{MAX_IN_FLIGHT} at once, each given L{TIMEOUT} seconds. Events beyond
L{QUEUE_LIMIT} waiting ones are dropped, with one warning per burst of drops. A non-2xx
answer or an error is logged in one line with the URL (credentials hidden) and the status
or error; the message itself is never logged.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import treq
from treq.client import HTTPClient
from twisted.internet.defer import CancelledError, TimeoutError
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import Agent

from mailsink.config import ConfigError, Listener

log = Logger()

RATE = 10.0
"""Posts a second (and the largest burst)."""
QUEUE_LIMIT = 1000
"""New-message events that may wait for their turn; more are dropped."""
MAX_IN_FLIGHT = 4
"""Requests at once."""
TIMEOUT = 10.0
"""Seconds a request (connecting, sending, the answer) may take."""

_HEADERS = {b"Content-Type": [b"application/json"]}


def check_url(section: str, url: str) -> str:
    """C{url} if it is an http or https URL with a host, else a L{ConfigError}."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError as error:
        raise ConfigError(section, "webhook_url", f"{url!r} is not a usable URL: {error}") \
            from None
    if parts.scheme not in ("http", "https") or not host:
        raise ConfigError(section, "webhook_url",
                          f"{url!r} is not an http:// or https:// URL with a host")
    return url


def subscribe_webhooks(listeners: Iterable[Listener], index: Any, reactor: Any) -> None:
    """A L{Webhook} on C{index} for each listener with a C{webhook_url} (checked first)."""
    for listener in listeners:
        if listener.webhook_url:
            url = check_url(listener.section, listener.webhook_url)
            webhook = Webhook(url, HTTPClient(Agent(reactor)), reactor)
            index.subscribe(webhook.index_event)


def _shown(url: str) -> str:
    """C{url} without any user name or password in it, for the log."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc="***@" + parts.netloc.rpartition("@")[2]))


class Webhook:
    """Posts each new message's summary to C{url} through C{http_client} (a treq client)."""

    def __init__(self, url: str, http_client: Any, clock: IReactorTime, *,
                 rate: float = RATE, queue_limit: int = QUEUE_LIMIT,
                 max_in_flight: int = MAX_IN_FLIGHT, timeout: float = TIMEOUT) -> None:
        self.url = url
        self._shown = _shown(url)
        self._http = http_client
        self._clock = clock
        self._rate = rate
        self._queue_limit = queue_limit
        self._max_in_flight = max_in_flight
        self._timeout = timeout
        self._queue: deque[Any] = deque()
        self._tokens = rate
        self._refilled = clock.seconds()
        self._wakeup: IDelayedCall | None = None
        self._in_flight: set[Any] = set()
        self._dropped = 0
        self._stopped = False

    @property
    def queued(self) -> int:
        return len(self._queue)

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    def index_event(self, kind: str, payload: Any) -> None:
        """The index's subscriber callback (reactor thread): queues new messages only."""
        if kind != "new" or self._stopped:
            return
        if len(self._queue) >= self._queue_limit:
            if not self._dropped:
                log.warn("webhook {url}: {limit} messages are waiting to be posted; dropping "
                         "new ones until the queue drains", url=self._shown,
                         limit=self._queue_limit)
            self._dropped += 1
            return
        self._queue.append(payload)
        self._pump()

    def stop(self) -> None:
        """Post nothing more: forget the queue and cancel the requests under way."""
        self._stopped = True
        self._queue.clear()
        if self._wakeup is not None and self._wakeup.active():
            self._wakeup.cancel()
        self._wakeup = None
        for request in list(self._in_flight):
            request.cancel()

    def _refill(self) -> None:
        now = self._clock.seconds()
        self._tokens = min(self._rate, self._tokens + (now - self._refilled) * self._rate)
        self._refilled = now

    def _pump(self) -> None:
        while self._queue and len(self._in_flight) < self._max_in_flight \
                and not self._stopped:
            self._refill()
            if self._tokens < 1:
                if self._wakeup is None:
                    self._wakeup = self._clock.callLater((1 - self._tokens) / self._rate,
                                                         self._woken)
                return
            self._tokens -= 1
            self._post(self._queue.popleft())
        if not self._queue and self._dropped:
            log.info("webhook {url}: the queue drained; {count} messages were not posted",
                     url=self._shown, count=self._dropped)
            self._dropped = 0

    def _woken(self) -> None:
        self._wakeup = None
        self._pump()

    def _post(self, summary: Any) -> None:
        try:
            body = json.dumps(summary.to_json()).encode("utf-8")
            request = self._http.post(self.url, data=body, headers=_HEADERS,
                                      allow_redirects=False, unbuffered=True)
        except Exception as error:
            log.warn("webhook {url}: cannot post: {error}", url=self._shown,
                     error=_describe(Failure(error), self._timeout))
            return
        request.addCallback(self._answered)
        request.addTimeout(self._timeout, self._clock)
        self._in_flight.add(request)
        request.addErrback(self._failed)
        request.addBoth(self._done, request)

    def _answered(self, response: Any) -> Any:
        status = response.code
        if not 200 <= status < 300:
            log.warn("webhook {url}: HTTP {status}", url=self._shown, status=status)
        return treq.collect(response, _discard)

    def _failed(self, failure: Failure) -> None:
        if self._stopped and failure.check(CancelledError):
            return
        log.warn("webhook {url}: {error}", url=self._shown,
                 error=_describe(failure, self._timeout))

    def _done(self, _: object, request: Any) -> None:
        self._in_flight.discard(request)
        self._pump()


def _discard(data: bytes) -> None:
    """The answer's body is not needed (and not kept)."""


def _describe(failure: Failure, timeout: float) -> str:
    if failure.check(TimeoutError, CancelledError):
        return f"no answer within {timeout:g} s"
    reasons = getattr(failure.value, "reasons", None)
    if reasons:
        return "; ".join(_describe(reason, timeout) for reason in reasons)
    message = failure.getErrorMessage()
    name = failure.type.__name__ if failure.type is not None else "error"
    return f"{name}: {message}" if message else name
