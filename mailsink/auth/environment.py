"""
A cred checker for C{MAILSINK_AUTH="user1:pass1 user2:pass2"}: credentials for containers
and CI, where writing a password file is a chore. Passwords are plain text, so CRAM-MD5
works, and checks are cheap enough to run on the reactor thread.
"""

from __future__ import annotations

import hmac
from typing import Any

from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import IUsernameHashedPassword, IUsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.internet import defer
from twisted.internet.defer import Deferred
from zope.interface import implementer

from mailsink.auth.password_file import AvatarId, username_text
from mailsink.config import ConfigError


def parse_environment_accounts(text: str) -> dict[str, bytes]:
    """
    White-space separated C{user:password} entries to a map; a bad entry is a
    L{ConfigError} that gives its number, never its text (it may hold a password).
    """
    accounts: dict[str, bytes] = {}
    for number, item in enumerate(text.split(), start=1):
        user, colon, password = item.partition(":")
        reason = (
            "no ':' between user name and password" if not colon
            else "empty user name" if not user
            else "empty password" if not password
            else f"user {user!r} appears twice" if user in accounts
            else None
        )
        if reason:
            raise ConfigError("auth", None, f"MAILSINK_AUTH entry {number}: {reason}")
        accounts[user] = password.encode("utf-8", "surrogateescape")
    if not accounts:
        raise ConfigError("auth", None, "MAILSINK_AUTH is set but holds no user:password entry")
    return accounts


@implementer(ICredentialsChecker)
class EnvironmentChecker:
    """Checks passwords and CRAM-MD5 responses against the users in C{MAILSINK_AUTH}."""

    credentialInterfaces = (IUsernamePassword, IUsernameHashedPassword)

    def __init__(self, text: str) -> None:
        self._accounts = parse_environment_accounts(text)

    def offers_plaintext(self) -> bool:
        """Always: every password here is stored in plain text."""
        return True

    def requestAvatarId(self, credentials: Any) -> Deferred[AvatarId]:
        """The user name as UTF-8 bytes, or L{UnauthorizedLogin}; synchronous."""
        user = username_text(credentials)
        stored = self._accounts.get(user) if user is not None else None
        if IUsernamePassword.providedBy(credentials):
            password = credentials.password
            if isinstance(password, str):
                password = password.encode("utf-8")
            # Compare even for an unknown user, so timing says little about who exists.
            matches = hmac.compare_digest(password, b"" if stored is None else stored)
        else:
            matches = stored is not None and bool(credentials.checkPassword(stored))
        if user is not None and stored is not None and matches:
            return defer.succeed(user.encode("utf-8"))
        return defer.fail(UnauthorizedLogin("unknown user or wrong password"))
