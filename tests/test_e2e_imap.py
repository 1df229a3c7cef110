"""
IMAP end to end: the real twistd daemon on loopback ports; mail delivered with smtplib,
read with imaplib (STARTTLS and implicit TLS), and with curl when it is installed.
"""

from __future__ import annotations

import imaplib
import os
import re
import shutil
import smtplib
import socket
import subprocess
import time
import uuid
from collections.abc import Callable

from daemon import Daemon, SharedDaemon, unverified_context
from twisted.trial.unittest import TestCase

CLIENT_TIMEOUT = 10.0
TOOL_TIMEOUT = 30.0
USER, PASSWORD = "alice", "secret"

SECTIONS = {
    "smtp": {"tls": "none"},
    "imap": {"tls": "starttls"},
    "imap:imaps": {"tls": "implicit"},
}
ENV = {"MAILSINK_AUTH": f"{USER}:{PASSWORD}"}


def deliver(daemon: Daemon, tag: str) -> None:
    text = (f"From: sender@example.com\r\nTo: rcpt@example.com\r\nSubject: e2e {tag}\r\n"
            f"Message-Id: <{tag}@e2e.test>\r\n\r\nHello {tag}\r\n")
    with smtplib.SMTP("127.0.0.1", daemon.ports["smtp"], timeout=CLIENT_TIMEOUT) as smtp:
        smtp.sendmail("sender@example.com", ["rcpt@example.com"], text.encode())


def starttls_client(daemon: Daemon, login: bool = True) -> imaplib.IMAP4:
    client = imaplib.IMAP4("127.0.0.1", daemon.ports["imap"], timeout=CLIENT_TIMEOUT)
    client.starttls(ssl_context=unverified_context())
    if login:
        client.login(USER, PASSWORD)
    return client


def implicit_client(daemon: Daemon) -> imaplib.IMAP4_SSL:
    client = imaplib.IMAP4_SSL("127.0.0.1", daemon.ports["imap:imaps"],
                               ssl_context=unverified_context(), timeout=CLIENT_TIMEOUT)
    client.login(USER, PASSWORD)
    return client


def files(daemon: Daemon) -> list[str]:
    return sorted(os.listdir(os.path.join(daemon.maildir, "cur")) +
                  os.listdir(os.path.join(daemon.maildir, "new")))


def find(daemon: Daemon, tag: str) -> int:
    """The UID of the message tagged C{tag} (on the selected INBOX of a new session)."""
    with implicit_client(daemon) as client:
        client.select("INBOX")
        typ, data = client.uid("SEARCH", "SUBJECT", f'"e2e {tag}"')
        assert typ == "OK", data
        return int(data[0].split()[-1])


class IMAPEndToEnd(SharedDaemon, TestCase):
    daemon_sections = SECTIONS
    daemon_env = ENV

    def test_logindisabled_before_starttls(self) -> None:
        client = imaplib.IMAP4("127.0.0.1", self.daemon.ports["imap"],
                               timeout=CLIENT_TIMEOUT)
        try:
            self.assertIn("LOGINDISABLED", client.capabilities)
            self.assertIn("STARTTLS", client.capabilities)
            self.assertRaises(imaplib.IMAP4.error, client.login, USER, PASSWORD)
            client.starttls(ssl_context=unverified_context())
            self.assertNotIn("LOGINDISABLED", client.capabilities)
            self.assertIn("AUTH=PLAIN", client.capabilities)
            self.assertRaises(imaplib.IMAP4.error, client.login, USER, "wrong")
            self.assertEqual(client.login(USER, PASSWORD)[0], "OK")
        finally:
            client.logout()

    def test_read_mark_seen_delete(self) -> None:
        tag = uuid.uuid4().hex
        deliver(self.daemon, tag)
        with starttls_client(self.daemon) as client:
            typ, data = client.select("INBOX")
            self.assertEqual(typ, "OK")
            typ, data = client.uid("SEARCH", "UNSEEN", "SUBJECT", f'"e2e {tag}"')
            [uid] = data[0].split()
            typ, data = client.uid("FETCH", uid, "(FLAGS RFC822.SIZE BODY.PEEK[])")
            self.assertEqual(typ, "OK")
            self.assertIn(f"Hello {tag}".encode(), data[0][1])
            self.assertIn(b"FLAGS ()", data[0][0])
            [name] = [n for n in files(self.daemon) if _holds(self.daemon, n, tag)]
            base = name.split(":")[0]
            client.uid("STORE", uid, "+FLAGS", "(\\Seen)")
            self.assertIn(base + ":2,S", files(self.daemon))
            typ, data = client.uid("SEARCH", "UNSEEN", "SUBJECT", f'"e2e {tag}"')
            self.assertEqual(data[0], b"")
            client.uid("STORE", uid, "+FLAGS", "(\\Deleted)")
            self.assertIn(base + ":2,ST", files(self.daemon))
            typ, data = client.expunge()
            self.assertEqual(typ, "OK")
            self.assertEqual([n for n in files(self.daemon) if n.startswith(base)], [])

    def test_idle_gets_new_mail(self) -> None:
        with implicit_client(self.daemon) as client:
            _typ, data = client.select("INBOX")
            exists = int(data[0])
            client.send(b"i1 IDLE\r\n")
            self.assertTrue(client.readline().startswith(b"+"))
            tag = uuid.uuid4().hex
            start = time.monotonic()
            deliver(self.daemon, tag)
            delivered = time.monotonic()
            line = client.readline()
            while b"EXISTS" not in line:
                line = client.readline()
            arrived = time.monotonic()
            self.assertGreater(int(line.split()[1]), exists)
            self.assertLess(arrived - delivered, 2.0, (start, delivered, arrived))
            client.send(b"DONE\r\n")
            line = client.readline()
            while not line.startswith(b"i1 "):
                line = client.readline()
            self.assertTrue(line.startswith(b"i1 OK"), line)

    def test_bad_input_keeps_connection(self) -> None:
        with implicit_client(self.daemon) as client:
            client.select("INBOX")
            client.send(b"x1 FROBNICATE\r\n")
            self.assertTrue(client.readline().startswith(b"x1 BAD"))
            client.send(b"x2 FETCH 999999 (FLAGS)\r\n")
            self.assertTrue(client.readline().startswith(b"x2 BAD"))
            client.send(b"x3 NOOP " + b"a" * 200_000 + b"\r\n")
            self.assertTrue(client.readline().startswith(b"* BAD"))
            client.send(b"x4 APPEND INBOX {999999999}\r\n")
            self.assertTrue(client.readline().startswith(b"x4 BAD"))
            self.assertEqual(client.noop()[0], "OK")

    def test_curl_lists_and_fetches(self) -> None:
        curl = shutil.which("curl")
        if curl is None:
            self.skipTest("curl is not installed")
        tag = uuid.uuid4().hex
        deliver(self.daemon, tag)
        uid = find(self.daemon, tag)
        url = f"imap://127.0.0.1:{self.daemon.ports['imap']}"
        common = [curl, "-sS", "--ssl-reqd", "-k", "--max-time", "20",
                  "-u", f"{USER}:{PASSWORD}"]
        listed = subprocess.run([*common, url + "/"], capture_output=True,
                                timeout=TOOL_TIMEOUT, check=False)
        self.assertEqual(listed.returncode, 0, listed.stderr)
        self.assertIn(b"INBOX", listed.stdout)
        fetched = subprocess.run([*common, f"{url}/INBOX;UID={uid}"], capture_output=True,
                                 timeout=TOOL_TIMEOUT, check=False)
        self.assertEqual(fetched.returncode, 0, fetched.stderr)
        self.assertIn(f"Hello {tag}".encode(), fetched.stdout)


def _holds(daemon: Daemon, name: str, tag: str) -> bool:
    sub = "cur" if ":2," in name else "new"
    with open(os.path.join(daemon.maildir, sub, name), "rb") as file:
        return tag.encode() in file.read()


class IMAPRestart(TestCase):
    def test_uids_and_uidvalidity_survive_restart(self) -> None:
        daemon = Daemon.for_test(self, SECTIONS, env=ENV)
        for n in range(3):
            deliver(daemon, f"restart {n}")
        with implicit_client(daemon) as client:
            client.select("INBOX")
            validity = client.untagged_responses.get("UIDVALIDITY", [b""])[0]
            _typ, data = client.fetch("1:*", "(UID)")
            before = re.findall(rb"UID (\d+)", b" ".join(data))
        self.assertEqual(before, [b"1", b"2", b"3"])
        self.assertTrue(validity.isdigit(), validity)
        daemon.stop()
        daemon.start()
        deliver(daemon, "restart 3")
        with implicit_client(daemon) as client:
            client.select("INBOX")
            self.assertEqual(client.untagged_responses.get("UIDVALIDITY", [b""])[0],
                             validity)
            _typ, data = client.fetch("1:*", "(UID)")
            after = re.findall(rb"UID (\d+)", b" ".join(data))
        self.assertEqual(after, [b"1", b"2", b"3", b"4"])

    def test_plain_imap_without_tls_when_allowed(self) -> None:
        daemon = Daemon.for_test(self, {"smtp": {"tls": "none"}, "imap": {"tls": "none"},
                                        "auth": {"allow_insecure": "true"}}, env=ENV)
        with socket.create_connection(("127.0.0.1", daemon.ports["imap"]),
                                      timeout=CLIENT_TIMEOUT):
            pass
        client = imaplib.IMAP4("127.0.0.1", daemon.ports["imap"], timeout=CLIENT_TIMEOUT)
        try:
            self.assertNotIn("LOGINDISABLED", client.capabilities)
            self.assertNotIn("STARTTLS", client.capabilities)
            self.assertEqual(client.login(USER, PASSWORD)[0], "OK")
            self.assertEqual(client.select("INBOX")[0], "OK")
        finally:
            client.logout()


class IMAPIsolation(TestCase):
    def test_users_see_only_their_own_mailbox(self) -> None:
        daemon = Daemon.for_test(
            self, {"mailsink": {"isolation": "user"}, "smtp": {"tls": "none"},
                   "imap": {"tls": "none"}, "auth": {"allow_insecure": "true"}},
            env={"MAILSINK_AUTH": "alice:secret bob:hunter2"})
        text = b"From: a@example.com\r\nTo: b@example.com\r\nSubject: %s\r\n\r\nhi\r\n"
        with smtplib.SMTP("127.0.0.1", daemon.ports["smtp"], timeout=CLIENT_TIMEOUT) as smtp:
            smtp.login("alice", "secret")
            smtp.sendmail("a@example.com", ["b@example.com"], text % b"for alice")
        with smtplib.SMTP("127.0.0.1", daemon.ports["smtp"], timeout=CLIENT_TIMEOUT) as smtp:
            smtp.sendmail("a@example.com", ["b@example.com"], text % b"shared")
        seen = {}
        for user, password in (("alice", "secret"), ("bob", "hunter2")):
            client = imaplib.IMAP4("127.0.0.1", daemon.ports["imap"], timeout=CLIENT_TIMEOUT)
            try:
                client.login(user, password)
                _typ, data = client.select("INBOX")
                count = int(data[0])
                subjects = b""
                if count:
                    _typ, fetched = client.fetch("1:*", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
                    subjects = b"".join(p[1] for p in fetched if isinstance(p, tuple))
                seen[user] = (count, subjects)
            finally:
                client.logout()
        self.assertEqual(seen["alice"][0], 1)
        self.assertIn(b"for alice", seen["alice"][1])
        self.assertEqual(seen["bob"], (0, b""))


class IMAPAndWebReadState(TestCase):
    """\\Seen over IMAP and Read in the web API are one state: the Maildir S flag."""

    def test_read_state_is_shared(self) -> None:
        daemon = Daemon.for_test(self, {"smtp": {"tls": "none"}, "imap": {"tls": "none"},
                                        "auth": {"allow_insecure": "true"},
                                        "web": {"auth": "none"}}, env=ENV)
        api = f"http://127.0.0.1:{daemon.ports['web']}/api/v1"
        tag = uuid.uuid4().hex
        deliver(daemon, tag)
        message_id = _api_id(api, tag)
        self.assertFalse(_api_read(api, message_id))
        client = imaplib.IMAP4("127.0.0.1", daemon.ports["imap"], timeout=CLIENT_TIMEOUT)
        try:
            client.login(USER, PASSWORD)
            client.select("INBOX")
            _typ, data = client.uid("SEARCH", "SUBJECT", f'"e2e {tag}"')
            [uid] = data[0].split()
            self.assertEqual(_imap_flags(client, uid), [])

            self.assertEqual(client.uid("STORE", uid, "+FLAGS", "(\\Seen)")[0], "OK")
            _poll(lambda: _api_read(api, message_id), "the API to show Read after STORE")

            _api_call(api + "/messages", "PUT", {"IDs": [message_id], "Read": False})
            self.assertFalse(_api_read(api, message_id))
            _poll(lambda: "\\Seen" not in _imap_flags(client, uid),
                  "IMAP to drop \\Seen after the API marked the message unread")

            _api_call(f"{api}/message/{message_id}", "GET")
            _poll(lambda: "\\Seen" in _imap_flags(client, uid),
                  "IMAP to show \\Seen after the API read the message")
            self.assertTrue(_api_read(api, message_id))
        finally:
            client.logout()


def _api_call(url: str, method: str, body: object = None) -> object:
    import json
    import urllib.request
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=CLIENT_TIMEOUT) as response:
        text = response.read()
    return json.loads(text) if text.strip()[:1] in (b"{", b"[") else text


def _api_summary(api: str, tag: str) -> dict[str, object] | None:
    listed = _api_call(api + "/messages?limit=500", "GET")
    assert isinstance(listed, dict), listed
    for summary in listed["messages"]:
        if summary.get("Subject") == f"e2e {tag}":
            return dict(summary)
    return None


def _api_id(api: str, tag: str) -> str:
    found: list[dict[str, object]] = []

    def indexed() -> bool:
        summary = _api_summary(api, tag)
        if summary is not None:
            found.append(summary)
        return summary is not None

    _poll(indexed, "the API to list the delivered message")
    return str(found[0]["ID"])


def _api_read(api: str, message_id: str) -> bool:
    listed = _api_call(api + "/messages?limit=500", "GET")
    assert isinstance(listed, dict), listed
    [summary] = [s for s in listed["messages"] if s.get("ID") == message_id]
    return bool(summary["Read"])


def _imap_flags(client: imaplib.IMAP4, uid: bytes) -> list[str]:
    """The message's flags, after a NOOP has let the session see others' changes."""
    assert client.noop()[0] == "OK"
    typ, data = client.uid("FETCH", uid, "(FLAGS)")
    assert typ == "OK", data
    line = b" ".join(d for d in data if isinstance(d, bytes))
    found = re.findall(rb"FLAGS \(([^)]*)\)", line)  # the last is FETCH's own answer
    assert found, data
    return found[-1].decode().split()


def _poll(check: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if check():
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.1)
