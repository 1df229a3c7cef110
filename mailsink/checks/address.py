"""
A mailbox list (the C{From} header) read as strictly as RFC 5322 writes it, to say whether
a real server will take it: each mailbox an addr-spec, or a display name and an addr-spec in
angle brackets; comments allowed, groups not. UTF-8 counts as text (RFC 6532): whether raw
8-bit bytes may be there at all is another rule's question.
"""

from __future__ import annotations

import re

import attrs

_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~\x80-\U0010ffff-]"
_DOT_ATOM = rf"{_ATEXT}+(?:\.{_ATEXT}+)*"
_QUOTED = r'"(?:[^"\\]|\\.)*"'
_ADDR_SPEC = re.compile(rf"(?:{_DOT_ATOM}|{_QUOTED})@(?:{_DOT_ATOM}|\[[^\[\]\\]*\])")
_PHRASE = re.compile(rf"(?:{_ATEXT}|[.\s]|{_QUOTED})*")
"""A display name: words and quoted strings, and the dots RFC 5322's obs-phrase allows."""
_NAME_ADDR = re.compile(r"(?P<name>[^<]*)<(?P<address>[^<>]*)>\s*")
_MAX_LENGTH = 8192
"""Longer values are not read (no real From header is near this)."""


@attrs.frozen
class Mailboxes:
    """The addresses of a mailbox list, or what is wrong with it."""

    addresses: tuple[str, ...] = ()
    problem: str | None = None


def mailboxes(value: str) -> Mailboxes:
    """The addr-specs in C{value} (an unfolded header value), or the first problem."""
    if len(value) > _MAX_LENGTH:
        return Mailboxes(problem=f"it is {len(value):,} characters long")
    items = _items(value)
    if items is None:
        return Mailboxes(problem="a quote, parenthesis or angle bracket is not closed")
    addresses = []
    for item in items:
        found = _NAME_ADDR.fullmatch(item)
        if found is None:
            if not _ADDR_SPEC.fullmatch(item):
                return Mailboxes(problem=_why(item))
            addresses.append(item)
            continue
        address = found["address"].strip()
        if not _ADDR_SPEC.fullmatch(address):
            return Mailboxes(problem=_why(address))
        if not _PHRASE.fullmatch(found["name"]):
            return Mailboxes(problem=f"the name {found['name'].strip()!r} holds one of "
                                     f"@ , : ; < > [ ] without quotes")
        addresses.append(address)
    if not addresses:
        return Mailboxes(problem="it names no address")
    return Mailboxes(addresses=tuple(addresses))


def domain(address: str) -> str:
    """The part after the last C{@}, lower case."""
    return address.rpartition("@")[2].lower().strip("[]")


def _why(text: str) -> str:
    if ">" in text:
        return f"{text.strip()!r} has text after its closing >"
    if "@" not in text:
        return f"{text.strip()!r} has no @domain"
    return f"{text.strip()!r} is not local-part@domain"


def _items(value: str) -> list[str] | None:
    """The comma-separated items with comments removed; None if something is not closed."""
    items: list[str] = []
    current: list[str] = []
    depth = 0
    quoted = angle = escaped = False
    for char in value:
        if escaped or (char == "\\" and (quoted or depth)):
            escaped = not escaped
        elif depth:
            depth += {"(": 1, ")": -1}.get(char, 0)
            continue
        elif quoted:
            quoted = char != '"'
        elif char == "(":
            depth = 1
            continue
        elif char == '"':
            quoted = True
        elif char in "<>":
            if angle == (char == "<"):
                return None
            angle = char == "<"
        elif char == "," and not angle:
            items.append("".join(current).strip())
            current = []
            continue
        if not depth:
            current.append(char)
    if quoted or depth or angle or escaped:
        return None
    items.append("".join(current).strip())
    return [item for item in items if item]
