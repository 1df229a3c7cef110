"""
Lint rules over the HTML body: a plain-text alternative beside it, C{alt} on every image,
and C{cid:} references and inline parts that match each other.

The HTML is read with regular expressions, not parsed: enough to find tags and their
attributes, and linear in its length. At most L{mime.MAX_BODY} bytes of each HTML part are
read.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from urllib.parse import unquote

from mailsink import mime
from mailsink.checks.findings import Finding, Severity, shown
from mailsink.checks.source import Source
from mailsink.checks.structure import Entity, leaves, place
from mailsink.mime_text import decode_text, transfer_decode

_IMG = re.compile(r"<img\b", re.IGNORECASE)
_ALT = re.compile(r"""\salt\s*(?:=|/|>|\s)""", re.IGNORECASE)
_SRC = re.compile(r"""\ssrc\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s>]*))""", re.IGNORECASE)
_CID = re.compile(
    r"""(?:\b(?:src|background)\s*=\s*["']?|\burl\(\s*["']?)cid:(?P<cid>[^"'\s<>)]+)""",
    re.IGNORECASE)


def _bodies(source: Source, content_type: str) -> list[Entity]:
    """The parts shown as the message's body of this type (not attachments)."""
    return [leaf for leaf in leaves(source.root) if leaf.content_type == content_type
            and leaf.disposition != "attachment" and not leaf.filename]


def _html(source: Source, leaf: Entity) -> str:
    body = source.data[leaf.body_start:min(leaf.end, leaf.body_start + 2 * mime.MAX_BODY)]
    data = transfer_decode(body, leaf.encoding)
    return decode_text((body if data is None else data)[:mime.MAX_BODY], leaf.charset)


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
        missing = [(start, end) for start, end in _img_tags(html)
                   if not _ALT.search(html, start, end)]
        if not missing:
            continue
        src = _SRC.search(html, *missing[0])
        first = next((value for value in src.groups() if value is not None), "") if src else ""
        count = "an <img>" if len(missing) == 1 else f"{len(missing):,} <img> tags"
        field, where = place(leaf, None)
        yield Finding("img-without-alt", Severity.WARNING, field,
                      f"{where} has {count} without alt (the first: src {shown(first)}): "
                      f"with images blocked, as Outlook does by default, readers see empty "
                      f"boxes and screen readers say nothing; add alt text (alt=\"\" for "
                      f"decoration)", "WCAG 2.1 1.1.1; HTML img alt")


def _img_tags(html: str) -> list[tuple[int, int]]:
    """
    The spans of the <img> tags: each ends at the next >, or where the next one starts
    (so they never overlap and finding them is linear in the length of the HTML).
    """
    starts = [match.start() for match in _IMG.finditer(html)]
    spans = []
    close = -1
    for number, start in enumerate(starts):
        if close < start:
            found = html.find(">", start)
            close = len(html) if found < 0 else found
        following = starts[number + 1] if number + 1 < len(starts) else len(html)
        spans.append((start, min(close + 1, following)))
    return spans


def cid_references(source: Source) -> Iterator[Finding]:
    content_ids = {leaf.content_id.lower() for leaf in leaves(source.root)
                   if leaf.content_id}
    for leaf in _bodies(source, "text/html"):
        missing: dict[str, None] = {}
        for match in _CID.finditer(_html(source, leaf)):
            cid = unquote(match["cid"])
            if cid.lower() not in content_ids:
                missing.setdefault(cid, None)
        field, where = place(leaf, None)
        for cid in missing:
            yield Finding("cid-without-part", Severity.WARNING, field,
                          f"{where} refers to cid:{cid} but no part has that Content-ID: "
                          f"clients show a broken image; attach the image with Content-ID "
                          f"<{cid}>", "RFC 2392")


def unreferenced_inline_parts(source: Source) -> Iterator[Finding]:
    referenced = {unquote(match["cid"]).lower()
                  for leaf in _bodies(source, "text/html")
                  for match in _CID.finditer(_html(source, leaf))}
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
