"""
Reading back the trace headers mailsink writes at the top of every stored message.

L{mailsink.delivery.trace_headers} writes C{Return-Path}, one C{Delivered-To} per envelope
recipient, then a Postfix-style C{Received} header naming mailsink in its C{by} clause. These
pure functions turn a message's header fields (name and unfolded value, in file order) back
into a L{Transport}. Anything else, including a first C{Received} header that another MTA
wrote, reads as an empty L{Transport}: a header a client sent is not evidence of how the
message reached mailsink.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from mailsink.messages import Transport

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
    C{Received} header is missing or is not mailsink's own.
    """
    received = next((value for name, value in fields if name.lower() == "received"), None)
    if received is None or len(received) > _MAX_RECEIVED:
        return None
    match = _RECEIVED.match(received.strip())
    if match is None:
        return None
    address = match["address"]
    if address[:5].lower() == "ipv6:":
        address = address[5:]
    return Transport(
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
