"""
Up to C{[relay] pool_size} connections to the relay server, reused: after a message a
connection waits (RSET done) for the next one, and is closed with QUIT after
L{IDLE_CLOSE} seconds without work. Messages beyond the pool's size wait their turn. A
message whose reused connection turns out to be gone before the server answered its MAIL
FROM is sent once more on a new connection; nothing is ever sent twice after that point.

One C{[relay] timeout} bounds each message's whole way: waiting for a connection, opening
it, the exchange, the second attempt. A release still waiting for a connection when its
deadline passes fails then, saying that every connection stayed busy; a message relayed on
its own (C{auto_relay}), which no one waits for, starts its clock when it gets a connection.

All of it runs on the reactor (Twisted's SMTP client); only reading and preparing the
message bytes, which grows with the message, runs in the service's worker thread.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.logger import Logger
from twisted.python.failure import Failure

from mailsink.config import RelaySettings
from mailsink.relay.client import RelayClient
from mailsink.relay.connection import Message, RelayConnection, RelayError
from mailsink.relay.deadline import Deadline
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

    def __init__(self, client: RelayClient, size: int, timeout: float, reactor: Any) -> None:
        self.client = client
        self.size = max(1, size)
        self.timeout = timeout
        self.reactor = reactor
        self._idle: list[RelayConnection] = []
        self._timers: dict[RelayConnection, Any] = {}
        self._open = 0
        """Connections open or being opened (idle and busy)."""
        self._members: set[RelayConnection] = set()
        """The open ones (a failed opening is counted off where it fails)."""
        self._waiting: OrderedDict[int, tuple[Message, Any]] = OrderedDict()
        """Messages waiting for a connection by id, oldest first, each with its give-up
        timer (None: it waits as long as it takes, its clock not started)."""
        self._closing = False

    @inlineCallbacks
    def send(self, sender: str, recipients: Sequence[str], wire: bytes, *,
             answer_in_time: bool = True) -> Any:
        """
        The server's reply to the data, or a L{Diagnosis}; within C{timeout}, waiting for
        a free connection included unless not C{answer_in_time}.
        """
        reused = bool(self._idle) or self._open >= self.size
        deadline = Deadline.start(self.reactor, self.timeout)
        for again in (False, True):
            message = Message(sender, list(recipients), wire, deadline)
            self._dispatch(message, answer_in_time)
            try:
                reply = yield message.sent
            except RelayError as error:
                deadline = message.deadline
                # Once more only if a reused connection was gone before MAIL FROM was
                # answered (or said 421): nothing was taken. Time left is needed too.
                if again or not (reused and error.before_mail) or self._closing or \
                        deadline.passed(self.reactor):
                    raise (yield self.client.diagnoser.diagnose(error, deadline)) from None
            else:
                return reply

    def _dispatch(self, message: Message, answer_in_time: bool) -> None:
        # One closing on its own (it was QUIT after an unexpected reply) waits to be lost.
        self._idle = [connection for connection in self._idle if not connection.closed]
        if self._closing:
            message.sent.errback(Diagnosis("mailsink is stopping"))
        elif self._idle:
            self._reuse(self._idle.pop(), message)
        elif self._open < self.size:
            self._connect(message)
        else:
            timer = self.reactor.callLater(message.deadline.left(self.reactor),
                                           self._give_up, message) if answer_in_time else None
            self._waiting[id(message)] = (message, timer)

    def _give_up(self, message: Message) -> None:
        """C{message}'s deadline passed while every connection was busy."""
        del self._waiting[id(message)]
        message.sent.errback(Diagnosis(
            f"all {self.size} connections to {self.client.where} stayed busy for "
            f"{self.timeout:g} s: try again, or raise [relay] pool_size"))

    def _next_waiting_message(self) -> Message:
        """The oldest waiting message, no longer waiting: its give-up timer stopped, or its
        clock started now."""
        _, (message, timer) = self._waiting.popitem(last=False)
        if timer is None:
            message.deadline = Deadline.start(self.reactor, self.timeout)
        elif timer.active():
            timer.cancel()
        return message

    def _reuse(self, connection: RelayConnection, message: Message) -> None:
        self._wake(connection)
        connection.send(message)

    def _connect(self, message: Message) -> None:
        self._open += 1
        opening = self.client.connect(self._idle_again, self._lost, message.deadline)

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
            connection.send(self._next_waiting_message())
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
            self._connect(self._next_waiting_message())

    def close(self) -> None:
        """QUIT the idle connections; fail the waiting messages."""
        self._closing = True
        while self._waiting:
            self._next_waiting_message().sent.errback(Diagnosis("mailsink is stopping"))
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
        self.pool = ConnectionPool(self.client, settings.pool_size, settings.timeout, reactor)
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
    def release(self, raw: bytes, recipients: Sequence[str], *,
                answer_in_time: bool = True) -> Any:
        """
        Relay a copy of the stored message C{raw} to C{recipients} (the policy checked
        already), its trace headers and Bcc removed; fails with a L{Diagnosis}. Once the
        copy is ready, the answer comes within C{[relay] timeout} (waiting for a free
        connection included, unless not C{answer_in_time}).
        """
        sender, wire = yield self.run_blocking(prepare_release, raw)
        reply = yield self.pool.send(sender, recipients, wire, answer_in_time=answer_in_time)
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
        reply = yield self.release(raw, chosen, answer_in_time=False)  # no one waits
        log.info("auto_relay: message {id} relayed to {to} via {server}: {reply}",
                 id=message_id, to=", ".join(chosen), server=self.server, reply=reply)

    def _auto_failed(self, failure: Failure, message_id: str) -> None:
        why = failure.getErrorMessage() if failure.check(Diagnosis) else \
            f"{failure.type.__name__ if failure.type else 'error'}: {failure.getErrorMessage()}"
        log.warn("auto_relay: message {id} not relayed: {why}", id=message_id, why=why)
