"""
The cred realm: turns an avatar ID (anonymous, or a user who authenticated) into the
L{IMailboxDelivery} avatar that SMTP delivers through, and decides where its mail goes.

With C{isolation = user}, an authenticated user's mail goes to a Maildir of its own under
the shared one (C{maildir/<user>/}); the folder name is derived so that no user name can
reach outside it or collide with C{cur/ new/ tmp/} or a Maildir++ C{.folder}. Other mail
goes where the C{[mailbox:NAME]} rules send it (L{mailsink.store.recipient_delivery}).
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable, Collection, Sequence
from typing import Any

from twisted.cred.checkers import ANONYMOUS, AllowAnonymousAccess, ICredentialsChecker
from twisted.cred.error import UnauthorizedLogin
from twisted.cred.portal import IRealm, Portal
from twisted.internet.defer import Deferred, fail, succeed
from zope.interface import implementer

from mailsink.config import ConfigError
from mailsink.store.delivery import IMailboxDelivery, MaildirDelivery
from mailsink.store.mailboxes import MailboxRule, visible
from mailsink.store.maildir import Maildir
from mailsink.store.recipient_delivery import RoutedDelivery

_SAFE = re.compile(r"[A-Za-z0-9_@+=,-][A-Za-z0-9._@+=,-]*")
_RESERVED = frozenset({"cur", "new", "tmp"})
_MAX_FOLDER = 200

Avatar = tuple[Any, MaildirDelivery | RoutedDelivery, Callable[[], None]]


def mailbox_folder(user: str) -> str:
    """
    A folder name for C{user}'s Maildir: the name itself when it is plainly safe, else
    %XX escapes (so distinct names stay distinct), hashed when it would be too long.
    """
    if _SAFE.fullmatch(user) and user not in _RESERVED and len(user) <= _MAX_FOLDER:
        return user
    escaped = "".join(
        c if _SAFE.fullmatch(c) and not (i == 0 and user in _RESERVED)
        else "".join(f"%{byte:02X}" for byte in c.encode("utf-8"))
        for i, c in enumerate(user))
    if len(escaped) > _MAX_FOLDER or not escaped:
        return "~" + hashlib.sha256(user.encode("utf-8")).hexdigest()
    return escaped


Reader = Callable[[str, str], Any]
"""Makes a reading avatar (POP3, IMAP) for a Maildir path and a user name."""


@implementer(IRealm)
class MailboxRealm:
    """
    Anonymous senders deliver to the shared Maildir; users too, or to their own. Readers
    (POP3, IMAP) get the Maildir they may read: with C{isolation = user} their own, for
    admins (and everyone otherwise) the shared one.
    """

    def __init__(self, shared: Maildir, isolation: str = "none",
                 admins: Collection[str] = (), rules: Sequence[MailboxRule] = ()) -> None:
        self.shared = shared
        self.isolation = isolation
        self.admins = frozenset(admins)
        self.rules = tuple(rules)
        self.readers: dict[Any, Reader] = {}
        """Reading avatars by interface, registered by the services that serve them."""
        self._user_maildirs: dict[str, Maildir] = {}
        self._mailboxes = {rule.name: self._mailbox_maildir(rule.name) for rule in rules}

    def _mailbox_maildir(self, name: str) -> Maildir:
        """A rule's Maildir, created now (blocking, at start-up) so readers find it."""
        maildir = Maildir(os.path.join(self.shared.path, name), self.shared.run_blocking,
                          self._delivered)
        try:
            maildir.create()
        except OSError as error:
            raise ConfigError(f"mailbox:{name}", None,
                              f"cannot create {maildir.path}: {error.strerror}") from None
        return maildir

    def _delivered(self, path: str) -> None:
        """Tell the shared Maildir's listener (the index, set after start-up) of C{path}."""
        if self.shared.delivered is not None:
            self.shared.delivered(path)

    def reading_folders(self, user: str) -> dict[str, str]:
        """The rule mailboxes C{user} may read besides L{reading_path}: name -> Maildir."""
        own = mailbox_folder(user) if self.isolation == "user" else None
        names = visible(self.rules, user, self.admins, own)
        return {name: maildir.path for name, maildir in self._mailboxes.items()
                if names is None or name in names}

    def reading_path(self, user: str) -> str:
        """The Maildir C{user} reads."""
        if self.isolation == "user" and user not in self.admins:
            return os.path.join(self.shared.path, mailbox_folder(user))
        return self.shared.path

    def requestAvatar(
        self, avatarId: Any, mind: object, *interfaces: Any
    ) -> Deferred[Any]:
        """
        Hand out a delivery avatar (an authenticated one knows its user) or a reader: of
        L{reading_path}, or of the C{[mailbox:NAME]} that C{mind} names (POP3's C{user#NAME}).
        """
        for interface in interfaces:
            if interface in self.readers and avatarId is not ANONYMOUS:
                user = avatarId.decode("utf-8", "replace")
                path = (self.reading_folders(user).get(mind) if isinstance(mind, str)
                        else self.reading_path(user))
                if path is None:
                    return fail(UnauthorizedLogin(f"{user} may not read mailbox {mind}"))
                avatar = self.readers[interface](path, user)
                return succeed((interface, avatar, getattr(avatar, "logout", _nothing)))
        if IMailboxDelivery not in interfaces:
            raise NotImplementedError("no avatar for " + ", ".join(map(str, interfaces)))
        if avatarId is ANONYMOUS:
            return succeed((IMailboxDelivery, self._routed(None), _nothing))
        user = avatarId.decode("utf-8", "replace")
        if self.isolation != "user":
            return succeed((IMailboxDelivery, self._routed(user), _nothing))
        maildir = self._user_maildirs.get(user)
        if maildir is not None:
            return succeed((IMailboxDelivery, MaildirDelivery(maildir, user), _nothing))
        maildir = Maildir(os.path.join(self.shared.path, mailbox_folder(user)),
                          self.shared.run_blocking, self.shared.delivered)
        created = self.shared.run_blocking(maildir.create)

        def ready(_: object) -> Avatar:
            self._user_maildirs[user] = maildir
            return IMailboxDelivery, MaildirDelivery(maildir, user), _nothing

        return created.addCallback(ready)

    def _routed(self, user: str | None) -> RoutedDelivery:
        return RoutedDelivery(self.shared, self.rules, self._mailboxes, user)


def _nothing() -> None:
    """Logging out of a delivery avatar holds nothing to release."""


def build_portal(shared: Maildir, isolation: str = "none",
                 checker: ICredentialsChecker | None = None,
                 admins: Collection[str] = (), rules: Sequence[MailboxRule] = ()) -> Portal:
    """Anonymous senders always get in (to deliver); C{checker} vouches for everyone else."""
    checkers: list[ICredentialsChecker] = [AllowAnonymousAccess()]
    if checker is not None:
        checkers.append(checker)
    return Portal(MailboxRealm(shared, isolation, admins, rules), checkers)
