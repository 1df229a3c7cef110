"""
Who may deliver where: the avatar an SMTP connection delivers through.

The protocol knows SMTP, the store knows Maildir; this module sits between them. It turns
an L{Envelope} into the trace headers every stored message starts with and opens the
message in the right Maildir.

Twisted's C{IMessageDelivery} hands out one C{IMessage} per recipient, fed line by line;
a Maildir holds one file per message whatever the recipient count, and mailsink streams
bytes in bulk, so avatars here provide L{IMailboxDelivery} instead, with the same
C{validateFrom}/C{validateTo} checks and one L{IncomingMessage} per transaction.
"""

from __future__ import annotations

import datetime
import email.utils
import functools
import re
import time
from typing import Protocol

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IPushProducer
from zope.interface import Interface, implementer

from mailsink.store.maildir import IncomingMessage, Maildir


@attrs.frozen
class Envelope:
    """What the SMTP conversation said about one message, besides its bytes."""

    mail_from: str
    recipients: tuple[str, ...]
    helo: str | None
    client_address: str
    protocol: str
    """RFC 3848 / RFC 6531 name: ESMTP, ESMTPS, ESMTPA, ESMTPSA, UTF8SMTPS, ..."""
    tls_version: str | None = None
    tls_cipher: str | None = None
    tls_bits: int | None = None
    user: str | None = None
    listener: str = ""
    """The INI section of the listener that took the message, e.g. C{smtp:submission}."""
    session: str = ""
    """The ID of the SMTP session that brought it (see L{mailsink.sessions})."""
    received_at: float = attrs.field(factory=time.time)


class OpenMessage(Protocol):
    """A message being stored: an L{IncomingMessage}, or one stored in several mailboxes."""

    @property
    def name(self) -> str: ...
    @property
    def size(self) -> int: ...
    @property
    def failed(self) -> bool: ...
    def write(self, data: bytes) -> None: ...
    def finish(self) -> Deferred[str]: ...
    def abort(self) -> None: ...


class IMailboxDelivery(Interface):
    """An avatar that accepts messages into a mailbox (see the module docstring)."""

    def validateFrom(envelope_from: str) -> None:
        """Raise L{DeliveryRefused} if mail from this sender is not accepted."""

    def validateTo(recipient: str) -> None:
        """Raise L{DeliveryRefused} if mail to this recipient is not accepted."""

    def open_message(
        envelope: Envelope, hostname: str, producer: IPushProducer | None
    ) -> OpenMessage:
        """Begin storing a message; its trace headers are already written."""


class DeliveryRefused(Exception):
    """A sender or recipient is not accepted; C{reply} is the SMTP reply to give."""

    def __init__(self, code: int, reply: str) -> None:
        super().__init__(reply)
        self.code = code
        self.reply = reply


@implementer(IMailboxDelivery)
@attrs.frozen
class MaildirDelivery:
    """Accepts every sender and recipient into one Maildir: a sink refuses nothing."""

    maildir: Maildir
    user: str | None = None

    def validateFrom(self, envelope_from: str) -> None:
        """Any sender, including the null sender of bounces."""

    def validateTo(self, recipient: str) -> None:
        """Any recipient."""

    def open_message(
        self, envelope: Envelope, hostname: str, producer: IPushProducer | None
    ) -> IncomingMessage:
        """Open a message and write its trace headers."""
        message = self.maildir.new_message(producer)
        message.write(trace_headers(envelope, hostname, message.name))
        return message


def trace_headers(envelope: Envelope, hostname: str, message_id: str) -> bytes:
    """
    C{Return-Path}, one C{Delivered-To} per recipient (so Bcc is visible), and a
    Postfix-style C{Received} line; LF line ends, as in the stored file.
    """
    lines = [f"Return-Path: <{_one_line(envelope.mail_from)}>"]
    lines += [f"Delivered-To: {_one_line(recipient)}" for recipient in envelope.recipients]
    lines.append(received_header(envelope, hostname, message_id))
    return ("\n".join(lines) + "\n").encode("utf-8", "surrogateescape")


def received_header(envelope: Envelope, hostname: str, message_id: str) -> str:
    """The C{Received} header as Postfix writes it (folded, without the final LF)."""
    address = envelope.client_address
    literal = f"IPv6:{address}" if ":" in address else address
    helo = _one_line(envelope.helo) if envelope.helo else f"[{address}]"
    parts = [f"Received: from {helo} (unknown [{literal}])"]
    if envelope.tls_version:
        bits = f" ({envelope.tls_bits}/{envelope.tls_bits} bits)" if envelope.tls_bits else ""
        parts.append(f"\t(using {envelope.tls_version} with cipher {envelope.tls_cipher}{bits})")
    if envelope.user:
        parts.append(f"\t(Authenticated sender: {_one_line(envelope.user)})")
    short_id = message_id.split(".", 2)[1] if message_id.count(".") >= 2 else message_id
    server = f"mailsink, listener {envelope.listener}" if envelope.listener else "mailsink"
    if envelope.session:
        server += f", session {envelope.session}"
    parts.append(f"\tby {hostname} ({server}) with {envelope.protocol} id {short_id}")
    date = _utc_date(int(envelope.received_at))
    if len(envelope.recipients) == 1:
        parts.append(f"\tfor <{_one_line(envelope.recipients[0])}>; {date}")
    else:
        parts.append(f"\t; {date}")
    return "\n".join(parts)


@functools.lru_cache(maxsize=4)
def _utc_date(seconds: int) -> str:
    """The RFC 5322 date of a second, in UTC (cached: a busy second has many messages)."""
    moment = datetime.datetime.fromtimestamp(seconds, datetime.UTC)
    return email.utils.format_datetime(moment).replace("-0000", "+0000") + " (UTC)"


def _one_line(text: str) -> str:
    """Control characters escaped, so client-chosen text cannot start a header line."""
    return _CONTROL.sub(lambda found: f"\\x{ord(found[0]):02x}", text)


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
