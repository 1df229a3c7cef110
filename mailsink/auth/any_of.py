"""
One cred checker made of several (password file, then C{MAILSINK_AUTH}, ...): a Portal
maps each credentials interface to a single checker, so they must be combined first.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.error import LoginFailed, UnauthorizedLogin
from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure
from zope.interface import implementer

from mailsink.auth.password_file import AvatarId


@implementer(ICredentialsChecker)
class AnyOfChecker:
    """Asks each checker that handles the credentials, in order; the first success wins."""

    def __init__(self, checkers: Sequence[ICredentialsChecker]) -> None:
        self.checkers = tuple(checkers)
        interfaces: list[Any] = []
        for checker in self.checkers:
            interfaces.extend(i for i in checker.credentialInterfaces if i not in interfaces)
        self.credentialInterfaces = tuple(interfaces)

    def offers_plaintext(self) -> bool:
        """Whether any checker can answer CRAM-MD5 for some user."""
        return any(getattr(checker, "offers_plaintext", lambda: False)()
                   for checker in self.checkers)

    def requestAvatarId(self, credentials: Any) -> Deferred[AvatarId]:
        """The first avatar ID a willing checker gives, or L{UnauthorizedLogin}."""
        willing = iter([
            checker for checker in self.checkers
            if any(i.providedBy(credentials) for i in checker.credentialInterfaces)
        ])
        return self._try_next(willing, credentials)

    def _try_next(self, willing: Iterator[Any], credentials: Any) -> Deferred[AvatarId]:
        """Ask the next checker; on a login failure, the one after it."""
        checker = next(willing, None)
        if checker is None:
            return defer.fail(UnauthorizedLogin("no checker accepted the credentials"))

        def next_on_failure(failure: Failure) -> Deferred[AvatarId]:
            failure.trap(LoginFailed)
            return self._try_next(willing, credentials)

        attempt: Deferred[AvatarId] = defer.maybeDeferred(checker.requestAvatarId, credentials)
        return attempt.addErrback(next_on_failure)
