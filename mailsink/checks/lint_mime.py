"""
Lint rules over the MIME structure: multiparts with a boundary that is found and closed,
text in a charset that exists and fits it, base64 that decodes, transfer encodings that
exist, and attachments with a file name whose extension agrees with their type.
"""

from __future__ import annotations

import codecs
import os
from collections.abc import Iterator

from mailsink.checks.findings import Finding, Severity, shown
from mailsink.checks.source import Source
from mailsink.checks.structure import BODY, Delimiters, Entity, entities, leaves, place
from mailsink.message.mime_text import header_text, transfer_decode

_ENCODINGS = frozenset({"7bit", "8bit", "binary", "quoted-printable", "base64"})
_WHITE_SPACE = b" \t\r\n"
_BASE64 = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_SLOW_CODECS = frozenset({"punycode", "idna"})
_GENERIC = "application/octet-stream"
_TYPES: dict[str, tuple[str, ...]] = {
    "pdf": ("application/pdf",),
    "jpg": ("image/jpeg", "image/pjpeg"),
    "jpeg": ("image/jpeg", "image/pjpeg"),
    "png": ("image/png",),
    "gif": ("image/gif",),
    "webp": ("image/webp",),
    "svg": ("image/svg+xml",),
    "txt": ("text/plain",),
    "csv": ("text/csv", "text/comma-separated-values", "application/vnd.ms-excel",
            "text/plain"),
    "htm": ("text/html",),
    "html": ("text/html",),
    "ics": ("text/calendar", "application/ics"),
    "json": ("application/json",),
    "xml": ("application/xml", "text/xml"),
    "zip": ("application/zip", "application/x-zip-compressed"),
    "gz": ("application/gzip", "application/x-gzip"),
    "doc": ("application/msword",),
    "docx": ("application/vnd.openxmlformats-officedocument.wordprocessingml.document",),
    "xls": ("application/vnd.ms-excel",),
    "xlsx": ("application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",),
    "ppt": ("application/vnd.ms-powerpoint",),
    "pptx": ("application/vnd.openxmlformats-officedocument.presentationml.presentation",),
    "mp3": ("audio/mpeg",),
    "mp4": ("video/mp4",),
    "eml": ("message/rfc822",),
}
"""Common extensions and the Content-Types clients accept for them."""


def multipart_without_boundary(source: Source) -> Iterator[Finding]:
    for entity in entities(source.root):
        if entity.delimiters is not None and not entity.boundary:
            field, where = place(entity, None)
            yield Finding("multipart-without-boundary", Severity.ERROR, field,
                          f"{where} is {entity.content_type} without a boundary parameter: "
                          f"clients cannot find its parts and show it as raw text; let your "
                          f"mail library build the multipart", "RFC 2046 5.1.1")


def boundary_not_found(source: Source) -> Iterator[Finding]:
    for entity in _multiparts(source, Delimiters.MISSING):
        field, where = place(entity, None)
        yield Finding("boundary-not-found", Severity.ERROR, field,
                      f"{where} is {entity.content_type} but its boundary "
                      f"{_boundary(entity)} never starts a line: clients show no parts; "
                      f"start each part with a line --boundary", "RFC 2046 5.1.1")


def boundary_not_closed(source: Source) -> Iterator[Finding]:
    for entity in _multiparts(source, Delimiters.UNCLOSED):
        field, where = place(entity, None)
        yield Finding("boundary-not-closed", Severity.WARNING, field,
                      f"{where} never closes its boundary {_boundary(entity)}: the message "
                      f"looks cut short and clients may drop or misread its last part; end "
                      f"the multipart with a line --boundary--", "RFC 2046 5.1.1")


def _multiparts(source: Source, delimiters: Delimiters) -> Iterator[Entity]:
    return (entity for entity in entities(source.root) if entity.delimiters is delimiters)


def _boundary(entity: Entity) -> str:
    return shown(header_text(entity.boundary.decode("utf-8", "surrogateescape")))


def unknown_transfer_encoding(source: Source) -> Iterator[Finding]:
    for leaf in leaves(source.root):
        if leaf.encoding and leaf.encoding not in _ENCODINGS:
            field, where = place(leaf, None)
            yield Finding("unknown-transfer-encoding", Severity.ERROR, field,
                          f"{where} has Content-Transfer-Encoding {shown(leaf.encoding)}, "
                          f"which is not 7bit, 8bit, binary, quoted-printable or base64: "
                          f"clients cannot decode it; use one of those (a charset belongs in "
                          f"Content-Type)", "RFC 2045 6.1")


def charsets(source: Source) -> Iterator[Finding]:
    for leaf in leaves(source.root):
        if leaf.content_type.startswith("text/"):
            finding = _charset_finding(source.data, leaf)
            if finding is not None:
                yield finding


def _charset_finding(data: bytes, leaf: Entity) -> Finding | None:
    field, where = place(leaf, None)
    text = transfer_decode(data[leaf.body_start:leaf.end], leaf.encoding)
    if not leaf.charset:
        if text is None or text.isascii():
            return None
        return Finding("undeclared-charset", Severity.WARNING, field,
                       f"{where} is text with 8-bit bytes but no charset: clients guess it, "
                       f"often wrongly; add charset=utf-8 (or the charset it is in) to its "
                       f"Content-Type", "RFC 2046 4.1.2")
    try:
        codec = codecs.lookup(leaf.charset[:40]).name
        if text is not None and codec not in _SLOW_CODECS:
            text.decode(codec)
    except UnicodeDecodeError as error:
        byte = error.object[error.start]
        return Finding("undecodable-text", Severity.WARNING, field,
                       f"{where} is not valid {leaf.charset} (byte 0x{byte:02x} at "
                       f"{error.start:,}): clients show replacement characters; declare the "
                       f"charset the text is in, or convert it to {leaf.charset}",
                       "RFC 2046 4.1.2")
    except (LookupError, ValueError):  # unknown, a NUL in the name, or not a text codec
        return Finding("unknown-charset", Severity.WARNING, field,
                       f"{where} declares charset {shown(leaf.charset)}, which Python and "
                       f"many clients do not know: they show wrong characters; declare "
                       f"utf-8 and encode the text in it", "RFC 2046 4.1.2; RFC 2978")
    return None


def invalid_base64(source: Source) -> Iterator[Finding]:
    for leaf in leaves(source.root):
        if leaf.encoding != "base64":
            continue
        problem = base64_problem(source.data[leaf.body_start:leaf.end])
        if problem is not None:
            field, where = place(leaf, None)
            yield Finding("invalid-base64", Severity.ERROR, field,
                          f"{where} is not valid base64 ({problem}): clients show it damaged "
                          f"or not at all; encode it with a base64 library", "RFC 2045 6.8")


def base64_problem(encoded: bytes) -> str | None:
    """
    Why C{encoded} (line breaks allowed) does not decode as base64, or None. Two
    C{translate} passes instead of decoding, which costs several times more.
    """
    encoded = encoded.translate(None, _WHITE_SPACE)
    rest = encoded.translate(None, _BASE64)
    if rest.strip(b"="):
        return f"it holds {shown(chr(rest.strip(b'=')[0]))}, which is not a base64 character"
    if len(rest) > 2 or not encoded.endswith(rest):
        return "'=' padding in the middle or more than two of them"
    if len(encoded) % 4:
        return f"{len(encoded) % 4} characters left over: a group of 4 is cut short"
    return None


def attachment_without_filename(source: Source) -> Iterator[Finding]:
    for leaf in leaves(source.root):
        if leaf.filename or not _is_attachment(leaf):
            continue
        field, where = place(leaf, None)
        yield Finding("attachment-without-filename", Severity.WARNING, field,
                      f"{where} is an attachment without a file name: Gmail shows it as "
                      f"'noname' and Outlook as 'ATT00001.bin'; give it a filename in "
                      f"Content-Disposition", "RFC 2183 2.3")


def _is_attachment(leaf: Entity) -> bool:
    """
    An attachment as the web view lists it (L{mailsink.message.mime}), forwarded messages
    aside.
    """
    if leaf.disposition == "attachment":
        return True
    return not (leaf.content_id or leaf.content_type.startswith(("text/", "message/"))
                or leaf.field == BODY)


def content_types(source: Source) -> Iterator[Finding]:
    for leaf in leaves(source.root):
        extension = os.path.splitext(leaf.filename)[1][1:].lower()
        expected = _TYPES.get(extension)
        if not expected or leaf.content_type in expected:
            continue
        field, where = place(leaf, None)
        name = shown(leaf.filename)
        if leaf.content_type == _GENERIC:
            yield Finding("generic-content-type", Severity.INFO, field,
                          f"{where} is named {name} but declared {_GENERIC}: some clients "
                          f"will not preview it or pick the program to open it; declare "
                          f"{expected[0]}", "RFC 2046 4.5.1")
        else:
            yield Finding("content-type-mismatch", Severity.WARNING, field,
                          f"{where} is named {name} but declared {leaf.content_type}: "
                          f"clients open it with the wrong program or not at all, and "
                          f"filters distrust the mismatch; declare {expected[0]}",
                          "RFC 2046; RFC 2183 2.3")


RULES = (multipart_without_boundary, boundary_not_found, boundary_not_closed,
         unknown_transfer_encoding, charsets, invalid_base64, attachment_without_filename,
         content_types)
