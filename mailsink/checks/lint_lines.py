"""
Lint rules over the raw lines: none over 998 octets, no CR or LF alone, and 8-bit bytes only
where a transfer encoding (body) or SMTPUTF8 (headers) allows them.

Each finding names the header or part the bytes are in. The bytes are searched with C{bytes}
methods that run in C, and only the places of the first L{source.MAX_PLACES} occurrences
are looked up, so a 25 MB message of short lines or one 5 MB line costs a few passes over
its bytes.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from mailsink.checks.findings import Finding, Severity
from mailsink.checks.source import MAX_PLACES, Source
from mailsink.checks.structure import entities, leaves, locate, place

MAX_LINE = 998
"""RFC 5322 section 2.1.1 and RFC 5321 section 4.5.3.1.6: octets before CRLF."""
_WINDOW = (MAX_LINE + 1) // 2
_SMUGGLING = "RFC 5322 2.3; RFC 5321 2.3.8"


def long_lines(source: Source) -> Iterator[Finding]:
    lines: dict[tuple[str, str, bool], list[int]] = {}
    for offset, length in _long_lines(source.data):
        entity, header = locate(source.root, offset)
        lines.setdefault((*place(entity, header), header is not None), []).append(length)
    for (field, where, in_header), lengths in lines.items():
        count = "a line" if len(lengths) == 1 else f"{len(lengths):,} lines"
        fix = ("fold it, or encode it as RFC 2047 encoded words (quoted-printable or "
               "base64), as mail libraries do" if in_header else
               "send it as quoted-printable or base64 (with lines of 76 characters)")
        yield Finding("line-too-long", Severity.ERROR, field,
                      f"{where} has {count} over 998 octets (the longest {max(lengths):,}): "
                      f"Postfix splits lines at 2048 octets and some servers refuse them "
                      f"(500 5.5.2); {fix}", "RFC 5322 2.1.1; RFC 5321 4.5.3.1.6")


def _long_lines(data: bytes) -> list[tuple[int, int]]:
    """
    (offset, length) of the first lines over L{MAX_LINE} octets. Such a line holds one of
    any run of back-to-back windows of L{_WINDOW} octets whole, so only windows without an
    LF are looked at more closely: a few C{find} calls per kilobyte.
    """
    found: list[tuple[int, int]] = []
    position = 0
    while position < len(data) and len(found) < MAX_PLACES:
        if data.find(b"\n", position, position + _WINDOW) >= 0:
            position += _WINDOW
            continue
        start = data.rfind(b"\n", 0, position) + 1
        end = data.find(b"\n", position)
        end = len(data) if end < 0 else end
        if end - start > MAX_LINE:
            found.append((start, end - start))
        position = end + 1
    return found


def bare_cr(source: Source) -> Iterator[Finding]:
    for field, where in _places(source, _offsets(source.data, b"\r")):
        yield Finding("bare-cr", Severity.ERROR, field,
                      f"{where} holds a CR without LF (bare CR): servers hardened against "
                      f"SMTP smuggling, such as sendmail 8.18, refuse it and others turn it "
                      f"into a line break; end every line with CRLF, or send the part as "
                      f"quoted-printable or base64", _SMUGGLING)


def bare_lf(source: Source) -> Iterator[Finding]:
    for field, where in _places(source, source.bare_lfs):
        yield Finding("bare-lf", Severity.ERROR, field,
                      f"{where} holds an LF without CR (bare LF): Postfix 3.9 "
                      f"(smtpd_forbid_bare_newline) and sendmail 8.18 refuse it or rewrite "
                      f"it; end every line with CRLF", _SMUGGLING)


def _offsets(data: bytes, byte: bytes) -> list[int]:
    """Where C{byte} occurs in C{data}: the first L{MAX_PLACES} offsets."""
    found: list[int] = []
    position = data.find(byte)
    while position >= 0 and len(found) < MAX_PLACES:
        found.append(position)
        position = data.find(byte, position + 1)
    return found


def _places(source: Source, offsets: Iterable[int]) -> dict[tuple[str, str], None]:
    """The distinct (field, sentence name) places of C{offsets}, in order."""
    return {place(*locate(source.root, offset)): None for offset in offsets}


def unencoded_8bit_body(source: Source) -> Iterator[Finding]:
    for leaf in leaves(source.root):
        if leaf.encoding in ("8bit", "binary", "base64"):  # bad base64: invalid-base64
            continue
        if source.data[leaf.body_start:leaf.end].isascii():
            continue
        field, where = place(leaf, None)
        if leaf.encoding == "quoted-printable":
            problem = "but it is quoted-printable, which has none"
            fix = "encode them as =XX, as a quoted-printable encoder does"
        else:
            declared = leaf.encoding or "missing, so 7bit"
            problem = f"but its Content-Transfer-Encoding is {declared}"
            fix = "declare 8bit, or send the part as quoted-printable or base64"
        yield Finding("unencoded-8bit-body", Severity.ERROR, field,
                      f"{where} holds 8-bit bytes {problem}: servers without 8BITMIME and "
                      f"content filters mangle them; {fix}", "RFC 2045 2.7, 6.1; RFC 6152")


def unencoded_8bit_header(source: Source) -> Iterator[Finding]:
    envelope = source.envelope
    if envelope is not None and envelope.smtputf8:
        return
    how = ("and the message was not sent with SMTPUTF8" if envelope is not None
           else "and only a server told SMTPUTF8 takes them")
    for entity in entities(source.root):
        for header in entity.fields:
            if source.data[header.start:header.end].isascii():
                continue
            field, where = place(entity, header)
            yield Finding("unencoded-8bit-header", Severity.ERROR, field,
                          f"{where} holds 8-bit bytes that are not RFC 2047 encoded, {how}: "
                          f"servers refuse or mangle it and clients show mojibake; let your "
                          f"mail library encode it (=?utf-8?...?=), or send with SMTPUTF8",
                          "RFC 2047; RFC 6532")


RULES = (long_lines, bare_cr, bare_lf, unencoded_8bit_body, unencoded_8bit_header)
