"""
A message's MIME tree as IMAP numbers it (RFC 3501 §6.4.5): offsets into the message's
bytes, so a C{BODY[...]} section is exactly the stored bytes, and the header fields and
C{Content-Type} parameters ENVELOPE and BODYSTRUCTURE are made of.

Built for any bytes at all, without an exception and within bounds: multiparts and
encapsulated messages nest at most L{MAX_DEPTH} deep, a message has at most L{MAX_PARTS}
parts (later ones are left out), header fields are read from the first L{MAX_HEADER_BYTES}
of each header block (L{mailsink.message.mime_cut} cuts the tree, as it does for the web view).
What cannot be cut is one part: a multipart without a boundary or without any delimiter
line is C{text/plain} (as Dovecot shows it), and one nested too deep is opaque, as is an
encapsulated message too deep.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Sequence
from email import policy
from email.message import Message

from mailsink.message.mime_cut import (
    MAX_PARAMETERS,
    Budget,
    boundary,
    header_end,
    media_type,
    split,
)

MAX_DEPTH = 30
MAX_PARTS = 1000
MAX_HEADER_BYTES = 256 * 1024
MAX_PARAMETER_PAIRS = 100
"""Parameters kept of one C{Content-Type} or C{Content-Disposition}."""

Parameters = list[tuple[bytes, bytes]]

_FOLD = re.compile(rb"\r?\n(?=[ \t])")
_PARAMETER = re.compile(rb'\s*([^=;\s]+)\s*=\s*("(?:[^"\\]|\\.)*"?|[^;]*)', re.S)
_QUOTED_PAIR = re.compile(rb"\\(.)", re.S)
_US_ASCII: Parameters = [(b"charset", b"us-ascii")]


@dataclasses.dataclass(slots=True, eq=False)
class Field:
    """One header field: its name in lower case and where it lies, line ends included."""

    name: str
    start: int
    end: int


@dataclasses.dataclass(slots=True, eq=False)
class Node:
    """One MIME entity: where its header and body lie, its media type and parameters."""

    start: int
    body: int
    end: int
    fields: list[Field]
    media: str = "text/plain"
    parameters: Parameters = dataclasses.field(default_factory=list)
    children: list[Node] = dataclasses.field(default_factory=list)
    message: Node | None = None
    """The encapsulated message of a C{message/rfc822} part."""


def tree(data: bytes) -> Node:
    """The MIME tree of a whole message (CRLF line ends, as IMAP serves it)."""
    return _node(data, 0, len(data), 0, Budget(MAX_PARTS), "text/plain")


def opaque(data: bytes) -> Node:
    """A message as one C{text/plain} part with no header fields read: the last resort."""
    body = header_end(data, 0, len(data))[1]
    return Node(0, body, len(data), [], parameters=list(_US_ASCII))


def _node(data: bytes, start: int, end: int, depth: int, budget: Budget,
          default: str) -> Node:
    budget.parts += 1
    head_end, body = header_end(data, start, end)
    fields = header_fields(data, start, min(head_end, start + MAX_HEADER_BYTES))
    node = Node(start, body, end, fields)
    declared = first(data, fields, "content-type")
    content_type = Message(policy=policy.compat32)
    if declared is not None:
        declared = declared[:MAX_PARAMETERS]
        content_type["Content-Type"] = declared.decode("ascii", "surrogateescape")
    node.media = media_type(content_type, default)
    if declared is not None:
        node.parameters = parameters(declared)
    elif node.media == "text/plain":
        node.parameters = list(_US_ASCII)
    if node.media.startswith("multipart/"):
        delimiter = boundary(content_type)
        if depth < MAX_DEPTH and delimiter:
            child_default = "message/rfc822" if node.media == "multipart/digest" \
                else "text/plain"
            for child_start, child_end in split(data, body, end, delimiter, budget):
                if budget.parts >= MAX_PARTS:
                    break
                node.children.append(_node(data, child_start, child_end, depth + 1, budget,
                                           child_default))
        if not node.children:
            _as_one_part(node, "text/plain" if depth < MAX_DEPTH
                         else "application/octet-stream")
    elif node.media == "message/rfc822":
        if depth < MAX_DEPTH and budget.parts < MAX_PARTS:
            node.message = _node(data, body, end, depth + 1, budget, "text/plain")
        else:
            _as_one_part(node, "application/octet-stream")
    return node


def _as_one_part(node: Node, media: str) -> None:
    node.media = media
    node.parameters = list(_US_ASCII) if media == "text/plain" else []


def header_fields(data: bytes, start: int, stop: int) -> list[Field]:
    """The fields of a header block: a line that starts with a space or tab continues one."""
    fields: list[Field] = []
    position = start
    while position < stop:
        line_end = data.find(b"\n", position, stop)
        line_end = stop if line_end < 0 else line_end + 1
        if data[position:position + 1] in (b" ", b"\t") and fields:
            fields[-1].end = line_end
        else:
            colon = data.find(b":", position, line_end)
            name = data[position:colon] if colon >= 0 else b""
            fields.append(Field(name.strip().decode("latin-1").lower(), position, line_end))
        position = line_end
    return [field for field in fields if field.name]


def value(data: bytes, field: Field) -> bytes:
    """A field's value, unfolded, without the white space around it."""
    colon = data.index(b":", field.start, field.end)
    return _FOLD.sub(b"", data[colon + 1:field.end]).strip(b" \t\r\n")


def first(data: bytes, fields: Iterable[Field], name: str) -> bytes | None:
    """The value of the first field called C{name} (lower case), if there is one."""
    for field in fields:
        if field.name == name:
            return value(data, field)
    return None


def parameters(declared: bytes) -> Parameters:
    """
    The C{name=value} parameters after a C{Content-Type} or C{Content-Disposition} value's
    first C{;}, names in lower case, quoted values unquoted, RFC 2231 ones as written. A
    parameter without C{=} (as old mailers wrote them) or with an empty name is left out.
    """
    found: Parameters = []
    position = _after_first_semicolon(declared)
    while 0 <= position < len(declared) and len(found) < MAX_PARAMETER_PAIRS:
        match = _PARAMETER.match(declared, position)
        if match is None:
            position = _next_semicolon(declared, position)
            continue
        raw = match[2].strip()
        if raw.startswith(b'"'):
            raw = _QUOTED_PAIR.sub(rb"\1", raw[1:-1] if raw.endswith(b'"') and len(raw) > 1
                                   else raw[1:])
        found.append((match[1].lower(), raw))
        position = _next_semicolon(declared, match.end())
    return found


def _after_first_semicolon(declared: bytes) -> int:
    semicolon = declared.find(b";")
    return -1 if semicolon < 0 else semicolon + 1


def _next_semicolon(declared: bytes, position: int) -> int:
    semicolon = declared.find(b";", position)
    return -1 if semicolon < 0 else semicolon + 1


def resolve(root: Node, path: Sequence[int]) -> Node | None:
    """
    The part numbered C{path} (1-based), or C{None}: a multipart's parts are numbered in
    order, a message that is not multipart has only part 1 (its body), and the numbers after
    a C{message/rfc822} part's number count the parts of the message inside it.
    """
    container: Node | None = root
    node: Node | None = None
    for number in path:
        if container is None:
            return None
        numbered = container.children or [container]
        if not 1 <= number <= len(numbered):
            return None
        node = numbered[number - 1]
        container = node.message if node.message is not None \
            else node if node.children else None
    return node


def line_count(data: bytes, node: Node) -> int:
    """Lines of a part's body (a last line without a line end counts)."""
    if node.end <= node.body:
        return 0
    lines = data.count(b"\n", node.body, node.end)
    return lines if data[node.end - 1:node.end] == b"\n" else lines + 1
