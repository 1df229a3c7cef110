"""
The 465-vs-587 confusion, spotted and explained.

A client set to implicit TLS that reaches a plaintext/STARTTLS port opens with a TLS
ClientHello; a client set to plain SMTP or STARTTLS that reaches an implicit-TLS port waits
in silence for a greeting that never comes. Each case is logged once, with what to change.
"""

from __future__ import annotations

from typing import Any

import attrs
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory

log = Logger()

SILENCE_TIMEOUT = 10.0
"""Seconds an implicit-TLS client may stay silent before it is taken for a plaintext one."""

_SMTP_VERBS = (b"EHLO", b"HELO", b"QUIT", b"MAIL", b"RSET", b"NOOP", b"STAR")


@attrs.frozen
class ListenerHints:
    """How to name this listener and the ones serving the other TLS modes, in warnings."""

    listener: str
    implicit_listeners: str = ""
    starttls_listeners: str = ""


def looks_like_tls_client_hello(data: bytes) -> bool:
    """A TLS handshake record (content type 22, version 3.x) or an SSLv2-style hello."""
    if len(data) >= 2 and data[0] == 0x16 and data[1] == 0x03:
        return True
    return len(data) >= 3 and data[0] & 0x80 != 0 and data[2] == 0x01


def looks_like_plaintext_smtp(data: bytes) -> bool:
    """The client spoke SMTP in the clear."""
    return data[:4].upper() in _SMTP_VERBS


def tls_on_plaintext_port(hints: ListenerHints, client: str) -> None:
    """Warn that a client set to implicit TLS reached a plaintext/STARTTLS listener."""
    where = hints.implicit_listeners or "a listener with tls = implicit (add one)"
    log.warn("[{listener}] {client} began a TLS handshake, but this listener speaks plain "
             "SMTP (STARTTLS on request): the client is set to implicit TLS (SSL/TLS, the "
             "port 465 style). Point it at {where}, or set its security to STARTTLS.",
             listener=hints.listener, client=client, where=where)


def plaintext_on_implicit_port(hints: ListenerHints, client: str, spoke: bool) -> None:
    """Warn that a client set to plain SMTP/STARTTLS reached an implicit-TLS listener."""
    what = ("sent SMTP commands in the clear" if spoke
            else f"sent no TLS handshake within {SILENCE_TIMEOUT:g} s")
    where = hints.starttls_listeners or "a listener with tls = starttls (add one)"
    log.warn("[{listener}] {client} {what}, but this listener expects TLS from the first "
             "byte: the client is set to plain SMTP or STARTTLS (the port 587 style) and "
             "waits for a greeting. Point it at {where}, or set its security to SSL/TLS.",
             listener=hints.listener, client=client, what=what, where=where)


class _FirstBytesWatch(ProtocolWrapper):
    """Looks at what an implicit-TLS client sends first, before TLS sees it."""

    factory: ImplicitTLSWatchFactory
    transport: Any
    _timer: IDelayedCall | None = None
    _seen = False

    def connectionMade(self) -> None:
        self._timer = self.factory.clock.callLater(SILENCE_TIMEOUT, self._silent)
        super().connectionMade()

    def dataReceived(self, data: bytes) -> None:
        if not self._seen:
            self._seen = True
            self._cancel()
            if looks_like_plaintext_smtp(data):
                plaintext_on_implicit_port(self.factory.hints, self._client(), spoke=True)
                self.transport.abortConnection()
                return
        super().dataReceived(data)

    def connectionLost(self, reason: Any = None) -> None:
        self._cancel()
        super().connectionLost(reason)

    def _silent(self) -> None:
        self._timer = None
        plaintext_on_implicit_port(self.factory.hints, self._client(), spoke=False)
        self.transport.abortConnection()

    def _cancel(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _client(self) -> str:
        peer = self.transport.getPeer()
        return str(getattr(peer, "host", peer))


class ImplicitTLSWatchFactory(WrappingFactory):
    """Wraps the TLS factory of an implicit-TLS listener with the first-bytes watch."""

    protocol = _FirstBytesWatch
    noisy = False

    def __init__(self, wrapped: Any, hints: ListenerHints, clock: IReactorTime) -> None:
        super().__init__(wrapped)
        self.hints = hints
        self.clock = clock
