"""
IMAP keywords are mailsink's tags: STORE writes Dovecot keyword letters and the folder's
dovecot-keywords file, FETCH FLAGS and SEARCH KEYWORD read them, SELECT offers them in
FLAGS and PERMANENTFLAGS (with \\*), a 27th keyword is refused with NO [LIMIT].
"""

from __future__ import annotations

import os

from mailsink.tags.keywords import FILE_NAME, parse_keywords
from tests.test_imap import IMAPTestCase


class Keywords(IMAPTestCase):
    def keywords(self) -> dict[str, str]:
        with open(os.path.join(self.maildir, FILE_NAME)) as stream:
            return parse_keywords(stream.read())

    def write_keywords(self, text: str) -> None:
        with open(os.path.join(self.maildir, FILE_NAME), "w") as stream:
            stream.write(text)

    def test_store_keywords_renames_with_letters(self) -> None:
        [name] = self.deliver(1)
        session = self.connect()
        session.ok("a SELECT INBOX")
        reply = session.ok("b STORE 1 +FLAGS (signup \\Seen Work)")
        self.assertIn(b"* 1 FETCH (FLAGS (\\Seen signup Work))", reply)
        self.assertEqual(self.on_disk(), [name + ":2,Sab"])
        self.assertEqual(self.keywords(), {"a": "signup", "b": "Work"})
        reply = session.ok("c STORE 1 -FLAGS (SIGNUP)")
        self.assertIn(b"FLAGS (\\Seen Work)", reply)
        self.assertEqual(self.on_disk(), [name + ":2,Sb"])
        reply = session.ok("d STORE 1 FLAGS (\\Flagged other)")
        self.assertIn(b"FLAGS (\\Flagged other)", reply)
        self.assertEqual(self.on_disk(), [name + ":2,Fc"])
        self.assertEqual(self.keywords(), {"a": "signup", "b": "Work", "c": "other"})

    def test_fetch_and_search_keywords_set_by_mailsink(self) -> None:
        self.write_keywords("0 signup\n1 two words\n2 urgent\n")
        names = self.deliver(1, flags="Sab") + self.deliver(1, flags="c")
        session = self.connect()
        session.ok("a SELECT INBOX")
        reply = session.ok("b FETCH 1:2 (FLAGS)")
        self.assertIn(b"* 1 FETCH (FLAGS (\\Seen signup))", reply)
        self.assertIn(b"* 2 FETCH (FLAGS (urgent))", reply)
        self.assertIn(b"* SEARCH 2", session.ok("c SEARCH KEYWORD urgent"))
        self.assertIn(b"* SEARCH 1", session.ok("d SEARCH UNKEYWORD urgent"))
        self.assertEqual(len(names), 2)

    def test_select_offers_keywords_in_permanentflags(self) -> None:
        self.write_keywords("0 signup\n3 two words\n")
        self.deliver(1)
        session = self.connect()
        reply = session.ok("a SELECT INBOX")
        self.assertIn(b"* FLAGS (\\Seen \\Deleted \\Flagged \\Answered \\Draft signup)", reply)
        self.assertIn(b"* OK [PERMANENTFLAGS (\\Seen \\Deleted \\Flagged \\Answered \\Draft "
                      b"signup \\*)]", reply)
        reply = session.ok("b EXAMINE INBOX")
        self.assertNotIn(b"PERMANENTFLAGS", reply)

    def test_keywords_changed_by_another_session_are_reported(self) -> None:
        [name] = self.deliver(1, flags="S")
        watcher = self.connect()
        watcher.ok("a SELECT INBOX")
        other = self.connect()
        other.ok("a SELECT INBOX")
        other.ok("b STORE 1 +FLAGS (later)")
        self.assertIn(b"* 1 FETCH (FLAGS (\\Seen later))", watcher.ok("b NOOP"))
        self.assertEqual(self.on_disk(), [name + ":2,Sa"])

    def test_thunderbirds_own_keywords_are_kept(self) -> None:
        [name] = self.deliver(1)
        session = self.connect()
        session.ok("a SELECT INBOX")
        self.assertIn(b"FLAGS ($label1 $Junk)", session.ok("b STORE 1 +FLAGS ($label1 $Junk)"))
        self.assertEqual(self.on_disk(), [name + ":2,ab"])
        self.assertEqual(self.keywords(), {"a": "$label1", "b": "$Junk"})

    def test_twenty_seventh_keyword_is_refused(self) -> None:
        self.write_keywords("".join(f"{n} k{n}\n" for n in range(26)))
        [name] = self.deliver(1)
        session = self.connect()
        session.ok("a SELECT INBOX")
        reply = session.send("b STORE 1 +FLAGS (k1 extra)")
        self.assertIn(b"b NO [LIMIT] a Maildir holds at most 26 tags", reply)
        self.assertEqual(self.on_disk(), [name])
        self.assertIn(b"FLAGS (k1)", session.ok("c STORE 1 +FLAGS (k1)"))
