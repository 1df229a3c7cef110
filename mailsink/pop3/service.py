"""
The POP3 listeners: one L{POP3Factory} per C{[pop3]} / C{[pop3:NAME]} section, one
listening service per endpoint string, and the realm's POP3 reader registered.
"""

from __future__ import annotations

from typing import Any

from twisted.application.service import MultiService
from twisted.cred.portal import Portal
from twisted.mail.pop3 import IMailbox
from twisted.protocols.tls import TLSMemoryBIOFactory

from mailsink.auth.throttle import FailureThrottle
from mailsink.config import Config, ConfigError, Listener
from mailsink.metrics import Metrics
from mailsink.pop3.factory import POP3Factory
from mailsink.pop3.mailbox import MaildirMailbox
from mailsink.pop3.protocol import POP3Settings


def add_listeners(config: Config, listeners: tuple[Listener, ...], portal: Portal,
                  tls_context: Any, reactor: Any, parent: MultiService,
                  metrics: Metrics) -> None:
    """Add a listening service per endpoint of each enabled POP3 listener to C{parent}."""
    from mailsink.service import ListenerService

    realm: Any = portal.realm
    if not (config.auth.password_file or config.credentials or config.auth.accept_any):
        raise ConfigError(listeners[0].section, "listen",
                          "POP3 needs credentials to log in with; set [auth] password_file "
                          "or accept_any, or MAILSINK_AUTH")
    run_blocking = realm.shared.run_blocking
    realm.readers[IMailbox] = lambda path, user: MaildirMailbox(path, user, run_blocking)
    throttle = FailureThrottle(reactor)
    implicit = " or ".join(f"[{x.section}] {' '.join(x.endpoints)}" for x in listeners
                           if x.tls == "implicit")
    for listener in listeners:
        if listener.tls == "none" and not config.auth.allow_insecure:
            raise ConfigError(listener.section, "tls",
                              "is none, so passwords would cross the network in clear text "
                              "and every login is refused; set tls = starttls or implicit, "
                              "or [auth] allow_insecure = true")
        settings = POP3Settings(hostname=config.mailsink.hostname, listener=listener.section,
                                tls_mode=listener.tls,
                                allow_insecure=config.auth.allow_insecure,
                                implicit_listeners=implicit)
        factory = POP3Factory(settings, portal, tls_context, reactor, throttle, metrics)
        for description in listener.endpoints:
            wrapped: Any = factory
            if listener.tls == "implicit" and not description.startswith("ssl:"):
                wrapped = TLSMemoryBIOFactory(tls_context, False, factory)
            ListenerService(listener, description, wrapped, reactor).setServiceParent(parent)
