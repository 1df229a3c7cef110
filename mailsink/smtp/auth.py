"""
SMTP AUTH (RFC 4954) for L{SinkESMTP}, kept apart from the rest of the protocol.

Policy: AUTH is offered only on listeners with C{auth = optional | required}, only when
some credentials are configured, and only over TLS unless C{allow_insecure}. Each SASL
step comes from L{mailsink.auth.sasl}; credentials go to the cred portal; failures are
logged without the password and slowed down per client address by L{FailureThrottle}.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from typing import Any

import attrs
from twisted.cred.error import UnauthorizedLogin
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime, ISSLTransport
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.python.failure import Failure

from mailsink.auth.sasl import Challenge, Mechanism, SASLError, mechanism_names, start_mechanism
from mailsink.auth.throttle import FailureThrottle
from mailsink.chaos import reply_text
from mailsink.smtp.commands import Reply
from mailsink.store.delivery import IMailboxDelivery

log = Logger()


@attrs.frozen
class AuthSetup:
    """What every listener shares about authentication."""

    offers_plaintext: Callable[[], bool]
    """Whether a clear-text password can be had (for CRAM-MD5); asked at each EHLO."""
    throttle: FailureThrottle
    clock: IReactorTime


class SMTPAuthentication:
    """
    The AUTH command and its exchange; mixed into L{SinkESMTP}, whose state it shares
    (settings, portal, delivery, the command queue).
    """

    auth_setup: AuthSetup | None = None
    authenticated = False
    _sasl: Mechanism | None = None
    _sasl_failed = False
    _sasl_user = ""

    # Provided by the protocol.
    settings: Any
    metrics: Any
    portal: Any
    delivery: Any
    _from: Any
    _onLogout: Any
    session: Any
    transport: Any
    reply: Callable[[int, str], None]
    client_address: Callable[[], str]
    _block_until: Callable[[Deferred[Any]], None]

    @property
    def tls_active(self) -> bool:
        """True once the connection is encrypted (implicit TLS or after STARTTLS)."""
        return ISSLTransport.providedBy(self.transport)

    def auth_offered(self) -> bool:
        """AUTH appears in EHLO: enabled, configured, and over TLS (or allowed without)."""
        return (self.settings.auth != "none" and self.auth_setup is not None
                and (self.tls_active or self.settings.allow_insecure))

    def auth_mechanisms(self) -> list[bytes]:
        assert self.auth_setup is not None
        return [name.encode() for name in mechanism_names(self.auth_setup.offers_plaintext())]

    def chaos_check(self, kind: str) -> None:
        """Raise the L{Reply} a chaos trigger for C{kind} picks, if one does this time."""
        chaos = self.settings.chaos
        code = chaos.should_fail(kind) if chaos is not None else None
        if code is not None:
            self.metrics.rejected.labels(self.settings.listener, "chaos").inc()
            if self.session is not None:
                self.session.problem("chaos", f"{kind} answered {code}")
            log.info("[{listener}] chaos: answered {code} to {client} ({kind})",
                     listener=self.settings.listener, code=code,
                     client=self.client_address(), kind=kind)
            raise Reply(code, reply_text(kind, code))

    def forget_authentication(self) -> None:
        """After STARTTLS: what was learnt in clear text no longer counts (RFC 3207)."""
        if self.authenticated and self._onLogout is not None:
            self._onLogout()
            self._onLogout = None
        self.authenticated = False
        self.delivery = None
        self._sasl = None

    def ext_AUTH(self, rest: bytes) -> None:
        if self.settings.auth == "none" or self.auth_setup is None:
            raise Reply(503, "5.5.1 Error: authentication not enabled")
        if not (self.tls_active or self.settings.allow_insecure):
            raise Reply(538, "5.7.11 Encryption required for requested authentication "
                        "mechanism")
        if self.authenticated:
            raise Reply(503, "5.5.1 Error: already authenticated")
        if self._from is not None:
            raise Reply(503, "5.5.1 Error: MAIL transaction in progress")
        name, _, initial = rest.strip().partition(b" ")
        if not name:
            raise Reply(501, "5.5.4 Syntax: AUTH mechanism [initial-response]")
        try:
            self._sasl = start_mechanism(name.decode("ascii", "replace"),
                                         self.settings.hostname,
                                         self.auth_setup.offers_plaintext())
        except SASLError as error:
            raise Reply(error.code, error.text) from None
        self._sasl_failed = False
        if not initial:
            self._sasl_step(None)
        else:
            self._sasl_response(b"" if initial == b"=" else initial.strip())

    def in_sasl_exchange(self) -> bool:
        """True while AUTH waits for the client's next response line."""
        return self._sasl is not None

    def sasl_line(self, line: bytes) -> None:
        """One response line of an exchange (base64, or C{*} to cancel)."""
        if self._sasl_failed:
            self._sasl = None
            self.reply(535, "5.7.8 Error: authentication failed")
            return
        if line.strip() == b"*":
            self._sasl = None
            self.reply(501, "5.7.0 Authentication aborted")
            return
        self._sasl_response(line.strip())

    def _sasl_response(self, encoded: bytes) -> None:
        try:
            decoded = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            self._sasl = None
            self.reply(501, "5.5.2 Invalid base64 data")
            return
        self._sasl_step(decoded)

    def _sasl_step(self, response: bytes | None) -> None:
        assert self._sasl is not None
        try:
            step = self._sasl.step(response)
        except SASLError as error:
            self._sasl = None
            self.reply(error.code, error.text)
            return
        if isinstance(step, Challenge):
            self.reply(334, base64.b64encode(step.data).decode("ascii"))
            return
        self._check(step)

    def _check(self, credentials: Any) -> None:
        mechanism = self._sasl
        assert mechanism is not None
        self._sasl_user = credentials.username.decode("utf-8", "replace")
        login = self.portal.login(credentials, None, IMailboxDelivery)
        login.addCallbacks(self._logged_in_as_user, self._login_failed,
                           errbackArgs=(mechanism,))
        self._block_until(login)

    def _logged_in_as_user(self, result: tuple[Any, Any, Callable[[], None]]) -> None:
        mechanism = self._sasl
        self._sasl = None
        try:
            self.chaos_check("Authentication")
        except Reply as answer:
            result[2]()  # the credentials were right, but chaos refuses the login
            self.reply(answer.code, answer.text)
            return
        _, self.delivery, self._onLogout = result
        self.authenticated = True
        assert self.auth_setup is not None
        self.auth_setup.throttle.succeeded(self.client_address())
        if self.session is not None:
            self.session.login(self.delivery.user or self._sasl_user,
                               mechanism.name if mechanism else "", succeeded=True)
        log.info("[{listener}] {client} authenticated as {user} ({mechanism})",
                 listener=self.settings.listener, client=self.client_address(),
                 user=self.delivery.user, mechanism=mechanism.name if mechanism else "?")
        self.reply(235, "2.7.0 Authentication successful")

    def _login_failed(self, failure: Failure, mechanism: Mechanism) -> Deferred[None] | None:
        if not failure.check(UnauthorizedLogin):
            self._sasl = None
            log.failure("[{listener}] checking credentials failed", failure,
                        listener=self.settings.listener)
            self.reply(454, "4.7.0 Temporary authentication failure")
            return None
        assert self.auth_setup is not None
        client = self.client_address()
        self.metrics.auth_failures.labels(self.settings.listener).inc()
        delay = self.auth_setup.throttle.failed(client)
        if self.session is not None:
            self.session.login(self._sasl_user, mechanism.name, succeeded=False)
        log.warn("[{listener}] authentication failed for {user!r} from {client} "
                 "({mechanism}, failure {count} from this address)",
                 listener=self.settings.listener, user=self._sasl_user, client=client,
                 mechanism=mechanism.name,
                 count=self.auth_setup.throttle.failures(client))
        # Returned, so the login's Deferred (which holds later commands back) waits too.
        return deferLater(self.auth_setup.clock, delay, self._answer_failure, mechanism)

    def _answer_failure(self, mechanism: Mechanism) -> None:
        challenge = mechanism.failure_challenge()
        if challenge is None:
            self._sasl = None
            self.reply(535, "5.7.8 Error: authentication failed")
        else:
            self._sasl_failed = True  # the client's next line gets the 535
            self.reply(334, base64.b64encode(challenge).decode("ascii"))
