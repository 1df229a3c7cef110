"""The password file parser and hash checks, against hashes the real htpasswd writes."""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import subprocess
import tempfile

import bcrypt
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SkipTest, TestCase

from mailsink.auth.passwords import (
    LineProblem,
    PasswordEntry,
    apr1_hash,
    content_lines,
    hash_bcrypt,
    parse_entry,
    parse_password_file,
    plaintext_password,
    verify_password,
)

HTPASSWD = shutil.which("htpasswd")


def htpasswd(*arguments: str) -> subprocess.CompletedProcess[str]:
    """Run the real htpasswd; skipped where it is missing, except in CI."""
    if HTPASSWD is None:
        if os.environ.get("CI") == "true":
            raise AssertionError("htpasswd (apache2-utils) is required in CI")
        raise SkipTest("htpasswd (apache2-utils) is not installed")
    return subprocess.run([HTPASSWD, *arguments], capture_output=True, text=True, check=False)


def htpasswd_entry(flag: str, user: str, password: str) -> PasswordEntry:
    """The entry C{htpasswd -nb<flag>} prints, parsed."""
    result = htpasswd(f"-nb{flag}", user, password)
    assert result.returncode == 0, result.stderr
    entries, problems = parse_password_file(result.stdout)
    assert problems == [], problems
    return entries[user]


# Strategies: users and secrets that are valid, and lines that are certainly not.
users = st.text(
    st.characters(blacklist_categories=("Cs", "Z", "Cc"), blacklist_characters=":#\ufeff"),
    min_size=1, max_size=12)
bcrypt_hashes = st.from_regex(r"\$2[aby]\$(0[4-9]|[12]\d|3[01])\$[./A-Za-z0-9]{53}",
                              fullmatch=True)
sha_hashes = st.binary(min_size=20, max_size=20).map(
    lambda d: "{SHA}" + base64.b64encode(d).decode())
apr1_hashes = st.from_regex(r"\$apr1\$[./0-9A-Za-z]{1,8}\$[./0-9A-Za-z]{22}", fullmatch=True)
plain_secrets = st.text(st.characters(blacklist_categories=("Cs", "Z", "Cc")),
                        min_size=1, max_size=20).map(lambda s: "{PLAIN}" + s)
stored_hashes = st.one_of(bcrypt_hashes, sha_hashes, apr1_hashes, plain_secrets)
junk_lines = st.one_of(
    st.text("abcdefgh{}$=", min_size=1).filter(lambda s: ":" not in s),  # no colon
    stored_hashes.map(lambda h: ":" + h),  # empty user
    users.map(lambda u: u + ":SECRETMARK-unknown"),
    users.map(lambda u: u + ":$2y$99$SECRETMARK"),
    users.map(lambda u: u + ":{SHA}SECRETMARK!"),
    users.map(lambda u: u + ":$apr1$SECRETMARK"),
    users.map(lambda u: u + ":{PLAIN}"),
)
filler_lines = st.sampled_from(["", "   ", "# a comment", "  # indented: comment", "\t"])


class ParserPropertyTests(TestCase):
    @settings(max_examples=200, deadline=None)
    @given(st.lists(st.one_of(
        st.tuples(st.just("entry"), st.tuples(users, stored_hashes)),
        st.tuples(st.just("junk"), junk_lines),
        st.tuples(st.just("filler"), filler_lines),
    ), max_size=30), st.sampled_from(["\n", "\r\n"]))
    def test_round_trip_with_junk(self, lines: list[tuple[str, object]], ending: str) -> None:
        text_lines: list[str] = []
        expected: dict[str, tuple[str, int]] = {}
        expected_problems: set[int] = set()
        for number, (kind, value) in enumerate(lines, start=1):
            if kind == "entry":
                assert isinstance(value, tuple)
                user, stored = value
                if user in expected:
                    expected_problems.add(expected[user][1])
                expected[user] = (stored, number)
                text_lines.append(f"{user}:{stored}")
            else:
                assert isinstance(value, str)
                text_lines.append(value)
                if kind == "junk":
                    expected_problems.add(number)
        entries, problems = parse_password_file(ending.join(text_lines))
        self.assertEqual(set(entries), set(expected))
        for user, (stored, _) in expected.items():
            entry = entries[user]
            self.assertEqual(entry.user, user)
            self.assertTrue(stored.endswith(entry.secret))
        self.assertEqual([p.line for p in problems], sorted(expected_problems))
        for problem in problems:
            self.assertNotIn("SECRETMARK", problem.reason)

    @settings(max_examples=300, deadline=None)
    @given(st.text())
    def test_any_text_parses_without_raising(self, text: str) -> None:
        entries, problems = parse_password_file(text)
        line_count = len(text.split("\n"))
        for problem in problems:
            self.assertTrue(1 <= problem.line <= line_count)
        for user, entry in entries.items():
            self.assertEqual(user, entry.user)
            self.assertIn(entry.scheme, ("bcrypt", "sha", "apr1", "plain"))


class ParserExampleTests(TestCase):
    def test_content_lines_drop_comments_blanks_and_line_ends(self) -> None:
        text = "\ufeffa:1\r\n# c\r\n\r\n  b:2  \n\t#x\nc:3"
        self.assertEqual(content_lines(text), [(1, "a:1"), (4, "b:2"), (6, "c:3")])

    def test_each_scheme(self) -> None:
        sha = "{SHA}" + base64.b64encode(hashlib.sha1(b"pw").digest()).decode()
        text = (f"b:{hash_bcrypt(b'pw', 4)}\n"
                f"s:{sha}\n"
                f"m:{apr1_hash(b'pw', b'abcdefgh')}\n"
                "p:{PLAIN}pw:with:colons\n")
        entries, problems = parse_password_file(text)
        self.assertEqual(problems, [])
        self.assertEqual({u: e.scheme for u, e in entries.items()},
                         {"b": "bcrypt", "s": "sha", "m": "apr1", "p": "plain"})
        self.assertEqual(entries["p"].secret, "pw:with:colons")
        for entry in entries.values():
            self.assertTrue(verify_password(entry, b"pw" + (b":with:colons"
                                                             if entry.user == "p" else b"")))

    def test_malformed_lines_are_reported_with_numbers_and_skipped(self) -> None:
        text = "\n".join([
            "good:{PLAIN}ok",
            "no colon here",
            ":{PLAIN}nouser",
            "x:whatever-format",
            "y:$2y$05$tooshort",
            "z:$2y$99$" + "a" * 53,
            "w:{SHA}notbase64!",
            "v:{SHA}" + base64.b64encode(b"short").decode(),
            "u:$apr1$salt",
            "t:{PLAIN}",
            "white space:{PLAIN}x",
            "also:{PLAIN}fine",
        ])
        entries, problems = parse_password_file(text)
        self.assertEqual(sorted(entries), ["also", "good"])
        self.assertEqual([p.line for p in problems], list(range(2, 12)))
        reasons = " ".join(p.reason for p in problems)
        for secret in ("nouser", "whatever-format", "tooshort", "notbase64", "salt"):
            self.assertNotIn(secret, reasons)

    def test_duplicate_user_later_line_wins_and_earlier_is_reported(self) -> None:
        entries, problems = parse_password_file("a:{PLAIN}one\nb:{PLAIN}x\na:{PLAIN}two\n")
        self.assertEqual(entries["a"].secret, "two")
        self.assertEqual(problems, [LineProblem(1, "user 'a' appears again on line 3, "
                                                   "which wins")])

    def test_malformed_later_line_leaves_earlier_entry(self) -> None:
        entries, problems = parse_password_file("a:{PLAIN}one\na:nonsense\n")
        self.assertEqual(entries["a"].secret, "one")
        self.assertEqual([p.line for p in problems], [2])

    def test_lone_surrogate_line_is_not_utf8(self) -> None:
        text = b"a:{PLAIN}\xff\xfe\nb:{PLAIN}ok\n".decode("utf-8", "surrogateescape")
        entries, problems = parse_password_file(text)
        self.assertEqual(list(entries), ["b"])
        self.assertEqual(problems, [LineProblem(1, "not valid UTF-8")])

    def test_unicode_user_and_password(self) -> None:
        entries, _ = parse_password_file("jürgen:{PLAIN}pässwörd\n")
        self.assertTrue(verify_password(entries["jürgen"], "pässwörd".encode()))

    def test_parse_entry_gives_reason_or_entry(self) -> None:
        self.assertEqual(parse_entry("nocolon"), "no ':' between user name and password hash")
        self.assertEqual(parse_entry("a:{PLAIN}b"), PasswordEntry("a", "plain", "b"))

    def test_repr_hides_the_secret(self) -> None:
        self.assertNotIn("hunter2", repr(PasswordEntry("a", "plain", "hunter2")))


class VerifyTests(TestCase):
    def test_plain(self) -> None:
        entry = PasswordEntry("a", "plain", "pw")
        self.assertTrue(verify_password(entry, b"pw"))
        self.assertFalse(verify_password(entry, b"pW"))
        self.assertFalse(verify_password(entry, b""))
        self.assertEqual(plaintext_password(entry), b"pw")

    def test_only_plain_entries_give_plaintext(self) -> None:
        for scheme in ("bcrypt", "sha", "apr1"):
            self.assertIsNone(plaintext_password(PasswordEntry("a", scheme, "x")))

    def test_bcrypt_prefixes(self) -> None:
        raw = bcrypt.hashpw(b"pw", bcrypt.gensalt(4)).decode()
        for prefix in ("$2y$", "$2a$", "$2b$"):
            entries, problems = parse_password_file(f"a:{prefix}{raw[4:]}")
            self.assertEqual(problems, [])
            self.assertTrue(verify_password(entries["a"], b"pw"))
            self.assertFalse(verify_password(entries["a"], b"px"))

    def test_hash_bcrypt_writes_2y_and_verifies(self) -> None:
        hashed = hash_bcrypt(b"pw", rounds=4)
        self.assertTrue(hashed.startswith("$2y$04$"))
        entry = PasswordEntry("a", "bcrypt", hashed)
        self.assertTrue(verify_password(entry, b"pw"))
        self.assertFalse(verify_password(entry, b"pw "))

    def test_hash_bcrypt_refuses_over_72_bytes(self) -> None:
        self.assertRaises(ValueError, hash_bcrypt, b"x" * 73, 4)

    def test_unknown_scheme_never_verifies(self) -> None:
        self.assertFalse(verify_password(PasswordEntry("a", "rot13", "pw"), b"pw"))

    def test_apr1_known_vector(self) -> None:
        # Written by htpasswd -nbm u p (Apache 2.4).
        self.assertEqual(apr1_hash(b"p", b"guGkg1uW"), "$apr1$guGkg1uW$JWPLZ5b5rPAE0/wWY1bRH1")


class RealHtpasswdTests(TestCase):
    passwords = ["p", "a" * 15, "b" * 16, "c" * 17, "longer password, 33 bytes long!!!",
                 "ünïcödé pässwörd", "x" * 64]

    def test_apr1_from_htpasswd(self) -> None:
        for password in self.passwords:
            entry = htpasswd_entry("m", "u", password)
            self.assertEqual(entry.scheme, "apr1")
            self.assertTrue(verify_password(entry, password.encode()), password)
            self.assertFalse(verify_password(entry, password.encode() + b"x"), password)

    def test_sha_from_htpasswd(self) -> None:
        for password in self.passwords:
            entry = htpasswd_entry("s", "u", password)
            self.assertEqual(entry.scheme, "sha")
            self.assertTrue(verify_password(entry, password.encode()))
            self.assertFalse(verify_password(entry, password.encode()[:-1]))

    def test_bcrypt_from_htpasswd(self) -> None:
        for password in ("p", "ünïcödé pässwörd"):
            entry = htpasswd_entry("B", "u", password)
            self.assertEqual(entry.scheme, "bcrypt")
            self.assertTrue(entry.secret.startswith("$2y$"))
            self.assertTrue(verify_password(entry, password.encode()))
            self.assertFalse(verify_password(entry, b"P"))

    def test_bcrypt_long_password_as_htpasswd_truncates_it(self) -> None:
        password = "y" * 80
        entry = htpasswd_entry("B", "u", password)
        self.assertTrue(verify_password(entry, password.encode()))
        self.assertTrue(verify_password(entry, b"y" * 72))
        self.assertFalse(verify_password(entry, b"y" * 71))

    def test_htpasswd_accepts_hash_bcrypt(self) -> None:
        folder = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, folder)
        path = os.path.join(folder, "passwords")
        with open(path, "w") as f:
            f.write(f"ümlaut:{hash_bcrypt('sécret'.encode(), rounds=5)}\n")
        self.assertEqual(htpasswd("-vb", path, "ümlaut", "sécret").returncode, 0)
        self.assertNotEqual(htpasswd("-vb", path, "ümlaut", "secret").returncode, 0)
