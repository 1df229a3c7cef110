"""
Connecting to the C{[relay]} server on Twisted's endpoints: TLS from the first byte
(C{implicit}), STARTTLS, or none, each connection verified by its own L{RelayTLS} so a
refused certificate can be worded; logged in with the password, or with an OAuth2 token
(static, or printed by C{token_command} for each new connection, as msmtp's
C{passwordeval} does). Failures come out as L{Diagnosis} sentences.

Every step, the token included, ends at the operation's one L{Deadline}.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import inlineCallbacks
from twisted.internet.endpoints import HostnameEndpoint, connectProtocol, wrapClientTLS

from mailsink.config import RelaySettings
from mailsink.relay.connection import DeliveryRefused, RelayConnection
from mailsink.relay.deadline import Deadline
from mailsink.relay.diagnose import Diagnoser
from mailsink.relay.tls import RelayTLS
from mailsink.relay.token import fetch_token
from mailsink.sentences import Diagnosis


class RelayClient:
    """Opens logged-in connections to the configured relay server."""

    def __init__(self, settings: RelaySettings, reactor: Any, identity: str) -> None:
        self.settings = settings
        self.reactor = reactor
        self.identity = identity
        self.diagnoser = Diagnoser(settings, reactor)

    @property
    def where(self) -> str:
        return f"{self.settings.host}:{self.settings.port}"

    @inlineCallbacks
    def secret(self, deadline: Deadline) -> Any:
        """The password, the token, or a fresh token from C{token_command} (bytes)."""
        settings = self.settings
        if not settings.token_command:
            return (settings.token or settings.password).encode("utf-8")
        token = yield fetch_token(self.reactor, settings.token_command, deadline)
        return token

    @inlineCallbacks
    def connect(self, on_idle: Callable[[RelayConnection], None],
                on_lost: Callable[[RelayConnection], None], deadline: Deadline) -> Any:
        """
        A connection past the greeting, STARTTLS and AUTH as configured, by C{deadline};
        or a Diagnosis.
        """
        settings = self.settings
        secret = yield self.secret(deadline)
        tls = RelayTLS(settings.host, settings.tls_verify) if settings.tls != "none" else None
        endpoint: Any = HostnameEndpoint(self.reactor, settings.host, settings.port)
        if tls is not None and settings.tls == "implicit":
            endpoint = wrapClientTLS(tls, endpoint)
        connection = RelayConnection(
            identity=self.identity, username=settings.username, secret=secret,
            token=settings.uses_token, starttls=tls if settings.tls == "starttls" else None,
            implicit=settings.tls == "implicit", clock=self.reactor, deadline=deadline,
            on_idle=on_idle, on_lost=on_lost)
        try:
            yield deadline.bound_connecting(self.reactor, connectProtocol(endpoint, connection))
            yield connection.ready
        except Exception as error:
            diagnosis = yield self.diagnoser.diagnose(error, deadline, tls)
            raise diagnosis from None
        return connection

    @inlineCallbacks
    def check(self) -> Any:
        """
        Connect and log in as configured, then MAIL FROM (the username when it is an
        address, else the null sender) and RSET, all within one C{[relay] timeout}: a
        server that would refuse every message (530 authentication required) fails the
        check. No message is sent.
        """
        deadline = Deadline.start(self.reactor, self.settings.timeout)
        connection = yield self.connect(lambda _: None, lambda _: None, deadline)
        username = self.settings.username
        sender = username if "@" in username else ""
        try:
            yield connection.try_sender(sender, deadline)
        except Exception as error:
            connection.quit()
            diagnosis = yield self.diagnoser.diagnose(error, deadline)
            refusal = getattr(error, "error", None)
            if not isinstance(refusal, DeliveryRefused) or refusal.code in (530, 538):
                raise diagnosis from None  # not about the sender: the login, TLS, the line
            raise Diagnosis(f"{diagnosis} (to the test's MAIL FROM:<{sender}>; a release "
                            f"uses the message's own sender)") from None
        connection.quit()
