"""
C{mailsink lint FILE|-}, run as the console script on .eml files with CRLF and LF line
ends and on standard input: the findings one a line, exit status 1 only for an error.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile

from lint_samples import clean_message
from twisted.trial.unittest import TestCase

MAILSINK = os.path.join(os.path.dirname(sys.executable), "mailsink")

BROKEN = (b"From: webmaster@shop.example.com\r\nTo: customer@example.net\r\n"
          b"Subject: Your password reset\r\nSubject: Your password reset\r\n"
          b"Content-Type: text/html; charset=utf-8\r\n\r\n<p>Reset it here.</p>\r\n")


class LintCommandTests(TestCase):
    def run_tool(self, *args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
        return subprocess.run([MAILSINK, "lint", *args], input=stdin, capture_output=True,
                              timeout=60, check=False)

    def write(self, data: bytes) -> str:
        descriptor, path = tempfile.mkstemp(suffix=".eml")
        with os.fdopen(descriptor, "wb") as stream:
            stream.write(data)
        self.addCleanup(os.unlink, path)
        return path

    def lines(self, result: subprocess.CompletedProcess[bytes]) -> list[str]:
        return result.stdout.decode().splitlines()

    def test_clean_file_with_crlf_and_lf_line_ends(self) -> None:
        message = clean_message()
        for line_end in ("\r\n", "\n"):
            with self.subTest(line_end=line_end):
                data = message.as_bytes(policy=message.policy.clone(linesep=line_end))
                result = self.run_tool(self.write(data))
                self.assertEqual(result.returncode, 0, result.stderr)
                lines = self.lines(result)
                self.assertEqual([line.split()[:3] for line in lines[:-1]],
                                 [["info", "envelope-unknown", "[message]"]])
                self.assertEqual(lines[-1], "0 errors, 0 warnings")

    def test_errors_exit_1(self) -> None:
        result = self.run_tool(self.write(BROKEN))
        self.assertEqual(result.returncode, 1, result.stderr)
        lines = self.lines(result)
        self.assertEqual([line.split()[:3] for line in lines[:4]], [
            ["error", "missing-date", "[Date]"], ["error", "missing-message-id", "[Message-ID]"],
            ["error", "duplicate-header", "[Subject]"],
            ["warning", "html-without-text", "[body]"]])
        self.assertIn("Gmail refuses such mail (550 5.7.1)", lines[1])
        self.assertEqual(lines[-1], "3 errors, 1 warning")

    def test_standard_input(self) -> None:
        result = self.run_tool("-", stdin=BROKEN.replace(b"\r\n", b"\n"))
        self.assertEqual(result.returncode, 1, result.stderr)
        self.assertEqual(self.lines(result)[-1], "3 errors, 1 warning")
        clean = self.run_tool("-", stdin=clean_message().as_bytes())
        self.assertEqual((clean.returncode, self.lines(clean)[-1]), (0, "0 errors, 0 warnings"))

    def test_unreadable_file(self) -> None:
        missing = os.path.join(tempfile.gettempdir(), "mailsink-no-such-file.eml")
        result = self.run_tool(missing)
        self.assertEqual(result.returncode, 1)
        self.assertEqual(result.stderr.decode(),
                         f"mailsink lint: cannot read {missing}: No such file or directory\n")
