"""
Who is looking: HTTP Basic against the same credentials as SMTP (when C{[web] auth =
required}), and which mailboxes that person may see.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from weakref import WeakKeyDictionary

import attrs
from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import UsernamePassword
from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger
from twisted.web.iweb import IRequest

from mailsink.realm import mailbox_folder
from mailsink.store.mailboxes import MailboxRule, visible

log = Logger()


class NoSuchMailbox(Exception):
    """C{?mailbox=} names a mailbox this viewer may not see (or that does not exist)."""


@attrs.frozen
class Viewer:
    """A person using the web view, and the mailboxes they may read (None: all)."""

    user: str | None
    mailboxes: tuple[str, ...] | None
    sessions_of: str | None = None
    """Whose SMTP sessions alone this viewer sees (C{isolation = user}, not an admin);
    None: everyone's."""


class Access:
    """Admits each request as a L{Viewer}, or answers that it must authenticate.

    L{mailsink.web.guard.Guard} admits every request before a route runs; routes then ask
    L{viewer} who it is, so credentials are checked once per request.
    """

    def __init__(self, required: bool, checker: ICredentialsChecker | None,
                 isolation: str, admins: Sequence[str],
                 rules: Sequence[MailboxRule] = ()) -> None:
        self.required = required
        self.checker = checker
        self.isolation = isolation
        self.admins = frozenset(admins)
        self.rules = tuple(rules)
        """The C{[mailbox:NAME]} rules: who may see which."""
        self._viewers: WeakKeyDictionary[IRequest, Viewer] = WeakKeyDictionary()

    def admit(self, request: IRequest) -> Deferred[bool]:
        """Whether C{request} may be served; if not, its 401 status and challenge are set."""
        if not self.required or self.checker is None:
            return succeed(self._remember(request, Viewer(None, None)))
        credentials = _basic_credentials(request)
        if credentials is None:
            self._challenge(request)
            return succeed(False)
        checked = self.checker.requestAvatarId(credentials)

        def accepted(avatar_id: bytes) -> bool:
            user = avatar_id.decode("utf-8", "replace")
            own = mailbox_folder(user) if self.isolation == "user" else None
            sessions_of = user if own is not None and user not in self.admins else None
            return self._remember(request, Viewer(
                user, visible(self.rules, user, self.admins, own), sessions_of))

        def refused(_: object) -> bool:
            log.warn("web login failed for {user!r} from {client}",
                     user=credentials.username.decode("utf-8", "replace"),
                     client=getattr(request.getClientAddress(), "host", "?"))
            self._challenge(request)
            return False

        return checked.addCallbacks(accepted, refused)

    def viewer(self, request: IRequest) -> Viewer:
        """
        Who an admitted request comes from (C{KeyError} if it never was: fail closed),
        narrowed to one mailbox by C{?mailbox=NAME} (empty: the shared Maildir).
        """
        viewer = self._viewers[request]
        chosen = request.args.get(b"mailbox")
        if chosen is None:
            return viewer
        name = chosen[-1].decode("utf-8", "replace")
        if viewer.mailboxes is not None and name not in viewer.mailboxes:
            raise NoSuchMailbox(name)
        return Viewer(viewer.user, (name,))

    def _remember(self, request: IRequest, viewer: Viewer) -> bool:
        self._viewers[request] = viewer
        return True

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
