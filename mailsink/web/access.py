"""
Who is looking: HTTP Basic against the same credentials as SMTP (when C{[web] auth =
required}), and which mailboxes that person may see.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence

import attrs
from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import UsernamePassword
from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger
from twisted.web.iweb import IRequest

from mailsink.realm import mailbox_folder

log = Logger()


@attrs.frozen
class Viewer:
    """A person using the web view, and the mailboxes they may read (None: all)."""

    user: str | None
    mailboxes: tuple[str, ...] | None


class Access:
    """Decides the L{Viewer} of each request, or that the request must authenticate."""

    def __init__(self, required: bool, checker: ICredentialsChecker | None,
                 isolation: str, admins: Sequence[str]) -> None:
        self.required = required
        self.checker = checker
        self.isolation = isolation
        self.admins = frozenset(admins)

    def viewer(self, request: IRequest) -> Deferred[Viewer | None]:
        """The viewer, or None after answering 401 on C{request}."""
        if not self.required or self.checker is None:
            return succeed(Viewer(None, None))
        credentials = _basic_credentials(request)
        if credentials is None:
            self._challenge(request)
            return succeed(None)
        checked = self.checker.requestAvatarId(credentials)

        def accepted(avatar_id: bytes) -> Viewer:
            user = avatar_id.decode("utf-8", "replace")
            if self.isolation == "user" and user not in self.admins:
                return Viewer(user, (mailbox_folder(user),))
            return Viewer(user, None)

        def refused(_: object) -> None:
            log.warn("web login failed for {user!r} from {client}",
                     user=credentials.username.decode("utf-8", "replace"),
                     client=getattr(request.getClientAddress(), "host", "?"))
            self._challenge(request)
            return None

        return checked.addCallbacks(accepted, refused)

    def _challenge(self, request: IRequest) -> None:
        request.setResponseCode(401)
        request.setHeader(b"WWW-Authenticate", b'Basic realm="mailsink", charset="UTF-8"')
        request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")


def _basic_credentials(request: IRequest) -> UsernamePassword | None:
    header = request.getHeader(b"Authorization")
    if not header or header[:6].lower() != b"basic ":
        return None
    try:
        decoded = base64.b64decode(header[6:].strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    user, colon, password = decoded.partition(b":")
    if not colon or not user:
        return None
    return UsernamePassword(user, password)
