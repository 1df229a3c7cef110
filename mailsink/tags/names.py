"""
Tag names: cleaned as Mailpit cleans them, and read from C{X-Tags} headers.

A tag keeps ASCII letters, digits, spaces, C{-}, C{_} and C{.}; other characters are
dropped (Mailpit strips them silently), white space runs become one space, the ends are
trimmed. Tags are compared
without regard to case (C{Signup} and C{signup} are one tag; the first spelling stays).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

_INVALID = re.compile(r"[^A-Za-z0-9 ._-]")
_SPACES = re.compile(r"\s+")
_ATOM = re.compile(r'[!#$&\'+,\-./0-9:;<=>?@A-Z\[^_`a-z|}~]+')
"""RFC 3501's atom: printable ASCII but for atom-specials ( ) { % * " \\ ] and space."""

MAX_LENGTH = 100
"""Characters kept of a tag name (a longer one is cut)."""


def clean_tag(text: str) -> str:
    """C{text} as a tag name ("" if nothing of it is left)."""
    return _INVALID.sub("", _SPACES.sub(" ", text)).strip()[:MAX_LENGTH].strip()


def unique_tags(texts: Iterable[str]) -> tuple[str, ...]:
    """The cleaned, non-empty tags of C{texts}, each once (case-insensitively), in order."""
    seen: dict[str, str] = {}
    for text in texts:
        tag = clean_tag(text)
        if tag and tag.lower() not in seen:
            seen[tag.lower()] = tag
    return tuple(seen.values())


def parse_x_tags(values: Iterable[str]) -> tuple[str, ...]:
    """The tags of C{X-Tags} header values (already decoded): comma separated, as Mailpit."""
    return unique_tags(part for value in values for part in value.split(","))


def is_imap_atom(tag: str) -> bool:
    """
    Whether IMAP can carry C{tag} as a keyword (an atom: no spaces). Thunderbird's own
    keywords (C{$label1}, C{$Junk}) are atoms, though not clean Mailpit tag names: kept as
    IMAP sets them.
    """
    return bool(_ATOM.fullmatch(tag))
