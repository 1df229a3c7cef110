"""
A cred checker that lets everyone in (C{[auth] accept_any}): for test rigs whose clients
insist on logging in but whose passwords do not matter. The user name is kept, so mail
is still attributed to whoever the client said it was.
"""

from __future__ import annotations

from typing import Any

from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import IUsernameHashedPassword, IUsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.internet import defer
from twisted.internet.defer import Deferred
from zope.interface import implementer

from mailsink.auth.password_file import AvatarId


@implementer(ICredentialsChecker)
class AcceptAnyChecker:
    """Any non-empty user name with any password, token or CRAM-MD5 response succeeds."""

    credentialInterfaces = (IUsernamePassword, IUsernameHashedPassword)

    def offers_plaintext(self) -> bool:
        """Always: CRAM-MD5 works because its response is never checked."""
        return True

    def requestAvatarId(self, credentials: Any) -> Deferred[AvatarId]:
        """The user name as given (UTF-8 bytes); only an empty or missing one fails."""
        name = getattr(credentials, "username", None)
        if isinstance(name, str):
            name = name.encode("utf-8")
        if isinstance(name, bytes) and name:
            return defer.succeed(name)
        return defer.fail(UnauthorizedLogin("empty user name"))
