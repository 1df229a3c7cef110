"""`mailsink passwd FILE USER`: in-process with patched streams, and the real console script."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator

from twisted.trial.unittest import SkipTest, TestCase

from mailsink import cli
from mailsink.auth.passwords import parse_password_file, verify_password


class TTYStream(io.StringIO):
    """A standard input that claims to be a terminal."""

    def isatty(self) -> bool:
        return True


def stdin_bytes(data: bytes) -> io.TextIOWrapper:
    """A standard input like the real one: text with a binary C{buffer} below."""
    return io.TextIOWrapper(io.BytesIO(data), encoding="utf-8")


def require(program: str | None, what: str) -> str:
    """A program's path; skipped where it is missing, except in CI."""
    if program is None or not os.path.exists(program):
        if os.environ.get("CI") == "true":
            raise AssertionError(f"{what} is required in CI")
        raise SkipTest(f"{what} is not installed")
    return program


class PasswdTests(TestCase):
    def setUp(self) -> None:
        self.folder = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.folder)
        self.path = os.path.join(self.folder, "passwords")
        self.stdout = io.StringIO()
        self.stderr = io.StringIO()
        self.patch(sys, "stdout", self.stdout)
        self.patch(sys, "stderr", self.stderr)

    def run_passwd(self, user: str, stdin: io.TextIOBase, *options: str) -> int:
        self.patch(sys, "stdin", stdin)
        return cli.main(["passwd", "-C", "4", *options, self.path, user])

    def read(self) -> bytes:
        with open(self.path, "rb") as f:
            return f.read()

    def assertPassword(self, user: str, password: bytes) -> None:
        entries, problems = parse_password_file(self.read().decode())
        self.assertEqual(problems, [])
        self.assertEqual(entries[user].scheme, "bcrypt")
        self.assertTrue(entries[user].secret.startswith("$2y$04$"))
        self.assertTrue(verify_password(entries[user], password))

    def assertOneErrorLine(self, status: int, expected: int) -> str:
        self.assertEqual(status, expected)
        lines = self.stderr.getvalue().splitlines()
        self.assertEqual(len(lines), 1, lines)
        return lines[0]

    def test_creates_file_0600_from_stdin_line(self) -> None:
        self.assertEqual(self.run_passwd("alice", stdin_bytes(b"s3cret\nignored\n")), 0)
        self.assertEqual(os.stat(self.path).st_mode & 0o777, 0o600)
        self.assertPassword("alice", b"s3cret")
        self.assertEqual(self.stdout.getvalue(), f"Added user alice in {self.path}\n")
        self.assertEqual(self.stderr.getvalue(), "")

    def test_crlf_and_missing_line_end(self) -> None:
        self.run_passwd("a", stdin_bytes(b"one\r\n"))
        self.run_passwd("b", stdin_bytes(b"two"))
        self.assertPassword("a", b"one")
        self.assertPassword("b", b"two")

    def test_unicode_user_and_password(self) -> None:
        self.assertEqual(self.run_passwd("jürgen", stdin_bytes("pässwörd\n".encode())), 0)
        self.assertPassword("jürgen", "pässwörd".encode())

    def test_update_keeps_every_other_line(self) -> None:
        before = (b"# people\r\nbob:{PLAIN}x\r\n\r\nalice:{PLAIN}old\r\n  # note\r\n"
                  b"carol:$apr1$guGkg1uW$JWPLZ5b5rPAE0/wWY1bRH1\r\nalice:{PLAIN}older\r\n"
                  b"junk \xff line")
        with open(self.path, "wb") as f:
            f.write(before)
        self.assertEqual(self.run_passwd("alice", stdin_bytes(b"new\n")), 0)
        self.assertIn("Updated user alice", self.stdout.getvalue())
        after = self.read().split(b"\r\n")
        expected = before.split(b"\r\n")
        self.assertTrue(after[3].startswith(b"alice:$2y$04$"))
        del after[3], expected[3], expected[5]
        self.assertEqual(after, expected)
        entries, _ = parse_password_file(self.read().decode("utf-8", "surrogateescape"))
        self.assertTrue(verify_password(entries["alice"], b"new"))

    def test_adds_after_a_last_line_without_line_end(self) -> None:
        with open(self.path, "wb") as f:
            f.write(b"bob:{PLAIN}x")
        self.run_passwd("alice", stdin_bytes(b"pw\n"))
        lines = self.read().split(b"\n")
        self.assertEqual(lines[0], b"bob:{PLAIN}x")
        self.assertEqual(lines[2], b"")
        self.assertPassword("alice", b"pw")

    def test_existing_mode_is_kept_and_no_temporary_left(self) -> None:
        with open(self.path, "w") as f:
            f.write("bob:{PLAIN}x\n")
        os.chmod(self.path, 0o640)
        self.run_passwd("alice", stdin_bytes(b"pw\n"))
        self.assertEqual(os.stat(self.path).st_mode & 0o777, 0o640)
        self.assertEqual(os.listdir(self.folder), ["passwords"])

    def test_symlink_target_is_updated(self) -> None:
        target = os.path.join(self.folder, "real")
        with open(target, "w") as f:
            f.write("bob:{PLAIN}x\n")
        os.symlink("real", self.path)
        self.run_passwd("alice", stdin_bytes(b"pw\n"))
        self.assertTrue(os.path.islink(self.path))
        self.assertPassword("alice", b"pw")

    def test_terminal_asks_twice(self) -> None:
        answers: Iterator[str] = iter(["tty-pw", "tty-pw"])
        prompts: list[str] = []

        def fake_getpass(prompt: str = "") -> str:
            prompts.append(prompt)
            return next(answers)

        self.patch(cli.getpass, "getpass", fake_getpass)
        self.assertEqual(self.run_passwd("alice", TTYStream()), 0)
        self.assertEqual(len(prompts), 2)
        self.assertPassword("alice", b"tty-pw")

    def test_terminal_mismatch_fails_and_writes_nothing(self) -> None:
        answers = iter(["one-pw", "two-pw"])
        self.patch(cli.getpass, "getpass", lambda prompt="": next(answers))
        line = self.assertOneErrorLine(self.run_passwd("alice", TTYStream()), 1)
        self.assertEqual(line, "mailsink passwd: the passwords do not match")
        self.assertFalse(os.path.exists(self.path))

    def test_empty_password_fails(self) -> None:
        for stdin in (b"", b"\n", b"\r\n"):
            self.stderr.truncate(0)
            self.stderr.seek(0)
            line = self.assertOneErrorLine(self.run_passwd("alice", stdin_bytes(stdin)), 1)
            self.assertEqual(line, "mailsink passwd: empty password")
        self.assertFalse(os.path.exists(self.path))

    def test_too_long_password_fails(self) -> None:
        line = self.assertOneErrorLine(self.run_passwd("a", stdin_bytes(b"x" * 73)), 1)
        self.assertIn("72 bytes", line)

    def test_non_utf8_password_fails(self) -> None:
        self.assertOneErrorLine(self.run_passwd("a", stdin_bytes(b"\xff\xfe\n")), 1)

    def test_bad_user_names_are_usage_errors(self) -> None:
        for user in ("", "a:b", "a b", "a\tb", "#a"):
            self.stderr.truncate(0)
            self.stderr.seek(0)
            self.assertOneErrorLine(self.run_passwd(user, stdin_bytes(b"pw\n")), 2)
        self.assertFalse(os.path.exists(self.path))

    def test_missing_folder_fails(self) -> None:
        self.path = os.path.join(self.folder, "no", "passwords")
        line = self.assertOneErrorLine(self.run_passwd("a", stdin_bytes(b"pw\n")), 1)
        self.assertIn("No such file or directory", line)

    def test_usage_errors(self) -> None:
        for argv in ([], ["nonsense"], ["passwd"], ["passwd", "f"], ["passwd", "-C", "3",
                                                                     "f", "u"]):
            self.stderr.truncate(0)
            self.stderr.seek(0)
            self.assertOneErrorLine(cli.main(argv), 2)

    def test_help_exits_zero(self) -> None:
        self.assertEqual(cli.main(["passwd", "--help"]), 0)
        self.assertIn("FILE", self.stdout.getvalue())

    def test_password_never_printed(self) -> None:
        self.run_passwd("alice", stdin_bytes(b"hunter2\n"))
        answers = iter(["hunter3", "hunter4"])
        self.patch(cli.getpass, "getpass", lambda prompt="": next(answers))
        self.run_passwd("alice", TTYStream())
        self.assertNotIn("hunter", self.stdout.getvalue() + self.stderr.getvalue())


class ConsoleScriptTests(TestCase):
    def test_real_script_with_password_on_stdin(self) -> None:
        script = require(os.path.join(os.path.dirname(sys.executable), "mailsink"),
                         "the mailsink console script (pip install -e .)")
        htpasswd = require(shutil.which("htpasswd"), "htpasswd (apache2-utils)")
        folder = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, folder)
        path = os.path.join(folder, "passwords")
        with open(path, "w") as f:
            f.write("# kept\nbob:{PLAIN}x\n")
        result = subprocess.run([script, "passwd", path, "alice"], input=b"r3al pw\n",
                                capture_output=True, check=False, timeout=60)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertNotIn(b"r3al", result.stdout + result.stderr)
        with open(path, "rb") as f:
            lines = f.read().splitlines()
        self.assertEqual(lines[:2], [b"# kept", b"bob:{PLAIN}x"])
        self.assertTrue(lines[2].startswith(b"alice:$2y$12$"))
        check = subprocess.run([htpasswd, "-vb", path, "alice", "r3al pw"],
                               capture_output=True, check=False)
        self.assertEqual(check.returncode, 0, check.stderr)
        wrong = subprocess.run([htpasswd, "-vb", path, "alice", "r3al"],
                               capture_output=True, check=False)
        self.assertNotEqual(wrong.returncode, 0)

        usage = subprocess.run([script, "passwd", path], capture_output=True, check=False)
        self.assertEqual(usage.returncode, 2)
        self.assertEqual(len(usage.stderr.splitlines()), 1)
