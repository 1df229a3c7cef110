"""
The factory behind each SMTP listener: builds L{SinkESMTP} protocols (at most
L{MAX_CONNECTIONS} at once, see L{mailsink.capped}).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.interfaces import IAddress, IReactorTime
from twisted.internet.protocol import Protocol

from mailsink.capped import MAX_CONNECTIONS, CappedFactory
from mailsink.metrics import Metrics
from mailsink.sessions.record import Session
from mailsink.smtp.auth import AuthSetup
from mailsink.smtp.server import SinkESMTP, SMTPSettings


class SMTPFactory(CappedFactory):
    """Makes one protocol per connection, all sharing the listener's settings."""

    def __init__(self, settings: SMTPSettings, portal: Any, tls_context: Any,
                 clock: IReactorTime, max_connections: int = MAX_CONNECTIONS,
                 auth_setup: AuthSetup | None = None, metrics: Metrics | None = None,
                 session_sink: Callable[[Session], None] | None = None) -> None:
        super().__init__(max_connections)
        self.settings = settings
        self.listener = settings.listener
        self.metrics = metrics or Metrics()
        self.auth_setup = auth_setup
        self.portal = portal
        self.tls_context = tls_context
        self.clock = clock
        self.session_sink = session_sink

    def refusal(self) -> bytes:
        return (f"421 4.7.0 {self.settings.hostname} Error: too many connections; "
                "try again later\r\n").encode()

    def build(self, addr: IAddress | None) -> Protocol:
        protocol = SinkESMTP(self.settings, self.portal, self.tls_context, self.auth_setup,
                             self.metrics, self.session_sink)
        protocol.callLater = self.clock.callLater  # type: ignore[method-assign,assignment]
        return protocol
