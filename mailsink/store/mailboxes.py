"""
Mailboxes chosen by recipient: the C{[mailbox:NAME]} rules, which of them a message goes
to, and which of them a person may see.

Pure functions over the rules, shared by delivery (SMTP), the web view, IMAP and the
C{mailsink} command, so that they all agree on names and on who sees what.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Sequence

import attrs

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
"""A mailbox name: a plain folder name (no dot, so never a Maildir++ folder; no slash)."""
_RESERVED = frozenset({"cur", "new", "tmp", "inbox"})


@attrs.frozen
class MailboxRule:
    """One C{[mailbox:NAME]} section."""

    name: str
    recipients: re.Pattern[str]
    """Searched in each envelope recipient, case-insensitively."""
    users: tuple[str, ...] = ()
    """Who (besides admins) may see it after logging in; empty: everyone who logs in."""

    def wants(self, recipients: Iterable[str]) -> bool:
        """Whether any envelope recipient matches."""
        return any(self.recipients.search(recipient) for recipient in recipients)

    def visible_to(self, user: str) -> bool:
        """Whether C{user} (not an admin) may see this mailbox."""
        return not self.users or user in self.users


def check_name(name: str) -> str:
    """C{name} if it can be a mailbox's folder name, else C{ValueError} saying why not."""
    if not NAME.fullmatch(name):
        raise ValueError(f"{name!r} is not a mailbox name: use 1 to 64 letters, digits, "
                         "'_' and '-', starting with a letter or digit")
    if name.lower() in _RESERVED:
        raise ValueError(f"{name!r} is reserved (Maildir's cur/new/tmp, IMAP's INBOX)")
    return name


def compile_recipients(pattern: str) -> re.Pattern[str]:
    """C{pattern} compiled case-insensitively, or C{ValueError} with re's reason."""
    if not pattern.strip():
        raise ValueError("missing; give a regular expression matched against each envelope "
                         r"recipient, e.g. recipients = @shop\.example$")
    try:
        return re.compile(pattern, re.IGNORECASE)
    except (re.error, OverflowError, RecursionError) as error:
        raise ValueError(f"{pattern!r} is not a valid regular expression: {error}") from None


def split_login(user: bytes) -> tuple[bytes, str | None]:
    """
    A POP3 login C{user#NAME} as C{(user, NAME)}: POP3 has one maildrop per login, so the
    mailbox rides on the user name. Anything else is C{(user, None)}, INBOX.
    """
    head, sep, tail = user.rpartition(b"#")
    name = tail.decode("ascii", "replace")
    if sep and head and NAME.fullmatch(name):
        return head, name
    return user, None


def route(rules: Sequence[MailboxRule], recipients: Iterable[str]) -> tuple[str, ...]:
    """The mailboxes a message to C{recipients} goes to, in INI order (none: the shared)."""
    wanted = tuple(recipients)
    return tuple(rule.name for rule in rules if rule.wants(wanted))


def visible(rules: Sequence[MailboxRule], user: str | None, admins: Collection[str],
            own: str | None) -> tuple[str, ...] | None:
    """
    The mailboxes C{user} may see (None: all). Nobody logged in (no web auth) and admins
    see all; without rules everyone else sees all too, unless C{own} (their own folder
    under C{isolation = user}) replaces the shared Maildir (C{""}). With rules, a user
    sees the shared Maildir (or C{own}) and the rule mailboxes open to them.
    """
    if user is None or user in admins:
        return None
    if not rules and own is None:
        return None
    base = "" if own is None else own
    return (base, *(rule.name for rule in rules if rule.visible_to(user)))
