"""
A small CSS reader for the HTML check: what a style sheet or a C{style} attribute uses, not
what it means.

It tokenizes after CSS Syntax Level 3 (comments, strings, C{url()}, numbers with their
units, identifiers, functions, at-keywords) closely enough that a property name, a unit or
a pseudo-class is never found inside a string, a comment or a URL, and it groups the tokens
into declarations, rules and at-rules. It never raises: unclosed strings, comments and
blocks end where the text ends, as browsers read them. No selector is matched against the
document: the check counts what the CSS uses, not which elements it reaches.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterator, Sequence
from typing import NamedTuple

import attrs


class Kind(enum.Enum):
    """What a token is."""

    IDENT = enum.auto()
    FUNCTION = enum.auto()
    """A name directly followed by C{(}; the C{(} is part of the token."""
    AT_KEYWORD = enum.auto()
    HASH = enum.auto()
    STRING = enum.auto()
    URL = enum.auto()
    NUMBER = enum.auto()
    PERCENTAGE = enum.auto()
    DIMENSION = enum.auto()
    WHITESPACE = enum.auto()
    DELIM = enum.auto()
    """One character: C{: ; , ! { } ( ) [ ]} and any other."""


class Token(NamedTuple):
    """One token (a tuple: a style sheet has many)."""

    kind: Kind
    text: str
    """The name (lower case) of an identifier, function, at-keyword or hash; the unit (lower
    case) of a dimension; the character of a delimiter; else the source text."""


_ESCAPE = r"\\(?:[0-9a-fA-F]{1,6}\s?|[^\n0-9a-fA-F])"
_NAME_CHAR = rf"(?:[A-Za-z0-9_\-\u0080-\U0010ffff]|{_ESCAPE})"
_NAME_START = rf"(?:[A-Za-z_\u0080-\U0010ffff]|{_ESCAPE})"
_IDENT = rf"(?:--{_NAME_CHAR}*|-?{_NAME_START}{_NAME_CHAR}*)"
_NUMBER = r"[+-]?(?:\d+(?:\.\d+)?|\.\d+)(?:[eE][+-]?\d+)?"
_TOKEN = re.compile(rf"""
    (?P<comment>/\*.*?(?:\*/|\Z))
  | (?P<space>\s+|<!--|-->)
  | (?P<string>"(?:[^"\\\n]|\\.|\\\n)*(?:"|(?=\n)|\Z)|'(?:[^'\\\n]|\\.|\\\n)*(?:'|(?=\n)|\Z))
  | (?P<url>url\(\s*(?!["'])(?:[^)\\]|\\.)*(?:\)|\Z))
  | (?P<number>{_NUMBER})(?:(?P<percent>%)|(?P<unit>{_IDENT}))?
  | (?P<at>@{_IDENT})
  | (?P<hash>\#{_NAME_CHAR}+)
  | (?P<ident>{_IDENT})(?P<call>\()?
  | (?P<delim>.)
""", re.VERBOSE | re.DOTALL | re.IGNORECASE)


def tokens(text: str) -> Iterator[Token]:
    """The tokens of C{text}, comments left out, linear in its length."""
    for match in _TOKEN.finditer(text):
        group = match.lastgroup
        if group == "comment":
            continue
        if group == "space":
            yield Token(Kind.WHITESPACE, " ")
        elif group == "string":
            yield Token(Kind.STRING, match[0])
        elif group == "url":
            yield Token(Kind.URL, match[0])
        elif match["number"] is not None:
            if match["percent"]:
                yield Token(Kind.PERCENTAGE, match[0])
            elif match["unit"]:
                yield Token(Kind.DIMENSION, _name(match["unit"]))
            else:
                yield Token(Kind.NUMBER, match[0])
        elif group == "at":
            yield Token(Kind.AT_KEYWORD, _name(match[0][1:]))
        elif group == "hash":
            yield Token(Kind.HASH, _name(match[0][1:]))
        elif match["ident"] is not None:
            kind = Kind.FUNCTION if match["call"] else Kind.IDENT
            yield Token(kind, _name(match["ident"]))
        else:
            yield Token(Kind.DELIM, match[0])


def _name(text: str) -> str:
    """An identifier as CSS compares it: ASCII case-blind, escapes resolved."""
    if "\\" in text:
        text = re.sub(_ESCAPE, _unescape, text)
    return text.lower()


def _unescape(match: re.Match[str]) -> str:
    code = match[0][1:].strip()
    if len(code) == 1 and not code.isalnum():
        return code
    try:
        return chr(int(code, 16)) if code else ""
    except (ValueError, OverflowError):
        return code


@attrs.frozen
class Declaration:
    """C{name: value [!important]}."""

    name: str
    """Lower case; a custom property keeps its C{--}."""
    value: tuple[Token, ...]
    """Without surrounding whitespace and without C{!important}."""
    important: bool

    def functions(self) -> set[str]:
        return {token.text for token in self.value if token.kind is Kind.FUNCTION}

    def keywords(self) -> set[str]:
        return {token.text for token in self.value if token.kind is Kind.IDENT}

    def units(self) -> set[str]:
        return {token.text for token in self.value if token.kind is Kind.DIMENSION}


@attrs.frozen
class AtRule:
    """C{@name prelude} with or without a block."""

    name: str
    prelude: tuple[Token, ...]


@attrs.frozen
class Rule:
    """A style rule: a selector list and its declarations."""

    selector: tuple[Token, ...]
    declarations: tuple[Declaration, ...]


@attrs.frozen
class StyleSheet:
    """What a style sheet holds, nested C{@media} and C{@supports} blocks flattened in."""

    rules: tuple[Rule, ...]
    at_rules: tuple[AtRule, ...]


_GROUPING = frozenset({"media", "supports", "document", "-moz-document", "layer",
                       "container", "scope", "starting-style"})
"""At-rules whose block holds rules: their rules count as the sheet's."""
_CLOSE = {"{": "}", "(": ")", "[": "]"}


def declarations(text: str) -> tuple[Declaration, ...]:
    """The declarations of a C{style} attribute."""
    return _declarations(list(tokens(text)))


def style_sheet(text: str) -> StyleSheet:
    """The rules and at-rules of a C{<style>} element's text."""
    rules: list[Rule] = []
    at_rules: list[AtRule] = []
    _read_rules(list(tokens(text)), rules, at_rules)
    return StyleSheet(tuple(rules), tuple(at_rules))


def _read_rules(items: Sequence[Token], rules: list[Rule], at_rules: list[AtRule]) -> None:
    position = 0
    while position < len(items):
        end = position
        while end < len(items) and not _is(items[end], "{;"):
            end = _skip(items, end)
        prelude = _strip(items[position:end])
        if end < len(items) and _is(items[end], "{"):
            close = _close(items, end)
            block: Sequence[Token] = items[end + 1:close]
            position = close + 1
        else:
            block, position = (), end + 1
        if prelude and prelude[0].kind is Kind.AT_KEYWORD:
            at_rules.append(AtRule(prelude[0].text, _strip(prelude[1:])))
            if prelude[0].text in _GROUPING:
                _read_rules(block, rules, at_rules)
        elif prelude and end < len(items) and _is(items[end], "{"):
            rules.append(Rule(prelude, _declarations(block)))


def _declarations(items: Sequence[Token]) -> tuple[Declaration, ...]:
    found: list[Declaration] = []
    position = 0
    while position < len(items):
        end = position
        while end < len(items) and not _is(items[end], ";"):
            end = _skip(items, end)
        declaration = _declaration(_strip(items[position:end]))
        if declaration is not None:
            found.append(declaration)
        position = end + 1
    return tuple(found)


def _declaration(items: Sequence[Token]) -> Declaration | None:
    if len(items) < 2 or items[0].kind is not Kind.IDENT:
        return None
    rest = _strip(items[1:])
    if not rest or not _is(rest[0], ":"):
        return None
    value = _strip(rest[1:])
    important = False
    if len(value) >= 2 and value[-1].kind is Kind.IDENT and value[-1].text == "important":
        before = _strip(value[:-1])
        if before and _is(before[-1], "!"):
            important, value = True, _strip(before[:-1])
    return Declaration(items[0].text, value, important)


def _is(token: Token, delimiters: str) -> bool:
    return token.kind is Kind.DELIM and token.text in delimiters


def _skip(items: Sequence[Token], position: int) -> int:
    """The position after the token at C{position} or, if it opens a block or a function,
    after the block's close."""
    token = items[position]
    if token.kind is Kind.FUNCTION or _is(token, "{(["):
        return _close(items, position) + 1
    return position + 1


def _close(items: Sequence[Token], position: int) -> int:
    """Where the block or function opened at C{position} closes (C{len(items)} if never)."""
    closing: list[str] = []
    while position < len(items):
        token = items[position]
        if token.kind is Kind.FUNCTION:
            closing.append(")")
        elif token.kind is Kind.DELIM:
            if token.text in _CLOSE:
                closing.append(_CLOSE[token.text])
            elif closing and token.text == closing[-1]:
                closing.pop()
                if not closing:
                    return position
        position += 1
    return position


def _strip(items: Sequence[Token]) -> tuple[Token, ...]:
    start, end = 0, len(items)
    while start < end and items[start].kind is Kind.WHITESPACE:
        start += 1
    while end > start and items[end - 1].kind is Kind.WHITESPACE:
        end -= 1
    return tuple(items[start:end])


def pseudo_names(selector: Sequence[Token]) -> Iterator[tuple[str, bool]]:
    """Each pseudo-class or pseudo-element a selector names: (name, written with C{::})."""
    for position in range(1, len(selector)):
        token = selector[position]
        before = selector[position - 1]
        if token.kind in (Kind.IDENT, Kind.FUNCTION) and before.kind is Kind.DELIM \
                and before.text == ":":
            double = position >= 2 and selector[position - 2].kind is Kind.DELIM \
                and selector[position - 2].text == ":"
            yield token.text, double
