"""
The factory behind each SMTP listener: builds L{SinkESMTP} protocols and caps how many
connections one listener holds at once.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IAddress, IReactorTime
from twisted.internet.protocol import Protocol, ServerFactory
from twisted.logger import Logger

from mailsink.metrics import Metrics
from mailsink.smtp.auth import AuthSetup
from mailsink.smtp.server import SinkESMTP, SMTPSettings

log = Logger()

MAX_CONNECTIONS = 1000
"""Concurrent connections per listener; more get C{421} at once instead of a slot."""


class _TooBusy(Protocol):
    """Tells one connection too many to come back later, and hangs up."""

    transport: Any

    def __init__(self, hostname: str) -> None:
        self.hostname = hostname

    def connectionMade(self) -> None:
        self.transport.write(f"421 4.7.0 {self.hostname} Error: too many connections; "
                             "try again later\r\n".encode())
        self.transport.loseConnection()


class SMTPFactory(ServerFactory):
    """Makes one protocol per connection, all sharing the listener's settings."""

    noisy = False

    def __init__(self, settings: SMTPSettings, portal: Any, tls_context: Any,
                 clock: IReactorTime, max_connections: int = MAX_CONNECTIONS,
                 auth_setup: AuthSetup | None = None, metrics: Metrics | None = None) -> None:
        self.settings = settings
        self.metrics = metrics or Metrics()
        self.auth_setup = auth_setup
        self.portal = portal
        self.tls_context = tls_context
        self.clock = clock
        self.max_connections = max_connections
        self.connections = 0

    def buildProtocol(self, addr: IAddress | None) -> Protocol:
        if self.connections >= self.max_connections:
            log.warn("[{listener}] refused a connection from {client}: {limit} connections "
                     "are open already", listener=self.settings.listener,
                     client=getattr(addr, "host", addr), limit=self.max_connections)
            return _TooBusy(self.settings.hostname)
        protocol = SinkESMTP(self.settings, self.portal, self.tls_context, self.auth_setup,
                             self.metrics)
        protocol.factory = self
        protocol.callLater = self.clock.callLater  # type: ignore[method-assign,assignment]
        return protocol
