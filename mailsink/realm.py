"""
The cred realm: turns an avatar ID (anonymous, or a user who authenticated) into the
L{IMailboxDelivery} avatar that SMTP delivers through.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.cred.checkers import ANONYMOUS, AllowAnonymousAccess
from twisted.cred.portal import IRealm, Portal
from zope.interface import implementer

from mailsink.delivery import IMailboxDelivery, MaildirDelivery
from mailsink.maildir import Maildir


@implementer(IRealm)
class MailboxRealm:
    """Every sender delivers into the shared Maildir (per-user Maildirs come with auth)."""

    def __init__(self, shared: Maildir) -> None:
        self.shared = shared

    def requestAvatar(
        self, avatarId: Any, mind: object, *interfaces: Any
    ) -> tuple[Any, MaildirDelivery, Callable[[], None]]:
        """Hand out a delivery avatar; anonymous senders keep no user name."""
        if IMailboxDelivery not in interfaces:
            raise NotImplementedError("mailsink's realm only provides IMailboxDelivery")
        user = None if avatarId is ANONYMOUS else avatarId.decode("utf-8", "replace")
        return IMailboxDelivery, MaildirDelivery(self.shared, user), lambda: None


def build_portal(shared: Maildir) -> Portal:
    """A portal that lets anonymous senders in; credential checkers join it later."""
    return Portal(MailboxRealm(shared), [AllowAnonymousAccess()])
