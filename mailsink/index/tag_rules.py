"""
C{[tags]} rules: each key a tag name, each value a search query in L{mailsink.message.search}'s
syntax; an arriving message gets every tag whose query it matches, tested in memory with
L{mailsink.message.search.matches} (the same answer SQLite would give).
"""

from __future__ import annotations

from collections.abc import Mapping

import attrs

from mailsink.index.codec import search_row
from mailsink.message.search import Query, matches, parse
from mailsink.message.shapes import Summary
from mailsink.tags.names import clean_tag


class RuleError(ValueError):
    """A C{[tags]} rule that cannot work: its C{key} and what is wrong."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(problem)
        self.key = key


@attrs.frozen
class TagRules:
    """The C{[tags]} section, parsed: (tag, query) in the order given."""

    rules: tuple[tuple[str, Query], ...] = ()

    def tags_for(self, summary: Summary) -> tuple[str, ...]:
        """The tags of the rules C{summary} matches."""
        if not self.rules:
            return ()
        row = search_row(summary)
        return tuple(tag for tag, query in self.rules if matches(query, row))


NO_RULES = TagRules()
"""No C{[tags]} section."""


def parse_rules(section: Mapping[str, str]) -> TagRules:
    """
    L{TagRules} from the section's keys and values. A key that leaves no tag name, or an
    empty query (it would tag every message), is a L{RuleError}.
    """
    rules = []
    for key, value in section.items():
        tag = clean_tag(key)
        if not tag:
            raise RuleError(key, "not a tag name: use letters, digits, '-', '_', '.'")
        query = parse(value)
        if not query.terms:
            raise RuleError(key, "give a search query, e.g. subject:welcome")
        rules.append((tag, query))
    return TagRules(tuple(rules))
