"""
The factory behind each POP3 listener: builds L{SinkPOP3} protocols and caps how many
connections one listener holds at once.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import Protocol

from mailsink.auth.throttle import FailureThrottle
from mailsink.capped import MAX_CONNECTIONS, CappedFactory
from mailsink.metrics import Metrics
from mailsink.pop3.protocol import POP3Settings, SinkPOP3


class POP3Factory(CappedFactory):
    """One L{SinkPOP3} per connection, all sharing the listener's settings."""

    def __init__(self, settings: POP3Settings, portal: Any, tls_context: Any,
                 clock: IReactorTime, throttle: FailureThrottle | None = None,
                 metrics: Metrics | None = None,
                 max_connections: int = MAX_CONNECTIONS) -> None:
        super().__init__(max_connections)
        self.settings = settings
        self.listener = settings.listener
        self.portal = portal
        self.tls_context = tls_context
        self.clock = clock
        self.throttle = throttle
        self.metrics = metrics or Metrics()

    def refusal(self) -> bytes:
        return b"-ERR [SYS/TEMP] too many connections; try again later\r\n"

    def build(self, addr: Any) -> Protocol:
        protocol = SinkPOP3(self.settings, self.portal, self.tls_context, self.throttle,
                            self.clock, self.metrics)
        protocol.callLater = self.clock.callLater  # type: ignore[method-assign,assignment]
        return protocol
