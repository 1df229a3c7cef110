"""
A message's header fields and MIME parts with their places in the bytes, defects included.

L{mailsink.message.mime} reads a message as a tolerant client shows it and hides what is wrong;
lint needs the defects (a multipart without a boundary, one that never closes) and where
each header field and part lies in the bytes, to say which one a long line or a bare CR is
in. The data has LF line ends. The tree is cut by L{mailsink.message.mime_cut}, as for the web view
and IMAP, within the web view's bounds: multiparts nest at most L{mime.MAX_DEPTH} deep, at
most L{mime.MAX_PARTS} parts are read, header blocks are given to C{email} up to
L{mime.MAX_HEADER_BYTES}; a C{message/rfc822} part is one part, not opened.

Part numbers are those of the web view and the API: a multipart's children are C{1}, C{2},
..., a nested multipart's C{2.1}, C{2.2}; the body of a message that is not multipart, and
the top-level multipart itself, are called C{body}.
"""

from __future__ import annotations

import dataclasses
import enum
import re
from collections.abc import Callable
from email import policy
from email.message import Message
from email.parser import BytesHeaderParser

from mailsink.message import mime, trace
from mailsink.message.mime_cut import Budget, boundary, header_end, media_type, split, tame
from mailsink.message.mime_text import header_text, unfold

BODY = "body"
"""The name findings give the top-level body."""

_HEADER_PARSER = BytesHeaderParser(policy=policy.compat32)
_LINE_END = re.compile(rb"[ \t]*\r?(?:\n|\Z)")


class Delimiters(enum.Enum):
    """What the boundary search of one multipart found."""

    CLOSED = "closed"
    UNCLOSED = "unclosed"
    """Delimiters, but never the closing C{--boundary--}."""
    MISSING = "missing"
    """Not one delimiter line."""
    UNKNOWN = "unknown"
    """The search stopped at a bound, or the multipart has no boundary to search for."""


@dataclasses.dataclass(slots=True)
class HeaderField:
    """One header field: its name, its unfolded value as text, and its bytes' span."""

    name: str
    value: str
    start: int
    end: int


@dataclasses.dataclass(slots=True, eq=False)
class Entity:
    """The message or one MIME part: where its header and body lie, and what it declares."""

    field: str
    """C{body} for the message itself, else the part number."""
    start: int
    body_start: int
    end: int
    fields: list[HeaderField]
    content_type: str = "text/plain"
    charset: str = ""
    boundary: bytes = b""
    disposition: str = ""
    filename: str = ""
    content_id: str = ""
    encoding: str = ""
    children: list[Entity] = dataclasses.field(default_factory=list)
    delimiters: Delimiters | None = None
    """For a multipart that was searched: what the search found; None for a leaf."""

    def header(self, name: str) -> list[HeaderField]:
        """Its fields called C{name} (any case), in order."""
        lowered = name.lower()
        return [field for field in self.fields if field.name.lower() == lowered]


def parse(data: bytes) -> Entity:
    """The tree of C{data} (LF line ends); never raises."""
    return _entity(data, 0, len(data), BODY, 0, Budget(mime.MAX_PARTS), "text/plain")


def leaves(entity: Entity) -> list[Entity]:
    """The parts that are not multiparts, in document order."""
    if entity.delimiters is None:
        return [entity]
    return [leaf for child in entity.children for leaf in leaves(child)]


def entities(entity: Entity) -> list[Entity]:
    """The entity and every part below it, in document order."""
    return [entity] + [below for child in entity.children for below in entities(child)]


def locate(root: Entity, offset: int) -> tuple[Entity, HeaderField | None]:
    """The innermost part holding byte C{offset}, and the header field it is in, if any."""
    entity = root
    while True:
        if offset < entity.body_start:
            return entity, next((field for field in entity.fields
                                 if field.start <= offset < field.end), None)
        child = next((child for child in entity.children
                      if child.start <= offset < child.end), None)
        if child is None:
            return entity, None
        entity = child


def place(entity: Entity, header: HeaderField | None) -> tuple[str, str]:
    """The C{Field} a finding about this spot names, and how its sentence says it."""
    if header is not None and header.name:
        if entity.field == BODY:
            return header.name, f"the {header.name} header"
        return entity.field, f"part {entity.field}'s {header.name} header"
    if entity.field == BODY:
        return BODY, "the body"
    return entity.field, f"part {entity.field} ({entity.content_type})"


def header_fields(data: bytes, start: int, stop: int) -> list[HeaderField]:
    """
    The fields of the header block from C{start} to C{stop} (as L{header_end} finds it). A
    line that is neither a field nor a continuation is taken as part of the field before it.
    """
    fields: list[HeaderField] = []
    position = start
    for line in data[start:stop].split(b"\n"):
        line_end = min(position + len(line) + 1, stop)
        if not line:
            position = line_end
            continue
        colon = line.find(b":")
        if fields and (line[:1] in (b" ", b"\t") or colon <= 0):
            fields[-1].end = line_end
        else:
            fields.append(HeaderField(header_text(line[:max(colon, 0)].decode(
                "utf-8", "surrogateescape")).strip(), "", position, line_end))
        position = line_end
    for field in fields:
        raw = data[field.start:field.end]
        value = raw[raw.find(b":") + 1:].decode("utf-8", "surrogateescape")
        field.value = unfold(header_text(value)).strip()
    return fields


def _entity(data: bytes, start: int, end: int, field: str, depth: int, budget: Budget,
            default_type: str) -> Entity:
    budget.parts += 1
    header_stop, body_start = header_end(data, start, end)
    message = _HEADER_PARSER.parsebytes(
        data[start:min(header_stop, start + mime.MAX_HEADER_BYTES)])
    tame(message)
    entity = Entity(field, start, body_start, end, header_fields(data, start, header_stop))
    _describe(entity, message, default_type)
    if entity.content_type.startswith("multipart/") and depth < mime.MAX_DEPTH:
        entity.delimiters = Delimiters.UNKNOWN
        if entity.boundary:
            spans = split(data, body_start, end, entity.boundary, budget)
            entity.delimiters = _delimiters(data, entity, bool(spans), budget)
            child_type = ("message/rfc822" if entity.content_type == "multipart/digest"
                          else "text/plain")
            for number, (child_start, child_end) in enumerate(spans, 1):
                child = str(number) if field == BODY else f"{field}.{number}"
                entity.children.append(_entity(data, child_start, child_end, child,
                                               depth + 1, budget, child_type))
    return entity


def _describe(entity: Entity, message: Message, default_type: str) -> None:
    """What the part's header declares; C{email} reads parameters and RFC 2231 values."""
    entity.content_type = media_type(message, default_type)
    entity.boundary = boundary(message)
    entity.charset = _text(message.get_content_charset)
    entity.disposition = _text(message.get_content_disposition)
    entity.filename = _text(message.get_filename).strip()
    for field in entity.fields:
        lowered = field.name.lower()
        if lowered == "content-id" and not entity.content_id:
            entity.content_id = trace.angle_free(field.value)
        elif lowered == "content-transfer-encoding" and not entity.encoding:
            entity.encoding = field.value.strip().lower()


def _text(read: Callable[[], object]) -> str:
    """A header parameter C{email} reads, as text ("" when absent or unreadable)."""
    try:
        value = read()
    except Exception:
        return ""
    return header_text(value) if isinstance(value, str) else ""


def _delimiters(data: bytes, entity: Entity, parts: bool, budget: Budget) -> Delimiters:
    """
    How a multipart's delimiters ended: L{split} stops at the closing one but does not say
    whether it saw it, so that line is looked for here (one C{find} per candidate line).
    """
    needle = b"\n--" + entity.boundary + b"--"
    position = max(entity.body_start - 1, 0)
    while (found := data.find(needle, position, entity.end)) >= 0:
        position = found + len(needle)
        if _LINE_END.match(data, position, entity.end):
            return Delimiters.CLOSED
    if parts:
        return Delimiters.UNCLOSED
    return Delimiters.MISSING if budget.steps > 0 else Delimiters.UNKNOWN
