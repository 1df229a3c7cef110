"""
Bytes and header values to text, for L{mailsink.message.mime}: Content-Transfer-Encodings,
charsets (unknown ones read as UTF-8 with replacements, undeclared ones as UTF-8 or else
cp1252), RFC 2047 encoded words, and the visible text at the start of an HTML body (for
snippets). Pure functions; none raises for any input.
"""

from __future__ import annotations

import binascii
import codecs
import html as html_entities
import re

_BASE64 = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_NOT_BASE64 = bytes(sorted(set(range(256)) - set(_BASE64)))
_ASCII_NAMES = frozenset({"us-ascii", "ascii", "ansi_x3.4-1968", "iso646-us", "us"})
_SLOW_CODECS = frozenset({"punycode", "idna"})
_SURROGATE = re.compile("[\ud800-\udfff]")
_LINE_BREAK = re.compile(r"\r?\n[ \t]*")
_ENCODED_WORD = re.compile(r"=\?([^?\s]+)\?([qQbB])\?([^?\s]*)\?=")
_HTML_TOKEN = re.compile(
    r"(?P<comment><!--.*?(?:-->|\Z))"
    r"|<(?P<close>/?)(?P<tag>[a-zA-Z][^\s/<>]*)[^<>]*>?"
    r"|(?P<other><[!?/][^<>]*>?)"
    r"|(?P<text>[^<]+|<)",
    re.DOTALL,
)
_HTML_HIDDEN = frozenset({"script", "style", "title", "head", "template"})
_HTML_BREAKS = frozenset({"br", "p", "div", "tr", "td", "th", "li", "ul", "ol", "table", "hr",
                          "h1", "h2", "h3", "h4", "h5", "h6", "blockquote", "pre", "section"})


def html_text(markup: str, wanted: int) -> str:
    """The visible text at the start of an HTML document (no scripts, styles, comments)."""
    chunks: list[str] = []
    have = position = 0
    lowered = ""
    while position < len(markup) and have < wanted:
        token = _HTML_TOKEN.match(markup, position)
        if token is None:
            break
        position = token.end()
        if token["text"] is not None:
            text = html_entities.unescape(token["text"])
            chunks.append(text)
            have += len(text.strip())
        elif token["tag"]:
            name = token["tag"].lower()
            if name in _HTML_BREAKS:
                chunks.append(" ")
            if not token["close"] and name in _HTML_HIDDEN:
                lowered = lowered or markup.lower()
                closing = lowered.find("</" + name, position)
                if closing >= 0:
                    position = closing
                elif name in ("script", "style"):
                    position = len(markup)
    return "".join(chunks)


def transfer_decode(data: bytes, encoding: str) -> bytes | None:
    """The bytes a Content-Transfer-Encoding stands for, or C{None} if it can't be undone."""
    if encoding == "base64":
        try:
            return binascii.a2b_base64(data)
        except (binascii.Error, ValueError):
            clean = data.translate(None, _NOT_BASE64)
            clean = clean[:-1] if len(clean) % 4 == 1 else clean + b"=" * (-len(clean) % 4)
            try:
                return binascii.a2b_base64(clean)
            except (binascii.Error, ValueError):
                return None
    if encoding == "quoted-printable":
        return binascii.a2b_qp(data)
    if encoding in ("", "7bit", "8bit", "binary"):
        return data
    return None


def decode_text(data: bytes, charset: str) -> str:
    """
    Text in its declared charset; unknown charsets read as UTF-8 with replacements. Never
    a lone surrogate (C{unicode_escape} or C{utf-7} can make one), which no UTF-8 encoder,
    JSON writer or database takes: each becomes U+FFFD.
    """
    charset = charset.strip().lower()
    if charset and charset not in _ASCII_NAMES:
        try:
            codec = codecs.lookup(charset[:40]).name
        except (LookupError, ValueError):  # unknown, or a NUL in the name
            codec = "utf-8"
        try:
            if codec not in _SLOW_CODECS:
                return _SURROGATE.sub("\ufffd", data.decode(codec, "replace"))
        except Exception:  # a bytes-to-bytes codec, or one without "replace"
            pass
        return data.decode("utf-8", "replace")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("cp1252", "replace")




def header_text(value: str) -> str:
    """A header value as read from bytes (surrogate-escaped), as real text."""
    if value.isascii():
        return value
    data = value.encode("utf-8", "surrogateescape")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("cp1252", "replace")


def unfold(value: str) -> str:
    return _LINE_BREAK.sub(" ", value)


def decode_words(value: str) -> str:
    """RFC 2047 encoded words decoded; adjacent words in one charset are joined first."""
    if "=?" not in value:
        return value
    out: list[str] = []
    pending, pending_charset, started, position = b"", "", False, 0
    for match in _ENCODED_WORD.finditer(value):
        if match[2] in "bB":
            encoded = match[3].encode("utf-8")
            word = (None if encoded.rstrip(b"=").translate(None, _BASE64)
                    else transfer_decode(encoded, "base64"))
        else:
            word = binascii.a2b_qp(match[3].encode("utf-8"), header=True)
        if word is None:
            continue
        gap = value[position:match.start()]
        charset = match[1].split("*", 1)[0]
        if not started or gap.strip() or charset.lower() != pending_charset.lower():
            out.append(decode_text(pending, pending_charset))
            pending = b""
            if not started or gap.strip():
                out.append(gap)
        pending += word
        pending_charset, started, position = charset, True, match.end()
    out.append(decode_text(pending, pending_charset))
    out.append(value[position:])
    return "".join(out)
