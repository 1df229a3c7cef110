"""
Malformed messages never cost a reader its connection (issue 10 §7), in memory: the odd
messages of L{odd_messages} through IMAP's FETCH and SEARCH (checked against RFC 3501's
grammar by L{imap_response}), and a property test that no header or MIME shape makes any
view raise: IMAP's items and search, the web view, POP3's wire form, C{mailsink ls}.
"""

from __future__ import annotations

import calendar
import json
import os
import re
from typing import Any
from unittest import mock

from hypothesis import given, settings
from hypothesis import strategies as st
from imap_response import SyntaxProblem, check_body, check_envelope, fetch_responses
from odd_messages import SAMPLES
from test_imap import IMAPTestCase
from twisted.mail import imap4
from twisted.trial.unittest import TestCase

from mailsink.imap import parts
from mailsink.imap.message import crlf, render_items
from mailsink.imap.search import header_texts, sent_day
from mailsink.message import mime
from mailsink.pop3.mailbox import dot_stuff, to_wire, top_of
from mailsink.store import view as store_view

ARRIVED = calendar.timegm((2020, 5, 17, 12, 0, 0))
"""When the odd messages arrived (their files' modification time)."""
EVERY_ITEM = ("UID FLAGS INTERNALDATE RFC822.SIZE ENVELOPE BODY BODYSTRUCTURE BODY.PEEK[] "
              "BODY.PEEK[HEADER] BODY.PEEK[TEXT] BODY.PEEK[1] BODY.PEEK[1.MIME] BODY.PEEK[2] "
              "BODY.PEEK[2.HEADER] BODY.PEEK[2.TEXT] BODY.PEEK[2.1] BODY.PEEK[2.1.MIME] "
              "BODY.PEEK[9] BODY.PEEK[1.1.1] BODY.PEEK[HEADER.FIELDS (FROM SUBJECT)] "
              "BODY.PEEK[HEADER.FIELDS.NOT (SUBJECT)] BODY.PEEK[]<5.10>")
SEARCHES = ("ALL", "SENTBEFORE 1-Jan-2030", "SENTON 17-May-2020", "SENTSINCE 1-Jan-1990",
            "FROM example", "TO x", "CC one", "BCC y", "SUBJECT grüße", "HEADER Content-Type x",
            'HEADER Date ""', "NOT HEADER Subject \"\"", "TEXT body", "BODY inner",
            "OR SUBJECT a SUBJECT b", "BEFORE 1-Jan-2030", "LARGER 10")


class OddMessagesOverIMAP(IMAPTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.names = list(SAMPLES)
        for number, name in enumerate(self.names, 1):
            path = os.path.join(self.maildir, "new", f"{1600000000 + number}.M{number}P1.host")
            with open(path, "wb") as file:
                file.write(SAMPLES[name])
            os.utime(path, (ARRIVED, ARRIVED))

    def fetch(self, items: str, numbers: str = "1:*") -> dict[int, dict[bytes, Any]]:
        session = self.connect()
        session.ok("a SELECT INBOX")
        reply = session.ok(f"b FETCH {numbers} ({items})")
        self.assertFalse(session.transport.disconnecting)
        return fetch_responses(reply)

    def numbered(self, name: str) -> int:
        return self.names.index(name) + 1

    def test_every_item_of_every_message(self) -> None:
        """Each message answers every item, in RFC 3501's grammar, on one connection."""
        found = self.fetch(EVERY_ITEM)
        self.assertEqual(sorted(found), list(range(1, len(self.names) + 1)))
        for number, name in enumerate(self.names, 1):
            with self.subTest(name):
                items = found[number]
                data = crlf(SAMPLES[name]).replace(b"\0", b"\x80")
                check_envelope(items[b"ENVELOPE"])
                check_body(items[b"BODY"], extended=False)
                check_body(items[b"BODYSTRUCTURE"], extended=True)
                self.assertEqual(items[b"BODY[]"], data)
                self.assertEqual(items[b"RFC822.SIZE"], len(data))
                self.assertEqual(items[b"BODY[]<5>"], data[5:15])
                self.assertEqual(items[b"BODY[HEADER]"] + items[b"BODY[TEXT]"], data)
                self.assertIsNone(items[b"BODY[9]"])

    def test_parameter_without_equals(self) -> None:
        """The issue's message: the parameter is left out, the others are kept."""
        number = self.numbered("parameter_without_equals")
        items = self.fetch("BODYSTRUCTURE BODY", str(number))[number]
        size = len(b"old mailer\r\n")
        self.assertEqual(items[b"BODYSTRUCTURE"], [b"text", b"plain", [b"charset", b"us-ascii"],
                                                   None, None, b"7BIT", size, 1,
                                                   None, None, None, None])
        self.assertEqual(items[b"BODY"], items[b"BODYSTRUCTURE"][:8])

    def test_forwarded_message_inside(self) -> None:
        """A message/rfc822 part: its envelope and structure, and sections inside it."""
        number = self.numbered("nested_rfc822")
        items = self.fetch("BODYSTRUCTURE BODY.PEEK[2] BODY.PEEK[2.HEADER] BODY.PEEK[2.TEXT] "
                           "BODY.PEEK[2.1] BODY.PEEK[2.2.MIME] BODY.PEEK[2.3] BODY.PEEK[1.TEXT] "
                           "BODY.PEEK[2.HEADER.FIELDS (SUBJECT)]", str(number))[number]
        structure = items[b"BODYSTRUCTURE"]
        self.assertEqual(structure[0][:2], [b"text", b"plain"])
        forwarded = structure[1]
        self.assertEqual(forwarded[:2], [b"message", b"rfc822"])
        self.assertEqual(forwarded[7][1], b"inner report")
        self.assertEqual(forwarded[7][2], [[b"Inner", None, b"inner", b"example.com"]])
        inner = forwarded[8]
        self.assertEqual([part[:3] for part in inner[:2]],
                         [[b"text", b"plain", [b"charset", b"utf-8"]], [b"text", b"html", None]])
        self.assertEqual(inner[2:4], [b"alternative", [b"boundary", b"inner"]])
        self.assertEqual(structure[2], b"mixed")
        self.assertTrue(items[b"BODY[2]"].startswith(b"From: Inner <inner@example.com>\r\n"))
        self.assertTrue(items[b"BODY[2]"].endswith(b"--inner--"))  # its CRLF: the delimiter's
        self.assertEqual(items[b"BODY[2.HEADER]"] + items[b"BODY[2.TEXT]"], items[b"BODY[2]"])
        self.assertEqual(items[b"BODY[2.1]"], b"inner text")
        self.assertEqual(items[b"BODY[2.2.MIME]"], b"Content-Type: text/html; charset\r\n\r\n")
        self.assertIsNone(items[b"BODY[2.3]"])
        self.assertIsNone(items[b"BODY[1.TEXT]"])  # part 1 is no message
        self.assertEqual(items[b"BODY[2.HEADER.FIELDS (SUBJECT)]"],
                         b"Subject: inner report\r\n\r\n")

    def test_multiparts_that_cannot_be_cut(self) -> None:
        """No boundary, or no delimiter line: one text part (as Dovecot shows it)."""
        for name in ("missing_boundary", "boundary_never_used"):
            number = self.numbered(name)
            items = self.fetch("BODYSTRUCTURE BODY.PEEK[1] BODY.PEEK[TEXT]", str(number))[number]
            self.assertEqual(items[b"BODYSTRUCTURE"][:3],
                             [b"text", b"plain", [b"charset", b"us-ascii"]], name)
            self.assertEqual(items[b"BODY[1]"], items[b"BODY[TEXT]"])

    def test_unclosed_boundary(self) -> None:
        number = self.numbered("unclosed_boundary")
        items = self.fetch("BODYSTRUCTURE BODY.PEEK[2]", str(number))[number]
        self.assertEqual([part[:2] for part in items[b"BODYSTRUCTURE"][:2]],
                         [[b"text", b"plain"], [b"application", b"pdf"]])
        self.assertEqual(items[b"BODY[2]"], b"JVBERi0xLjQK\r\n")

    def test_deep_nesting_is_bounded(self) -> None:
        number = self.numbered("deeply_nested")
        structure = self.fetch("BODYSTRUCTURE", str(number))[number][b"BODYSTRUCTURE"]
        depth = 0
        while isinstance(structure[0], list):
            structure, depth = structure[0], depth + 1
        self.assertEqual(depth, parts.MAX_DEPTH)
        self.assertEqual(structure[:2], [b"application", b"octet-stream"])

    def test_eight_bit_and_empty_headers(self) -> None:
        """Header text as stored (eight-bit as a literal); empty fields are empty strings."""
        eight_bit = self.numbered("eight_bit_headers")
        empty = self.numbered("headers_without_values")
        found = self.fetch("ENVELOPE BODYSTRUCTURE", f"{eight_bit},{empty}")
        envelope = found[eight_bit][b"ENVELOPE"]
        self.assertEqual(envelope[1], "Grüße aus Köln ✓".encode())
        self.assertEqual(envelope[2], [["Jörg Müller".encode(), None, "jörg".encode(),
                                        "exämple.com".encode()]])
        self.assertEqual(found[eight_bit][b"BODYSTRUCTURE"][2],
                         [b"charset", b"utf-8", b"name", "Bericht ü.txt".encode()])
        envelope = found[empty][b"ENVELOPE"]
        self.assertEqual(envelope, [b"", b"", None, None, None, None, None, None, None, b""])

    def test_searches_answer(self) -> None:
        """Every criterion over every odd message gives a SEARCH answer, never BAD."""
        session = self.connect()
        session.ok("a SELECT INBOX")
        for number, criteria in enumerate(SEARCHES):
            reply = session.ok(f"s{number} SEARCH {criteria}")
            self.assertEqual(len(re.findall(rb"\* SEARCH[ \d]*\r\n", reply)), 1, criteria)
        self.assertFalse(session.transport.disconnecting)

    def test_unreadable_dates_count_as_arrival_day(self) -> None:
        session = self.connect()
        session.ok("a SELECT INBOX")
        reply = session.ok("b SEARCH SENTON 17-May-2020")
        found = {int(n) for n in re.search(rb"\* SEARCH([ \d]*)", reply)[1].split()}
        self.assertIn(self.numbered("bad_dates"), found)
        self.assertIn(self.numbered("impossible_date"), found)
        self.assertIn(self.numbered("empty"), found)

    def test_header_search_needs_the_field(self) -> None:
        """C{HEADER Subject ""} matches messages with a Subject field, even an empty one."""
        session = self.connect()
        session.ok("a SELECT INBOX")
        reply = session.ok('b SEARCH HEADER Subject ""')
        found = {int(n) for n in re.search(rb"\* SEARCH([ \d]*)", reply)[1].split()}
        self.assertIn(self.numbered("headers_without_values"), found)
        self.assertNotIn(self.numbered("empty"), found)
        self.assertNotIn(self.numbered("body_only"), found)

    def test_encoded_and_eight_bit_subjects_are_searched_as_text(self) -> None:
        session = self.connect()
        session.ok("a SELECT INBOX")
        reply = session.ok("b SEARCH SUBJECT Köln")
        self.assertIn(b"* SEARCH %d\r\n" % self.numbered("eight_bit_headers"), reply)
        reply = session.ok("c SEARCH SUBJECT résumé")
        self.assertIn(b"* SEARCH %d\r\n" % self.numbered("latin1_headers"), reply)

    def test_last_resort(self) -> None:
        """Should the tree ever fail, the message is served as one text part, and logged."""
        number = self.numbered("nested_rfc822")
        with mock.patch("mailsink.imap.message.tree", side_effect=ValueError("a bug")):
            items = self.fetch("BODYSTRUCTURE ENVELOPE BODY.PEEK[]", str(number))[number]
        self.assertEqual(items[b"BODYSTRUCTURE"][:3],
                         [b"text", b"plain", [b"charset", b"us-ascii"]])
        self.assertEqual(items[b"ENVELOPE"], [None] * 10)
        self.assertEqual(items[b"BODY[]"], crlf(SAMPLES["nested_rfc822"]))
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)

    def test_big_literal_is_streamed(self) -> None:
        """A literal over the streaming size goes out through a producer, whole."""
        big = b"Subject: big\nContent-Type: text/plain; format\n\n" + b"x" * 200_000 + b"\n"
        with open(os.path.join(self.maildir, "new", "1700000000.M1P1.big"), "wb") as file:
            file.write(big)
        number = len(self.names) + 1
        items = self.fetch("BODY.PEEK[] BODYSTRUCTURE BODY.PEEK[1]", str(number))[number]
        self.assertEqual(items[b"BODY[]"], crlf(big))
        self.assertEqual(items[b"BODY[1]"], b"x" * 200_000 + b"\r\n")


# The property: any header, any MIME shape.

HEADER_NAMES = st.sampled_from([
    b"Content-Type", b"Content-Disposition", b"Content-Transfer-Encoding", b"Content-ID",
    b"Content-Description", b"Content-Language", b"Content-Location", b"Content-MD5",
    b"Subject", b"From", b"Sender", b"Reply-To", b"To", b"Cc", b"Bcc", b"Date",
    b"Message-ID", b"In-Reply-To", b"X-Junk", b"", b" ", b"Content-type"])
HEADER_VALUES = st.one_of(
    st.binary(max_size=40),
    st.sampled_from([
        b"text/plain; charset=utf-8; format", b"multipart/mixed", b"multipart/mixed; boundary",
        b"multipart/alternative; boundary=\"b\"; x", b"message/rfc822; ;", b"text; charset=",
        b"attachment; filename", b"inline; filename*=utf-8''%ZZ", b"a@b, , <>, g:;",
        b'"unterminated <a@b', b"=?utf-8?q?=C3=A9?=", b"=?unicode_escape?q?=5Cud800?=",
        b"Mon, 99 Foo 20 99:99:99 +9999", b"Tue, 1 Jan 2030 00:00:00 +0000", b"\xff\xfe\xc3",
        b"base64", b"quoted-printable", b"en, de,", b"(", b"\\", b'"', b"\x00", b"\r", b""]),
)
BOUNDARIES = st.sampled_from([b"b", b"b b", b"\"q\"", b"", b"--", b"b=", b"\xff"])
LINE_ENDS = st.sampled_from([b"\n", b"\r\n", b"\r"])


@st.composite
def entity(draw: st.DrawFn, depth: int = 0) -> bytes:
    """A header block and a body: a leaf, a multipart (delimiters possibly wrong or
    missing), or a message/rfc822 part, with any fields and values around."""
    end = draw(LINE_ENDS)
    fields = [name + b": " + value for name, value in
              draw(st.lists(st.tuples(HEADER_NAMES, HEADER_VALUES), max_size=5))]
    kind = draw(st.sampled_from(["leaf", "multipart", "message"])) if depth < 3 else "leaf"
    if kind == "leaf":
        body = draw(st.binary(max_size=60))
    elif kind == "message":
        fields.append(b"Content-Type: message/rfc822")
        body = draw(entity(depth + 1))
    else:
        boundary = draw(BOUNDARIES)
        fields.append(b"Content-Type: multipart/" + draw(st.sampled_from([b"mixed", b"digest"]))
                      + b"; boundary=" + boundary)
        children = draw(st.lists(entity(depth + 1), max_size=3))
        delimiter = b"--" + draw(st.sampled_from([boundary, b"other"]))
        body = b"".join(delimiter + end + child + end for child in children)
        if draw(st.booleans()):
            body += delimiter + b"--" + end
    if draw(st.booleans()):
        fields.insert(draw(st.integers(0, len(fields))), b" folded")
    blank = draw(st.sampled_from([end, b""]))
    return end.join(fields) + end + blank + body


def fetch_parts(query: bytes) -> list[Any]:
    parser = imap4._FetchParser()
    parser.parseString(query)
    return list(parser.result)


PROPERTY_QUERY = fetch_parts(
    b"(ENVELOPE BODY BODYSTRUCTURE RFC822 RFC822.HEADER RFC822.TEXT BODY[] BODY[HEADER] "
    b"BODY[TEXT] BODY[1] BODY[1.MIME] BODY[1.HEADER] BODY[1.TEXT] BODY[2.1] BODY[2.1.MIME] "
    b"BODY[1.2.3] BODY[HEADER.FIELDS (SUBJECT FROM)] BODY[1.HEADER.FIELDS.NOT (TO)] "
    b"BODY[]<3.7>)")


class Arrival:
    """What SEARCH's date criteria ask of a message: its header text and arrival day."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.fields = parts.header_fields(data, 0, len(data))

    def getHeaders(self, negate: bool, *names: str) -> dict[str, str]:
        return header_texts(self.data, self.fields, negate, names)

    def getInternalDate(self) -> str:
        return "Sun, 17 May 2020 12:00:00 -0000"


class NoShapeRaises(TestCase):
    """Any header fields, any MIME shape, any bytes: every view answers, none raises."""

    def check(self, raw: bytes) -> None:
        data = crlf(raw)
        made, failure = render_items(PROPERTY_QUERY, data)
        self.assertIsNone(failure)
        response = b"* 1 FETCH (" + b" ".join(
            text if literal is None else text + b" {%d}\r\n%b" % (len(literal), literal)
            for text, literal in made) + b")\r\n"
        try:
            items = fetch_responses(response)[1]
            check_envelope(items[b"ENVELOPE"])
            check_body(items[b"BODY"], extended=False)
            check_body(items[b"BODYSTRUCTURE"], extended=True)
        except SyntaxProblem as problem:
            raise AssertionError(f"{problem}: {response!r}") from None
        self.assertEqual(items[b"BODY[]"], data.replace(b"\0", b"\x80"))
        root = parts.tree(data)
        for node in _nodes(root):
            self.assertLessEqual(node.start, node.body)
            self.assertLessEqual(node.body, node.end)
        self.assertIsInstance(sent_day(Arrival(data)), tuple)
        # The web view, the API's JSON and the index's facts: text any encoder takes.
        view = mime.view(raw)
        json.dumps(view.headers, ensure_ascii=False).encode("utf-8")
        for text in (view.text, view.html, view.facts.subject, view.facts.snippet):
            text.encode("utf-8")
        for listed in (*view.inline, *view.attachments):
            self.assertIsNotNone(mime.part(raw, listed.part_id))
        # POP3: the message on the wire never ends early.
        stuffed = dot_stuff(to_wire(raw))
        self.assertNotIn(b"\r\n.\r\n", b"\r\n" + stuffed)
        top_of(raw, 2)
        # mailsink ls: one printable line.
        line = store_view.printable(view.facts.subject)
        self.assertTrue(line.isprintable(), repr(line))

    @settings(derandomize=True, database=None, max_examples=400, deadline=None)
    @given(entity())
    def test_any_shape(self, raw: bytes) -> None:
        self.check(raw)

    @settings(derandomize=True, database=None, max_examples=200, deadline=None)
    @given(st.sampled_from(list(SAMPLES.values())), st.binary(max_size=32), st.integers(0, 400))
    def test_odd_messages_mutated(self, raw: bytes, junk: bytes, where: int) -> None:
        where = min(where, len(raw))
        self.check(raw[:where] + junk + raw[where:])

    def test_each_odd_message(self) -> None:
        for name, raw in SAMPLES.items():
            with self.subTest(name):
                self.check(raw)


def _nodes(node: parts.Node) -> list[parts.Node]:
    found = [node]
    for child in node.children:
        found += _nodes(child)
    if node.message is not None:
        found += _nodes(node.message)
    return found
