"""
A really full disk: the real daemon with its Maildir on a 1 MiB tmpfs. A message that does
not fit gets 452 4.3.1, leaves nothing in new/ or tmp/, costs only itself (the same session
then delivers a small message), and the log says what to change.
"""

from __future__ import annotations

import os
import smtplib
import subprocess

from daemon import Daemon
from twisted.trial.unittest import SkipTest, TestCase


def mount_tmpfs(path: str, size: str) -> None:
    os.makedirs(path, exist_ok=True)
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs",
                             path], capture_output=True, text=True, timeout=10)
    if result.returncode != 0:
        if os.environ.get("CI") == "true":
            raise AssertionError(f"cannot mount a tmpfs in CI: {result.stderr.strip()}")
        raise SkipTest(f"mounting a tmpfs needs root: {result.stderr.strip()}")


class DiskFullTests(TestCase):
    def test_message_that_does_not_fit_gets_452_and_leaves_nothing(self) -> None:
        daemon = Daemon({"mailsink": {"max_message_size": "8M"},
                         "smtp": {"tls": "none", "auth": "none"}})
        self.addCleanup(daemon.close)
        mount_tmpfs(daemon.maildir, "1m")
        self.addCleanup(subprocess.run, ["umount", daemon.maildir], timeout=10, check=False)
        self.addCleanup(daemon.stop)
        daemon.start()

        big = b"Subject: too big\r\n\r\n" + (b"x" * 76 + b"\r\n") * 30_000  # ~2.3 MB
        with smtplib.SMTP("127.0.0.1", daemon.ports["smtp"], timeout=30) as client:
            with self.assertRaises(smtplib.SMTPDataError) as refused:
                client.sendmail("app@example.com", ["dev@example.com"], big)
            self.assertEqual(refused.exception.smtp_code, 452)
            self.assertTrue(refused.exception.smtp_error.startswith(b"4.3.1"))
            daemon.wait_tmp_empty()
            self.assertEqual(daemon.new_files(), set())

            client.sendmail("app@example.com", ["dev@example.com"],
                            b"Subject: small\r\n\r\nfits\r\n")
        [name] = daemon.new_files()
        self.assertTrue(daemon.read_new(name).endswith(b"\n\nfits\n"))
        log = daemon.log_text()
        self.assertIn("No space left on device", log)
        self.assertIn("check that the maildir's file system has space", log)
