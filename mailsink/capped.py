"""
A listener's factory that caps concurrent connections: one too many is told, in its own
protocol's words, to come back later and is hung up on, so a flood costs no slot.

Protocols count themselves in C{factory.connections} (up in connectionMade, down in
connectionLost).
"""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IAddress
from twisted.internet.protocol import Protocol, ServerFactory
from twisted.logger import Logger

log = Logger()

MAX_CONNECTIONS = 1000
"""Concurrent connections per listener."""


class _TooBusy(Protocol):
    """Says C{refusal} and hangs up."""

    transport: Any

    def __init__(self, refusal: bytes) -> None:
        self.refusal = refusal

    def connectionMade(self) -> None:
        self.transport.write(self.refusal)
        self.transport.loseConnection()


class CappedFactory(ServerFactory):
    """Subclasses give L{build} (the real protocol) and L{refusal} (the line for one too many)."""

    noisy = False
    listener = ""

    def __init__(self, max_connections: int = MAX_CONNECTIONS) -> None:
        self.max_connections = max_connections
        self.connections = 0

    def refusal(self) -> bytes:
        raise NotImplementedError

    def build(self, addr: IAddress | None) -> Protocol:
        raise NotImplementedError

    def buildProtocol(self, addr: IAddress | None) -> Protocol:
        if self.connections >= self.max_connections:
            log.warn("[{listener}] refused a connection from {client}: {limit} connections "
                     "are open already", listener=self.listener,
                     client=getattr(addr, "host", addr), limit=self.max_connections)
            return _TooBusy(self.refusal())
        protocol = self.build(addr)
        protocol.factory = self
        return protocol
