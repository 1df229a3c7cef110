"""
What the HTML check reads from a message's HTML body, in one pass of the standard library's
C{html.parser}: the elements and attributes by name, the few attribute values a feature
depends on, image sources, C{style} attributes and C{<style>} sheets, and the node count.

Nodes are counted as Mailpit counts them, since its scores divide by that count: a document
with a C{<body>} tag counts every element but C{html}, C{head} and C{meta}; a fragment counts
the elements that land in the body (those before any body content that HTML puts in the
head, such as C{<title>} or C{<style>}, do not) and every C{<script>}. Elements are those
written: the ones an HTML parser implies (C{<tbody>} in a table) are not added.

One pass, linear in the text's length, whatever it holds (see L{_Reader.close}).
"""

from __future__ import annotations

import collections
from html.parser import HTMLParser

import attrs

_NEVER_NODES = frozenset({"html", "head", "meta"})
_HEAD_ONLY = frozenset({"base", "basefont", "bgsound", "link", "meta", "noframes", "noscript",
                        "script", "style", "template", "title"})
"""Elements HTML puts in the head when they come before any body content."""
_TEXT_HOLDERS = frozenset({"noframes", "noscript", "script", "style", "template", "title"})
_JSON_SCRIPTS = frozenset({"application/ld+json", "application/json"})
_TYPED = frozenset({"input", "button"})


@attrs.frozen
class Document:
    """The facts of one HTML body the features are tested on."""

    nodes: int
    body: bool
    """It has a C{<body>} tag: a whole document, not a fragment."""
    tags: collections.Counter[str]
    """Elements by name (lower case)."""
    attributes: collections.Counter[str]
    """Elements having each attribute (lower-case name)."""
    typed: collections.Counter[tuple[str, str]]
    """C{<input>} and C{<button>} elements by (name, C{type} in lower case, C{""} if none)."""
    local_links: int
    """C{<a href="#...">}."""
    image_maps: int
    """C{<img usemap>}."""
    scripts: int
    """C{<script>} elements other than JSON data (C{application/ld+json}) that clients
    leave alone."""
    images: tuple[str, ...]
    """The C{src} of every C{<img>}."""
    styles: collections.Counter[str]
    """Every C{style} attribute's text and how many elements have it (a newsletter
    repeats a few many times)."""
    sheets: tuple[str, ...]
    """The text of every C{<style>} element."""


def read_document(html: str) -> Document:
    """The L{Document} of an HTML body; any text is read, none is refused."""
    reader = _Reader()
    reader.feed(html)
    reader.close()
    return reader.document()


class _Reader(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: collections.Counter[str] = collections.Counter()
        self.attributes: collections.Counter[str] = collections.Counter()
        self.typed: collections.Counter[tuple[str, str]] = collections.Counter()
        self.local_links = self.image_maps = self.scripts = 0
        self.images: list[str] = []
        self.styles: collections.Counter[str] = collections.Counter()
        self.sheets: list[str] = []
        self.body = False
        self.document_nodes = 0
        """Elements but html, head and meta, counting body once."""
        self.fragment_nodes = 0
        """Elements in the body, and scripts anywhere."""
        self.in_body = False
        self.holder: str | None = None
        """The text-holding element (C{<style>}, C{<title>}, ...) being read."""
        self.sheet: list[str] | None = None

    def document(self) -> Document:
        nodes = self.document_nodes + 1 if self.body else self.fragment_nodes
        return Document(
            nodes=nodes, body=self.body, tags=self.tags, attributes=self.attributes,
            typed=self.typed, local_links=self.local_links, image_maps=self.image_maps,
            scripts=self.scripts, images=tuple(self.images), styles=self.styles,
            sheets=tuple(self.sheets))

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values: dict[str, str] = {}
        for name, value in attrs:
            values.setdefault(name, value or "")
        self._count_node(tag)
        self.tags[tag] += 1
        self.attributes.update(values.keys())
        if "style" in values:
            self.styles[values["style"]] += 1
        if tag in _TYPED:
            self.typed[tag, values.get("type", "").strip().lower()] += 1
        elif tag == "a" and values.get("href", "").strip().startswith("#"):
            self.local_links += 1
        elif tag == "img":
            if "src" in values:
                self.images.append(values["src"].strip())
            self.image_maps += "usemap" in values
        elif tag == "script" and values.get("type", "").strip().lower() not in _JSON_SCRIPTS:
            self.scripts += 1
        if tag in _TEXT_HOLDERS:
            self.holder = tag
            self.sheet = [] if tag == "style" else None

    def parse_html_declaration(self, i: int) -> int:
        """C{<![...>} (Outlook's C{<![if mso]>}, CDATA) is a bogus comment up to the next
        C{>}, as HTML reads it; the standard library raises on some of them."""
        if self.rawdata.startswith("<![", i):
            end = self.rawdata.find(">", i + 3)
            return -1 if end < 0 else end + 1
        return super().parse_html_declaration(i)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        if tag == self.holder:
            self.handle_endtag(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag == "body":
            self.body = True
        if tag == self.holder:
            if self.sheet is not None:
                self.sheets.append("".join(self.sheet))
            self.holder = self.sheet = None

    def handle_data(self, data: str) -> None:
        if self.sheet is not None:
            self.sheet.append(data)
        elif self.holder is None and not self.in_body and data.strip():
            self.in_body = True

    def close(self) -> None:
        """End of the text. What C{feed} left unparsed is one construct the text ends in:
        the rest of an unclosed C{<style>} (its text), or a tag or comment that never
        closes, which browsers drop. Not the standard library's C{close}, which re-reads
        that rest once per C{<} in it (quadratic: 8,000 C{"<a "} took 10 s)."""
        rest, self.rawdata = self.rawdata, ""
        if self.sheet is not None:
            self.sheet.append(rest)
            self.sheets.append("".join(self.sheet))
            self.sheet = None
        elif self.holder is None and not rest.startswith("<"):
            self.handle_data(rest)

    def _count_node(self, tag: str) -> None:
        if tag == "body":
            self.body = self.in_body = True
            return
        if tag not in _NEVER_NODES:
            self.document_nodes += 1
        if tag in ("html", "head"):
            return
        if not self.in_body and tag not in _HEAD_ONLY:
            self.in_body = True
        if self.in_body or tag == "script":
            self.fragment_nodes += 1
