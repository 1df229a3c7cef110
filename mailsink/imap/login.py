"""
TLS and login for L{mailsink.imap.protocol.SinkIMAP4Server}, kept apart from the mail
commands: no LOGIN or AUTHENTICATE (and C{LOGINDISABLED}) before TLS unless C{[auth]
allow_insecure}; with C{starttls-required} only CAPABILITY, STARTTLS, NOOP and LOGOUT
before TLS; anything pipelined behind STARTTLS thrown away (the STARTTLS injection bug);
failed logins logged and slowed per client address.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.cred.error import UnauthorizedLogin
from twisted.internet import interfaces
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.mail import imap4
from twisted.python.failure import Failure

from mailsink.auth.throttle import FailureThrottle

if TYPE_CHECKING:
    from mailsink.imap.settings import IMAPSettings

log = Logger()

_BEFORE_STARTTLS = frozenset({b"CAPABILITY", b"STARTTLS", b"NOOP", b"LOGOUT"})


class IMAPLogin(imap4.IMAP4Server):
    """The TLS and credential rules; mixed into the protocol."""

    throttle: FailureThrottle | None = None
    # Provided by the protocol.
    settings: IMAPSettings
    clock: Any
    transport: Any

    @property
    def tls_active(self) -> bool:
        return bool(self.startedTLS or
                    interfaces.ISSLTransport(self.transport, None) is not None)

    def _may_login(self) -> bool:
        return self.tls_active or self.settings.allow_insecure

    def capabilities(self) -> dict[bytes, Any]:
        cap: dict[bytes, Any] = {}
        if self._may_login():
            cap[b"AUTH"] = [b"PLAIN"]
        else:
            cap[b"LOGINDISABLED"] = None
        if self.ctx and self.canStartTLS and not self.tls_active:
            cap[b"STARTTLS"] = None
        cap[b"IDLE"] = None
        cap[b"NAMESPACE"] = None
        return cap

    def dispatchCommand(self, tag: bytes, cmd: bytes, rest: bytes | None,
                        uid: Any = None) -> Any:
        if (self.settings.tls_mode == "starttls-required" and not self.tls_active
                and cmd.upper() not in _BEFORE_STARTTLS):
            self.sendNegativeResponse(tag, b"[PRIVACYREQUIRED] Must issue a STARTTLS "
                                      b"command first")
            return None
        return super().dispatchCommand(tag, cmd, rest, uid)

    def do_STARTTLS(self, tag: bytes) -> None:
        if self.tls_active:
            self.sendBadResponse(tag, b"TLS already active")
            return
        if not (self.ctx and self.canStartTLS):
            self.sendNegativeResponse(tag, b"TLS not available")
            return
        self.sendPositiveResponse(tag, b"Begin TLS negotiation now")
        if self._buffer:
            log.warn("[{listener}] {client} sent commands behind STARTTLS before TLS "
                     "began; they were dropped", listener=self.settings.listener,
                     client=self._client())
        self._buffer = b""
        self.transport.startTLS(self.ctx)
        self.startedTLS = True

    unauth_STARTTLS: Any = (do_STARTTLS,)

    def do_LOGIN(self, tag: bytes, user: bytes, passwd: bytes) -> None:
        if not self._may_login():
            self.sendNegativeResponse(tag, b"[PRIVACYREQUIRED] LOGIN is disabled before "
                                      b"STARTTLS")
            return
        super().do_LOGIN(tag, user, passwd)

    unauth_LOGIN: Any = (do_LOGIN, imap4.IMAP4Server.arg_astring,
                    imap4.IMAP4Server.arg_finalastring)

    def do_AUTHENTICATE(self, tag: bytes, args: bytes) -> None:
        if not self._may_login():
            self.sendNegativeResponse(tag, b"[PRIVACYREQUIRED] AUTHENTICATE is disabled "
                                      b"before STARTTLS")
            return
        super().do_AUTHENTICATE(tag, args)

    unauth_AUTHENTICATE: Any = (do_AUTHENTICATE, imap4.IMAP4Server.arg_atom)

    def _refused(self, failure: Failure, user: Any) -> Any:
        """A failed login: logged, answered NO after the throttle's delay."""
        if not failure.check(UnauthorizedLogin):
            log.warn("[{listener}] checking credentials failed: {error}",
                     listener=self.settings.listener, error=failure.value)
            failure = Failure(UnauthorizedLogin(str(failure.value)))
        client = self._client()
        name = user.decode("utf-8", "replace") if isinstance(user, bytes) else str(user)
        delay = self.throttle.failed(client) if self.throttle is not None else 0.0
        log.warn("[{listener}] login failed for {user!r} from {client}",
                 listener=self.settings.listener, user=name, client=client)
        if not delay or self.clock is None:
            return failure
        return deferLater(self.clock, delay, lambda: failure)

    def _logged_in(self, result: Any) -> Any:
        if self.throttle is not None:
            self.throttle.succeeded(self._client())
        return result

    def _client(self) -> str:
        peer = self.transport.getPeer()
        return str(getattr(peer, "host", peer))


class ThrottledPortal:
    """The portal, with failed logins (LOGIN and AUTHENTICATE alike) slowed down."""

    def __init__(self, portal: Any, server: IMAPLogin) -> None:
        self.portal = portal
        self.server = server

    def login(self, credentials: Any, mind: Any, *interfaces: Any) -> Deferred[Any]:
        login = maybeDeferred(self.portal.login, credentials, mind, *interfaces)
        return login.addCallbacks(self.server._logged_in, self.server._refused,
                                  errbackArgs=(getattr(credentials, "username", b""),))

