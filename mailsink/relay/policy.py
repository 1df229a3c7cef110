"""
What may be relayed where, and what a released copy looks like.

Pure functions: the recipient rules of C{[relay]} (C{allowed_recipients},
C{blocked_recipients}, C{auto_relay_match}) and the header surgery of a release. A
released copy drops the sink's own trace headers (C{Return-Path}, the C{Delivered-To}
block and mailsink's own C{Received}, as written by L{mailsink.store.delivery.trace_headers})
and any C{Bcc}; the stored original is never changed.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import attrs

from mailsink.message import trace


@attrs.frozen
class RecipientPolicy:
    """C{allowed} and C{blocked} regular expressions ("" = any / none), searched."""

    allowed: str = ""
    blocked: str = ""

    def refusal(self, recipients: Sequence[str]) -> str | None:
        """One sentence naming the first recipient the rules refuse, or None."""
        if not recipients:
            return "no recipients: give at least one address in To"
        for recipient in recipients:
            if self.allowed and not re.search(self.allowed, recipient, re.IGNORECASE):
                return (f"{recipient} is not allowed by [relay] allowed_recipients "
                        f"({self.allowed})")
            if self.blocked and re.search(self.blocked, recipient, re.IGNORECASE):
                return (f"{recipient} is blocked by [relay] blocked_recipients "
                        f"({self.blocked})")
        return None


def auto_relay_recipients(recipients: Sequence[str], match: str) -> list[str]:
    """The envelope recipients C{auto_relay_match} selects (all when it is "")."""
    if not match:
        return list(recipients)
    return [r for r in recipients if re.search(match, r, re.IGNORECASE)]


def split_header(raw: bytes) -> tuple[list[bytes], bytes]:
    """The header's physical lines (with their line ends) and everything after them."""
    lines = raw.splitlines(keepends=True)
    header: list[bytes] = []
    consumed = 0
    for line in lines:
        if line in (b"\n", b"\r\n"):
            break
        header.append(line)
        consumed += len(line)
    return header, raw[consumed:]


def _fields(header: list[bytes]) -> list[list[bytes]]:
    """Physical lines grouped into fields (a field and its continuation lines)."""
    fields: list[list[bytes]] = []
    for line in header:
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1].append(line)
        else:
            fields.append([line])
    return fields


def _name_value(field: list[bytes]) -> tuple[str, str]:
    text = b"".join(field).decode("utf-8", "surrogateescape")
    name, _, value = text.partition(":")
    return name.strip(), re.sub(r"\r?\n", "", value).strip()


def header_fields(raw: bytes) -> list[tuple[str, str]]:
    """The header as (name, unfolded value) pairs, in file order."""
    header, _ = split_header(raw)
    return [_name_value(field) for field in _fields(header)]


def strip_for_release(raw: bytes) -> bytes:
    """
    C{raw} without mailsink's trace block at the top (C{Return-Path}, C{Delivered-To},
    then mailsink's own C{Received}, only when it is mailsink's) and without C{Bcc}.
    """
    header, rest = split_header(raw)
    fields = _fields(header)
    kept: list[list[bytes]] = []
    leading = True
    for field in fields:
        name, value = _name_value(field)
        lowered = name.lower()
        if leading and lowered in ("return-path", "delivered-to"):
            continue
        if leading and lowered == "received":
            leading = False
            if trace.transport([(name, value)]) is not None:
                continue
        leading = False
        if lowered == "bcc":
            continue
        kept.append(field)
    return b"".join(b"".join(field) for field in kept) + rest


def envelope(raw: bytes) -> tuple[str, tuple[str, ...]]:
    """The sender (C{Return-Path}) and the envelope recipients mailsink recorded."""
    fields = header_fields(raw)
    return trace.return_path(fields), trace.envelope_recipients(fields)


def wire_form(data: bytes) -> bytes:
    """
    C{data} as SMTP DATA carries it: CRLF line ends (LF, CRLF or a lone CR in), every
    line starting with a dot doubled (RFC 5321 4.5.2), ending in CRLF.
    """
    text = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    if not text.endswith(b"\n"):
        text += b"\n"
    if text.startswith(b"."):
        text = b"." + text
    return text.replace(b"\n.", b"\n..").replace(b"\n", b"\r\n")


def prepare_release(raw: bytes) -> tuple[str, bytes]:
    """The envelope sender of stored C{raw}, and its released copy in wire form."""
    sender, _ = envelope(raw)
    return sender, wire_form(strip_for_release(raw))
