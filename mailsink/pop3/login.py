"""
POP3 login for L{mailsink.pop3.protocol.SinkPOP3}, kept apart from the mail commands:
USER/PASS and AUTH PLAIN (RFC 5034) through the cred portal for an C{IMailbox} (the user's
INBOX, or a C{[mailbox:NAME]} for a login C{user#NAME}), refused without TLS unless
C{[auth] allow_insecure}, failures logged without the password and slowed per client
address.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from typing import Any

from twisted.cred.credentials import UsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import ISSLTransport
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.mail.pop3 import IMailbox
from twisted.python.failure import Failure

from mailsink.auth.sasl import Plain, SASLError
from mailsink.store.mailboxes import split_login

log = Logger()


class Refused(Exception):
    """Answer the command with C{-ERR text}."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text


class POP3Login:
    """The AUTHORIZATION state's login commands; mixed into the protocol."""

    # Provided by the protocol.
    settings: Any
    portal: Any
    throttle: Any
    clock: Any
    metrics: Any
    transport: Any
    mbox: Any
    tls_context: Any
    _user: bytes | None
    _sasl: Any
    _onLogout: Any
    reply_ok: Callable[..., None]
    reply_err: Callable[[str], None]
    send_multiline: Callable[[str, list[bytes]], None]
    _args: Callable[..., list[bytes]]
    _longOperation: Callable[[Deferred[Any]], Deferred[Any]]
    client_address: Callable[[], str]

    @property
    def tls_active(self) -> bool:
        return ISSLTransport.providedBy(self.transport)

    @property
    def can_stls(self) -> bool:
        return (self.settings.tls_mode in ("starttls", "starttls-required")
                and self.tls_context is not None and not self.tls_active)

    def login_allowed(self) -> bool:
        """Passwords may be sent: over TLS, or in clear text when allowed."""
        if self.tls_active:
            return True
        return self.settings.allow_insecure and self.settings.tls_mode != "starttls-required"

    def _refuse_insecure(self) -> None:
        if not self.login_allowed():
            if self.can_stls:
                raise Refused("[SYS/PERM] plaintext login is refused without TLS; "
                              "issue STLS first")
            raise Refused("[SYS/PERM] plaintext login is refused without TLS; use the "
                          "POP3S (implicit TLS) listener or set [auth] allow_insecure")

    def pop_USER(self, rest: bytes) -> None:
        self._refuse_insecure()
        user = rest.strip()
        if not user or any(byte < 0x20 or byte == 0x7F for byte in user):
            raise Refused("syntax: USER name")
        self._user = user
        self.reply_ok("send PASS")

    def pop_PASS(self, rest: bytes) -> None:
        self._refuse_insecure()
        user, self._user = self._user, None
        if user is None:
            raise Refused("USER first")
        self._login(UsernamePassword(user, rest), "USER/PASS")

    def pop_AUTH(self, rest: bytes) -> None:
        args = self._args(rest, 0, 2, "AUTH mechanism [initial-response]")
        if not args:
            self._refuse_insecure()
            self.send_multiline("SASL mechanisms follow", [b"PLAIN"])
            return
        self._refuse_insecure()
        if args[0].upper() != b"PLAIN":
            raise Refused("unsupported SASL mechanism; PLAIN is offered")
        self._sasl = Plain()
        if len(args) == 1:
            self.transport.write(b"+ \r\n")
        else:
            self._sasl_line(args[1])

    def _sasl_line(self, line: bytes) -> None:
        mechanism, self._sasl = self._sasl, None
        assert mechanism is not None
        line = line.strip()
        if line == b"*":
            self.reply_err("authentication cancelled")
            return
        try:
            decoded = base64.b64decode(b"" if line == b"=" else line, validate=True)
            credentials = mechanism.step(decoded)
        except (binascii.Error, ValueError):
            self.reply_err("invalid base64 in the SASL response")
            return
        except SASLError as error:
            self.reply_err(error.text.split(" ", 1)[-1])
            return
        if not isinstance(credentials, UsernamePassword):
            self.reply_err("invalid SASL PLAIN response")
            return
        self._login(credentials, "SASL PLAIN")

    def _login(self, credentials: UsernamePassword, how: str) -> None:
        user = credentials.username.decode("utf-8", "replace")
        name, mailbox = split_login(credentials.username)
        login = self.portal.login(UsernamePassword(name, credentials.password), mailbox,
                                  IMailbox)
        login.addCallback(self._logged_in, user, how)
        login.addErrback(self._login_failed, user, how)
        self._longOperation(login)

    def _logged_in(self, result: tuple[Any, Any, Callable[[], None]], user: str,
                   how: str) -> Deferred[None]:
        _, mailbox, logout = result
        self._onLogout = logout
        if self.throttle is not None:
            self.throttle.succeeded(self.client_address())

        def opened(_: object) -> None:
            self.mbox = mailbox
            log.info("[{listener}] {client} logged in as {user} ({how}), {count} messages",
                     listener=self.settings.listener, client=self.client_address(),
                     user=user, how=how, count=len(mailbox.messages))
            total = sum(m.size for m in mailbox.messages)
            self.reply_ok(f"maildrop has {len(mailbox.messages)} messages ({total} octets)")

        def failed(failure: Failure) -> None:
            log.failure("[{listener}] cannot open the maildrop of {user}", failure,
                        listener=self.settings.listener, user=user)
            self._logout()
            self.reply_err("[SYS/TEMP] cannot open the maildrop; try again later")

        return mailbox.load().addCallbacks(opened, failed)

    def _login_failed(self, failure: Failure, user: str, how: str) -> Deferred[None] | None:
        if not failure.check(UnauthorizedLogin):
            log.failure("[{listener}] checking credentials failed", failure,
                        listener=self.settings.listener)
            self.reply_err("[SYS/TEMP] temporary authentication failure")
            return None
        client = self.client_address()
        self.metrics.auth_failures.labels(self.settings.listener).inc()
        delay = 0.0
        count = 1
        if self.throttle is not None:
            delay = self.throttle.failed(client)
            count = self.throttle.failures(client)
        log.warn("[{listener}] authentication failed for {user!r} from {client} "
                 "({how}, failure {count} from this address)",
                 listener=self.settings.listener, user=user, client=client, how=how,
                 count=count)
        answer = "[AUTH] authentication failed"
        if self.clock is None or delay <= 0:
            self.reply_err(answer)
            return None
        return deferLater(self.clock, delay, self.reply_err, answer)

    def _logout(self) -> None:
        if self._onLogout is not None:
            logout, self._onLogout = self._onLogout, None
            logout()
