"""
A strict reader of IMAP FETCH responses (RFC 3501 §9 syntax) for tests: it raises on what
a client's parser would choke on, and checks that ENVELOPE, BODY and BODYSTRUCTURE have
the shapes RFC 3501 §7.4.2 gives them.
"""

from __future__ import annotations

import re
from typing import Any

_PREFIX = re.compile(rb"(?:\* )?(\d+) (?:FETCH )?\(")
_ATOM = re.compile(rb'\\?[^\x00-\x20\x7f-\xff(){%*"\\\]]+')
_SECTION_NAME = re.compile(rb"BODY\[[^\]]*\](?:<\d+>)?")
_NUMBER = re.compile(rb"\d+")


class SyntaxProblem(AssertionError):
    """The response is not what RFC 3501's grammar allows."""


def from_imaplib(data: list[Any]) -> bytes:
    """The untagged FETCH responses imaplib gave, put back together as bytes."""
    out = []
    for item in data:
        if isinstance(item, tuple):
            out.append(item[0] + b"\r\n" + item[1])
        elif item is not None:
            out.append(item + b"\r\n")
    return b"".join(out)


def fetch_responses(raw: bytes) -> dict[int, dict[bytes, Any]]:
    """C{* n FETCH (...)} lines (or imaplib's C{n (...)}) of a reply, by sequence number:
    item name -> value (strings as bytes, C{NIL} as C{None}, numbers as int, lists)."""
    found: dict[int, dict[bytes, Any]] = {}
    position = 0
    while position < len(raw):
        match = _PREFIX.match(raw, position)
        if match is None:  # another response line (a tagged OK, EXISTS ...)
            end = raw.find(b"\r\n", position)
            if end < 0:
                break
            position = end + 2
            continue
        reader = _Reader(raw, match.end() - 1)
        items = reader.list(names=True)
        if raw[reader.position:reader.position + 2] != b"\r\n":
            raise SyntaxProblem(f"no CRLF after a FETCH response at {reader.position}")
        position = reader.position + 2
        if len(items) % 2:
            raise SyntaxProblem(f"odd number of FETCH items: {items!r}")
        found[int(match[1])] = dict(zip(items[::2], items[1::2], strict=True))
    return found


class _Reader:
    def __init__(self, data: bytes, position: int) -> None:
        self.data = data
        self.position = position

    def list(self, names: bool = False) -> list[Any]:
        self._expect(b"(")
        items: list[Any] = []
        while True:
            if self._peek() == b")":
                self.position += 1
                return items
            if items and self._peek() == b" ":
                self.position += 1
            elif items and not (isinstance(items[-1], list) and self._peek() == b"("):
                raise SyntaxProblem(f"no space between items at {self.position}")
            items.append(self.value(name=names and len(items) % 2 == 0))

    def value(self, name: bool = False) -> Any:
        head = self._peek()
        if head == b"(":
            return self.list()
        if head == b'"':
            return self._quoted()
        if head == b"{":
            return self._literal()
        if name:
            match = _SECTION_NAME.match(self.data, self.position) or \
                _ATOM.match(self.data, self.position)
        else:
            match = _ATOM.match(self.data, self.position)
        if match is None:
            raise SyntaxProblem(f"unexpected {self.data[self.position:self.position + 20]!r}")
        self.position = match.end()
        if match[0] == b"NIL":
            return None
        return int(match[0]) if _NUMBER.fullmatch(match[0]) else match[0]

    def _quoted(self) -> bytes:
        self.position += 1
        out = bytearray()
        while True:
            char = self.data[self.position:self.position + 1]
            if not char or char in b"\r\n" or char[0] > 0x7F or char == b"\0":
                raise SyntaxProblem(f"bad character {char!r} in a quoted string")
            self.position += 1
            if char == b'"':
                return bytes(out)
            if char == b"\\":
                char = self.data[self.position:self.position + 1]
                if char not in (b'"', b"\\"):
                    raise SyntaxProblem(f"bad escape {char!r}")
                self.position += 1
            out += char

    def _literal(self) -> bytes:
        end = self.data.index(b"}\r\n", self.position)
        size = int(self.data[self.position + 1:end])
        start = end + 3
        self.position = start + size
        if len(self.data) < self.position:
            raise SyntaxProblem("literal runs past the end")
        content = self.data[start:self.position]
        if b"\0" in content:
            raise SyntaxProblem("NUL in a literal")
        return content

    def _peek(self) -> bytes:
        return self.data[self.position:self.position + 1]

    def _expect(self, char: bytes) -> None:
        if self._peek() != char:
            raise SyntaxProblem(f"expected {char!r} at {self.position}: "
                                f"{self.data[self.position:self.position + 30]!r}")
        self.position += 1


def check_envelope(envelope: Any) -> None:
    """An ENVELOPE: ten fields, strings or NIL, address lists of (name route mailbox host)."""
    _require(isinstance(envelope, list) and len(envelope) == 10, f"envelope {envelope!r}")
    for index in (0, 1, 8, 9):
        _nstring(envelope[index])
    for index in range(2, 8):
        addresses = envelope[index]
        if addresses is None:
            continue
        _require(isinstance(addresses, list) and addresses, f"addresses {addresses!r}")
        for address in addresses:
            _require(isinstance(address, list) and len(address) == 4, f"address {address!r}")
            for part in address:
                _nstring(part)


def check_body(body: Any, extended: bool) -> None:
    """A BODY (or, C{extended}, BODYSTRUCTURE) of RFC 3501 §7.4.2's shape, all the way down."""
    _require(isinstance(body, list) and body, f"body {body!r}")
    if isinstance(body[0], list):
        parts = [item for item in body if isinstance(item, list)]
        count = 0
        while count < len(body) and isinstance(body[count], list):
            check_body(body[count], extended)
            count += 1
        rest = body[count:]
        _require(parts and rest and isinstance(rest[0], bytes), f"multipart {body!r}")
        if extended:
            _require(len(rest) == 5, f"multipart extension {rest!r}")
            _parameters(rest[1])
            _disposition(rest[2])
        else:
            _require(len(rest) == 1, f"BODY multipart {rest!r}")
        return
    _require(len(body) >= 7, f"basic body {body!r}")
    kind, subtype, parameters, content_id, description, encoding, size = body[:7]
    _require(isinstance(kind, bytes) and isinstance(subtype, bytes), f"type {body!r}")
    _parameters(parameters)
    _nstring(content_id)
    _nstring(description)
    _require(isinstance(encoding, bytes), f"encoding {encoding!r}")
    _require(isinstance(size, int), f"size {size!r}")
    rest = body[7:]
    if (kind.lower(), subtype.lower()) == (b"message", b"rfc822"):
        _require(len(rest) >= 3, f"message/rfc822 {body!r}")
        check_envelope(rest[0])
        check_body(rest[1], extended)
        _require(isinstance(rest[2], int), f"lines {rest[2]!r}")
        rest = rest[3:]
    elif kind.lower() == b"text":
        _require(rest and isinstance(rest[0], int), f"text lines {body!r}")
        rest = rest[1:]
    if extended:
        _require(len(rest) == 4, f"extension {rest!r}")
        _nstring(rest[0])
        _disposition(rest[1])
    else:
        _require(not rest, f"BODY with extension data {rest!r}")


def _parameters(value: Any) -> None:
    if value is None:
        return
    _require(isinstance(value, list) and value and len(value) % 2 == 0
             and all(isinstance(item, bytes) for item in value), f"parameters {value!r}")


def _disposition(value: Any) -> None:
    if value is None:
        return
    _require(isinstance(value, list) and len(value) == 2 and isinstance(value[0], bytes),
             f"disposition {value!r}")
    _parameters(value[1])


def _nstring(value: Any) -> None:
    _require(value is None or isinstance(value, bytes), f"nstring {value!r}")


def _require(condition: Any, what: str) -> None:
    if not condition:
        raise SyntaxProblem(what)
