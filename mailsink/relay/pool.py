"""
Up to C{[relay] pool_size} connections to the relay server, reused: after a message a
connection waits (RSET done) for the next one, and is closed with QUIT after
L{IDLE_CLOSE} seconds without work. Messages beyond the pool's size wait their turn. A
message whose reused connection turns out to be gone before the server answered its MAIL
FROM is sent once more on a new connection; nothing is ever sent twice after that point.

All of it runs on the reactor (Twisted's SMTP client); only reading and preparing the
message bytes, which grows with the message, runs in the service's worker thread.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import Any

from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.logger import Logger
from twisted.python.failure import Failure

from mailsink.config import RelaySettings
from mailsink.relay.client import RelayClient
from mailsink.relay.connection import Message, RelayConnection, RelayError
from mailsink.relay.policy import (
    RecipientPolicy,
    auto_relay_recipients,
    envelope,
    prepare_release,
)
from mailsink.sentences import Diagnosis
from mailsink.threads import ThreadPoolService

log = Logger()

IDLE_CLOSE = 60.0
"""Seconds an unused pooled connection stays open (servers drop idle ones after minutes)."""


class ConnectionPool:
    """Idle connections kept for reuse, new ones opened up to C{size}."""

    def __init__(self, client: RelayClient, size: int, reactor: Any) -> None:
        self.client = client
        self.size = max(1, size)
        self.reactor = reactor
        self._idle: list[RelayConnection] = []
        self._timers: dict[RelayConnection, Any] = {}
        self._open = 0
        """Connections open or being opened (idle and busy)."""
        self._members: set[RelayConnection] = set()
        """The open ones (a failed opening is counted off where it fails)."""
        self._waiting: deque[Message] = deque()
        self._closing = False

    @inlineCallbacks
    def send(self, sender: str, recipients: Sequence[str], wire: bytes) -> Any:
        """The server's reply to the data, or a L{Diagnosis}."""
        reused = bool(self._idle) or self._open >= self.size
        for again in (False, True):
            message = Message(sender, list(recipients), wire)
            self._dispatch(message)
            try:
                reply = yield message.sent
            except RelayError as error:
                # Once more only if a reused connection was gone before MAIL FROM was
                # answered (or said 421): nothing was taken.
                if again or not (reused and error.before_mail) or self._closing:
                    raise (yield self.client.diagnoser.diagnose(error)) from None
            else:
                return reply

    def _dispatch(self, message: Message) -> None:
        # One closing on its own (it was QUIT after an unexpected reply) waits to be lost.
        self._idle = [connection for connection in self._idle if not connection.closed]
        if self._closing:
            message.sent.errback(Diagnosis("mailsink is stopping"))
        elif self._idle:
            self._reuse(self._idle.pop(), message)
        elif self._open < self.size:
            self._connect(message)
        else:
            self._waiting.append(message)

    def _reuse(self, connection: RelayConnection, message: Message) -> None:
        self._wake(connection)
        connection.send(message)

    def _connect(self, message: Message) -> None:
        self._open += 1
        opening = self.client.connect(self._idle_again, self._lost)

        def opened(connection: RelayConnection) -> None:
            self._members.add(connection)
            connection.send(message)

        def failed(failure: Failure) -> None:
            self._open -= 1
            # Already a Diagnosis: pass it on as it is.
            message.sent.errback(failure)
            self._next_waiting()

        opening.addCallbacks(opened, failed)

    def _idle_again(self, connection: RelayConnection) -> None:
        """A connection finished its message: the next waiting one, or rest."""
        if self._waiting and not connection.closed:
            connection.send(self._waiting.popleft())
            return
        if self._closing:
            connection.quit()
            return
        self._idle.append(connection)
        self._timers[connection] = self.reactor.callLater(IDLE_CLOSE, self._retire,
                                                          connection)

    def _wake(self, connection: RelayConnection) -> None:
        """Cancel C{connection}'s idle-close timer, if it has one."""
        timer = self._timers.pop(connection, None)
        if timer is not None and timer.active():
            timer.cancel()

    def _retire(self, connection: RelayConnection) -> None:
        """QUIT a connection that rested too long (it counts as open until it is lost)."""
        self._wake(connection)
        if connection in self._idle:
            self._idle.remove(connection)
        connection.quit()

    def _lost(self, connection: RelayConnection) -> None:
        if connection not in self._members:
            return  # lost while logging in: counted off by _connect's failure path
        self._members.remove(connection)
        self._open -= 1
        if connection in self._idle:
            self._idle.remove(connection)
        self._wake(connection)
        self._next_waiting()

    def _next_waiting(self) -> None:
        if self._waiting and self._open < self.size:
            self._connect(self._waiting.popleft())

    def close(self) -> None:
        """QUIT the idle connections; fail the waiting messages."""
        self._closing = True
        while self._waiting:
            self._waiting.popleft().sent.errback(Diagnosis("mailsink is stopping"))
        for connection in list(self._idle):
            self._retire(connection)


class RelayService(ThreadPoolService):
    """The configured relay: release, test, and (with C{auto_relay}) relay new mail."""

    def __init__(self, settings: RelaySettings, reactor: Any, identity: str) -> None:
        super().__init__("mailsink-relay", 1, reactor)
        self.settings = settings
        self.policy = RecipientPolicy(settings.allowed_recipients,
                                      settings.blocked_recipients)
        self.client = RelayClient(settings, reactor, identity)
        self.pool = ConnectionPool(self.client, settings.pool_size, reactor)
        self._index: Any = None

    @property
    def server(self) -> str:
        """C{host:port}, as the web UI shows it."""
        return self.client.where

    def stopService(self) -> Any:
        """QUIT pooled connections, then stop the worker thread."""
        self.pool.close()
        return super().stopService()

    @inlineCallbacks
    def release(self, raw: bytes, recipients: Sequence[str]) -> Any:
        """
        Relay a copy of the stored message C{raw} to C{recipients} (the policy checked
        already), its trace headers and Bcc removed; fails with a L{Diagnosis}.
        """
        sender, wire = yield self.run_blocking(prepare_release, raw)
        reply = yield self.pool.send(sender, recipients, wire)
        return reply

    def test(self) -> Deferred[None]:
        """Connect and log in as configured, on a fresh connection; no message sent."""
        return self.client.check()

    # auto_relay.

    def watch(self, index: Any, read: Any) -> None:
        """Relay each new message of C{index} (C{read(path)} gives its bytes in a thread)."""
        self._index = index
        self._read = read
        index.subscribe(self.index_event)

    def index_event(self, kind: str, payload: Any) -> None:
        """The index's subscriber callback: relay new messages to their recipients."""
        if kind != "new" or not self.running:
            return
        relayed = self._auto_relay(payload.id)
        relayed.addErrback(self._auto_failed, payload.id)

    @inlineCallbacks
    def _auto_relay(self, message_id: str) -> Any:
        path = yield self._index.path(message_id, None)
        if path is None:
            return
        raw = yield self._read(path)
        _, recipients = envelope(raw)
        chosen = auto_relay_recipients(recipients, self.settings.auto_relay_match)
        if not chosen:
            return
        refusal = self.policy.refusal(chosen)
        if refusal is not None:
            log.info("auto_relay: message {id} not relayed: {why}", id=message_id,
                     why=refusal)
            return
        reply = yield self.release(raw, chosen)
        log.info("auto_relay: message {id} relayed to {to} via {server}: {reply}",
                 id=message_id, to=", ".join(chosen), server=self.server, reply=reply)

    def _auto_failed(self, failure: Failure, message_id: str) -> None:
        why = failure.getErrorMessage() if failure.check(Diagnosis) else \
            f"{failure.type.__name__ if failure.type else 'error'}: {failure.getErrorMessage()}"
        log.warn("auto_relay: message {id} not relayed: {why}", id=message_id, why=why)
