"""
Values in IMAP's response syntax (RFC 3501 §4): strings as quoted strings when they can be
and as literals when not (eight-bit text, line ends, long ones), C{NIL}, numbers, lists.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

MAX_QUOTED = 1000
"""Longest string sent quoted; longer ones go as literals."""

_QUOTABLE = re.compile(rb"[\x01-\x09\x0b\x0c\x0e-\x7f]*")
_ATOM = re.compile(rb'[^\x00-\x20\x7f-\xff(){%*"\\\]]+')


def nstring(value: bytes | None) -> bytes:
    """C{NIL} for C{None}, else L{string}."""
    return b"NIL" if value is None else string(value)


def string(value: bytes) -> bytes:
    """A quoted string, or a literal for what a quoted string cannot carry (NUL dropped)."""
    if len(value) <= MAX_QUOTED and _QUOTABLE.fullmatch(value):
        return b'"' + value.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'
    value = value.replace(b"\0", b"")
    return b"{%d}\r\n%b" % (len(value), value)


def astring(value: bytes) -> bytes:
    """An atom when the value is one (a header field name), else a L{string}."""
    return value if _ATOM.fullmatch(value) else string(value)


def number(value: int) -> bytes:
    """A number, in decimal."""
    return b"%d" % (value,)


def parenthesized(items: Iterable[bytes]) -> bytes:
    """C{(a b c)}."""
    return b"(" + b" ".join(items) + b")"


def parenthesized_or_nil(items: Iterable[bytes]) -> bytes:
    """C{(a b c)}, or C{NIL} for none."""
    listed = list(items)
    return parenthesized(listed) if listed else b"NIL"
