"""
Delivery into the mailboxes chosen by recipient (C{[mailbox:NAME]}).

A message goes to every mailbox whose rule matches one of its envelope recipients, or to
the shared Maildir when none does. It is written once: into the first mailbox's Maildir as
usual (C{tmp/}, fsync, rename into C{new/}, fsync C{new/}); then, still before SMTP may say
250, hard-linked into each other mailbox's C{new/} (copied, fsynced and renamed where the
file system refuses links) and those C{new/} directories are fsynced too. Each copy has its
own file name (the unique name with C{-NAME} added) and so its own message ID, since the
index and the API name a message by its file name; they share the unique prefix.
"""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Mapping

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IPushProducer
from twisted.python.failure import Failure
from zope.interface import implementer

from mailsink.store.delivery import Envelope, IMailboxDelivery, OpenMessage, trace_headers
from mailsink.store.mailboxes import MailboxRule, route
from mailsink.store.maildir import IncomingMessage, Maildir, StoreError, unlink_quietly

_NO_LINK = frozenset({errno.EXDEV, errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP,
                      errno.EMLINK})
"""Why a file system may refuse a hard link that a copy can replace."""


def copy_name(unique: str, mailbox: str) -> str:
    """C{unique} (C{SECS.LEFT.HOST}) with C{-mailbox} after its left part."""
    seconds, _, rest = unique.partition(".")
    left, _, host = rest.partition(".")
    return f"{seconds}.{left}-{mailbox}.{host}"


@implementer(IMailboxDelivery)
@attrs.frozen
class RoutedDelivery:
    """Accepts every sender and recipient; stores by the recipient rules (module doc)."""

    shared: Maildir
    rules: tuple[MailboxRule, ...]
    mailboxes: Mapping[str, Maildir]
    """A Maildir for each rule's name."""
    user: str | None = None

    def validateFrom(self, envelope_from: str) -> None:
        """Any sender, including the null sender of bounces."""

    def validateTo(self, recipient: str) -> None:
        """Any recipient."""

    def open_message(
        self, envelope: Envelope, hostname: str, producer: IPushProducer | None
    ) -> OpenMessage:
        """Open the message where its recipients send it and write its trace headers."""
        names = route(self.rules, envelope.recipients)
        message: OpenMessage
        if not names:
            message = self.shared.new_message(producer)
        elif len(names) == 1:
            message = self.mailboxes[names[0]].new_message(producer)
        else:
            first = self.mailboxes[names[0]]
            unique = first.unique_name()
            message = FanOutMessage(
                IncomingMessage(first, copy_name(unique, names[0]), producer), first,
                [(self.mailboxes[name], copy_name(unique, name)) for name in names[1:]])
        message.write(trace_headers(envelope, hostname, message.name))
        return message


class FanOutMessage:
    """
    An L{IncomingMessage} for the first mailbox, linked into the others once committed;
    L{finish} fires only when every copy is durable (and fails, leaving none, if one is not).
    """

    def __init__(self, first: IncomingMessage, maildir: Maildir,
                 others: list[tuple[Maildir, str]]) -> None:
        self._first = first
        self._maildir = maildir
        self._others = others

    @property
    def name(self) -> str:
        """The first copy's file name (the one the SMTP reply and trace headers give)."""
        return self._first.name

    @property
    def size(self) -> int:
        return self._first.size

    @property
    def failed(self) -> bool:
        return self._first.failed

    def write(self, data: bytes) -> None:
        """Append C{data} (reactor thread)."""
        self._first.write(data)

    def abort(self) -> None:
        """Drop the message; no copy was made yet."""
        self._first.abort()

    def finish(self) -> Deferred[str]:
        """Commit the first copy, then link the others; fires with the first name."""
        committed = self._first.finish()

        def link(name: str) -> Deferred[str]:
            source = os.path.join(self._maildir.path, "new", name)
            linked = self._maildir.run_blocking(lambda: _link_all(source, self._others))
            return linked.addCallbacks(lambda paths: self._announce(paths, name),
                                       lambda failure: self._undo(failure, source))

        return committed.addCallback(link)

    def _announce(self, paths: list[str], name: str) -> str:
        for (maildir, _), path in zip(self._others, paths, strict=True):
            if maildir.delivered is not None:
                maildir.delivered(path)
        return name

    def _undo(self, failure: Failure, source: str) -> Deferred[str]:
        """A copy failed (its links were removed): remove the first too, then fail."""
        removed = self._maildir.run_blocking(lambda: unlink_quietly(source))
        return removed.addBoth(lambda _: Failure(StoreError(str(failure.value))))


# Below: worker-thread code.

def _link_all(source: str, targets: list[tuple[Maildir, str]]) -> list[str]:
    """Link (or copy) C{source} into each target's C{new/}, then fsync those; all or none."""
    done: list[str] = []
    try:
        for maildir, name in targets:
            path = os.path.join(maildir.path, "new", name)
            try:
                os.link(source, path)
            except OSError as error:
                if error.errno not in _NO_LINK:
                    raise
                _copy(source, maildir.path, name)
            done.append(path)
        for maildir, _ in targets:
            maildir.fsync_new()
    except OSError:
        for path in done:
            unlink_quietly(path)
        raise
    return done


def _copy(source: str, folder: str, name: str) -> None:
    """A copy through C{tmp/}, fsynced before its rename into C{new/}."""
    tmp = os.path.join(folder, "tmp", name)
    try:
        with open(source, "rb") as reading, open(tmp, "xb") as writing:
            shutil.copyfileobj(reading, writing, 1024 * 1024)
            writing.flush()
            os.fsync(writing.fileno())
        os.rename(tmp, os.path.join(folder, "new", name))
    except OSError:
        unlink_quietly(tmp)
        raise


