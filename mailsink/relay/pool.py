"""
Up to C{[relay] pool_size} connections to the relay server, reused: a connection goes
back to the pool after each message and is checked with RSET before the next one (a
connection the server dropped is replaced). The blocking SMTP work runs in this pool's
own C{pool_size} worker threads, so the reactor never waits on the relay.
"""

from __future__ import annotations

import smtplib
import ssl
import threading
from collections.abc import Sequence
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from mailsink import probe
from mailsink.config import RelaySettings
from mailsink.probe import Diagnosis
from mailsink.relay.client import RelayClient
from mailsink.relay.policy import (
    RecipientPolicy,
    auto_relay_recipients,
    envelope,
    strip_for_release,
)
from mailsink.threads import ThreadPoolService

log = Logger()


class ConnectionPool:
    """Idle connections kept for reuse (thread-safe; called from worker threads)."""

    def __init__(self, client: RelayClient, size: int) -> None:
        self.client = client
        self.size = max(1, size)
        self._idle: list[probe.Client] = []
        self._lock = threading.Lock()
        self.opened = 0
        """Connections opened so far (reuse shows as fewer openings than messages)."""

    def _take(self) -> tuple[probe.Client, bool]:
        while True:
            with self._lock:
                connection = self._idle.pop() if self._idle else None
            if connection is None:
                break
            try:
                code, _ = connection.rset()
            except (OSError, smtplib.SMTPException):
                code = 0
            if code == 250:
                return connection, True
            connection.close()
        fresh = self.client.connect()
        with self._lock:
            self.opened += 1
        return fresh, False

    def _give(self, connection: probe.Client) -> None:
        with self._lock:
            if len(self._idle) < self.size:
                self._idle.append(connection)
                return
        connection.quit_quietly()

    def send(self, sender: str, recipients: Sequence[str], data: bytes) -> str:
        """Send one message (blocking); a L{Diagnosis} when it cannot be done."""
        for _attempt in range(2):
            connection, reused = self._take()
            try:
                reply = self.client.send_on(connection, sender, recipients, data)
            except (smtplib.SMTPServerDisconnected, ConnectionError) as error:
                connection.close()
                if reused:
                    continue  # dropped between RSET and MAIL: once more, on a new one
                raise self.client.diagnose(error, connection) from None
            except (OSError, smtplib.SMTPException, ssl.SSLError) as error:
                connection.close()
                raise self.client.diagnose(error, connection) from None
            self._give(connection)
            return reply
        raise Diagnosis(f"{self.client.where} closed the connection unexpectedly")

    def close(self) -> None:
        """QUIT every idle connection."""
        with self._lock:
            idle, self._idle = self._idle, []
        for connection in idle:
            connection.quit_quietly()


class RelayService(ThreadPoolService):
    """The configured relay: release, test, and (with C{auto_relay}) relay new mail."""

    def __init__(self, settings: RelaySettings, reactor: Any) -> None:
        self.settings = settings
        self.policy = RecipientPolicy(settings.allowed_recipients,
                                      settings.blocked_recipients)
        self.pool = ConnectionPool(RelayClient(settings), settings.pool_size)
        super().__init__("mailsink-relay", self.pool.size, reactor)
        self._index: Any = None

    @property
    def server(self) -> str:
        """C{host:port}, as the web UI shows it."""
        return f"{self.settings.host}:{self.settings.port}"

    def stopService(self) -> Deferred[None]:
        """Close the pooled connections (in a worker), then stop the threads."""
        Service.stopService(self)
        done: Deferred[None] = self.run_blocking(self.pool.close)
        done.addBoth(lambda _: self.threads.stop())
        return done

    def release(self, raw: bytes, recipients: Sequence[str]) -> Deferred[str]:
        """
        Relay a copy of the stored message C{raw} to C{recipients} (the policy checked
        already), its trace headers and Bcc removed; fails with a L{Diagnosis}.
        """
        sender, _ = envelope(raw)
        data = strip_for_release(raw)
        return self.run_blocking(lambda: self.pool.send(sender, list(recipients), data))

    def test(self) -> Deferred[None]:
        """Connect and log in as configured, on a fresh connection; no message sent."""
        return self.run_blocking(self.pool.client.check)

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

    def _auto_relay(self, message_id: str) -> Deferred[Any]:
        found: Deferred[Any] = self._index.path(message_id, None)

        def read(path: str | None) -> Any:
            if path is None:
                return None
            return self._read(path)

        def relay(raw: bytes | None) -> Any:
            if raw is None:
                return None
            _, recipients = envelope(raw)
            chosen = auto_relay_recipients(recipients, self.settings.auto_relay_match)
            if not chosen:
                return None
            refusal = self.policy.refusal(chosen)
            if refusal is not None:
                log.info("auto_relay: message {id} not relayed: {why}", id=message_id,
                         why=refusal)
                return None
            sent = self.release(raw, chosen)
            sent.addCallback(lambda reply: log.info(
                "auto_relay: message {id} relayed to {to} via {server}: {reply}",
                id=message_id, to=", ".join(chosen), server=self.server, reply=reply))
            return sent

        found.addCallback(read)
        found.addCallback(relay)
        return found

    def _auto_failed(self, failure: Failure, message_id: str) -> None:
        why = failure.getErrorMessage() if failure.check(Diagnosis) else \
            f"{failure.type.__name__ if failure.type else 'error'}: {failure.getErrorMessage()}"
        log.warn("auto_relay: message {id} not relayed: {why}", id=message_id, why=why)
