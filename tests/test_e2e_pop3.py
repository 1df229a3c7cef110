"""
End-to-end POP3: the real daemon on loopback ports; mail delivered with smtplib, read with
poplib (STLS and POP3_SSL), curl and raw sockets; checked against the Maildir on disk.
"""

from __future__ import annotations

import os
import poplib
import smtplib
import socket
import subprocess
import uuid

from daemon import Daemon, trusting_context
from twisted.trial.unittest import TestCase

CLIENT_TIMEOUT = 10.0
TOOL_TIMEOUT = 30.0
USERS = "alice:alice-secret bob:bob-secret"

SECTIONS: dict[str, dict[str, str]] = {
    "smtp": {"tls": "starttls", "auth": "optional"},
    "pop3": {"tls": "starttls"},
    "pop3:pop3s": {"tls": "implicit"},
    "pop3:required": {"tls": "starttls-required"},
}


def make_message(tag: str) -> bytes:
    return (f"From: s@example.com\r\nTo: r@example.com\r\nSubject: pop3 {tag}\r\n\r\n"
            f"Hello {tag}\r\n.a dotted line\r\nend {tag}\r\n").encode()


class POP3EndToEnd(TestCase):
    """Each test runs its own daemon (they change the Maildir and restart it)."""

    def start(self, sections: dict[str, dict[str, str]] | None = None,
              env: dict[str, str] | None = None) -> Daemon:
        daemon = Daemon.for_test(self, sections or SECTIONS,
                                 env={"MAILSINK_AUTH": USERS} if env is None else env)
        self.addCleanup(lambda: self.assertNotIn("Traceback", daemon.log_text()))
        return daemon

    def deliver(self, daemon: Daemon, tag: str, login: tuple[str, str] | None = None) -> None:
        with smtplib.SMTP("localhost", daemon.ports["smtp"], timeout=CLIENT_TIMEOUT) as smtp:
            if login is not None:
                smtp.starttls(context=trusting_context(daemon.cert_path))
                smtp.login(*login)
            smtp.sendmail("s@example.com", ["r@example.com"], make_message(tag))

    def pop(self, daemon: Daemon, section: str = "pop3", user: str = "alice",
            password: str | None = None) -> poplib.POP3:
        context = trusting_context(daemon.cert_path)
        if daemon.tls_modes[section] == "implicit":
            client: poplib.POP3 = poplib.POP3_SSL("localhost", daemon.ports[section],
                                                  timeout=CLIENT_TIMEOUT, context=context)
        else:
            client = poplib.POP3("localhost", daemon.ports[section], timeout=CLIENT_TIMEOUT)
            client.stls(context)
        self.addCleanup(client.close)
        client.user(user)
        client.pass_(password if password is not None else f"{user}-secret")
        return client

    def files(self, root: str) -> dict[str, str]:
        """Unique name to C{sub/filename} for the messages under C{root}."""
        found = {}
        for sub in ("new", "cur"):
            folder = os.path.join(root, sub)
            for name in os.listdir(folder) if os.path.isdir(folder) else []:
                found[name.split(":")[0]] = f"{sub}/{name}"
        return found

    def test_stls_retr_dele_quit(self) -> None:
        daemon = self.start()
        tags = [uuid.uuid4().hex for _ in range(2)]
        for tag in tags:
            self.deliver(daemon, tag)
        client = poplib.POP3("localhost", daemon.ports["pop3"], timeout=CLIENT_TIMEOUT)
        self.addCleanup(client.close)
        capa = client.capa()
        self.assertIn("STLS", capa)
        self.assertNotIn("USER", capa)
        with self.assertRaises(poplib.error_proto) as refused:
            client.user("alice")
        self.assertIn(b"[SYS/PERM]", refused.exception.args[0])
        client.stls(trusting_context(daemon.cert_path))
        capa = client.capa()
        self.assertNotIn("STLS", capa)
        self.assertIn("USER", capa)
        self.assertEqual(capa.get("SASL"), ["PLAIN"])
        client.user("alice")
        client.pass_("alice-secret")
        count, _ = client.stat()
        self.assertEqual(count, 2)
        before = self.files(daemon.maildir)
        _, uidls, _ = client.uidl()
        uids = [line.split()[1].decode() for line in uidls]
        self.assertEqual(sorted(uids), sorted(before))
        with open(os.path.join(daemon.maildir, before[uids[0]]), "rb") as stream:
            on_disk = stream.read()
        _, lines, _ = client.retr(1)
        self.assertEqual(b"\n".join(lines) + b"\n", on_disk)
        self.assertIn(b".a dotted line", lines)
        self.assertIn(f"Subject: pop3 {tags[0]}".encode(), lines)
        after = self.files(daemon.maildir)
        self.assertEqual(after[uids[0]], f"cur/{uids[0]}:2,S")
        self.assertEqual(after[uids[1]], before[uids[1]])
        _, top, _ = client.top(2, 0)
        self.assertEqual(top[-1], b"")
        self.assertIn(f"Subject: pop3 {tags[1]}".encode(), top)
        self.assertNotIn(f"Hello {tags[1]}".encode(), top)
        client.dele(1)
        self.assertEqual(set(self.files(daemon.maildir)), set(uids))
        client.quit()
        self.assertEqual(set(self.files(daemon.maildir)), {uids[1]})

    def test_pop3s_rset_and_disconnect_keep_files(self) -> None:
        daemon = self.start()
        self.deliver(daemon, "one")
        client = self.pop(daemon, "pop3:pop3s")
        client.dele(1)
        client.rset()
        client.quit()
        self.assertEqual(len(self.files(daemon.maildir)), 1)
        client = self.pop(daemon, "pop3:pop3s")
        client.dele(1)
        client.close()  # no QUIT: no UPDATE state
        client = self.pop(daemon, "pop3:pop3s")
        self.assertEqual(client.stat()[0], 1)
        client.quit()
        self.assertEqual(len(self.files(daemon.maildir)), 1)

    def test_uidl_stable_across_restart(self) -> None:
        daemon = self.start()
        for tag in ("a", "b", "c"):
            self.deliver(daemon, tag)
        client = self.pop(daemon)
        first = client.uidl()[1]
        client.retr(2)
        client.quit()
        daemon.stop()
        daemon.start()
        client = self.pop(daemon, "pop3:required")
        self.assertEqual(client.uidl()[1], first)
        client.quit()

    def test_starttls_required_and_bad_input(self) -> None:
        daemon = self.start()
        self.deliver(daemon, "x")
        with socket.create_connection(("127.0.0.1", daemon.ports["pop3:required"]),
                                      timeout=CLIENT_TIMEOUT) as sock:
            stream = sock.makefile("rwb")
            self.assertTrue(stream.readline().startswith(b"+OK"))
            for command, answer in [
                (b"USER alice", b"-ERR [SYS/PERM]"),
                (b"STAT", b"-ERR not logged in"),
                (b"RETR 1", b"-ERR not logged in"),
                (b"XYZZY", b"-ERR unknown command"),
                (b"A" * 20000, b"-ERR line too long"),
                (b"NOOP", b"+OK"),
            ]:
                stream.write(command + b"\r\n")
                stream.flush()
                reply = stream.readline()
                self.assertTrue(reply.startswith(answer), (command[:20], reply))
            stream.write(b"QUIT\r\n")
            stream.flush()
            self.assertTrue(stream.readline().startswith(b"+OK"))
        plain = poplib.POP3("localhost", daemon.ports["pop3"], timeout=CLIENT_TIMEOUT)
        self.addCleanup(plain.close)
        plain.stls(trusting_context(daemon.cert_path))
        plain.user("alice")
        with self.assertRaises(poplib.error_proto) as failed:
            plain.pass_("wrong")
        self.assertIn(b"[AUTH]", failed.exception.args[0])
        self.assertEqual(len(self.files(daemon.maildir)), 1)
        daemon.wait_for_log(lambda text: "authentication failed for 'alice'" in text)
        self.assertNotIn("wrong", daemon.log_text().split("authentication failed")[-1]
                         .split("\n")[0])

    def curl(self, daemon: Daemon, url: str, *extra: str) -> str:
        result = subprocess.run(
            ["curl", "-sS", "--ssl-reqd", "--cacert", daemon.cert_path, "-u",
             "alice:alice-secret", "--max-time", "20", *extra, url],
            capture_output=True, timeout=TOOL_TIMEOUT, check=False)
        self.assertEqual(result.returncode, 0, result.stderr)
        return result.stdout.decode()

    def test_curl(self) -> None:
        daemon = self.start()
        self.deliver(daemon, "curl1")
        self.deliver(daemon, "curl2")
        port = daemon.ports["pop3"]
        listing = self.curl(daemon, f"pop3://localhost:{port}/")
        self.assertEqual(len(listing.strip().splitlines()), 2)
        text = self.curl(daemon, f"pop3://localhost:{port}/2")
        self.assertIn("Subject: pop3 curl2", text)
        self.assertIn("\r\n.a dotted line\r\n", text)
        text = self.curl(daemon, f"pop3s://localhost:{daemon.ports['pop3:pop3s']}/1")
        self.assertIn("Subject: pop3 curl1", text)
        uidl = self.curl(daemon, f"pop3://localhost:{port}/", "-X", "UIDL")
        self.assertEqual(len(uidl.strip().splitlines()), 2)
        # Plaintext POP3 without TLS: curl --ssl-reqd refuses, and so would the server.
        self.assertEqual(len(self.files(daemon.maildir)), 2)

    def test_accept_any(self) -> None:
        sections = dict(SECTIONS, auth={"accept_any": "true"})
        daemon = self.start(sections, env={})
        self.deliver(daemon, "any")
        client = self.pop(daemon, user="who-ever", password="anything")
        self.assertEqual(client.stat()[0], 1)
        client.quit()

    def test_isolation_user(self) -> None:
        sections = dict(SECTIONS, mailsink={"isolation": "user"})
        daemon = self.start(sections)
        self.deliver(daemon, "shared")
        self.deliver(daemon, "for-alice", login=("alice", "alice-secret"))
        alice = self.pop(daemon)
        _, lines, _ = alice.retr(1)
        self.assertIn(b"Subject: pop3 for-alice", lines)
        self.assertEqual(alice.stat()[0], 1)
        alice.quit()
        bob = self.pop(daemon, user="bob")
        self.assertEqual(bob.stat()[0], 0)
        bob.quit()
        self.assertEqual(len(self.files(daemon.maildir)), 1)
        self.assertEqual(len(self.files(os.path.join(daemon.maildir, "alice"))), 1)
