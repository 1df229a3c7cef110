"""
Where the link check connects: like Twisted's Agent (host name endpoints, TLS as a browser
checks it), but each connection may receive at most L{MAX_RECEIVED} bytes.

A link check reads only a status line and headers; Twisted's HTTP client bounds the length
of a header line but not how many there are, so a server streaming header lines for the
link's whole 10 s would cost hundreds of MB. Past the bound the connection is aborted, and
the link's result says it failed.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.interfaces import IProtocol, IStreamClientEndpoint
from twisted.web.client import URI, BrowserLikePolicyForHTTPS
from zope.interface import implementer

MAX_RECEIVED = 256 * 1024
"""Bytes one connection of the link check may receive (a status line and headers)."""
CONNECT_TIMEOUT = 10


@implementer(IStreamClientEndpoint)
class _Capped:
    """An endpoint whose connected protocols are cut off after L{MAX_RECEIVED} bytes."""

    def __init__(self, endpoint: IStreamClientEndpoint, limit: int) -> None:
        self._endpoint = endpoint
        self._limit = limit

    def connect(self, factory: Any) -> Any:
        return self._endpoint.connect(factory).addCallback(self._capped)

    def _capped(self, protocol: IProtocol) -> IProtocol:
        received = 0
        original = protocol.dataReceived

        def counted(data: bytes) -> None:
            nonlocal received
            received += len(data)
            if received > self._limit:
                protocol.transport.abortConnection()  # type: ignore[attr-defined]
                return
            original(data)

        protocol.dataReceived = counted  # type: ignore[method-assign]
        return protocol


class CappedEndpoints:
    """An Agent's endpoint factory (L{Agent.usingEndpointFactory}) with the byte bound."""

    def __init__(self, reactor: Any, limit: int = MAX_RECEIVED) -> None:
        self._reactor = reactor
        self._limit = limit
        self._tls = BrowserLikePolicyForHTTPS()

    def endpointForURI(self, uri: URI) -> IStreamClientEndpoint:
        endpoint: IStreamClientEndpoint = HostnameEndpoint(
            self._reactor, uri.host, uri.port, timeout=CONNECT_TIMEOUT)
        if uri.scheme == b"https":
            endpoint = wrapClientTLS(self._tls.creatorForNetloc(uri.host, uri.port), endpoint)
        return _Capped(endpoint, self._limit)
