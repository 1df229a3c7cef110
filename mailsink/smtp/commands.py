"""
Parsing the arguments of MAIL FROM and RCPT TO (RFC 5321 section 4.1.2), as pure functions.

Twisted's parser only knows ASCII atoms, so SMTPUTF8 addresses would be refused; this
one accepts UTF-8 local parts and domains and leaves judging addresses to the avatar.
"""

from __future__ import annotations

import re

import attrs


class Reply(Exception):
    """An SMTP reply to send instead of going on: C{code} and text with enhanced code."""

    def __init__(self, code: int, text: str) -> None:
        super().__init__(f"{code} {text}")
        self.code = code
        self.text = text


@attrs.frozen
class PathArgument:
    """The address of a MAIL or RCPT command and its ESMTP parameters (keys upper-case)."""

    address: str
    parameters: dict[str, str | None]


# A path is <...> with quoted strings allowed inside, or (leniently) a bare address.
_PATH = re.compile(rb'\s*<((?:"(?:[^"\\]|\\.)*"|[^<>"])*)>|\s*([^\s<>]+)')
_PARAMETER = re.compile(rb"([A-Za-z0-9][A-Za-z0-9-]*)(?:=([\x21-\x3c\x3e-\x7e\x80-\xff]+))?")
_SOURCE_ROUTE = re.compile(r"@[^:,]*(?:,@[^:,]*)*:")


def parse_path(rest: bytes, keyword: bytes) -> PathArgument:
    """Parse C{FROM:<a@b> SIZE=10} (keyword C{FROM}) or C{TO:<c@d>} (keyword C{TO})."""
    prefix = rest[: len(keyword) + 1]
    if prefix.upper() != keyword + b":":
        raise Reply(501, f"5.5.4 Syntax: {_command(keyword)} {keyword.decode()}:<address>")
    match = _PATH.match(rest, len(prefix))
    if match is None:
        raise Reply(501, f"5.1.7 Bad address syntax; write {keyword.decode()}:<user@example.com>")
    raw = match.group(1) if match.group(1) is not None else match.group(2)
    try:
        address = raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise Reply(553, "5.6.7 Address is not valid UTF-8") from None
    address = _SOURCE_ROUTE.sub("", address, count=1)
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in address):
        raise Reply(553, "5.1.7 Address contains control characters")
    return PathArgument(address, _parameters(rest[match.end():]))


def _parameters(text: bytes) -> dict[str, str | None]:
    parameters: dict[str, str | None] = {}
    for word in text.split():
        match = _PARAMETER.fullmatch(word)
        if match is None:
            raise Reply(501, "5.5.4 Bad ESMTP parameter syntax: "
                        + word.decode("utf-8", "replace"))
        value = match.group(2)
        parameters[match.group(1).decode("ascii").upper()] = (
            value.decode("utf-8", "replace") if value is not None else None
        )
    return parameters


def _command(keyword: bytes) -> str:
    return "MAIL" if keyword == b"FROM" else "RCPT"
