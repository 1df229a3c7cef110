"""
The 465-vs-587 confusion, spotted and explained.

A client set to implicit TLS that reaches a plaintext/STARTTLS port opens with a TLS
ClientHello; a client set to plain SMTP or STARTTLS that reaches an implicit-TLS port waits
in silence for a greeting that never comes. Each case is logged once, with what to change,
in the words of the session's diagnosis (L{mailsink.sessions.diagnosis}), and told to the
session.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory

from mailsink.sessions.diagnosis import (
    SILENCE_TIMEOUT,
    ListenerHints,
    plaintext_on_implicit_port,
)
from mailsink.sessions.record import SessionRecorder

log = Logger()

_SMTP_VERBS = (b"EHLO", b"HELO", b"QUIT", b"MAIL", b"RSET", b"NOOP", b"STAR")


def looks_like_tls_client_hello(data: bytes) -> bool:
    """A TLS handshake record (content type 22, version 3.x) or an SSLv2-style hello."""
    if len(data) >= 2 and data[0] == 0x16 and data[1] == 0x03:
        return True
    return len(data) >= 3 and data[0] & 0x80 != 0 and data[2] == 0x01


def looks_like_plaintext_smtp(data: bytes) -> bool:
    """The client spoke SMTP in the clear."""
    return data[:4].upper() in _SMTP_VERBS


def warn(hints: ListenerHints, client: str, sentence: str) -> None:
    """The log's line for a recognised mistake: the session's diagnosis, word for word."""
    log.warn("[{listener}] {client}: {sentence}", listener=hints.listener, client=client,
             sentence=sentence)


def _recorder_of(protocol: Any) -> SessionRecorder | None:
    """The session of the SMTP protocol inside the TLS wrapper(s), if it keeps one."""
    while protocol is not None:
        recorder = getattr(protocol, "session", None)
        if isinstance(recorder, SessionRecorder):
            return recorder
        protocol = getattr(protocol, "wrappedProtocol", None)
    return None


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
                self._mistaken("plaintext-on-implicit", spoke=True)
                return
        super().dataReceived(data)

    def connectionLost(self, reason: Any = None) -> None:
        self._cancel()
        super().connectionLost(reason)

    def _silent(self) -> None:
        self._timer = None
        self._mistaken("silent-on-implicit", spoke=False)

    def _mistaken(self, problem: str, spoke: bool) -> None:
        """A client set to plain SMTP or STARTTLS: tell the log and its session, hang up."""
        warn(self.factory.hints, self._client(),
             plaintext_on_implicit_port(self.factory.hints, spoke))
        recorder = _recorder_of(self.wrappedProtocol)
        if recorder is not None:
            recorder.problem(problem)
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
