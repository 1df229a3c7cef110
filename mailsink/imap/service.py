"""
The [imap] and [imap:NAME] listeners: one L{IMAPFactory} per section, served on each of
its endpoint strings (wrapped in TLS from the first byte for C{tls = implicit}).
"""

from __future__ import annotations

from typing import Any

from twisted.application.service import MultiService
from twisted.internet.interfaces import IAddress
from twisted.internet.protocol import Protocol
from twisted.mail import imap4
from twisted.protocols.tls import TLSMemoryBIOFactory

from mailsink.auth.throttle import FailureThrottle
from mailsink.capped import MAX_CONNECTIONS, CappedFactory
from mailsink.config import Config, Listener
from mailsink.imap.mailbox import MaildirAccount, Run, inline
from mailsink.imap.protocol import SinkIMAP4Server
from mailsink.imap.settings import IMAPSettings
from mailsink.threads import ThreadPoolService

WORKER_THREADS = 4
"""Threads that scan Maildirs and read messages for the IMAP listeners (their own pool,
so they never wait behind, nor hold up, the store's)."""


class IMAPFactory(CappedFactory):
    """Builds one L{SinkIMAP4Server} per connection (at most L{MAX_CONNECTIONS} at once)."""

    def __init__(self, settings: IMAPSettings, portal: Any, tls_context: Any,
                 clock: Any, max_connections: int = MAX_CONNECTIONS) -> None:
        super().__init__(max_connections)
        self.settings = settings
        self.listener = settings.listener
        self.portal = portal
        self.tls_context = tls_context
        self.clock = clock
        self.throttle = FailureThrottle(clock)

    def refusal(self) -> bytes:
        return b"* BYE too many connections; try again later\r\n"

    def build(self, addr: IAddress | None) -> Protocol:
        protocol = SinkIMAP4Server(self.settings, self.portal, self.tls_context)
        protocol.clock = self.clock
        protocol.throttle = self.throttle
        protocol.callLater = self.clock.callLater  # type: ignore[method-assign]
        return protocol


def register_reader(portal: Any, state_dir: str, run: Run = inline) -> None:
    """
    Let the realm hand out IMAP accounts over the Maildirs a user may read; C{run} runs
    their disk work (L{inline}, on the calling thread, is for tests only).
    """
    def account(path: str, user: str) -> MaildirAccount:
        return MaildirAccount(path, user, state_dir, run, portal.realm.reading_folders(user))
    portal.realm.readers[imap4.IAccount] = account


def add_listeners(config: Config, listeners: tuple[Listener, ...], portal: Any,
                  tls_context: Any, reactor: Any, parent: MultiService,
                  metrics: Any = None) -> None:
    """Add a listening service for every endpoint of every enabled IMAP section."""
    from mailsink.service import ListenerService

    workers = ThreadPoolService("mailsink-imap", WORKER_THREADS, reactor)
    workers.setServiceParent(parent)
    register_reader(portal, config.mailsink.state_dir, workers.run_blocking)
    for listener in listeners:
        settings = IMAPSettings(
            hostname=config.mailsink.hostname,
            listener=listener.section,
            tls_mode=listener.tls,
            allow_insecure=config.auth.allow_insecure,
            max_message_size=config.mailsink.max_message_size,
        )
        factory = IMAPFactory(settings, portal, tls_context, reactor)
        for description in listener.endpoints:
            wrapped: Any = factory
            if listener.tls == "implicit" and not description.startswith("ssl:"):
                wrapped = TLSMemoryBIOFactory(tls_context, False, factory)
            ListenerService(listener, description, wrapped, reactor).setServiceParent(parent)
