"""
ENVELOPE, BODY and BODYSTRUCTURE (RFC 3501 §7.4.2) of a message's MIME tree
(L{mailsink.imap.parts}), written in IMAP's syntax (L{mailsink.imap.wire}).

Built here rather than by C{twisted.mail.imap4.getBodyStructure}, which raises on a
parameter without C{=} and on eight-bit header text (and the connection drops, so a client
that asks every message's structure, as Thunderbird does, never reads that mailbox again).
Values are the header text as stored: unfolded, eight-bit text sent as a literal; an
address without C{@} has an empty host name (C{NIL} would mean a group).
"""

from __future__ import annotations

import email.utils

from mailsink.imap.parts import Field, Node, first, line_count, parameters
from mailsink.imap.wire import (
    nstring,
    number,
    parenthesized,
    parenthesized_or_nil,
    string,
)

MAX_ADDRESSES = 1000
"""Addresses listed of one header field."""


def body_structure(data: bytes, node: Node, extended: bool) -> bytes:
    """BODYSTRUCTURE (C{extended}) or BODY of a part and everything inside it."""
    if node.children:
        fields = [b"".join(body_structure(data, child, extended) for child in node.children),
                  string(node.media.partition("/")[2].encode())]
        if extended:
            fields += [_parameters(node.parameters), *_extension(data, node.fields)]
        return b"(" + b" ".join(fields) + b")"
    main, _slash, subtype = node.media.partition("/")
    fields = [string(main.encode()), string(subtype.encode()), _parameters(node.parameters),
              nstring(first(data, node.fields, "content-id")),
              nstring(first(data, node.fields, "content-description")),
              string(first(data, node.fields, "content-transfer-encoding") or b"7BIT"),
              number(node.end - node.body)]
    if node.message is not None:
        fields += [envelope(data, node.message.fields),
                   body_structure(data, node.message, extended), number(line_count(data, node))]
    elif main == "text":
        fields.append(number(line_count(data, node)))
    if extended:
        fields += [nstring(first(data, node.fields, "content-md5")),
                   *_extension(data, node.fields)]
    return parenthesized(fields)


def _extension(data: bytes, fields: list[Field]) -> list[bytes]:
    """Disposition, language and location: the extension data every part ends with."""
    return [_disposition(first(data, fields, "content-disposition")),
            _language(first(data, fields, "content-language")),
            nstring(first(data, fields, "content-location"))]


def _parameters(found: list[tuple[bytes, bytes]]) -> bytes:
    return parenthesized_or_nil(string(item) for pair in found for item in pair)


def _disposition(declared: bytes | None) -> bytes:
    kind = (declared or b"").partition(b";")[0].strip().lower()
    if not kind:
        return b"NIL"
    return parenthesized([string(kind), _parameters(parameters(declared or b""))])


def _language(declared: bytes | None) -> bytes:
    tags = [tag.strip() for tag in (declared or b"").split(b",") if tag.strip()]
    if len(tags) == 1:
        return string(tags[0])
    return parenthesized_or_nil(string(tag) for tag in tags)


def envelope(data: bytes, fields: list[Field]) -> bytes:
    """ENVELOPE of a message's header fields (a missing Sender or Reply-To is From)."""
    senders = _addresses(first(data, fields, "from"))
    return parenthesized([
        nstring(first(data, fields, "date")),
        nstring(first(data, fields, "subject")),
        senders,
        _addresses(first(data, fields, "sender"), senders),
        _addresses(first(data, fields, "reply-to"), senders),
        _addresses(first(data, fields, "to")),
        _addresses(first(data, fields, "cc")),
        _addresses(first(data, fields, "bcc")),
        nstring(first(data, fields, "in-reply-to")),
        nstring(first(data, fields, "message-id")),
    ])


def _addresses(declared: bytes | None, otherwise: bytes = b"NIL") -> bytes:
    """An address list: (name route mailbox host) each; C{otherwise} when there is none."""
    if not declared:
        return otherwise
    try:
        pairs = email.utils.getaddresses([declared.decode("ascii", "surrogateescape")])
    except Exception:  # a parser bug must not cost the message its envelope
        pairs = []
    listed = []
    for name, address in pairs[:MAX_ADDRESSES]:
        if not name and not address:
            continue
        mailbox, at, host = address.rpartition("@")
        if not at:
            mailbox, host = address, ""
        listed.append(parenthesized([
            nstring(_raw(name) or None), b"NIL", string(_raw(mailbox)), string(_raw(host))]))
    return parenthesized(listed) if listed else otherwise


def _raw(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")
