"""
The content items of one FETCH response (ENVELOPE, BODY, BODYSTRUCTURE, RFC822, its
header and text, and C{BODY[section]<partial>}) from a message's bytes and MIME tree
(L{mailsink.imap.parts}); pure, and run in a worker thread, as they grow with the message.

A section of a part that does not exist (C{BODY[9]} of a two-part message, C{BODY[1.TEXT]}
of a part that is no message) is C{NIL}, as Dovecot answers, rather than an error that
would end the connection. A literal may not hold NUL (RFC 3501 §4.3): a NUL in a message is
sent as 0x80, as Dovecot does, so sizes and offsets stay those of the stored message.
"""

from __future__ import annotations

from typing import Any

from mailsink.imap.parts import Node, resolve
from mailsink.imap.structure import body_structure, envelope
from mailsink.imap.wire import astring, parenthesized

CONTENT = frozenset({"envelope", "bodystructure", "body", "rfc822", "rfc822header",
                     "rfc822text"})
"""Item types rendered from the message's content (the others come from its flags, file
name, size and date)."""

Item = tuple[bytes, bytes | None]
"""An item's text and, when its value is a literal, the literal's bytes (the text is then
the item's name; the writer adds C{{n}})."""


def content_item(part: Any, data: bytes, root: Node) -> Item:
    """One content item (C{part.type} in L{CONTENT}) of a parsed FETCH query."""
    text, literal = _content_item(part, data, root)
    if literal is not None and b"\0" in literal:
        literal = literal.replace(b"\0", b"\x80")
    return text, literal


def _content_item(part: Any, data: bytes, root: Node) -> Item:
    kind = part.type
    if kind == "envelope":
        return b"ENVELOPE " + envelope(data, root.fields), None
    if kind == "bodystructure":
        return b"BODYSTRUCTURE " + body_structure(data, root, True), None
    if kind == "rfc822":
        return b"RFC822", data
    if kind == "rfc822header":
        return b"RFC822.HEADER", data[root.start:root.body]
    if kind == "rfc822text":
        return b"RFC822.TEXT", data[root.body:root.end]
    if not (part.header or part.text or part.mime or part.empty or part.part):
        return b"BODY " + body_structure(data, root, False), None
    found = _section(part, data, root)
    label = b"BODY[" + _section_name(part) + b"]"
    if found is None:
        return label + b" NIL", None
    if part.partialBegin is not None:
        label += b"<%d>" % (part.partialBegin,)
        found = found[part.partialBegin:part.partialBegin + part.partialLength]
    return label, found


def _section(part: Any, data: bytes, root: Node) -> bytes | None:
    """The bytes a C{BODY[section]} names, or C{None} for a part that does not exist."""
    path = [number + 1 for number in part.part]
    node = resolve(root, path) if path else root
    if node is None:
        return None
    if part.mime:
        return data[node.start:node.body] if path else None
    if not (part.header or part.text):
        return data[node.body:node.end] if path else data
    message = node.message if path else root
    if message is None:
        return None
    if part.text:
        return data[message.body:message.end]
    wanted = {name.decode("latin-1").lower() for name in part.header.fields or ()}
    if not wanted:
        return data[message.start:message.body]
    chosen = [data[field.start:field.end] for field in message.fields
              if (field.name in wanted) != part.header.negate]
    return b"".join(line if line.endswith(b"\n") else line + b"\r\n"
                    for line in chosen) + b"\r\n"


def _section_name(part: Any) -> bytes:
    """The section as a response names it: C{1.2.HEADER.FIELDS (SUBJECT)}, C{TEXT}, C{}."""
    names = [b"%d" % (number + 1,) for number in part.part]
    if part.header:
        spec = b"HEADER"
        if part.header.fields:
            spec += b".FIELDS.NOT" if part.header.negate else b".FIELDS"
            spec += b" " + parenthesized(astring(name) for name in part.header.fields)
        names.append(spec)
    elif part.text:
        names.append(b"TEXT")
    elif part.mime:
        names.append(b"MIME")
    return b".".join(names)
