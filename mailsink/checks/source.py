"""
The message as lint reads it: the client's data with LF line ends, without mailsink's trace
headers, its MIME tree, and the envelope those trace headers record.

Two forms come in, told apart by how the first line ends:
 - LF line ends: a stored message (mailsink's SMTP server turns each CRLF into LF and keeps
   a bare LF as LF, so there a bare LF cannot be told from a line end, and any CR left is
   one the client sent without an LF), or a Unix C{.eml} file;
 - CRLF line ends: a C{.eml} file as a mail library writes it for SMTP, where both a CR
   without LF and an LF without CR show.
"""

from __future__ import annotations

import re

import attrs

from mailsink.checks.structure import Entity, header_fields, parse
from mailsink.message import trace
from mailsink.message.mime_cut import header_end

MAX_PLACES = 1000
"""Occurrences (bare LFs and CRs, long lines) whose place is looked up: enough to name each
header and part that holds one."""
_TRACE_BYTES = 1 << 20
"""Mailsink's trace block is read from at most this much of the start."""
_BARE_LF = re.compile(rb"(?<!\r)\n")


@attrs.frozen
class SmtpEnvelope:
    """What the SMTP transaction said, as mailsink's trace headers record it."""

    mail_from: str
    """The MAIL FROM address ("" for the null sender)."""
    recipients: tuple[str, ...]
    smtputf8: bool
    """MAIL FROM carried SMTPUTF8 (the Received header says UTF8SMTP...)."""


@attrs.frozen
class Source:
    """Everything the lint rules read."""

    data: bytes
    """The client's message, LF line ends, without mailsink's trace headers."""
    root: Entity
    envelope: SmtpEnvelope | None
    """None when the message has no trace headers of mailsink's (a file from elsewhere)."""
    bare_lfs: tuple[int, ...] = ()
    """Offsets in L{data} of the first L{MAX_PLACES} LFs that came without a CR (only CRLF
    input can show them)."""


def read_source(raw: bytes) -> Source:
    """The L{Source} of a stored message or a C{.eml} file in either form."""
    first = raw.find(b"\n")
    crlf = first > 0 and raw[first - 1] == 0x0D
    data = raw.replace(b"\r\n", b"\n") if crlf else raw
    envelope, skip = _trace(data)
    data = data[skip:]
    bare_lfs = _bare_lfs(raw, skip) if crlf else ()
    return Source(data=data, root=parse(data), envelope=envelope, bare_lfs=bare_lfs)


def _trace(data: bytes) -> tuple[SmtpEnvelope | None, int]:
    """The envelope in mailsink's trace block at the start, and where the client's data starts."""
    if data[:12].lower() != b"return-path:":
        return None, 0
    fields = header_fields(data, 0, header_end(data, 0, min(len(data), _TRACE_BYTES))[0])
    received = next((number for number, field in enumerate(fields)
                     if field.name.lower() == "received"), None)
    if received is None or any(field.name.lower() != "delivered-to"
                               for field in fields[1:received]):
        return None, 0
    block = [(field.name, field.value) for field in fields[:received + 1]]
    transport = trace.transport(block)
    if transport is None:
        return None, 0
    envelope = SmtpEnvelope(mail_from=transport.mail_from, recipients=transport.rcpt_to,
                            smtputf8=transport.protocol.upper().startswith("UTF8"))
    return envelope, fields[received].end


def _bare_lfs(raw: bytes, skip: int) -> tuple[int, ...]:
    """Where LFs without CR in CRLF input fall once each CRLF is one LF and C{skip} cut."""
    places: list[int] = []
    crlfs = last = 0
    for match in _BARE_LF.finditer(raw):
        position = match.start()
        crlfs += raw.count(b"\r\n", last, position)
        last = position
        offset = position - crlfs - skip
        if offset >= 0:
            places.append(offset)
            if len(places) == MAX_PLACES:
                break
    return tuple(places)
