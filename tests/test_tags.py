"""
Tags' pure parts: names as Mailpit cleans them, X-Tags, Dovecot's keyword file and the
keyword letters of Maildir file names, [tags] rules.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading

from twisted.trial.unittest import TestCase

from mailsink.config import ConfigError, parse_config
from mailsink.index.tag_rules import RuleError, parse_rules
from mailsink.message import mime
from mailsink.message.shapes import Address, Facts, Summary
from mailsink.tags.keywords import (
    FILE_NAME,
    KeywordFile,
    TagLimit,
    format_keywords,
    keyword_file,
    keyword_letters,
    parse_keywords,
    with_keyword_letters,
)
from mailsink.tags.names import clean_tag, is_imap_atom, parse_x_tags, unique_tags


class NameTests(TestCase):
    def test_clean_tag_keeps_mailpits_characters(self) -> None:
        self.assertEqual(clean_tag("  Sign-up_2.0  "), "Sign-up_2.0")
        self.assertEqual(clean_tag("a  b\tc"), "a b c")
        self.assertEqual(clean_tag("x(y)\"z\"\\ é!"), "xyz")
        self.assertEqual(clean_tag("%*"), "")
        self.assertEqual(len(clean_tag("a" * 500)), 100)

    def test_unique_tags_case_insensitive_first_spelling_wins(self) -> None:
        self.assertEqual(unique_tags(["Signup", "signup", " ", "b", "SIGNUP", "B "]),
                         ("Signup", "b"))

    def test_x_tags_comma_separated(self) -> None:
        self.assertEqual(parse_x_tags(["one, two ,, Three  Words", "one, four"]),
                         ("one", "two", "Three Words", "four"))

    def test_x_tags_through_mime_with_encoded_words(self) -> None:
        raw = b"X-Tags: =?utf-8?q?alpha=2C_beta?=, gamma\nSubject: s\n\nbody\n"
        self.assertEqual(mime.facts(raw).tags, ("alpha", "beta", "gamma"))

    def test_imap_atoms(self) -> None:
        self.assertTrue(is_imap_atom("signup-2.0_x"))
        self.assertTrue(is_imap_atom("$label1"))
        self.assertFalse(is_imap_atom("two words"))
        for special in "(){%*\"\\]":
            self.assertFalse(is_imap_atom(f"a{special}b"), special)
        self.assertFalse(is_imap_atom("caf\u00e9"))
        self.assertFalse(is_imap_atom(""))


class LetterTests(TestCase):
    def test_letters_of_a_file_name(self) -> None:
        self.assertEqual(keyword_letters("123.M1P2.host:2,FSab"), "ab")
        self.assertEqual(keyword_letters("123.M1P2.host:2,zS"), "z")
        self.assertEqual(keyword_letters("123.M1P2.host"), "")
        self.assertEqual(keyword_letters("123.M1P2.host:2,RS"), "")

    def test_with_letters_keeps_flags_sorted(self) -> None:
        self.assertEqual(with_keyword_letters("X:2,Sb", "ca"), "X:2,Sac")
        self.assertEqual(with_keyword_letters("X:2,FSab", ""), "X:2,FS")
        self.assertEqual(with_keyword_letters("X", "a"), "X:2,a")


class KeywordFileTests(TestCase):
    def setUp(self) -> None:
        self.folder = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.folder)
        self.path = os.path.join(self.folder, FILE_NAME)

    def test_parse_and_format_dovecots_lines(self) -> None:
        names = parse_keywords("0 $Forwarded\n1 Junk\nbad line\n26 toobig\n3 signup\n")
        self.assertEqual(names, {"a": "$Forwarded", "b": "Junk", "d": "signup"})
        self.assertEqual(format_keywords(names), "0 $Forwarded\n1 Junk\n3 signup\n")

    def test_new_names_get_free_letters_and_are_written(self) -> None:
        with open(self.path, "w") as stream:
            stream.write("1 Junk\n")
        keywords = KeywordFile(self.folder)
        self.assertEqual(keywords.letters_for(["junk", "signup", "Work"]), ("abc", []))
        with open(self.path) as stream:
            self.assertEqual(stream.read(), "0 signup\n1 Junk\n2 Work\n")
        self.assertEqual(keywords.tags_of("X:2,Sbc"), ("Junk", "Work"))
        self.assertEqual(keywords.letter_of("WORK"), "c")

    def test_without_create_unknown_names_are_missing(self) -> None:
        keywords = KeywordFile(self.folder)
        self.assertEqual(keywords.letters_for(["a"], create=False), ("", ["a"]))
        self.assertFalse(os.path.exists(self.path))

    def test_twenty_six_at_most(self) -> None:
        keywords = KeywordFile(self.folder)
        letters, missing = keywords.letters_for([f"t{n}" for n in range(28)])
        self.assertEqual((letters, missing), ("abcdefghijklmnopqrstuvwxyz", ["t26", "t27"]))
        self.assertIn("at most 26 tags", str(TagLimit(missing)))

    def test_rename_and_forget(self) -> None:
        keywords = KeywordFile(self.folder)
        keywords.letters_for(["a", "b"])
        keywords.rename("a", "A2")
        keywords.forget("b")
        with open(self.path) as stream:
            self.assertEqual(parse_keywords(stream.read()), {"a": "A2"})
        self.assertEqual(keywords.letters_for(["new"]), ("b", []))

    def test_edits_by_another_program_are_read(self) -> None:
        keywords = KeywordFile(self.folder)
        keywords.letters_for(["mine"])
        with open(self.path, "w") as stream:
            stream.write("0 mine\n5 theirs-longer\n")
        self.assertEqual(keywords.tags_of("X:2,af"), ("mine", "theirs-longer"))

    def test_one_file_per_folder_shared_by_threads(self) -> None:
        self.assertIs(keyword_file(self.folder), keyword_file(self.folder + "/"))
        keywords = keyword_file(self.folder)
        threads = [threading.Thread(target=keywords.letters_for, args=([f"t{n}"],))
                   for n in range(20)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        self.assertEqual(sorted(keywords.names().values()), sorted(f"t{n}" for n in range(20)))


def summary(subject: str, to: str = "dev@example.com", size: int = 100) -> Summary:
    return Summary("id", "", False, 0.0, size,
                   Facts(subject=subject, to=(Address("", to),)))


class RuleTests(TestCase):
    def test_rules_tag_matching_messages(self) -> None:
        rules = parse_rules({"signup": "subject:welcome to:@new.example",
                             "big": "larger:1K", "Not A Tag!": "-subject:welcome"})
        self.assertEqual(rules.tags_for(summary("Welcome aboard", "a@new.example")),
                         ("signup",))
        self.assertEqual(rules.tags_for(summary("Welcome aboard", "a@old.example")), ())
        self.assertEqual(rules.tags_for(summary("Invoice", size=5000)), ("big", "Not A Tag"))

    def test_bad_rules(self) -> None:
        with self.assertRaises(RuleError) as caught:
            parse_rules({"x": "   "})
        self.assertEqual(caught.exception.key, "x")
        with self.assertRaises(RuleError):
            parse_rules({"%%": "subject:a"})


class ConfigTests(TestCase):
    def test_tags_section_gives_rules(self) -> None:
        config = parse_config("[smtp]\n[tags]\nsignup = subject:welcome to:@new.example\n"
                              "Big = larger:1M\n", "/tmp/m.ini", {})
        self.assertEqual([tag for tag, _ in config.tags.rules], ["signup", "big"])
        self.assertEqual(config.tags.tags_for(summary("Welcome!", "x@new.example")),
                         ("signup",))
        self.assertEqual(parse_config("[smtp]\n", "/tmp/m.ini", {}).tags.rules, ())

    def test_bad_rule_names_the_key(self) -> None:
        with self.assertRaises(ConfigError) as caught:
            parse_config("[smtp]\n[tags]\nsignup =\n", "/tmp/m.ini", {})
        self.assertEqual(str(caught.exception),
                         "[tags] signup: give a search query, e.g. subject:welcome")
