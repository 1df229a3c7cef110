"""
FETCH responses in the order scripts parse (issue 10 §2), end to end: the real daemon,
mail sent with smtplib, read with imaplib exactly as a script does, finding each UID with
C{re.search(rb"UID (\\d+)", item[0])} in the part before the literal.
"""

from __future__ import annotations

import email
import re
import uuid

from daemon import SharedDaemon
from test_e2e_imap import ENV, SECTIONS, deliver, starttls_client
from twisted.trial.unittest import TestCase


class FetchOrderEndToEnd(SharedDaemon, TestCase):
    daemon_sections = SECTIONS
    daemon_env = ENV

    def test_uid_before_the_literal(self) -> None:
        """The issue's script: Message-IDs by UID from a UID FETCH of header fields."""
        tags = [uuid.uuid4().hex for _ in range(3)]
        for tag in tags:
            deliver(self.daemon, tag)
        with starttls_client(self.daemon) as client:
            client.select("INBOX", readonly=True)
            typ, data = client.uid("FETCH", "1:*", "(BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])")
            self.assertEqual(typ, "OK")
            by_uid = {}
            for item in data:
                if not isinstance(item, tuple):
                    continue
                match = re.search(rb"UID (\d+)", item[0])
                self.assertIsNotNone(match, item[0])
                assert match is not None
                by_uid[int(match[1])] = email.message_from_bytes(item[1])["Message-ID"]
            for tag in tags:
                _typ, found = client.uid("SEARCH", "SUBJECT", f'"e2e {tag}"')
                [uid] = found[0].split()
                self.assertEqual(by_uid[int(uid)], f"<{tag}@e2e.test>")

    def test_fetch_asking_uid_last(self) -> None:
        """C{FETCH} with UID asked after the literal: UID, then FLAGS, then the literal."""
        tag = uuid.uuid4().hex
        deliver(self.daemon, tag)
        with starttls_client(self.daemon) as client:
            _typ, data = client.select("INBOX", readonly=True)
            last = int(data[0])
            typ, data = client.fetch(str(last), "(BODY.PEEK[] FLAGS UID)")
            self.assertEqual(typ, "OK")
            first = data[0]
            self.assertIsInstance(first, tuple)
            self.assertRegex(first[0], rb"^\d+ \(UID \d+ FLAGS \([^)]*\) BODY\[\] \{\d+\}$")
            self.assertIn(f"Hello {tag}".encode(), first[1])
