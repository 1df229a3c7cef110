"""
From a L{Config} to running services: the store, its thread pool, and one listening
service per endpoint string, hung off one C{MultiService}.

Problems found here (a certificate, a port that cannot be
bound) stop start-up with one line naming the section and key: a L{ConfigError} while
building, C{SystemExit} once twistd is starting services (twistd would print a traceback
for anything else).
"""

from __future__ import annotations

import importlib
import os
import re
import resource
from collections.abc import Callable
from typing import Any

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import IService, MultiService, Service
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IReactorCore
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.web.server import Site

from mailsink.auth.accept_any import AcceptAnyChecker
from mailsink.auth.any_of import AnyOfChecker
from mailsink.auth.environment import EnvironmentChecker
from mailsink.auth.password_file import PasswordFileChecker
from mailsink.auth.throttle import FailureThrottle
from mailsink.chaos import Chaos
from mailsink.checks.link_check import LinkChecker
from mailsink.checks.spamc import Spamd
from mailsink.config import Config, ConfigError, Listener
from mailsink.index.message_index import MessageIndex
from mailsink.index.parser import ProcessParser, ThreadParser
from mailsink.message import mime
from mailsink.metrics import Metrics
from mailsink.realm import build_portal
from mailsink.relay.pool import RelayService
from mailsink.sessions.diagnosis import ListenerHints
from mailsink.sessions.store import SessionLog
from mailsink.smtp.auth import AuthSetup
from mailsink.smtp.diagnostics import ImplicitTLSWatchFactory
from mailsink.smtp.factory import SMTPFactory
from mailsink.smtp.server import SMTPSettings
from mailsink.store.maildir import Maildir, delivered_here
from mailsink.threads import ThreadPoolService
from mailsink.tls import GENERATED_CERT_NAME, load_or_generate_certificate, server_context_factory
from mailsink.web.access import Access
from mailsink.web.app import WebApp
from mailsink.web.events import EventHub
from mailsink.web.waiting import Waiting
from mailsink.web.webhook import subscribe_webhooks

log = Logger()

LISTEN_BACKLOG = 1024
"""Listen backlog added to endpoint strings that name none (Twisted's default is 50)."""
STORE_THREADS = 32
"""Worker threads for disk work: concurrent deliveries each wait in their own fsync."""
GAUGE_INTERVAL = 5.0
"""Seconds between refreshes of the message-count gauge."""
WEB_THREADS = 4
"""Worker threads reading and parsing messages for the web view."""
AUTH_THREADS = max(1, (os.cpu_count() or 2) // 2)
"""Worker threads for bcrypt: half the cores, so password checks never starve the reactor."""

def build_service(config: Config, reactor: Any) -> IService:
    """Everything mailsink runs, configured, not yet started."""
    _raise_open_file_limit()
    top = MultiService()
    metrics = Metrics()
    store = StoreService(config.mailsink.maildir, reactor)
    store.setServiceParent(top)
    auth_threads = ThreadPoolService("mailsink-auth", AUTH_THREADS, reactor)
    auth_threads.setServiceParent(top)
    checker = _credential_checker(config, auth_threads)
    auth_setup = None
    if checker is not None:
        auth_setup = AuthSetup(checker.offers_plaintext, FailureThrottle(reactor), reactor)
    portal = build_portal(store.maildir, config.mailsink.isolation, checker,
                          config.auth.admins, config.mailboxes)
    chaos = Chaos() if config.mailsink.chaos else None
    relay = None
    if config.relay.host:
        relay = RelayService(config.relay, reactor, config.mailsink.hostname)
        relay.setServiceParent(top)
    sessions = _session_log(config, metrics, reactor)
    sessions.setServiceParent(top)
    index = _index_service(config, store, metrics, reactor)
    if index is not None:
        index.setServiceParent(top)
        _web_listeners(config, index.index, checker, metrics, reactor, top, chaos,
                       store.maildir, relay=relay, sessions=sessions)
        if relay is not None and config.relay.auto_relay:
            relay.watch(index.index, lambda path: store.run_blocking(lambda: _read(path)))
    tls_context = _tls_context(config)
    for protocol in READER_PROTOCOLS:
        listeners = config.enabled_listeners(protocol)
        if listeners:
            add_listeners = _reader_builder(protocol, listeners[0])
            add_listeners(config, listeners, portal, tls_context, reactor, top, metrics)
    smtp = config.enabled_listeners("smtp")
    for listener in smtp:
        settings = SMTPSettings(
            hostname=config.mailsink.hostname,
            listener=listener.section,
            tls_mode=listener.tls,
            max_message_size=config.mailsink.max_message_size,
            max_recipients=config.mailsink.max_recipients,
            auth=listener.auth,
            allow_insecure=config.auth.allow_insecure,
            long_lines=listener.long_lines,
            hints=_hints(listener, smtp, config),
            chaos=chaos,
        )
        if listener.auth == "required" and checker is None:
            raise ConfigError(listener.section, "auth", "is required but no credentials are "
                              "configured; set [auth] password_file or accept_any, or "
                              "MAILSINK_AUTH")
        factory = SMTPFactory(settings, portal, tls_context, reactor, auth_setup=auth_setup,
                              metrics=metrics, session_sink=sessions.ended)
        for description in listener.endpoints:
            wrapped: Any = factory
            if listener.tls == "implicit" and not description.startswith("ssl:"):
                tls = TLSMemoryBIOFactory(tls_context, False, factory)
                wrapped = ImplicitTLSWatchFactory(tls, settings.hints, reactor)
            ListenerService(listener, description, wrapped, reactor).setServiceParent(top)
    return top


class StoreService(ThreadPoolService):
    """The Maildir and the threads that write it; tidies C{tmp/} at start-up."""

    def __init__(self, path: str, reactor: Any) -> None:
        super().__init__("mailsink-store", STORE_THREADS, reactor)
        self.maildir = Maildir(path, self.run_blocking)
        try:
            self.maildir.create()
        except OSError as error:
            raise ConfigError("mailsink", "maildir",
                              f"cannot create {path}: {error.strerror}") from None

    def startService(self) -> None:
        removed = self.maildir.remove_stale_tmp()
        if removed:
            log.info("removed {count} stale files from {path}/tmp", count=len(removed),
                     path=self.maildir.path)
        super().startService()


class IndexService(Service):
    """The message index: started with the daemon (rebuilding in the background if it
    must), told of each delivery, pruning by the retention settings."""

    def __init__(self, index: MessageIndex, root: str, max_messages: int, max_age: int,
                 metrics: Metrics) -> None:
        self.index = index
        self._root = root
        self._retention = (max_messages, max_age)
        self._metrics = metrics
        self._gauge = LoopingCall(self._count)

    def delivered(self, path: str) -> None:
        """The store's hook: a message is durably in C{<mailbox>/new/}."""
        mailbox_dir = os.path.dirname(os.path.dirname(path))
        mailbox = "" if mailbox_dir == self._root else os.path.basename(mailbox_dir)
        self.index.added(mailbox, path)

    def startService(self) -> None:
        super().startService()
        self.index.start().addCallback(lambda _: self.index.start_pruning(*self._retention))
        self.index.when_ready().addCallback(lambda _: self._gauge.start(GAUGE_INTERVAL))

    def stopService(self) -> Deferred[Any]:
        super().stopService()
        if self._gauge.running:
            self._gauge.stop()
        return self.index.stop()

    def _count(self) -> Deferred[None]:
        """Refresh the message-count gauge (periodically: one query, not one per event)."""
        counted: Deferred[Any] = self.index.counts(None)
        counted.addCallback(lambda counts: self._metrics.messages.set(counts[0]))
        counted.addErrback(lambda failure: log.failure("counting failed", failure))
        return counted


def _index_service(config: Config, store: StoreService, metrics: Metrics,
                   reactor: Any) -> IndexService | None:
    """An index when something reads it: a web listener, or retention limits."""
    settings = config.mailsink
    auto_relay = bool(config.relay.host and config.relay.auto_relay)
    if not (config.enabled_listeners("web") or settings.max_messages or settings.max_age
            or auto_relay):
        return None
    parser = ProcessParser(reactor, fallback=ThreadParser(reactor, mime.facts))
    index = MessageIndex(settings.maildir, settings.state_dir, parser, reactor,
                         tag_rules=config.tags, delivered_here=delivered_here)
    service = IndexService(index, settings.maildir, settings.max_messages, settings.max_age,
                           metrics)
    store.maildir.delivered = service.delivered
    return service


def _session_log(config: Config, metrics: Metrics, reactor: Any) -> SessionLog:
    """The SMTP sessions kept for the Sessions view, counted in C{/metrics} as they end."""
    sessions = SessionLog(config.mailsink.state_dir, config.mailsink.max_sessions, reactor)
    sessions.listeners.append(
        lambda session: metrics.sessions.labels(session.listener, session.outcome).inc())
    return sessions


def _web_listeners(config: Config, index: MessageIndex, checker: Any, metrics: Metrics,
                   reactor: Any, parent: MultiService, chaos: Chaos | None = None,
                   maildir: Maildir | None = None,
                   relay: RelayService | None = None,
                   sessions: SessionLog | None = None) -> None:
    """One Klein site per [web] section (each may set its own auth), sharing the index."""
    web = config.enabled_listeners("web")
    if not web:
        return
    threads = ThreadPoolService("mailsink-web", WEB_THREADS, reactor)
    threads.setServiceParent(parent)
    hub = EventHub(reactor)
    if sessions is not None:
        sessions.listeners.append(lambda session: hub.index_event("session", session))
    index.subscribe(hub.index_event)
    waiting = Waiting(index, reactor, metrics)
    index.awaited = waiting.anyone_waiting
    index.subscribe(waiting.index_event)
    subscribe_webhooks(web, index, reactor)
    reactor.callWhenRunning(hub.start)
    links = LinkChecker.on(reactor)  # one for all listeners: at most 5 links at a time
    spamd = Spamd.at(reactor, *config.spamassassin.host) if config.spamassassin.host else None
    for listener in web:
        if listener.auth == "required" and checker is None:
            raise ConfigError(listener.section, "auth", "is required but no credentials are "
                              "configured; set [auth] password_file or accept_any, or "
                              "MAILSINK_AUTH")
        access = Access(listener.auth == "required", checker, config.mailsink.isolation,
                        config.auth.admins, config.mailboxes)
        app = WebApp(index, access, hub, metrics, threads.run_blocking, chaos, maildir,
                     config.mailsink.hostname, listener.section,
                     config.mailsink.max_message_size, relay=relay, sessions=sessions,
                     links=links, spamd=spamd, waiting=waiting)
        site = Site(app.resource(listener.base_path))
        site.displayTracebacks = False
        site.noisy = False  # mailsink logs its own line per listener
        for description in listener.endpoints:
            ListenerService(listener, description, site, reactor).setServiceParent(parent)


class ListenerService(StreamServerEndpointService):
    """Listens on one endpoint string; a port that cannot be bound stops start-up."""

    _raiseSynchronously = True

    def __init__(self, listener: Listener, description: str, factory: Any,
                 reactor: IReactorCore) -> None:
        self.listener = listener
        self.description = _with_backlog(description)
        try:
            endpoint = serverFromString(reactor, self.description)
        except (ValueError, TypeError, KeyError) as error:
            raise ConfigError(listener.section, "listen",
                              f"{description!r} is not a usable endpoint string: {error}") \
                from None
        super().__init__(endpoint, factory)

    def privilegedStartService(self) -> None:
        try:
            super().privilegedStartService()
        except Exception as error:
            problem = ConfigError(self.listener.section, "listen",
                                  f"cannot listen on {self.description}: {error}")
            raise SystemExit(f"mailsink: {problem}") from None
        log.info("[{listener}] listening on {endpoint} (tls = {tls})",
                 listener=self.listener.section, endpoint=self.description,
                 tls=self.listener.tls)

    def stopService(self) -> Deferred[None]:
        stopped: Deferred[None] = super().stopService()
        stopped.addCallback(lambda _: log.info("[{listener}] stopped listening on {endpoint}",
                                               listener=self.listener.section,
                                               endpoint=self.description))
        return stopped


def _with_backlog(description: str) -> str:
    kind = description.split(":", 1)[0]
    if kind in ("tcp", "tcp6", "ssl", "unix") and ":backlog=" not in description:
        return f"{description}:backlog={LISTEN_BACKLOG}"
    return description


def _tls_context(config: Config) -> Any:
    needs_tls = any(listener.tls != "none" for listener in config.listeners if listener.enabled)
    if not needs_tls:
        return None
    certificate = load_or_generate_certificate(
        config.tls.cert, config.tls.key, config.mailsink.state_dir, config.mailsink.hostname)
    log.info("TLS certificate {path} (SHA-256 fingerprint {fingerprint}, valid until "
             "{not_after:%Y-%m-%d}{how})", path=certificate.cert_path,
             fingerprint=certificate.fingerprint_sha256, not_after=certificate.not_after,
             how=", self-signed by mailsink" if certificate.generated else "")
    return server_context_factory(certificate)


def _hints(listener: Listener, smtp: tuple[Listener, ...], config: Config) -> ListenerHints:
    """What the diagnoses of C{listener}'s sessions may point to instead."""
    def describe(chosen: Callable[[Listener], bool]) -> str:
        return " or ".join(f"[{x.section}] {_where(x.endpoints)}" for x in smtp
                           if chosen(x) and x is not listener)
    return ListenerHints(
        listener=listener.section,
        implicit_listeners=describe(lambda x: x.tls == "implicit"),
        starttls_listeners=describe(lambda x: x.tls in ("starttls", "starttls-required",
                                                        "none")),
        plain_listeners=describe(lambda x: x.auth != "required" and x.tls != "implicit"),
        certificate=config.tls.cert or os.path.join(config.mailsink.state_dir,
                                                    GENERATED_CERT_NAME),
        max_message_size=config.mailsink.max_message_size)


def _where(endpoints: tuple[str, ...]) -> str:
    """C{port 1465} for TCP and SSL endpoints; the endpoint strings otherwise."""
    ports = [match.group(1) for e in endpoints
             if (match := re.match(r"(?:tcp6?|ssl):(?:port=)?(\d+)", e))]
    if len(ports) == len(endpoints):
        return "port " + " or ".join(ports)
    return " ".join(endpoints)


def _credential_checker(config: Config, threads: ThreadPoolService) -> AnyOfChecker | None:
    """Every configured source of credentials, asked in turn; None when there is none."""
    checkers: list[Any] = []
    if config.auth.password_file:
        checkers.append(PasswordFileChecker(config.auth.password_file, threads.run_blocking))
    if config.credentials:
        checkers.append(EnvironmentChecker(config.credentials))
    if config.auth.accept_any:
        checkers.append(AcceptAnyChecker())
    return AnyOfChecker(checkers) if checkers else None


READER_PROTOCOLS = ("pop3", "imap")
"""Protocols whose listeners come from C{mailsink.<protocol>.service.add_listeners}."""


def _reader_builder(protocol: str, listener: Listener) -> Callable[..., None]:
    """
    The function that adds C{protocol}'s listening services:
    C{add_listeners(config, listeners, portal, tls_context, reactor, parent, metrics)}.
    """
    name = f"mailsink.{protocol}.service"
    try:
        module = importlib.import_module(name)
    except ModuleNotFoundError as error:
        if error.name not in (name, f"mailsink.{protocol}"):
            raise  # a dependency of the module is missing: not the same thing
        raise ConfigError(listener.section, "listen", f"{protocol} is not available in this "
                          "version of mailsink; leave listen empty") from None
    builder: Callable[..., None] = module.add_listeners
    return builder


def _read(path: str) -> bytes:
    with open(path, "rb") as stream:
        return stream.read()


def _raise_open_file_limit() -> None:
    """Each connection holds a descriptor; lift the soft limit as far as allowed."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard if hard != resource.RLIM_INFINITY else 65536
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, 65536), hard))

