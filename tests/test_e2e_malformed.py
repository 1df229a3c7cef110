"""
Malformed messages never cost a reader its connection (issue 10 §7), end to end: the odd
messages of L{odd_messages} put into the real daemon's Maildir, then read through IMAP
(imaplib: FETCH ENVELOPE, BODYSTRUCTURE, BODY sections, SEARCH), POP3 (poplib), the API's
message, part and view routes (urllib) and C{mailsink ls} / C{mailsink show}.
"""

from __future__ import annotations

import imaplib
import json
import os
import poplib
import subprocess
import sys
import time
from typing import Any, ClassVar
from unittest import mock

from daemon import POLL_INTERVAL, SharedDaemon, http_json, unverified_context
from imap_response import check_body, check_envelope, fetch_responses, from_imaplib
from odd_messages import SAMPLES
from twisted.trial.unittest import TestCase

from mailsink.imap.message import crlf
from mailsink.index.codec import message_id
from mailsink.pop3.mailbox import to_wire

CLIENT_TIMEOUT = 10.0
INDEX_TIMEOUT = 20.0
USER, PASSWORD = "alice", "secret"
MAILSINK = os.path.join(os.path.dirname(sys.executable), "mailsink")
SECTIONS = {"imap": {"tls": "starttls"}, "pop3": {"tls": "starttls"}, "web": {}}
SEARCHES = (["ALL"], ["SENTBEFORE", "1-Jan-2030"], ["SENTON", "17-May-2020"],
            ["SENTSINCE", "1-Jan-1990"], ["FROM", "example"], ["TO", "x"], ["CC", "one"],
            ["SUBJECT", "report"], ["HEADER", "Content-Type", "multipart"], ["HEADER", "Date",
            '""'], ["TEXT", "body"], ["BODY", "inner"], ["NOT", "HEADER", "Subject", '""'])
ITEMS = ("(UID FLAGS RFC822.SIZE ENVELOPE BODY BODYSTRUCTURE BODY.PEEK[] BODY.PEEK[HEADER] "
         "BODY.PEEK[TEXT] BODY.PEEK[1] BODY.PEEK[1.MIME] BODY.PEEK[2.1] BODY.PEEK[9] "
         "BODY.PEEK[HEADER.FIELDS (MESSAGE-ID SUBJECT)])")


class MalformedEndToEnd(SharedDaemon, TestCase):
    daemon_sections = SECTIONS
    daemon_env: ClassVar[dict[str, str]] = {"MAILSINK_AUTH": f"{USER}:{PASSWORD}"}
    stored: ClassVar[dict[str, bytes]]
    """Message ID (as the API and C{mailsink ls} give it) -> the bytes in the Maildir."""
    uids: ClassVar[dict[int, bytes]]

    @classmethod
    def _start_shared_daemon(cls) -> None:
        if "daemon" in cls.__dict__:
            return
        super()._start_shared_daemon()
        daemon = cls.daemon
        cls.stored, cls.uids = {}, {}
        for number, raw in enumerate(SAMPLES.values(), 1):
            base = f"{1600000000 + number}.M{number}P1Q1.odd"
            with open(os.path.join(daemon.maildir, "new", base), "wb") as file:
                file.write(raw)
            cls.stored[message_id(base)] = raw
            cls.uids[number] = raw
        deadline = time.monotonic() + INDEX_TIMEOUT
        while cls.api_json("/api/v1/messages?limit=1")["total"] < len(SAMPLES):
            if time.monotonic() > deadline:
                raise AssertionError(f"not indexed in time; log:\n{daemon.log_text()}")
            time.sleep(POLL_INTERVAL)  # the index finds the files itself: poll, bounded

    @classmethod
    def api_json(cls, path: str) -> Any:
        status, body = http_json("GET", cls.url(path))
        assert status == 200, (path, status, body)
        return json.loads(body)

    @classmethod
    def url(cls, path: str) -> str:
        return f"http://127.0.0.1:{cls.daemon.ports['web']}{path}"

    def setUp(self) -> None:
        super().setUp()
        self.addCleanup(self.no_tracebacks)

    def no_tracebacks(self) -> None:
        self.assertNotIn("Traceback", self.daemon.log_text())

    def imap(self) -> imaplib.IMAP4:
        client = imaplib.IMAP4("127.0.0.1", self.daemon.ports["imap"], timeout=CLIENT_TIMEOUT)
        client.starttls(ssl_context=unverified_context())
        client.login(USER, PASSWORD)
        return client

    def test_imap_fetch_every_item(self) -> None:
        """Thunderbird's way: every message's structure, on one connection that stays."""
        with self.imap() as client:
            client.select("INBOX", readonly=True)
            typ, data = client.uid("FETCH", "1:*", ITEMS)
            self.assertEqual(typ, "OK", data)
            found = fetch_responses(from_imaplib(data))
            self.assertEqual(len(found), len(SAMPLES))
            for items in found.values():
                data_crlf = crlf(self.uids[items[b"UID"]])
                check_envelope(items[b"ENVELOPE"])
                check_body(items[b"BODY"], extended=False)
                check_body(items[b"BODYSTRUCTURE"], extended=True)
                self.assertEqual(items[b"BODY[]"], data_crlf.replace(b"\0", b"\x80"))
                self.assertEqual(items[b"RFC822.SIZE"], len(data_crlf))
                self.assertIsNone(items[b"BODY[9]"])
            self.assertEqual(client.noop()[0], "OK")

    def test_imap_one_message_at_a_time(self) -> None:
        """Each message alone too: BODYSTRUCTURE and ENVELOPE, then SEARCH over them all."""
        with self.imap() as client:
            client.select("INBOX", readonly=True)
            for uid in self.uids:
                typ, data = client.uid("FETCH", str(uid), "(BODYSTRUCTURE ENVELOPE)")
                self.assertEqual(typ, "OK", (uid, data))
                [items] = fetch_responses(from_imaplib(data)).values()
                check_body(items[b"BODYSTRUCTURE"], extended=True)
            for criteria in SEARCHES:
                typ, data = client.uid("SEARCH", *criteria)
                self.assertEqual(typ, "OK", (criteria, data))
            typ, data = client.uid("SEARCH", "SUBJECT", '"no equals"')
            self.assertEqual(data[0].split(), [b"1"])
            self.assertEqual(client.noop()[0], "OK")

    @mock.patch.object(poplib, "_MAXLINE", 65536)  # poplib's own limit; one header is 20 KB
    def test_pop3_retr_top_list(self) -> None:
        client = poplib.POP3("127.0.0.1", self.daemon.ports["pop3"], timeout=CLIENT_TIMEOUT)
        try:
            client.stls(unverified_context())
            client.user(USER)
            client.pass_(PASSWORD)
            count, _size = client.stat()
            self.assertEqual(count, len(SAMPLES))
            self.assertEqual(len(client.uidl()[1]), count)
            for number in range(1, count + 1):
                _response, lines, _octets = client.retr(number)
                self.assertEqual(b"".join(line + b"\r\n" for line in lines),
                                 to_wire(self.uids[number]))
                _response, lines, _octets = client.top(number, 1)
            self.assertTrue(client.noop().startswith(b"+OK"))
        finally:
            client.quit()

    def test_api_message_part_and_view_routes(self) -> None:
        listed = self.api_json(f"/api/v1/messages?limit={len(SAMPLES)}")
        self.assertEqual({m["ID"] for m in listed["messages"]}, set(self.stored))
        for id, raw in self.stored.items():
            message = self.api_json(f"/api/v1/message/{id}")
            self.assertEqual(message["ID"], id)
            self.assertIsInstance(self.api_json(f"/api/v1/message/{id}/headers"), dict)
            status, body = http_json("GET", self.url(f"/api/v1/message/{id}/raw"))
            self.assertEqual((status, body), (200, raw), id)
            for view in ("html", "txt"):
                status, body = http_json("GET", self.url(f"/view/{id}.{view}"))
                self.assertEqual(status, 200, (id, view, body))
                body.decode("utf-8")
            for part in (*message["Inline"], *message["Attachments"]):
                status, _body = http_json("GET", self.url(
                    f"/api/v1/message/{id}/part/{part['PartID']}"))
                self.assertEqual(status, 200, (id, part))
            status, _body = http_json("GET", self.url(f"/api/v1/message/{id}/part/1"))
            self.assertIn(status, (200, 404), id)
        for query in ("subject:report", "from:example", "has:attachment", "grüße"):
            self.api_json(f"/api/v1/search?query={query}".replace(" ", "+")
                          .replace("ü", "%C3%BC").replace("ß", "%C3%9F"))

    def test_cli_ls_and_show(self) -> None:
        for encoding in ("utf-8", "ascii"):
            result = subprocess.run(
                [MAILSINK, "ls", self.daemon.maildir], capture_output=True, timeout=60,
                check=False, stdin=subprocess.DEVNULL,
                env={**os.environ, "PYTHONIOENCODING": encoding})
            self.assertEqual(result.returncode, 0, result.stderr)
            lines = result.stdout.decode(encoding).splitlines()
            self.assertEqual(len(lines), len(SAMPLES), lines)
            self.assertEqual({line.split()[0] for line in lines}, set(self.stored))
            self.assertTrue(all(line.isprintable() for line in lines), lines)
        for id, raw in self.stored.items():
            result = subprocess.run(
                [MAILSINK, "show", id, "--maildir", self.daemon.maildir], capture_output=True,
                timeout=60, check=False, stdin=subprocess.DEVNULL)
            self.assertEqual((result.returncode, result.stdout), (0, raw), result.stderr)
