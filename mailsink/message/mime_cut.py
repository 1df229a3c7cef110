"""
Where a MIME entity's header block ends and where a multipart body's parts lie, as offsets
into the message's bytes (LF or CRLF line ends), within bounds: the standard library's feed
parser recurses per nesting level and checks every enclosing boundary on every line, so
the web view (L{mailsink.message.mime}) and IMAP (L{mailsink.imap.parts}) cut the tree here
instead, each with its own L{Budget}.

Pure, and no exception escapes for any input.
"""

from __future__ import annotations

import dataclasses
import re
from email import policy
from email.message import Message
from email.parser import BytesHeaderParser

MAX_SCAN_STEPS = 100_000
"""Boundary search steps per message: lines that merely start like a delimiter count too."""
MAX_PARAMETERS = 8192
"""Longest Content-Type or Content-Disposition value given to C{email}, whose parameter
parsing is quadratic in C{;}."""
_PARAMETERIZED = ("content-type", "content-disposition")
_DELIMITER_END = re.compile(rb"(--)?[ \t]*(?:\r\n|\n|\r|\Z)")
_MEDIA_TYPE = re.compile(r"[a-z0-9!#$&^_.+-]+/[a-z0-9!#$&^_.+-]+")


@dataclasses.dataclass(slots=True)
class Budget:
    """What one message may still cost: parts found so far, boundary search steps left."""

    max_parts: int
    parts: int = 0
    steps: int = MAX_SCAN_STEPS


_HEADER_PARSER = BytesHeaderParser(policy=policy.compat32)
_PLAIN_FIELDS = re.compile(rb"(?:[\x21-\x39\x3b-\x7e]+:[^\r\n]*\r?\n(?:[ \t][^\r\n]*\r?\n)*)*")
"""A header block of plain fields: every line ends in (CR)LF, no lone CR, every field line
starts with a name and a colon, continuations with white space; no C{From } line."""
_PLAIN_FIELD = re.compile(rb"([\x21-\x39\x3b-\x7e]+):([^\r\n]*\r?\n(?:[ \t][^\r\n]*\r?\n)*)")


def header_fields(block: bytes) -> Message:
    """
    The header block as a L{Message} of its fields, exactly as the standard library's
    header parser (compat32) gives it. A block of plain fields (nearly every one) is split
    here, about ten times faster; any other goes to that parser.
    """
    if not _PLAIN_FIELDS.fullmatch(block):
        return _HEADER_PARSER.parsebytes(block)
    message = Message()
    for name, value in _PLAIN_FIELD.findall(block):
        # compat32's header_source_parse: white space after the colon and the final line
        # end dropped, folding kept.
        text = value.decode("ascii", "surrogateescape").lstrip(" \t").rstrip("\r\n")
        message.set_raw(name.decode("ascii"), text)
    return message


def header_end(raw: bytes, start: int, end: int) -> tuple[int, int]:
    """Where the header block ends and the body begins (at the first empty line)."""
    for first in (b"\n", b"\r\n"):
        if raw.startswith(first, start, end):
            return start, start + len(first)
    for stop in (min(end, start + 65536), end):  # a short search first: CRLF files lack \n\n
        lf = raw.find(b"\n\n", start, stop)
        crlf = raw.find(b"\n\r\n", start, stop if lf < 0 else lf)
        if crlf >= 0:
            return crlf + 1, crlf + 3
        if lf >= 0:
            return lf + 1, lf + 2
    return end, end


def split(raw: bytes, start: int, end: int, boundary: bytes,
          budget: Budget) -> list[tuple[int, int]]:
    """The body spans between the delimiter lines of one multipart body."""
    needle = b"\n--" + boundary
    spans: list[tuple[int, int]] = []
    part_start = -1
    position = max(start - 1, 0)
    while budget.steps > 0 and budget.parts + len(spans) < budget.max_parts:
        budget.steps -= 1
        found = raw.find(needle, position, end)
        if found < 0:
            break
        tail = _DELIMITER_END.match(raw, found + len(needle), end)
        if tail is None:
            position = found + len(needle)
            continue
        if part_start >= 0:
            body_end = found - 1 if raw[found - 1:found] == b"\r" else found
            spans.append((part_start, max(body_end, part_start)))
        if tail.group(1):
            return spans
        part_start = tail.end()
        position = part_start - 1 if raw[part_start - 1:part_start] == b"\n" else part_start
    if part_start >= 0 and budget.parts + len(spans) < budget.max_parts:
        spans.append((part_start, end))
    return spans


def tame(message: Message) -> None:
    """Cut over-long Content-Type and Content-Disposition values (see L{MAX_PARAMETERS})."""
    for name, value in message.raw_items():
        if len(value) > MAX_PARAMETERS and name.lower() in _PARAMETERIZED:
            message.replace_header(name, value[:MAX_PARAMETERS])


def media_type(message: Message, default: str) -> str:
    """The part's media type, lower case: C{default} when absent, unreadable ones opaque."""
    message.set_default_type(default)
    try:
        found = message.get_content_type()
    except Exception:
        return default
    return found if _MEDIA_TYPE.fullmatch(found) else "application/octet-stream"


def boundary(message: Message) -> bytes:
    """A multipart's boundary as bytes, or C{b""} when it has none that can be read."""
    try:
        return (message.get_boundary() or "").encode("utf-8", "surrogateescape")
    except Exception:
        return b""
