"""
FETCH responses in the order real clients parse (issue 10 §2): C{UID} first, then C{FLAGS}
and the other items that are not literals, literals last; the server in memory, as in
L{test_imap}.
"""

from __future__ import annotations

import re

from test_imap import IMAPTestCase
from twisted.mail import imap4

from mailsink.imap.fetch import fetch_order


def items(reply: bytes) -> list[bytes]:
    """The item names of each C{* n FETCH (...)} line of a reply, in order (literals skipped)."""
    found = []
    for line in re.findall(rb"\* \d+ FETCH \((.*?)\)\r\n", _without_literals(reply), re.S):
        found.append(b" ".join(re.findall(rb"(?:^|\s)(UID|FLAGS|RFC822\.SIZE|INTERNALDATE|"
                                           rb"ENVELOPE|BODYSTRUCTURE|BODY\[[^\]]*\](?:<\d+>)?|"
                                           rb"BODY|RFC822\.HEADER|RFC822\.TEXT|RFC822)"
                                           rb"(?=[\s(\"{]|$)", line)))
    return found


def _without_literals(reply: bytes) -> bytes:
    """The reply with each literal's content replaced by C{<n>}."""
    out, position = [], 0
    for match in re.finditer(rb"\{(\d+)\}\r\n", reply):
        if match.start() < position:
            continue
        out.append(reply[position:match.start()] + b"<%s>" % match[1])
        position = match.end() + int(match[1])
    out.append(reply[position:])
    return b"".join(out)


def parsed(query: bytes) -> list[object]:
    parser = imap4._FetchParser()
    parser.parseString(query)
    return list(parser.result)


class FetchOrder(IMAPTestCase):
    def test_uid_fetch_header_fields(self) -> None:
        """The issue's command: C{UID n} comes before the literal."""
        self.deliver(2)
        session = self.connect()
        session.ok("a SELECT INBOX")
        reply = session.ok("b UID FETCH 1:* (BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        self.assertEqual([item.upper() for item in items(reply)],
                         [b"UID BODY[HEADER.FIELDS (SUBJECT)]"] * 2)
        self.assertRegex(reply, rb"\* 1 FETCH \(UID 1 BODY\[HEADER\.FIELDS \((?i:SUBJECT)\)\] "
                                rb"\{\d+\}\r\nSubject: hello 1\r\n")

    def test_uid_asked_last(self) -> None:
        """C{FETCH} naming UID after a literal still answers UID first, then FLAGS."""
        self.deliver(1)
        session = self.connect()
        session.ok("a SELECT INBOX")
        reply = session.ok("b FETCH 1 (BODY.PEEK[] RFC822.SIZE FLAGS UID)")
        self.assertEqual(items(reply), [b"UID FLAGS RFC822.SIZE BODY[]"])
        reply = session.ok("c FETCH 1 (BODY.PEEK[TEXT] ENVELOPE BODY.PEEK[HEADER] "
                           "INTERNALDATE BODYSTRUCTURE)")
        self.assertEqual(items(reply), [b"ENVELOPE INTERNALDATE BODYSTRUCTURE BODY[TEXT] "
                                        b"BODY[HEADER]"])

    def test_fetch_without_uid_has_none(self) -> None:
        self.deliver(1)
        session = self.connect()
        session.ok("a SELECT INBOX")
        self.assertEqual(items(session.ok("b FETCH 1 (BODY.PEEK[] FLAGS)")), [b"FLAGS BODY[]"])

    def test_cheap_items(self) -> None:
        """FLAGS, UID, RFC822.SIZE and INTERNALDATE alone take the sliced path: same order."""
        self.deliver(2)
        session = self.connect()
        session.ok("a SELECT INBOX")
        reply = session.ok("b UID FETCH 1:* (RFC822.SIZE FLAGS)")
        self.assertEqual(items(reply), [b"UID FLAGS RFC822.SIZE"] * 2)
        reply = session.ok("c FETCH 1 (INTERNALDATE FLAGS UID)")
        self.assertEqual(items(reply), [b"UID FLAGS INTERNALDATE"])

    def test_rfc822_items(self) -> None:
        self.deliver(1)
        session = self.connect()
        session.ok("a SELECT INBOX")
        reply = session.ok("b UID FETCH 1 (RFC822 RFC822.HEADER RFC822.TEXT FLAGS)")
        self.assertEqual(items(reply), [b"UID FLAGS RFC822 RFC822.HEADER RFC822.TEXT"])

    def test_store_answers_uid_first(self) -> None:
        self.deliver(1)
        session = self.connect()
        session.ok("a SELECT INBOX")
        reply = session.ok("b UID STORE 1 +FLAGS (\\Flagged)")
        self.assertIn(b"* 1 FETCH (UID 1 FLAGS (\\Flagged))\r\n", reply)
        reply = session.ok("c STORE 1 -FLAGS (\\Flagged)")
        self.assertIn(b"* 1 FETCH (FLAGS ())\r\n", reply)


class FetchOrderFunction(IMAPTestCase):
    def test_order(self) -> None:
        query = parsed(b"(BODY[1] RFC822.SIZE BODY FLAGS ENVELOPE UID)")
        self.assertEqual([str(part) for part in fetch_order(query, False)],
                         ["uid", "flags", "rfc822.size", "BODY", "envelope", "BODY[1]"])

    def test_uid_added_once_for_uid_fetch(self) -> None:
        self.assertEqual([str(part) for part in fetch_order(parsed(b"BODY[]"), True)],
                         ["uid", "BODY[]"])
        self.assertEqual([str(part) for part in fetch_order(parsed(b"(BODY[] UID)"), True)],
                         ["uid", "BODY[]"])
