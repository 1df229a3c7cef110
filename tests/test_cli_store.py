"""
C{mailsink ls} and C{mailsink show}, run as the console script against a Maildir written
here (shared messages, a per-user folder, read and unread), from a folder or an INI.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import textwrap

from twisted.trial.unittest import TestCase

from mailsink.store import view as store_view

MAILSINK = os.path.join(os.path.dirname(sys.executable), "mailsink")


def _message(sender: str, subject: str) -> bytes:
    return (f"Return-Path: <{sender}>\nFrom: Someone <{sender}>\nTo: you@example.com\n"
            f"Subject: {subject}\n\nbody of {subject}\n").encode()


class StoreCommandTests(TestCase):
    def setUp(self) -> None:
        self.root = tempfile.mkdtemp(prefix="mailsink-ls-")
        for folder in ("", "alice"):
            for sub in ("cur", "new", "tmp"):
                os.makedirs(os.path.join(self.root, folder, sub))
        self.write("", "new", "1700000001.M1P1Q1.host", _message("a@example.com", "first"))
        self.write("", "cur", "1700000003.M3P1Q3.host:2,S", _message("c@example.com", "third"))
        self.write("alice", "new", "1700000002.M2P1Q2.host", _message("b@example.com", "second"))

    def write(self, mailbox: str, sub: str, name: str, data: bytes) -> None:
        with open(os.path.join(self.root, mailbox, sub, name), "wb") as stream:
            stream.write(data)

    def run_tool(self, *args: str) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run([MAILSINK, *args], capture_output=True, timeout=60, check=False,
                              stdin=subprocess.DEVNULL)

    def test_ls_newest_first_with_mailbox_and_unread(self) -> None:
        result = self.run_tool("ls", self.root)
        self.assertEqual(result.returncode, 0, result.stderr)
        lines = result.stdout.decode().splitlines()
        self.assertEqual([line.split("  ")[0] for line in lines],
                         ["1700000003.M3P1Q3.host", "1700000002.M2P1Q2.host",
                          "1700000001.M1P1Q1.host"])
        self.assertTrue(lines[0].endswith("     c@example.com  third"), lines[0])
        self.assertTrue(lines[1].endswith("  N  [alice] b@example.com  second"), lines[1])

    def test_ls_from_the_ini(self) -> None:
        ini = os.path.join(self.root, "..", os.path.basename(self.root) + ".ini")
        with open(ini, "w") as stream:
            stream.write(textwrap.dedent(f"""\
                [mailsink]
                maildir = {self.root}
                [smtp]
                listen = tcp:2525
                """))
        self.addCleanup(os.unlink, ini)
        result = self.run_tool("ls", "-c", ini)
        self.assertEqual((result.returncode, len(result.stdout.splitlines())), (0, 3))

    def test_show_prints_the_message_as_stored(self) -> None:
        result = self.run_tool("show", "1700000002.M2P1Q2.host", "--maildir", self.root)
        self.assertEqual((result.returncode, result.stdout),
                         (0, _message("b@example.com", "second")))

    def test_show_unknown_id(self) -> None:
        result = self.run_tool("show", "nope", "--maildir", self.root)
        self.assertEqual(result.returncode, 1)
        self.assertEqual(result.stderr.decode(), f"mailsink show: no message nope in "
                                                 f"{self.root}\n")

    def test_ls_not_a_folder(self) -> None:
        result = self.run_tool("ls", os.path.join(self.root, "missing"))
        self.assertEqual(result.returncode, 1)

    def test_ids_match_the_index(self) -> None:
        """The same IDs as the web view and API (mailsink.index.codec.message_id)."""
        odd = "1700000009.M9P1Q9.host with space"
        self.write("", "new", odd, _message("d@example.com", "odd name"))
        listed = {item.subject: item.id for item in store_view.listing(self.root)}
        self.assertTrue(listed["odd name"].startswith("x"))
        self.assertEqual(store_view.find(self.root, listed["odd name"]),
                         os.path.join(self.root, "new", odd))
