"""
The factory behind each POP3 listener: builds L{SinkPOP3} protocols and caps how many
connections one listener holds at once.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import Protocol, ServerFactory
from twisted.logger import Logger

from mailsink.auth.throttle import FailureThrottle
from mailsink.metrics import Metrics
from mailsink.pop3.protocol import MAX_CONNECTIONS, POP3Settings, SinkPOP3

log = Logger()


class _TooBusy(Protocol):
    transport: Any

    def connectionMade(self) -> None:
        self.transport.write(b"-ERR [SYS/TEMP] too many connections; try again later\r\n")
        self.transport.loseConnection()


class POP3Factory(ServerFactory):
    """One L{SinkPOP3} per connection, all sharing the listener's settings."""

    noisy = False

    def __init__(self, settings: POP3Settings, portal: Any, tls_context: Any,
                 clock: IReactorTime, throttle: FailureThrottle | None = None,
                 metrics: Metrics | None = None,
                 max_connections: int = MAX_CONNECTIONS) -> None:
        self.settings = settings
        self.portal = portal
        self.tls_context = tls_context
        self.clock = clock
        self.throttle = throttle
        self.metrics = metrics or Metrics()
        self.max_connections = max_connections
        self.connections = 0

    def buildProtocol(self, addr: Any) -> Protocol:
        if self.connections >= self.max_connections:
            log.warn("[{listener}] refused a connection from {client}: {limit} connections "
                     "are open already", listener=self.settings.listener,
                     client=getattr(addr, "host", addr), limit=self.max_connections)
            return _TooBusy()
        protocol = SinkPOP3(self.settings, self.portal, self.tls_context, self.throttle,
                            self.clock, self.metrics)
        protocol.factory = self
        protocol.callLater = self.clock.callLater  # type: ignore[method-assign,assignment]
        return protocol
