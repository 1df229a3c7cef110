"""
The links a message asks its reader to follow or load: what the link check requests.

Pure (no network, no reactor) and run in the worker threads, since it reads whole bodies.
It collects what Mailpit's link check collects, in the same order: from the HTML,
C{<a href>}, then C{<link rel=stylesheet href>}, then C{<img src>}; from the text, bare
URLs, then URLs in angle brackets (RFC 2396 appendix E: such a URL may be broken across
lines, and the line breaks are dropped). Each URL is kept once, as written, up to
L{MAX_LINKS}. Only C{http:} and C{https:} URLs are collected: a C{file:}, C{data:},
C{javascript:} or C{mailto:} one is never a link to check, whatever URL it holds inside.

Unlike Mailpit, a bare URL at the very start of the text counts, sentence punctuation right
after a URL in text (C{see https://example.com/docs.}) is not taken as part of it, and an
http URL inside a word that starts with another scheme (C{data:text/plain,http://...}) is
part of that other URI, so not a link to check.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from html.parser import HTMLParser

MAX_LINKS = 100
"""Distinct links collected from one message (Mailpit's cap too)."""
_HTML_CHUNK = 1 << 16
"""The HTML is parsed in pieces this long, so parsing stops once the anchors fill the list."""
_HTTP_URL = re.compile(r"https?://\S", re.IGNORECASE)
_TEXT_URL = re.compile(r"(?<![<\w])https?://[-\w@:%+'!.~#?,&/=;]+", re.IGNORECASE)
_BRACKETED_URL = re.compile(r"<(https?://[^<>]{1,4096})>", re.IGNORECASE)
_TRAILING_PUNCTUATION = ".,;:!?'"
_LINE_BREAKS = re.compile(r"[\r\n]+")
_SCHEME_START = re.compile(r"[\W_]*[A-Za-z][A-Za-z0-9+.-]*:")
_WORD_WINDOW = 4096
"""How far back the start of a URL's word is looked for (bounds the work per URL)."""
_SPACE = " \t\n\r\f"


def message_links(html: str, text: str) -> list[str]:
    """The distinct http(s) URLs of a message's HTML body, then of its text body."""
    links: dict[str, None] = {}
    for found in (html_links(html), text_links(text)):
        for url in found:
            links.setdefault(url)
            if len(links) == MAX_LINKS:
                return list(links)
    return list(links)


def html_links(html: str) -> Iterator[str]:
    """Links, stylesheets and images of C{html}, in that order, each as written."""
    collector = _LinkCollector()
    for start in range(0, len(html), _HTML_CHUNK):
        collector.feed(html[start:start + _HTML_CHUNK])
        if len(set(collector.anchors)) >= MAX_LINKS:
            break
    else:
        collector.close()
    yield from (*collector.anchors, *collector.stylesheets, *collector.images)


def text_links(text: str) -> Iterator[str]:
    """Bare URLs of C{text}, then URLs in angle brackets with their line breaks dropped."""
    for match in _TEXT_URL.finditer(text):
        if not _inside_other_uri(text, match.start()):
            yield match.group().rstrip(_TRAILING_PUNCTUATION)
    for match in _BRACKETED_URL.finditer(text):
        yield _LINE_BREAKS.sub("", match.group(1))


def _inside_other_uri(text: str, start: int) -> bool:
    """
    Whether the URL at C{start} is part of a longer word that starts with a scheme of its
    own (C{data:text/plain,http://...}, C{file:...}): that is the link, and not http.
    """
    window = max(0, start - _WORD_WINDOW)
    before = text[window:start]
    if not before or before[-1].isspace():
        return False
    words = before.rsplit(None, 1)
    if len(words) == 1 and window > 0:
        return False  # a word this long is no URI a reader would click
    return _SCHEME_START.match(words[-1]) is not None


class _LinkCollector(HTMLParser):
    """The http(s) URLs the link check reads, as a browser sees them (unescaped, trimmed)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.anchors: list[str] = []
        self.stylesheets: list[str] = []
        self.images: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self._take(self.anchors, attrs, "href")
        elif tag == "link" and "stylesheet" in _words(_attribute(attrs, "rel")):
            self._take(self.stylesheets, attrs, "href")
        elif tag == "img":
            self._take(self.images, attrs, "src")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)

    @staticmethod
    def _take(into: list[str], attrs: list[tuple[str, str | None]], name: str) -> None:
        value = (_attribute(attrs, name) or "").strip(_SPACE)
        if _HTTP_URL.match(value):
            into.append(value)


def _attribute(attrs: Iterable[tuple[str, str | None]], name: str) -> str | None:
    """The first C{name} attribute's value (the one browsers use), or None."""
    return next((value for key, value in attrs if key == name), None)


def _words(value: str | None) -> list[str]:
    return (value or "").lower().split()
