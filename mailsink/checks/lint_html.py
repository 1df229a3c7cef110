"""
Lint rules over the HTML body: a plain-text alternative beside it, C{alt} on every image,
and C{cid:} references and inline parts that match each other.

The HTML is read with regular expressions over its bytes, not parsed: enough to find tags
and their attributes, linear in its length, and case-blind by searching a lower-case copy
(C{re.IGNORECASE} makes them several times slower). At most L{mime.MAX_BODY} bytes of each
HTML part are read.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from urllib.parse import unquote

import attrs

from mailsink.checks.findings import Finding, Severity, shown
from mailsink.checks.source import Source
from mailsink.checks.structure import Entity, leaves, place
from mailsink.message import mime
from mailsink.message.mime_text import decode_text, transfer_decode

_IMG = re.compile(rb"<img\b")
_ALT = re.compile(rb"""\salt\s*(?:=|/|>|\s)""")
_SRC = re.compile(rb"""\ssrc\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s>]*))""")
_CID = re.compile(rb"""cid:([^"'\s<>)]+)""")
_CID_LEAD = re.compile(rb"""(?:\b(?:src|background)\s*=\s*["']?|\burl\(\s*["']?)\Z""")
_LEAD_WINDOW = 64
_UTF8_COMPATIBLE = frozenset({"", "utf-8", "utf8", "us-ascii", "ascii"})


@attrs.frozen
class _Html:
    """An HTML body's bytes (UTF-8, or a charset that agrees with it on ASCII), and the
    same in lower case (ASCII letters only, so offsets agree) for case-blind searches."""

    data: bytes
    lowered: bytes

    def text(self, start: int, end: int) -> str:
        return self.data[start:end].decode("utf-8", "replace")


def _bodies(source: Source, content_type: str) -> list[Entity]:
    """The parts shown as the message's body of this type (not attachments)."""
    return [leaf for leaf in leaves(source.root) if leaf.content_type == content_type
            and leaf.disposition != "attachment" and not leaf.filename]


def _html(source: Source, leaf: Entity) -> _Html:
    body = source.data[leaf.body_start:min(leaf.end, leaf.body_start + 2 * mime.MAX_BODY)]
    decoded = transfer_decode(body, leaf.encoding)
    data = (body if decoded is None else decoded)[:mime.MAX_BODY]
    if leaf.charset.lower() not in _UTF8_COMPATIBLE:
        data = decode_text(data, leaf.charset).encode("utf-8")
    return _Html(data, data.lower())


def _cids(html: _Html) -> list[str]:
    """The Content-IDs that C{cid:} URLs in C{src}, C{background} or C{url()} name."""
    found = []
    for match in _CID.finditer(html.lowered):
        if _CID_LEAD.search(html.lowered, max(match.start() - _LEAD_WINDOW, 0),
                            match.start()):
            found.append(unquote(html.text(*match.span(1))))
    return found


def html_without_text(source: Source) -> Iterator[Finding]:
    html = _bodies(source, "text/html")
    if html and not _bodies(source, "text/plain"):
        field, where = place(html[0], None)
        yield Finding("html-without-text", Severity.WARNING, field,
                      f"{where} is HTML with no plain-text alternative: spam filters score "
                      f"it (SpamAssassin MIME_HTML_ONLY) and text-only clients show nothing "
                      f"readable; send multipart/alternative with a text/plain part first",
                      "RFC 2046 5.1.4; SpamAssassin MIME_HTML_ONLY")


def images_without_alt(source: Source) -> Iterator[Finding]:
    for leaf in _bodies(source, "text/html"):
        html = _html(source, leaf)
        missing = [(start, end) for start, end in _img_tags(html.lowered)
                   if not _ALT.search(html.lowered, start, end)]
        if not missing:
            continue
        src = _SRC.search(html.lowered, *missing[0])
        group = next((number for number in (1, 2, 3) if src and src.start(number) >= 0), 0)
        first = html.text(*src.span(group)) if src and group else ""
        count = "an <img>" if len(missing) == 1 else f"{len(missing):,} <img> tags"
        field, where = place(leaf, None)
        yield Finding("img-without-alt", Severity.WARNING, field,
                      f"{where} has {count} without alt (the first: src {shown(first)}): "
                      f"with images blocked, as Outlook does by default, readers see empty "
                      f"boxes and screen readers say nothing; add alt text (alt=\"\" for "
                      f"decoration)", "WCAG 2.1 1.1.1; HTML img alt")


def _img_tags(html: bytes) -> list[tuple[int, int]]:
    """
    The spans of the <img> tags: each ends at the next >, or where the next one starts
    (so they never overlap and finding them is linear in the length of the HTML).
    """
    starts = [match.start() for match in _IMG.finditer(html)]
    spans = []
    close = -1
    for number, start in enumerate(starts):
        if close < start:
            found = html.find(b">", start)
            close = len(html) if found < 0 else found
        following = starts[number + 1] if number + 1 < len(starts) else len(html)
        spans.append((start, min(close + 1, following)))
    return spans


def cid_references(source: Source) -> Iterator[Finding]:
    content_ids = {leaf.content_id.lower() for leaf in leaves(source.root)
                   if leaf.content_id}
    for leaf in _bodies(source, "text/html"):
        missing = {cid: None for cid in _cids(_html(source, leaf))
                   if cid.lower() not in content_ids}
        field, where = place(leaf, None)
        for cid in missing:
            yield Finding("cid-without-part", Severity.WARNING, field,
                          f"{where} refers to cid:{cid} but no part has that Content-ID: "
                          f"clients show a broken image; attach the image with Content-ID "
                          f"<{cid}>", "RFC 2392")


def unreferenced_inline_parts(source: Source) -> Iterator[Finding]:
    referenced = {cid.lower() for leaf in _bodies(source, "text/html")
                  for cid in _cids(_html(source, leaf))}
    bodies = {id(leaf) for kind in ("text/html", "text/plain") for leaf in
              _bodies(source, kind)}
    for leaf in leaves(source.root):
        if (not leaf.content_id or leaf.disposition == "attachment" or id(leaf) in bodies
                or leaf.content_id.lower() in referenced):
            continue
        field, where = place(leaf, None)
        yield Finding("unreferenced-inline-part", Severity.WARNING, field,
                      f"{where} is inline with Content-ID <{leaf.content_id}> but no HTML "
                      f"refers to cid:{leaf.content_id}: Gmail and Outlook show it as an "
                      f"attachment; refer to it with src=\"cid:{leaf.content_id}\" or drop "
                      f"the part", "RFC 2392; RFC 2387")


RULES = (html_without_text, images_without_alt, cid_references, unreferenced_inline_parts)
