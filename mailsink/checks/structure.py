"""
A message's header fields and MIME parts with their places in the bytes, defects included.

L{mailsink.mime} reads a message as a tolerant client shows it and hides what is wrong;
lint needs the defects (a multipart without a boundary, one that never closes) and where
each header field and part lies in the bytes, to say which one a long line or a bare CR is
in. The data has LF line ends. Bounds as in L{mailsink.mime}: multiparts nest at most
L{mime.MAX_DEPTH} deep, at most L{mime.MAX_PARTS} parts are read, header blocks are given to
C{email} up to L{mime.MAX_HEADER_BYTES}; a C{message/rfc822} part is one part, not opened.

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

from mailsink import mime, trace
from mailsink.mime_text import header_text, unfold

BODY = "body"
"""The name findings give the top-level body."""

_HEADER_PARSER = BytesHeaderParser(policy=policy.compat32)
_DELIMITER_END = re.compile(rb"(--)?[ \t]*\r?(?:\n|\Z)")
_MEDIA_TYPE = re.compile(r"[a-z0-9!#$&^_.+-]+/[a-z0-9!#$&^_.+-]+")
_MAX_SCAN_STEPS = 100_000
_MAX_PARAMETERS = 8192


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

    @property
    def is_root(self) -> bool:
        return self.start == 0

    @property
    def name(self) -> str:
        """How a sentence names it: "the body" or "part 1.2"."""
        return "the body" if self.field == BODY else f"part {self.field}"

    def header(self, name: str) -> list[HeaderField]:
        """Its fields called C{name} (any case), in order."""
        lowered = name.lower()
        return [field for field in self.fields if field.name.lower() == lowered]


@dataclasses.dataclass(slots=True)
class _Budget:
    parts: int = 0
    steps: int = _MAX_SCAN_STEPS


def parse(data: bytes) -> Entity:
    """The tree of C{data} (LF line ends); never raises."""
    return _entity(data, 0, len(data), BODY, 0, _Budget(), "text/plain")


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


def header_fields(data: bytes, start: int, end: int) -> tuple[list[HeaderField], int]:
    """
    The fields of the header block at C{start} and where the body begins (after the empty
    line, or C{end} without one). A line that is neither a field nor a continuation is
    taken as part of the field before it.
    """
    if data.startswith(b"\n", start, end):
        return [], start + 1
    blank = data.find(b"\n\n", start, end)
    header_end, body_start = (end, end) if blank < 0 else (blank + 1, blank + 2)
    fields: list[HeaderField] = []
    position = start
    for line in data[start:header_end].split(b"\n"):
        line_end = min(position + len(line) + 1, header_end)
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
    return fields, body_start


def _entity(data: bytes, start: int, end: int, field: str, depth: int, budget: _Budget,
            default_type: str) -> Entity:
    budget.parts += 1
    fields, body_start = header_fields(data, start, end)
    header = data[start:min(body_start, start + mime.MAX_HEADER_BYTES)]
    entity = Entity(field, start, body_start, end, fields)
    _describe(entity, _safe_parse(header), default_type)
    if entity.content_type.startswith("multipart/") and depth < mime.MAX_DEPTH:
        entity.delimiters = Delimiters.UNKNOWN
        if entity.boundary:
            spans, entity.delimiters = _split(data, body_start, end, entity.boundary, budget)
            child_type = ("message/rfc822" if entity.content_type == "multipart/digest"
                          else "text/plain")
            for number, (child_start, child_end) in enumerate(spans, 1):
                child = str(number) if field == BODY else f"{field}.{number}"
                entity.children.append(_entity(data, child_start, child_end, child,
                                               depth + 1, budget, child_type))
    return entity


def _safe_parse(header: bytes) -> Message:
    message = _HEADER_PARSER.parsebytes(header)
    for name, value in message.raw_items():  # email's parameter parsing is quadratic in ";"
        if len(value) > _MAX_PARAMETERS and name.lower() in ("content-type",
                                                             "content-disposition"):
            message.replace_header(name, value[:_MAX_PARAMETERS])
    return message


def _describe(entity: Entity, message: Message, default_type: str) -> None:
    """What the part's header declares; C{email} reads parameters and RFC 2231 values."""
    message.set_default_type(default_type)
    content_type = _text(message.get_content_type) or default_type
    entity.content_type = (content_type if _MEDIA_TYPE.fullmatch(content_type)
                           else "application/octet-stream")
    entity.charset = _text(message.get_content_charset)
    entity.boundary = _text(message.get_boundary, raw=True).encode("utf-8", "surrogateescape")
    entity.disposition = _text(message.get_content_disposition)
    entity.filename = _text(message.get_filename).strip()
    for field in entity.fields:
        lowered = field.name.lower()
        if lowered == "content-id" and not entity.content_id:
            entity.content_id = trace.angle_free(field.value)
        elif lowered == "content-transfer-encoding" and not entity.encoding:
            entity.encoding = field.value.strip().lower()


def _text(read: Callable[[], object], raw: bool = False) -> str:
    """
    A header parameter C{email} reads, as text ("" when absent or unreadable); C{raw}: as
    C{email} gives it (8-bit bytes surrogate-escaped).
    """
    try:
        value = read()
    except Exception:
        return ""
    if not isinstance(value, str):
        return ""
    return value if raw else header_text(value)


def _split(data: bytes, start: int, end: int, boundary: bytes,
           budget: _Budget) -> tuple[list[tuple[int, int]], Delimiters]:
    """The spans between the delimiter lines of one multipart body, and how it ended."""
    needle = b"\n--" + boundary
    spans: list[tuple[int, int]] = []
    part_start = -1
    position = max(start - 1, 0)
    while True:
        if budget.steps <= 0 or budget.parts + len(spans) >= mime.MAX_PARTS:
            return spans, Delimiters.UNKNOWN
        budget.steps -= 1
        found = data.find(needle, position, end)
        if found < 0:
            break
        tail = _DELIMITER_END.match(data, found + len(needle), end)
        if tail is None:
            position = found + len(needle)
            continue
        if part_start >= 0:
            spans.append((part_start, max(found, part_start)))
        if tail.group(1):
            return spans, Delimiters.CLOSED
        part_start = tail.end()
        position = part_start - 1
    if part_start < 0:
        return spans, Delimiters.MISSING
    spans.append((part_start, end))
    return spans, Delimiters.UNCLOSED
