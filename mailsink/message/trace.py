"""
Reading back the trace headers mailsink writes at the top of every stored message.

L{mailsink.store.delivery.trace_headers} writes C{Return-Path}, one C{Delivered-To} per envelope
recipient, then a Postfix-style C{Received} header naming mailsink in its C{by} clause. These
pure functions turn a message's header fields (name and unfolded value, in file order) back
into a L{Transport}. Anything else, including a first C{Received} header that another MTA
wrote, reads as an empty L{Transport}: a header a client sent is not evidence of how the
message reached mailsink.

One exception: C{mailsink-sendmail} writes a local submission's C{Received} header (C{from
USER (uid N) by HOST (mailsink-sendmail) with local}) on top of the message it hands to a
listener, or as the trace block of one it writes into the Maildir itself. Right below
mailsink's own header of a loopback connection it is believed as far as a local claim goes:
the L{Transport} says protocol C{local} and names that Unix user, as Exim's
C{$authenticated_id} does for local submissions.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence

import attrs

from mailsink.message.shapes import Transport

_RECEIVED = re.compile(
    r"from\s+(?P<helo>.*?)\s+\(unknown\s+\[(?P<address>[^\]]*)\]\)"
    r"(?:\s+\(using\s+(?P<tls_version>\S+)\s+with\s+cipher\s+(?P<tls_cipher>.*?)"
    r"(?:\s+\(\d+/\d+\s+bits\))?\))?"
    r"(?:\s+\(Authenticated\s+sender:\s+(?P<user>.*?)\))?"
    r"\s+by\s+\S+\s+\(mailsink(?:,\s+listener\s+(?P<listener>[^,)]*))?"
    r"(?:,\s+session\s+(?P<session>[^\s,)]*))?\)"
    r"\s+with\s+(?P<protocol>\S+)(?:\s+id\s+\S+)?"
    r"\s*(?:for\s+<[^>]*>)?\s*;",
    re.DOTALL,
)

_SENDMAIL = re.compile(
    r"from\s+(?P<user>[^\s();]+)\s+\(uid\s+\d+\)\s+by\s+\S+"
    r"\s+\(mailsink-sendmail(?:,[^)]*)?\)\s+with\s+local\s*;",
    re.DOTALL,
)
LOCAL = "local"
"""The protocol of a message that came through C{mailsink-sendmail}."""

_MAX_RECEIVED = 8192
"""Longer than any header mailsink writes; bounds the regular expression's work."""

Fields = Sequence[tuple[str, str]]
"""Header fields as (name, unfolded value) pairs, in the order of the file."""


def angle_free(value: str) -> str:
    """A path or message id without surrounding white space and angle brackets."""
    value = value.strip()
    if value.startswith("<"):
        end = value.find(">")
        return value[1:end].strip() if end > 0 else value[1:].strip()
    return value


def return_path(fields: Fields) -> str:
    """The first C{Return-Path}, without angle brackets ("" for the null sender or none)."""
    for name, value in fields:
        if name.lower() == "return-path":
            return angle_free(value)
    return ""


def envelope_recipients(fields: Fields) -> tuple[str, ...]:
    """The C{Delivered-To} values above the first C{Received} header (mailsink's block)."""
    recipients = []
    for name, value in fields:
        lowered = name.lower()
        if lowered == "received":
            break
        if lowered == "delivered-to" and value.strip():
            recipients.append(value.strip())
    return tuple(recipients)


def transport(fields: Fields) -> Transport | None:
    """
    The transport described by mailsink's trace headers, or C{None} when the first
    C{Received} header is missing or is not mailsink's own (or C{mailsink-sendmail}'s).
    """
    index = next((i for i, (name, _) in enumerate(fields) if name.lower() == "received"),
                 None)
    if index is None:
        return None
    received = fields[index][1]
    local_user = _sendmail_user(received)
    if local_user is not None:  # written into the Maildir by mailsink-sendmail itself
        return Transport(username=local_user, mail_from=return_path(fields),
                         rcpt_to=envelope_recipients(fields), protocol=LOCAL)
    match = _RECEIVED.match(received.strip()) if len(received) <= _MAX_RECEIVED else None
    if match is None:
        return None
    address = match["address"]
    if address[:5].lower() == "ipv6:":
        address = address[5:]
    found = Transport(
        remote_address=address,
        helo=match["helo"],
        tls_version=match["tls_version"],
        tls_cipher=match["tls_cipher"],
        username=match["user"] or "",
        mail_from=return_path(fields),
        rcpt_to=envelope_recipients(fields),
        listener=(match["listener"] or "").strip(),
        protocol=match["protocol"],
        session=match["session"] or "",
    )
    below = fields[index + 1] if index + 1 < len(fields) else ("", "")
    local_user = _sendmail_user(below[1]) if below[0].lower() == "received" else None
    if local_user is None or not _loopback(address):
        return found
    return attrs.evolve(found, protocol=LOCAL, username=found.username or local_user)


def _sendmail_user(received: str) -> str | None:
    """The Unix user named by C{mailsink-sendmail}'s C{Received} header, else None."""
    if len(received) > _MAX_RECEIVED:
        return None
    match = _SENDMAIL.match(received.strip())
    return match["user"] if match else None


def _loopback(address: str) -> bool:
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return False
    mapped = getattr(parsed, "ipv4_mapped", None)
    return bool((mapped or parsed).is_loopback)
