"""
A stored message's bytes -> the facts, bodies and parts the views show.

Pure, and no exception escapes for any input. The MIME tree is cut along its boundaries by
L{mailsink.message.mime_cut}, within bounds the standard library's feed parser lacks (it
recurses per nesting level and checks every enclosing boundary on every line: 200 levels
take 0.13 s, 1,000 raise C{RecursionError}): multiparts nest at most L{MAX_DEPTH} deep (a
deeper one is one opaque part), a message has at most L{MAX_PARTS} parts (later ones are
ignored), header blocks are read up to L{MAX_HEADER_BYTES}, returned bodies are cut at
L{MAX_BODY} bytes.
C{email} reads each header block and its values (parameters, RFC 2231 names, addresses, dates).

PartIDs are Mailpit's (enmime's): the top-level multipart's children are C{"1"}, C{"2"}, ...,
a nested multipart's C{"2.1"}, C{"2.2"}; a message that is not multipart is part C{"1"}; a
C{message/rfc822} part is one part, not opened.

The text and HTML bodies are the first C{text/plain} and C{text/html} leaves that are neither
C{Content-Disposition: attachment} nor named. Every other leaf, in document order, is
 - an attachment if its disposition is C{attachment}, or it has no Content-ID and has a file
   name (Apple Mail's C{inline; filename=photo.jpg}) or is not C{text/*};
 - else inline if it has a Content-ID (what an HTML body shows by C{cid:});
 - else not listed (a C{text/calendar} alternative, a second unnamed text part).
L{Facts.attachments} counts exactly the attachments L{view} lists.
"""

from __future__ import annotations

import dataclasses
import datetime
import email.utils
import re
from collections.abc import Callable, Iterator
from email.message import Message
from typing import TypeVar
from urllib.parse import quote, unquote

from mailsink.message import trace
from mailsink.message.mime_cut import (
    Budget,
    boundary,
    header_end,
    header_fields,
    media_type,
    split,
    tame,
)
from mailsink.message.mime_text import (
    decode_text,
    decode_words,
    header_text,
    html_text,
    transfer_decode,
    unfold,
)
from mailsink.message.shapes import Address, Facts, MessageView, Part, Transport
from mailsink.tags.names import parse_x_tags

_T = TypeVar("_T")

MAX_DEPTH = 30
MAX_PARTS = 1000
MAX_HEADER_BYTES = 256 * 1024
MAX_BODY = 4 * 1024 * 1024
SNIPPET_LENGTH = 250
_SNIPPET_TEXT_BYTES = 16 * 1024
_SNIPPET_HTML_BYTES = 256 * 1024

_CHARSET = re.compile(r"[A-Za-z0-9._:+-]{1,40}")
_MESSAGE_ID = re.compile(r"<([^<>]*)>")
_PART_ID = re.compile(rf"[1-9][0-9]{{0,5}}(?:\.[1-9][0-9]{{0,5}}){{0,{MAX_DEPTH}}}")
_CID_REFERENCE = re.compile(
    r"""(?P<lead>\b(?:src|background)\s*=\s*["']?|\burl\(\s*["']?)cid:(?P<cid>[^"'\s<>)]+)""",
    re.IGNORECASE,
)


@dataclasses.dataclass(slots=True, eq=False)
class _Entity:
    """One node of the MIME tree: its header fields and where its body lies in the bytes."""

    part_id: str
    fields: list[tuple[str, str]]
    start: int
    end: int
    children: list[_Entity] = dataclasses.field(default_factory=list)
    container: bool = False
    content_type: str = "text/plain"
    charset: str = ""
    disposition: str = ""
    filename: str = ""
    content_id: str = ""
    encoding: str = ""


def facts(raw: bytes) -> Facts:
    """What the headers, the first text part and the part structure say (for the index)."""
    return _safe(lambda: _read_facts(raw), Facts())


def view(raw: bytes) -> MessageView:
    """Everything the message page shows: facts, bodies, all headers, inline parts, files."""
    return _safe(lambda: _read_view(raw), MessageView(facts=Facts(), text="", html="",
                                                      headers={}))


def part(raw: bytes, part_id: str) -> tuple[str, str, bytes] | None:
    """(Content-Type with its charset, file name, decoded bytes) of one part, or C{None}."""
    return _safe(lambda: _read_part(raw, part_id), None)


def html_with_cid_urls(html: str, id: str, view: MessageView) -> str:
    """
    Point C{cid:} references at the listed part with that Content-ID (others stay), by a
    URL relative to C{/view/ID.html}, where the HTML is served.
    """
    targets: dict[str, str] = {}
    for listed in (*view.inline, *view.attachments):
        if listed.content_id:
            targets.setdefault(listed.content_id, listed.part_id)
            targets.setdefault(listed.content_id.lower(), listed.part_id)
    if not targets:
        return html
    prefix = f"../api/v1/message/{quote(id, safe='')}/part/"  # from /view/, any base_path

    def replace(match: re.Match[str]) -> str:
        cid = unquote(match["cid"])
        part_id = targets.get(cid) or targets.get(cid.lower())
        return match[0] if part_id is None else match["lead"] + prefix + part_id

    return _CID_REFERENCE.sub(replace, html)


def _read_facts(raw: bytes) -> Facts:
    root = _tree(raw)
    text, html = _bodies(root)
    return _facts(raw, root, text, html, len(_listed(root, text, html)[1]))


def _read_view(raw: bytes) -> MessageView:
    root = _tree(raw)
    text, html = _bodies(root)
    inline, attached = _listed(root, text, html)
    return MessageView(
        facts=_facts(raw, root, text, html, len(attached)),
        text=_body(raw, text, MAX_BODY), html=_body(raw, html, MAX_BODY),
        headers=_header_map(root.fields),
        inline=tuple(_summary(raw, entity) for entity in inline),
        attachments=tuple(_summary(raw, entity) for entity in attached))


def _read_part(raw: bytes, part_id: str) -> tuple[str, str, bytes] | None:
    if not isinstance(part_id, str) or not _PART_ID.fullmatch(part_id):
        return None
    entity = _tree(raw)
    if not entity.container:
        return _payload(raw, entity) if part_id == "1" else None
    for index in (int(step) for step in part_id.split(".")):
        if not entity.container or index > len(entity.children):
            return None
        entity = entity.children[index - 1]
    return None if entity.container else _payload(raw, entity)


def _payload(raw: bytes, entity: _Entity) -> tuple[str, str, bytes]:
    body = raw[entity.start:entity.end]
    decoded = transfer_decode(body, entity.encoding)
    content_type = entity.content_type
    if entity.charset and _CHARSET.fullmatch(entity.charset):
        content_type += f"; charset={entity.charset}"
    return content_type, entity.filename, body if decoded is None else decoded


# The tree.

def _tree(raw: bytes) -> _Entity:
    budget = Budget(MAX_PARTS)
    root = _entity(raw, 0, len(raw), "", 0, budget, "text/plain")
    if not root.container:
        root.part_id = "1"
    return root


def _entity(raw: bytes, start: int, end: int, part_id: str, depth: int, budget: Budget,
            default_type: str) -> _Entity:
    budget.parts += 1
    head_end, body_start = header_end(raw, start, end)
    message = header_fields(raw[start:min(head_end, start + MAX_HEADER_BYTES)])
    fields = [(name, unfold(header_text(value))) for name, value in message.raw_items()]
    entity = _Entity(part_id, fields, body_start, end)
    _describe(entity, message, default_type)
    if entity.content_type.startswith("multipart/") and depth < MAX_DEPTH:
        entity.container = True
        delimiter = boundary(message)
        child_type = "message/rfc822" if entity.content_type == "multipart/digest" \
            else "text/plain"
        if delimiter:
            spans = split(raw, body_start, end, delimiter, budget)
            for number, (child_start, child_end) in enumerate(spans, 1):
                if budget.parts >= MAX_PARTS:
                    break
                child_id = f"{part_id}.{number}" if part_id else str(number)
                entity.children.append(_entity(raw, child_start, child_end, child_id,
                                               depth + 1, budget, child_type))
    return entity


def _describe(entity: _Entity, message: Message, default_type: str) -> None:
    tame(message)
    entity.content_type = media_type(message, default_type)
    entity.charset = _safe(lambda: header_text(message.get_content_charset() or ""), "")
    entity.disposition = _safe(lambda: message.get_content_disposition() or "", "")
    filename = _safe(lambda: message.get_filename() or "", "")
    entity.filename = decode_words(header_text(filename)).strip() if filename else ""
    for name, value in entity.fields:
        lowered = name.lower()
        if lowered == "content-id" and not entity.content_id:
            entity.content_id = trace.angle_free(value)
        elif lowered == "content-transfer-encoding" and not entity.encoding:
            entity.encoding = value.strip().lower()


def _leaves(entity: _Entity) -> Iterator[_Entity]:
    if entity.container:
        for child in entity.children:
            yield from _leaves(child)
    else:
        yield entity


def _bodies(root: _Entity) -> tuple[_Entity | None, _Entity | None]:
    text = html = None
    for leaf in _leaves(root):
        if leaf.disposition == "attachment" or leaf.filename:
            continue
        if text is None and leaf.content_type == "text/plain":
            text = leaf
        elif html is None and leaf.content_type == "text/html":
            html = leaf
    return text, html


def _listed(root: _Entity, text: _Entity | None,
            html: _Entity | None) -> tuple[list[_Entity], list[_Entity]]:
    """The inline parts and the attachments, by the rule in the module docstring."""
    inline: list[_Entity] = []
    attached: list[_Entity] = []
    for leaf in _leaves(root):
        if leaf is text or leaf is html:
            continue
        if leaf.disposition == "attachment":
            attached.append(leaf)
        elif leaf.content_id:
            inline.append(leaf)
        elif leaf.filename or not leaf.content_type.startswith("text/"):
            attached.append(leaf)
    return inline, attached


def _summary(raw: bytes, entity: _Entity) -> Part:
    size = entity.end - entity.start
    if entity.encoding in ("base64", "quoted-printable"):
        decoded = transfer_decode(raw[entity.start:entity.end], entity.encoding)
        size = size if decoded is None else len(decoded)
    return Part(part_id=entity.part_id, filename=entity.filename,
                content_type=entity.content_type, content_id=entity.content_id, size=size)


# Facts from the top-level header fields.

def _facts(raw: bytes, root: _Entity, text: _Entity | None, html: _Entity | None,
           attachments: int) -> Facts:
    fields: dict[str, list[str]] = {}
    for name, value in root.fields:
        fields.setdefault(name.lower(), []).append(value)
    to, cc = _addresses(fields.get("to")), _addresses(fields.get("cc"))
    transport = _safe(lambda: trace.transport(root.fields), None)
    senders = _addresses(fields.get("from", [])[:1])
    return Facts(
        message_id=_message_id(fields.get("message-id", [""])[0]),
        sender=senders[0] if senders else None,
        to=to, cc=cc, bcc=_bcc(_addresses(fields.get("bcc")), transport, to + cc),
        reply_to=_addresses(fields.get("reply-to")),
        subject=decode_words(fields.get("subject", [""])[0]).strip(),
        date=_date(fields.get("date", [""])[0]),
        snippet=_safe(lambda: _snippet(raw, text, html), ""),
        attachments=attachments,
        tags=_tags(fields.get("x-tags", [])),
        return_path=_safe(lambda: trace.return_path(root.fields), ""),
        transport=transport or Transport(),
    )


def _addresses(values: list[str] | None) -> tuple[Address, ...]:
    if not values:
        return ()
    pairs = _plain_addresses(values)
    if pairs is None:
        try:
            pairs = email.utils.getaddresses(values)
        except Exception:
            return ()
    return tuple(Address(decode_words(name).strip(), address.strip())
                 for name, address in pairs if address.strip())


_ADDR_SPEC = r"[A-Za-z0-9_+-]+(?:\.[A-Za-z0-9_+-]+)*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*"
_PLAIN_ADDRESS = re.compile(
    rf"[ \t]*(?:(?:(?P<name>[A-Za-z0-9]+(?: [A-Za-z0-9]+)*)[ \t]*)?<(?P<angled>{_ADDR_SPEC})>"
    rf"|(?P<bare>{_ADDR_SPEC}))[ \t]*")


def _plain_addresses(values: list[str]) -> list[tuple[str, str]] | None:
    """
    What C{email.utils.getaddresses} gives for lists of plain addresses (C{a@b},
    C{<a@b>}, C{Name Words <a@b>}), a few times faster; None for anything else.
    """
    pairs = []
    for value in values:
        for item in value.split(","):
            match = _PLAIN_ADDRESS.fullmatch(item)
            if match is None:
                return None
            pairs.append((match["name"] or "", match["angled"] or match["bare"]))
    return pairs


def _bcc(named: tuple[Address, ...], transport: Transport | None,
         visible: tuple[Address, ...]) -> tuple[Address, ...]:
    """The Bcc header's addresses, then envelope recipients in no To, Cc or Bcc header."""
    seen = {address.address.lower() for address in visible + named}
    bcc = list(named)
    for recipient in transport.rcpt_to if transport else ():
        if recipient.lower() not in seen:
            seen.add(recipient.lower())
            bcc.append(Address("", recipient))
    return tuple(bcc)


def _message_id(value: str) -> str:
    match = _MESSAGE_ID.search(value)
    return (match[1] if match else value).strip()


def _date(value: str) -> str:
    try:
        moment = email.utils.parsedate_to_datetime(value.strip())
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=datetime.UTC)
        return moment.isoformat()
    except Exception:
        return ""


def _tags(values: list[str]) -> tuple[str, ...]:
    return parse_x_tags(decode_words(value) for value in values)


def _header_map(fields: list[tuple[str, str]]) -> dict[str, list[str]]:
    headers: dict[str, list[str]] = {}
    for name, value in fields:
        headers.setdefault(_canonical(name), []).append(decode_words(value).strip())
    return headers


def _canonical(name: str) -> str:
    """Go's canonical MIME header key, as Mailpit's C{/headers} spells names."""
    if not name or not all(c.isascii() and (c.isalnum() or c in "!#$%&'*+-.^_`|~")
                           for c in name):
        return name
    return "-".join(word[:1].upper() + word[1:].lower() for word in name.split("-"))


# Bodies.

def _body(raw: bytes, entity: _Entity | None, limit: int) -> str:
    """The decoded text of a body part, at most C{limit} bytes of it."""
    if entity is None:
        return ""
    encoding = entity.encoding
    factor = {"base64": 1.5, "quoted-printable": 3.1}.get(encoding, 1.0)
    stop = min(entity.end, entity.start + int(limit * factor) + 4)
    data = transfer_decode(raw[entity.start:stop], encoding)
    if data is None:
        data = raw[entity.start:min(entity.end, entity.start + limit)]
    return decode_text(data[:limit], entity.charset)


def _snippet(raw: bytes, text: _Entity | None, html: _Entity | None) -> str:
    if text is not None:
        words = _body(raw, text, _SNIPPET_TEXT_BYTES)
    elif html is not None:
        words = html_text(_body(raw, html, _SNIPPET_HTML_BYTES), 4 * SNIPPET_LENGTH)
    else:
        return ""
    return " ".join(words.split())[:SNIPPET_LENGTH].rstrip()


def _safe(function: Callable[[], _T], default: _T) -> _T:
    try:
        return function()
    except Exception:
        return default
