"""
The search syntax: parsing to the AST, the SQL it compiles to, run on SQLite, and the same
question answered in memory (agreeing with SQLite).
"""

from __future__ import annotations

import calendar
import sqlite3
from typing import Any

import attrs
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import TestCase

from mailsink.index.codec import SEARCH_COLUMNS, search_row, search_values
from mailsink.message import search
from mailsink.message.search import Flag, Not, Query, Received, Size, Text, parse, to_sql, where
from mailsink.message.shapes import Address, Facts, Summary


def day(text: str) -> float:
    year, month, date = (int(part) for part in text.split("-"))
    return float(calendar.timegm((year, month, date, 0, 0, 0)))


class ParseTests(TestCase):
    def test_words_are_lower_cased_terms(self) -> None:
        self.assertEqual(parse("Hello  WORLD"), Query((Text("hello"), Text("world"))))

    def test_empty_and_blank_queries_have_no_terms(self) -> None:
        for text in ("", "   ", '""', "-", "!", "subject:", 'from:""'):
            self.assertEqual(parse(text), Query(), text)

    def test_phrase_keeps_its_spaces(self) -> None:
        self.assertEqual(parse('"Order  Shipped" now'),
                         Query((Text("order  shipped"), Text("now"))))

    def test_unclosed_quote_runs_to_the_end(self) -> None:
        self.assertEqual(parse('a "b c'), Query((Text("a"), Text("b c"))))

    def test_field_filters(self) -> None:
        for field in ("from", "to", "cc", "bcc", "reply-to", "addressed", "subject",
                      "message-id", "tag"):
            self.assertEqual(parse(f"{field.upper()}:Value"), Query((Text("value", field),)))

    def test_field_with_a_quoted_phrase(self) -> None:
        self.assertEqual(parse('subject:"Your Order" to:"Ann B <ann@x>"'),
                         Query((Text("your order", "subject"), Text("ann b <ann@x>", "to"))))

    def test_quoted_field_syntax_is_a_phrase(self) -> None:
        self.assertEqual(parse('"from:bob"'), Query((Text("from:bob"),)))

    def test_flags(self) -> None:
        self.assertEqual(parse("is:read IS:Unread has:attachment has:attachments"),
                         Query((Flag("read"), Flag("unread"), Flag("attachment"),
                                Flag("attachment"))))

    def test_sizes_are_powers_of_1024(self) -> None:
        self.assertEqual(parse("larger:2M smaller:100K larger:1G smaller:10 larger:1.5kb"),
                         Query((Size(True, 2 * 1024**2), Size(False, 100 * 1024),
                                Size(True, 1024**3), Size(False, 10), Size(True, 1536))))

    def test_huge_size_is_clamped(self) -> None:
        query = parse("larger:" + "9" * 400 + "G")
        self.assertEqual(query, Query((Size(True, 2**62),)))

    def test_dates_are_utc_days(self) -> None:
        self.assertEqual(parse("before:2026-01-31 after:2025-12-01"),
                         Query((Received(True, day("2026-01-31")),
                                Received(False, day("2025-12-01")))))

    def test_negation_with_dash_or_bang(self) -> None:
        self.assertEqual(parse('-from:bob !is:read -"a b" !word'),
                         Query((Not(Text("bob", "from")), Not(Flag("read")),
                                Not(Text("a b")), Not(Text("word")))))

    def test_what_does_not_fit_is_a_plain_word(self) -> None:
        for text in ("larger:lots", "before:2026-13-01", "before:yesterday", "is:starred",
                     "has:wings", "x:y", "re:hello"):
            self.assertEqual(parse(text), Query((Text(text.lower()),)), text)

    def test_bounds(self) -> None:
        self.assertEqual(len(parse("w " * 500).terms), search.MAX_TERMS)
        long_value = parse("subject:" + "a" * 5000).terms[0]
        assert isinstance(long_value, Text)
        self.assertEqual(len(long_value.value), search.MAX_VALUE)

    @given(st.text())
    @settings(max_examples=300, deadline=None)
    def test_parse_never_raises(self, text: str) -> None:
        query = parse(text)
        self.assertLessEqual(len(query.terms), search.MAX_TERMS)

    @given(st.lists(st.sampled_from(
        ["from:", "-", "!", '"', ":", "is:", "read", "larger:", "2M", "before:", "2026-01-01",
         " ", "%", "_", "\\", "tag:", "x", "ü", "\n"])).map("".join))
    @settings(max_examples=300, deadline=None)
    def test_parse_never_raises_on_syntax_soup(self, text: str) -> None:
        parse(text)


ROWS = [
    # id, created, read, size, attachments, facts
    ("a", day("2026-01-10"), 0, 1000, 0,
     Facts(subject="Your order 100% shipped", sender=Address("Shop", "shop@example.com"),
           to=(Address("Ann", "ann@example.org"),), snippet="tracking number_1",
           message_id="m1@example.com", tags=("Orders", "VIP"))),
    ("b", day("2026-01-20"), 1, 3 * 1024 * 1024, 2,
     Facts(subject="Invoice ÄÖÜ", sender=Address("", "billing@example.com"),
           cc=(Address("Bob", "bob@example.net"),), bcc=(Address("", "hidden@example.net"),),
           reply_to=(Address("", "reply@example.com"),), snippet="c:\\path\\file",
           tags=("orders-old",))),
    ("c", day("2026-02-01"), 0, 50, 0,
     Facts(subject="Hello _world_", sender=Address("Ann", "ann@example.org"),
           to=(Address("Shop", "shop@example.com"),), snippet="plain text")),
]


class SqlTests(TestCase):
    def setUp(self) -> None:
        self.db = sqlite3.connect(":memory:")
        self.addCleanup(self.db.close)
        columns = ", ".join(f"{name} TEXT NOT NULL" for name in SEARCH_COLUMNS)
        self.db.execute("CREATE TABLE messages (id TEXT, created REAL, read INTEGER, "
                        f"size INTEGER, attachments INTEGER, {columns})")
        marks = ", ".join("?" * (5 + len(SEARCH_COLUMNS)))
        for mid, created, read, size, attachments, facts in ROWS:
            self.db.execute(f"INSERT INTO messages VALUES ({marks})",
                            (mid, created, read, size, attachments, *search_values(facts)))

    def ids(self, text: str) -> list[str]:
        condition, params = where(text)
        return [row[0] for row in self.db.execute(
            f"SELECT id FROM messages WHERE {condition} ORDER BY id", params)]

    def test_empty_query_matches_all(self) -> None:
        self.assertEqual(to_sql(Query()), ("1", []))
        self.assertEqual(self.ids(""), ["a", "b", "c"])

    def test_words_match_anywhere_all_required_any_order(self) -> None:
        self.assertEqual(self.ids("ann"), ["a", "c"])
        self.assertEqual(self.ids("SHIPPED order"), ["a"])
        self.assertEqual(self.ids("tracking"), ["a"])
        self.assertEqual(self.ids("m1@example"), ["a"])
        self.assertEqual(self.ids("hidden@"), ["b"])
        self.assertEqual(self.ids("reply@"), ["b"])

    def test_phrase(self) -> None:
        self.assertEqual(self.ids('"order 100"'), ["a"])
        self.assertEqual(self.ids('"100 order"'), [])

    def test_fields(self) -> None:
        self.assertEqual(self.ids("from:ann"), ["c"])
        self.assertEqual(self.ids("to:ann"), ["a"])
        self.assertEqual(self.ids("cc:bob"), ["b"])
        self.assertEqual(self.ids("bcc:hidden"), ["b"])
        self.assertEqual(self.ids("reply-to:reply"), ["b"])
        self.assertEqual(self.ids("addressed:example.net"), ["b"])
        self.assertEqual(self.ids("addressed:shop@"), ["a", "c"])
        self.assertEqual(self.ids("subject:invoice"), ["b"])
        self.assertEqual(self.ids('from:"shop <shop@'), ["a"])
        self.assertEqual(self.ids("message-id:M1@"), ["a"])

    def test_non_ascii_is_case_insensitive(self) -> None:
        self.assertEqual(self.ids("subject:äöü"), ["b"])

    def test_tags_match_whole_tags(self) -> None:
        self.assertEqual(self.ids("tag:orders"), ["a"])
        self.assertEqual(self.ids("tag:VIP"), ["a"])
        self.assertEqual(self.ids("tag:order"), [])
        self.assertEqual(self.ids("tag:orders-old"), ["b"])

    def test_like_wildcards_are_literal(self) -> None:
        self.assertEqual(self.ids("100%"), ["a"])
        self.assertEqual(self.ids("%"), ["a"])
        self.assertEqual(self.ids("_"), ["a", "c"])
        self.assertEqual(self.ids("subject:_world_"), ["c"])
        self.assertEqual(self.ids("subject:o_d"), [])
        self.assertEqual(self.ids("c:\\path"), ["b"])
        self.assertEqual(self.ids("\\"), ["b"])

    def test_flags_sizes_dates(self) -> None:
        self.assertEqual(self.ids("is:read"), ["b"])
        self.assertEqual(self.ids("is:unread"), ["a", "c"])
        self.assertEqual(self.ids("has:attachment"), ["b"])
        self.assertEqual(self.ids("larger:2M"), ["b"])
        self.assertEqual(self.ids("smaller:1K"), ["a", "c"])
        self.assertEqual(self.ids("smaller:100"), ["c"])
        self.assertEqual(self.ids("before:2026-01-20"), ["a"])
        self.assertEqual(self.ids("after:2026-01-20"), ["b", "c"])
        self.assertEqual(self.ids("after:2026-01-11 before:2026-02-01"), ["b"])

    def test_negation(self) -> None:
        self.assertEqual(self.ids("-from:ann"), ["a", "b"])
        self.assertEqual(self.ids("!is:read -has:attachment"), ["a", "c"])
        self.assertEqual(self.ids('-"order 100"'), ["b", "c"])
        self.assertEqual(self.ids("-larger:2M"), ["a", "c"])

    def test_user_text_is_never_in_the_sql(self) -> None:
        condition, params = where("from:'); DROP TABLE messages; -- x\"y")
        self.assertNotIn("DROP", condition)
        self.assertNotIn("'); ", condition)
        self.assertIn("%');%", params)
        self.assertEqual(self.ids("'); DROP TABLE messages; --"), [])
        self.assertEqual(self.ids(""), ["a", "b", "c"])

    def test_like_pattern_escapes(self) -> None:
        self.assertEqual(search.like_pattern("a%b_c\\d"), "%a\\%b\\_c\\\\d%")

    def test_many_terms_stay_within_sqlite_limits(self) -> None:
        self.assertEqual(self.ids(" ".join(["-x"] * 400)), [])
        self.assertEqual(self.ids("ü" * 20000), [])

    @given(st.text(max_size=300))
    @settings(max_examples=300, deadline=None)
    def test_any_text_compiles_to_valid_sql(self, text: str) -> None:
        condition, params = where(text)
        self.assertEqual(condition.count("?"), len(params))
        rows: Any = self.db.execute(f"SELECT id FROM messages WHERE {condition}", params)
        self.assertLessEqual(len(rows.fetchall()), len(ROWS))


NUL_ROW = ("n", day("2026-01-20") + 1, 1, 1024, 1,
           Facts(subject="he\0llo", sender=Address("", "a\0b@example.com"),
                 snippet="body\0text", tags=("x\0y",)))
"""Header values may hold NUL; SQLite's LIKE reads its operands only up to one."""

QUERIES = ["", "ann", "SHIPPED order", '"order 100"', "from:ann", "addressed:example.net",
           "message-id:M1@", "subject:äöü", "tag:orders", "tag:order", "100%", "_", "\\",
           "is:read", "is:unread", "has:attachment", "larger:2M", "smaller:1K",
           "before:2026-01-20", "after:2026-01-20", "-from:ann", "!is:read -has:attachment",
           "he", "llo", "he\0", "he\0zz", "\0", "subject:he\0", "body", "text", "tag:x",
           "a\0", "from:a\0b"]


class MatchesTests(TestCase):
    """L{search.matches} agrees with SQLite on each row, for any query."""

    def setUp(self) -> None:
        self.db = sqlite3.connect(":memory:")
        self.addCleanup(self.db.close)
        columns = ", ".join(f"{name} TEXT NOT NULL" for name in SEARCH_COLUMNS)
        self.db.execute("CREATE TABLE messages (id TEXT, created REAL, read INTEGER, "
                        f"size INTEGER, attachments INTEGER, {columns})")
        marks = ", ".join("?" * (5 + len(SEARCH_COLUMNS)))
        self.rows = {}
        for mid, created, read, size, attachments, facts in [*ROWS, NUL_ROW]:
            facts = attrs.evolve(facts, attachments=attachments)
            self.db.execute(f"INSERT INTO messages VALUES ({marks})",
                            (mid, created, read, size, attachments, *search_values(facts)))
            self.rows[mid] = search_row(Summary(mid, "", bool(read), created, size, facts))

    def check(self, text: str) -> list[str]:
        condition, params = where(text)
        in_sqlite = [row[0] for row in self.db.execute(
            f"SELECT id FROM messages WHERE {condition} ORDER BY id", params)]
        query = parse(text)
        in_memory = sorted(mid for mid, row in self.rows.items() if search.matches(query, row))
        self.assertEqual(in_memory, in_sqlite, repr(text))
        return in_memory

    def test_examples(self) -> None:
        for text in QUERIES:
            self.check(text)
        self.assertEqual(self.check("llo"), ["c"])  # not "he\\0llo": its text ends at NUL
        self.assertEqual(self.check("he\0zz"), ["n"])  # the pattern "%he": ends with "he"
        self.assertEqual(self.check("-text"), ["a", "b", "n"])

    @given(st.lists(st.sampled_from(
        ["from:", "to:", "tag:", "subject:", "addressed:", "-", "!", '"', " ", "is:read",
         "is:unread", "has:attachment", "larger:1K", "smaller:2M", "before:2026-01-20",
         "after:2026-01-20", "ann", "shop", "order", "he", "llo", "\0", "%", "_", "\\", "x",
         "ä", "<", "@", "\n", "orders", "vip"])).map("".join))
    @settings(max_examples=500, deadline=None)
    def test_any_query_of_the_syntax(self, text: str) -> None:
        self.check(text)

    @given(st.text(max_size=40))
    @settings(max_examples=300, deadline=None)
    def test_any_text(self, text: str) -> None:
        self.check(text)
