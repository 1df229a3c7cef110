"""
End-to-end tests of SMTP AUTH: the real daemon (C{twistd -n mailsink}) on loopback ports,
one per test, with password files written by the real C{htpasswd} and C{mailsink passwd},
credentials from C{MAILSINK_AUTH}, and clients smtplib, raw commands and swaks.

Failed logins are slowed down per client address (0.5 s, then doubling), and every
connection here comes from 127.0.0.1: a test that fails a login on purpose follows it with
a good one, which clears the address's record, so each failure costs only the first delay.
"""

from __future__ import annotations

import base64
import email
import hashlib
import hmac
import os
import re
import shutil
import smtplib
import socket
import stat
import subprocess
import sys
import time
import unittest
import uuid
from collections.abc import Mapping

from daemon import Daemon, trusting_context
from twisted.trial.unittest import TestCase

CLIENT_TIMEOUT = 10.0
TOOL_TIMEOUT = 30.0
HELO = "auth.client.test"
SECRET = "Tr0ub4dor&3-secret"
"""A password distinctive enough to search the log for."""
WRONG = "Tr0ub4dor&3-wrong"
MAILSINK = os.path.join(os.path.dirname(sys.executable), "mailsink")
PASSWORDS = "passwords"
"""The password file's name in the daemon's folder (relative to its INI file)."""

OK = (235, b"2.7.0 Authentication successful")
FAILED = (535, b"5.7.8 Error: authentication failed")
AUTH_REQUIRED = (530, b"5.7.0 Authentication required")
ENCRYPTION_REQUIRED = (538, b"5.7.11 Encryption required for requested authentication "
                            b"mechanism")
MECHANISMS = ("PLAIN", "LOGIN", "CRAM-MD5", "XOAUTH2", "OAUTHBEARER")
FIRST_DELAY = 0.5
"""mailsink.auth.throttle.FIRST_DELAY: the first failure's wait; each next one doubles."""

_QUEUED = re.compile(rb"2\.0\.0 Ok: queued as (\S+)")
_RECEIVED = re.compile(rb"^Received: [^\n]*\n(?:\t[^\n]*\n)*", re.M)


def b64(data: str | bytes) -> str:
    raw = data.encode("utf-8") if isinstance(data, str) else data
    return base64.b64encode(raw).decode("ascii")


def run_tool(argv: list[str], *, stdin: str | None = None,
             ) -> subprocess.CompletedProcess[str]:
    """Run a command to completion (bounded); output captured as text."""
    return subprocess.run(argv, input=stdin, capture_output=True, text=True,
                          timeout=TOOL_TIMEOUT, check=False,
                          stdin=None if stdin is not None else subprocess.DEVNULL)


def htpasswd(*args: str) -> None:
    """Run the real C{htpasswd} (Apache's apache2-utils)."""
    if shutil.which("htpasswd") is None:
        raise unittest.SkipTest("htpasswd (apache2-utils) is not installed")
    result = run_tool(["htpasswd", *args])
    if result.returncode:
        raise AssertionError(f"htpasswd {args[:-1]} failed: {result.stderr}")


def plain_blob(user: str, password: str) -> str:
    """A SASL PLAIN initial response, base64 (empty authorisation identity)."""
    return b64(f"\0{user}\0{password}")


def received(data: bytes) -> str:
    """The stored message's Received header, unfolded."""
    match = _RECEIVED.search(data)
    assert match is not None, data[:400]
    return match.group(0).decode().replace("\n\t", " ").strip()


class AuthTestCase(TestCase):
    """Starting a daemon, connecting, logging in and sending, with checked replies."""

    def start(self, sections: Mapping[str, Mapping[str, str]], *,
              passwords: str | None = None, env: Mapping[str, str] | None = None,
              htpasswd_args: list[list[str]] | None = None) -> Daemon:
        """
        A daemon for this test. With C{passwords} (file text) or C{htpasswd_args}
        (argument lists run with the file's path before the user), C{[auth]
        password_file} names the file, written before the start.
        """
        sections = {name: dict(keys) for name, keys in sections.items()}
        if passwords is not None or htpasswd_args:
            sections.setdefault("auth", {})["password_file"] = PASSWORDS
        daemon = Daemon.for_test(self, sections, start=False, env=env)
        path = self.password_path(daemon)
        if passwords is not None:
            with open(path, "w", encoding="utf-8") as stream:
                stream.write(passwords)
        for args in htpasswd_args or []:
            htpasswd(*args[:-2], path, *args[-2:])
        daemon.start()
        return daemon

    def password_path(self, daemon: Daemon) -> str:
        return os.path.join(daemon.root, PASSWORDS)

    def smtp(self, daemon: Daemon, section: str = "smtp", *,
             starttls: bool = False) -> smtplib.SMTP:
        """A connected client that has sent EHLO (and STARTTLS and EHLO again if told)."""
        client = smtplib.SMTP("127.0.0.1", daemon.ports[section], local_hostname=HELO,
                              timeout=CLIENT_TIMEOUT)
        self.addCleanup(client.close)
        self.assertEqual(client.ehlo()[0], 250)
        if starttls:
            code, _ = client.starttls(context=trusting_context(daemon.cert_path))
            self.assertEqual(code, 220)
            self.assertEqual(client.ehlo()[0], 250)
        return client

    def smtps(self, daemon: Daemon, section: str = "smtp:smtps") -> smtplib.SMTP_SSL:
        """A client over implicit TLS, trusting only the daemon's certificate; after EHLO."""
        client = smtplib.SMTP_SSL("127.0.0.1", daemon.ports[section], local_hostname=HELO,
                                  timeout=CLIENT_TIMEOUT,
                                  context=trusting_context(daemon.cert_path))
        self.addCleanup(client.close)
        self.assertEqual(client.ehlo()[0], 250)
        return client

    def mechanisms(self, client: smtplib.SMTP) -> list[str] | None:
        """The AUTH mechanisms of the last EHLO, or None when AUTH was not advertised."""
        if not client.has_extn("auth"):
            return None
        return client.esmtp_features["auth"].split()

    def authenticate(self, client: smtplib.SMTP, mechanism: str, user: str, password: str,
                     *, initial: bool = True, sent: list[str] | None = None,
                     ) -> tuple[int, bytes]:
        """
        One whole AUTH exchange by hand (so every prompt is checked); the final reply.
        Every base64 line sent is appended to C{sent}.
        """
        lines = sent if sent is not None else []

        def command(*args: str) -> tuple[int, bytes]:
            return client.docmd(*args)

        def respond(text: str | bytes) -> tuple[int, bytes]:
            lines.append(b64(text))
            return command(lines[-1])

        if mechanism == "PLAIN":
            blob = f"\0{user}\0{password}"
            if initial:
                lines.append(b64(blob))
                return command("AUTH", f"PLAIN {lines[-1]}")
            self.assertEqual(command("AUTH", "PLAIN"), (334, b""))
            return respond(blob)
        if mechanism == "LOGIN":
            if initial:
                lines.append(b64(user))
                reply = command("AUTH", f"LOGIN {lines[-1]}")
            else:
                self.assertEqual(command("AUTH", "LOGIN"), (334, b64("Username:").encode()))
                reply = respond(user)
            self.assertEqual(reply, (334, b64("Password:").encode()))
            return respond(password)
        if mechanism == "CRAM-MD5":
            code, challenge = command("AUTH", "CRAM-MD5")
            if code != 334:
                return code, challenge
            nonce = base64.b64decode(challenge)
            self.assertRegex(nonce, rb"^<[^<>@]+@localhost>$")
            digest = hmac.new(password.encode(), nonce, hashlib.md5).hexdigest()
            return respond(f"{user} {digest}")
        if mechanism in ("XOAUTH2", "OAUTHBEARER"):
            bearer = f"auth=Bearer {password}\x01\x01"
            blob = (f"user={user}\x01{bearer}" if mechanism == "XOAUTH2"
                    else f"n,a={user},\x01{bearer}")
            if initial:
                lines.append(b64(blob))
                code, text = command("AUTH", f"{mechanism} {lines[-1]}")
            else:
                self.assertEqual(command("AUTH", mechanism), (334, b""))
                code, text = respond(blob)
            if code == 334:  # the error challenge (RFC 7628 / Google): an empty line ends it
                self.assertIn(b'"status"', base64.b64decode(text))
                return command("")
            return code, text
        raise AssertionError(f"no such mechanism {mechanism}")

    def send(self, client: smtplib.SMTP, tag: str, *, sender: str = "sender@example.com",
             to: str = "rcpt@example.com") -> str:
        """MAIL, RCPT, DATA with checked replies; the stored message's name."""
        self.assertEqual(client.mail(sender), (250, b"2.1.0 Ok"))
        self.assertEqual(client.rcpt(to), (250, b"2.1.5 Ok"))
        message = (f"From: {sender}\r\nTo: {to}\r\nSubject: auth e2e {tag}\r\n\r\n"
                   f"Hello {tag}.\r\n")
        code, text = client.data(message.encode())
        self.assertEqual(code, 250, text)
        match = _QUEUED.fullmatch(text)
        assert match is not None, text
        return match.group(1).decode()

    def assert_stored(self, daemon: Daemon, name: str, tag: str, *, folder: str = "") -> str:
        """C{name} is in C{new/} of the Maildir C{folder} (default shared); its Received."""
        path = os.path.join(daemon.maildir, folder, "new", name)
        self.assertTrue(os.path.isfile(path), f"{path} is missing")
        with open(path, "rb") as stream:
            data = stream.read()
        self.assertIn(f"Subject: auth e2e {tag}\n".encode(), data)
        return received(data)

    def assert_authenticated_received(self, header: str, user: str, *, tls: bool) -> None:
        protocol = "ESMTPSA" if tls else "ESMTPA"
        self.assertIn(f" with {protocol} id ", header)
        self.assertIn(f"(Authenticated sender: {user})", header)
        if tls:
            self.assertRegex(header, r"\(using TLSv1\.[23] with cipher ")
        else:
            self.assertNotIn("(using ", header)

    def swaks(self, daemon: Daemon, section: str, mechanism: str, user: str,
              password: str) -> str:
        """swaks with STARTTLS and AUTH; checks the message is stored, returns Received."""
        if shutil.which("swaks") is None:
            raise unittest.SkipTest("swaks is not installed")
        tag = uuid.uuid4().hex
        before = daemon.new_files()
        result = run_tool(
            ["swaks", "--server", f"127.0.0.1:{daemon.ports[section]}", "--helo", HELO,
             "--from", "swaks@example.com", "--to", "x@example.com",
             "--header", f"Subject: auth e2e {tag}", "--timeout", "10", "-tls",
             "-a", mechanism, "--auth-user", user, "--auth-password", password])
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        self.assertIn("<~  235 2.7.0 Authentication successful\n", result.stdout)
        self.assertIn(f" ~> AUTH {mechanism}", result.stdout)
        added = daemon.new_files() - before
        self.assertEqual(len(added), 1, result.stdout)
        return self.assert_stored(daemon, added.pop(), tag)


SUBMISSION = {
    "smtp:submission": {"tls": "starttls-required", "auth": "required"},
    "smtp:smtps": {"tls": "implicit", "auth": "required"},
}


class TLSLoginTests(AuthTestCase):
    """smtplib's own STARTTLS and login() on the submission and SMTPS listeners."""

    def test_starttls_then_login(self) -> None:
        daemon = self.start(SUBMISSION, htpasswd_args=[["-B", "-b", "-c", "bob", SECRET]])
        client = self.smtp(daemon, "smtp:submission")
        self.assertIsNone(self.mechanisms(client), "AUTH advertised before STARTTLS")
        self.assertEqual(client.mail("a@example.com"),
                         (530, b"5.7.0 Must issue a STARTTLS command first"))
        self.assertEqual(client.starttls(context=trusting_context(daemon.cert_path))[0], 220)
        client.ehlo()
        self.assertEqual(self.mechanisms(client), ["PLAIN", "LOGIN", "XOAUTH2", "OAUTHBEARER"])
        self.assertEqual(client.mail("a@example.com"), AUTH_REQUIRED)
        self.assertEqual(client.login("bob", SECRET), OK)
        self.assertEqual(client.docmd("AUTH", f"PLAIN {plain_blob('bob', SECRET)}"),
                         (503, b"5.5.1 Error: already authenticated"))
        tag = uuid.uuid4().hex
        header = self.assert_stored(daemon, self.send(client, tag), tag)
        self.assert_authenticated_received(header, "bob", tls=True)
        self.assertRegex(header, r"\(mailsink, listener smtp:submission, session [0-9a-f]{16}\)")

    def test_smtps_login(self) -> None:
        daemon = self.start(SUBMISSION, htpasswd_args=[["-B", "-b", "-c", "bob", SECRET]])
        client = self.smtps(daemon)
        self.assertIn("PLAIN", self.mechanisms(client) or [])
        self.assertEqual(client.mail("a@example.com"), AUTH_REQUIRED)
        client.rset()
        self.assertEqual(client.login("bob", SECRET), OK)
        tag = uuid.uuid4().hex
        header = self.assert_stored(daemon, self.send(client, tag), tag)
        self.assert_authenticated_received(header, "bob", tls=True)
        # A second message on the same connection is still the user's.
        tag = uuid.uuid4().hex
        header = self.assert_stored(daemon, self.send(client, tag), tag)
        self.assert_authenticated_received(header, "bob", tls=True)

    def test_no_auth_before_tls(self) -> None:
        daemon = self.start({"smtp": {"tls": "starttls", "auth": "optional"},
                             "smtp:none": {"tls": "starttls", "auth": "none"}},
                            passwords=f"bob:{{PLAIN}}{SECRET}\n")
        client = self.smtp(daemon)
        self.assertIsNone(self.mechanisms(client), "AUTH advertised before STARTTLS")
        self.assertTrue(client.has_extn("starttls"))
        for mechanism in MECHANISMS:
            # Refused before any exchange: not even an initial response is looked at.
            self.assertEqual(client.docmd("AUTH", f"{mechanism} {plain_blob('bob', SECRET)}"),
                             ENCRYPTION_REQUIRED)
        self.assertEqual(client.docmd("AUTH", "PLAIN"), ENCRYPTION_REQUIRED)
        # Mail without AUTH is fine on an 'optional' listener, and is anonymous.
        tag = uuid.uuid4().hex
        header = self.assert_stored(daemon, self.send(client, tag), tag)
        self.assertIn(" with ESMTP id ", header)
        self.assertNotIn("Authenticated sender", header)
        # After STARTTLS the same listener offers AUTH, CRAM-MD5 too ({PLAIN} entry).
        client = self.smtp(daemon, starttls=True)
        self.assertEqual(self.mechanisms(client), list(MECHANISMS))
        self.assertEqual(self.authenticate(client, "PLAIN", "bob", SECRET), OK)
        # auth = none: never offered, refused even over TLS.
        client = self.smtp(daemon, "smtp:none", starttls=True)
        self.assertIsNone(self.mechanisms(client))
        self.assertEqual(client.docmd("AUTH", "PLAIN")[0], 503)

    def test_allow_insecure_accept_any(self) -> None:
        daemon = self.start({"auth": {"allow_insecure": "true", "accept_any": "true"},
                             "smtp": {"tls": "none", "auth": "required"}})
        client = self.smtp(daemon)
        self.assertFalse(client.has_extn("starttls"))
        self.assertEqual(self.mechanisms(client), list(MECHANISMS))
        self.assertEqual(client.mail("a@example.com"), AUTH_REQUIRED)
        client.rset()
        self.assertEqual(self.authenticate(client, "CRAM-MD5", "anyone", "whatever"), OK)
        tag = uuid.uuid4().hex
        header = self.assert_stored(daemon, self.send(client, tag), tag)
        self.assert_authenticated_received(header, "anyone", tls=False)
        for mechanism in MECHANISMS:
            client = self.smtp(daemon)
            self.assertEqual(self.authenticate(client, mechanism, f"u-{mechanism}", "x",
                                               initial=False), OK, mechanism)


class SwaksTests(AuthTestCase):
    """swaks -tls with each of PLAIN, LOGIN and CRAM-MD5."""

    LISTENER = {"smtp": {"tls": "starttls", "auth": "required"}}

    def test_password_file(self) -> None:
        daemon = self.start(self.LISTENER, passwords=(
            "# users for swaks\n"
            f"pat:{{PLAIN}}{SECRET}\n"
            "amy:$2y$05$sYNDfWYePq/ByPRou7Bxnus2tzkzkoQEMOxATBQ6aAV/5zlK.6/JS\n"))
        for mechanism in ("PLAIN", "LOGIN", "CRAM-MD5"):
            header = self.swaks(daemon, "smtp", mechanism, "pat", SECRET)
            self.assert_authenticated_received(header, "pat", tls=True)

    def test_environment(self) -> None:
        daemon = self.start(self.LISTENER,
                            env={"MAILSINK_AUTH": f"envuser:{SECRET} other:other-pass"})
        for mechanism in ("PLAIN", "LOGIN", "CRAM-MD5"):
            header = self.swaks(daemon, "smtp", mechanism, "envuser", SECRET)
            self.assert_authenticated_received(header, "envuser", tls=True)
        header = self.swaks(daemon, "smtp", "CRAM-MD5", "other", "other-pass")
        self.assert_authenticated_received(header, "other", tls=True)
        client = self.smtp(daemon, starttls=True)
        self.assertEqual(self.authenticate(client, "PLAIN", "envuser", WRONG), FAILED)
        self.assertEqual(self.authenticate(client, "PLAIN", "envuser", SECRET), OK)


class PasswordFileTests(AuthTestCase):
    """Files written by htpasswd and by mailsink passwd; changes while running."""

    def test_htpasswd_hashes(self) -> None:
        users = {"bcrypt-user": "-B", "apr1-user": "-m", "sha-user": "-s"}
        daemon = self.start(SUBMISSION, htpasswd_args=[
            [flag, "-b", *(["-c"] if n == 0 else []), user, f"{SECRET}-{user}"]
            for n, (user, flag) in enumerate(users.items())])
        with open(self.password_path(daemon), encoding="utf-8") as stream:
            text = stream.read()
        self.assertRegex(text, r"(?m)^bcrypt-user:\$2y\$05\$")
        self.assertRegex(text, r"(?m)^apr1-user:\$apr1\$")
        self.assertRegex(text, r"(?m)^sha-user:\{SHA\}")
        for user in users:
            client = self.smtps(daemon)
            # No {PLAIN} entry, no MAILSINK_AUTH: CRAM-MD5 cannot work, so it is not offered.
            self.assertEqual(self.mechanisms(client),
                             ["PLAIN", "LOGIN", "XOAUTH2", "OAUTHBEARER"])
            self.assertEqual(self.authenticate(client, "PLAIN", user, WRONG), FAILED, user)
            self.assertEqual(self.authenticate(client, "CRAM-MD5", user, SECRET)[0], 504)
            self.assertEqual(self.authenticate(client, "LOGIN", user, f"{SECRET}-{user}"),
                             OK, user)
            tag = uuid.uuid4().hex
            header = self.assert_stored(daemon, self.send(client, tag), tag)
            self.assert_authenticated_received(header, user, tls=True)
        log = daemon.log_text()
        self.assertRegex(log, r"authentication failed for 'bcrypt-user' from 127\.0\.0\.1")

    def test_file_changed_while_running(self) -> None:
        daemon = self.start(SUBMISSION, htpasswd_args=[["-B", "-b", "-c", "bob", "bob-pass"]])
        path = self.password_path(daemon)
        self.assertEqual(self.authenticate(self.smtps(daemon), "PLAIN", "bob", "bob-pass"), OK)
        client = self.smtps(daemon)
        self.assertEqual(self.authenticate(client, "PLAIN", "dave", "dave-pass"), FAILED)
        offset = len(daemon.log_text())
        htpasswd("-B", "-b", path, "dave", "dave-pass")
        self.assertEqual(self.authenticate(client, "PLAIN", "dave", "dave-pass"), OK)
        daemon.wait_for_log(lambda text: f"{path} changed: re-read, 2 users" in text,
                            since=offset)
        # bob's earlier success is cached; removing him must still lock him out.
        htpasswd("-D", path, "bob")
        self.assertEqual(self.authenticate(self.smtps(daemon), "PLAIN", "bob", "bob-pass"),
                         FAILED)
        # A {PLAIN} entry appended by hand turns CRAM-MD5 on, still without a restart.
        with open(path, "a", encoding="utf-8") as stream:
            stream.write("erin:{PLAIN}erin-pass\n")
        client = self.smtps(daemon)
        self.assertEqual(self.authenticate(client, "PLAIN", "erin", "erin-pass"), OK)
        client = self.smtps(daemon)
        self.assertIn("CRAM-MD5", self.mechanisms(client) or [])
        self.assertEqual(self.authenticate(client, "CRAM-MD5", "erin", "erin-pass"), OK)
        self.assertTrue(daemon.running)

    def test_mailsink_passwd(self) -> None:
        if not os.access(MAILSINK, os.X_OK):
            raise unittest.SkipTest(f"no mailsink console script at {MAILSINK}")
        daemon = Daemon.for_test(self, {**SUBMISSION, "auth": {"password_file": PASSWORDS}},
                                 start=False)
        path = self.password_path(daemon)
        result = run_tool([MAILSINK, "passwd", path, "carol"],
                          stdin=f"{SECRET}\nnot-the-password\n")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(result.stdout, f"Added user carol in {path}\n")
        self.assertNotIn(SECRET, result.stdout + result.stderr)
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)
        with open(path, encoding="utf-8") as stream:
            self.assertRegex(stream.read(), r"\Acarol:\$2y\$12\$[./A-Za-z0-9]{53}\n\Z")
        daemon.start()
        client = self.smtps(daemon)
        self.assertEqual(self.authenticate(client, "PLAIN", "carol", "not-the-password"),
                         FAILED)
        self.assertEqual(self.authenticate(client, "PLAIN", "carol", SECRET), OK)
        # Changing the password while the daemon runs: the new one works at once.
        result = run_tool([MAILSINK, "passwd", "-C", "4", path, "carol"], stdin="new-pass\n")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(result.stdout, f"Updated user carol in {path}\n")
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)
        self.assertEqual(self.authenticate(self.smtps(daemon), "LOGIN", "carol", "new-pass"),
                         OK)


class SecrecyTests(AuthTestCase):
    """Passwords never reach the log or the stored messages."""

    def test_password_never_logged(self) -> None:
        daemon = self.start(SUBMISSION, passwords=f"leaky:{{PLAIN}}{SECRET}\n")
        sent: list[str] = []
        names = []
        failed: set[str] = set()
        for mechanism in MECHANISMS:
            for initial in (True, False):
                if mechanism == "CRAM-MD5" and initial:
                    continue  # CRAM-MD5 has no initial response
                client = self.smtps(daemon)
                if mechanism not in failed:  # one failure per mechanism: each costs 0.5 s
                    failed.add(mechanism)
                    self.assertEqual(self.authenticate(client, mechanism, "leaky", WRONG,
                                                       initial=not initial, sent=sent),
                                     FAILED, mechanism)
                self.assertEqual(self.authenticate(client, mechanism, "leaky", SECRET,
                                                   initial=initial, sent=sent),
                                 OK, mechanism)
                names.append(self.send(client, f"{mechanism}-{initial}"))
        self.assertEqual(len(names), 9)
        stored = b"".join(daemon.read_new(name) for name in names)
        log = daemon.log_text()
        # The log did see every attempt (so it is the right log to search).
        self.assertEqual(log.count("authentication failed for 'leaky' from 127.0.0.1"), 5)
        self.assertEqual(log.count("127.0.0.1 authenticated as leaky"), 9)
        for secret in (SECRET, WRONG):
            forms = {secret, b64(secret), plain_blob("leaky", secret), "Tr0ub4dor",
                     b64(secret)[:16], secret.encode().hex()}
            for form in forms:
                self.assertNotIn(form, log)
                self.assertNotIn(form.encode(), stored)
        self.assertEqual(len(sent), 17)  # every base64 line the clients sent
        for line in sent:
            self.assertNotIn(line, log)
            self.assertNotIn(line.encode(), stored)


class IsolationTests(AuthTestCase):
    """isolation = user: a user's mail in maildir/<user>/, everyone else's shared."""

    def test_user_maildirs(self) -> None:
        daemon = self.start(
            {"mailsink": {"isolation": "user"},
             "smtp": {"tls": "starttls", "auth": "optional"},
             "smtp:smtps": {"tls": "implicit", "auth": "required"}},
            passwords=f"alice:{{PLAIN}}{SECRET}\nbob:{{PLAIN}}bob-pass\n")
        alice_tag, anonymous_tag, optional_tag = (uuid.uuid4().hex for _ in range(3))
        client = self.smtps(daemon)
        self.assertEqual(client.login("alice", SECRET), OK)
        alice_name = self.send(client, alice_tag)
        client = self.smtp(daemon, starttls=True)
        anonymous_name = self.send(client, anonymous_tag)
        client = self.smtp(daemon, starttls=True)
        self.assertEqual(self.authenticate(client, "PLAIN", "alice", SECRET), OK)
        optional_name = self.send(client, optional_tag)

        alice = os.path.join(daemon.maildir, "alice")
        for sub in ("cur", "new", "tmp"):
            self.assertTrue(os.path.isdir(os.path.join(alice, sub)), sub)
        self.assertEqual(set(os.listdir(os.path.join(alice, "new"))),
                         {alice_name, optional_name})
        self.assertEqual(daemon.new_files(), {anonymous_name})
        self.assertFalse(os.path.exists(os.path.join(daemon.maildir, "bob")))

        for name, tag in ((alice_name, alice_tag), (optional_name, optional_tag)):
            header = self.assert_stored(daemon, name, tag, folder="alice")
            self.assert_authenticated_received(header, "alice", tls=True)
        header = self.assert_stored(daemon, anonymous_name, anonymous_tag)
        self.assertIn(" with ESMTPS id ", header)
        self.assertNotIn("Authenticated sender", header)


    def test_user_names_stay_inside_maildir(self) -> None:
        daemon = self.start({"mailsink": {"isolation": "user"},
                             "auth": {"accept_any": "true"},
                             "smtp:smtps": {"tls": "implicit", "auth": "required"}})
        users = ["../escape", "new", "a/b", ".hidden", "\u00fcn\u00ef", "tmp", "cur"]
        sent = {}
        for user in users:
            client = self.smtps(daemon)
            self.assertEqual(self.authenticate(client, "PLAIN", user, "x"), OK, user)
            tag = uuid.uuid4().hex
            sent[user] = (self.send(client, tag), tag)
        self.assertEqual(daemon.new_files(), set())
        found = {}
        for folder, _, files in os.walk(daemon.root):
            for name in files:
                if os.path.basename(folder) == "new":
                    found[name] = os.path.relpath(os.path.dirname(folder), daemon.maildir)
        self.assertEqual(set(found), {name for name, _ in sent.values()})
        folders = set()
        for user, (name, tag) in sent.items():
            folder = found[name]
            self.assertNotIn(os.sep, folder, user)
            self.assertNotIn(folder, ("", ".", "..", "new", "cur", "tmp"), user)
            self.assertFalse(folder.startswith("."), user)
            for sub in ("cur", "new", "tmp"):
                self.assertTrue(os.path.isdir(os.path.join(daemon.maildir, folder, sub)))
            folders.add(folder)
            header = self.assert_stored(daemon, name, tag, folder=folder)
            self.assert_authenticated_received(header, user, tls=True)
        self.assertEqual(len(folders), len(users))

    def test_user_name_cannot_inject_headers(self) -> None:
        daemon = self.start({"auth": {"accept_any": "true"},
                             "smtp:smtps": {"tls": "implicit", "auth": "required"}})
        for user in ("evil\nX-Injected: 1", "evil\r\nX-Injected: 1", "evil\rX-Injected: 1"):
            client = self.smtps(daemon)
            reply = self.authenticate(client, "PLAIN", user, "x")
            if reply != OK:  # refusing such a name is fine
                self.assertIn(reply[0], (501, 535), (user, reply))
                continue
            tag = uuid.uuid4().hex
            name = self.send(client, tag)
            message = email.message_from_bytes(daemon.read_new(name))
            self.assertIsNone(message["X-Injected"], user)
            self.assertEqual(len(message.get_all("Received") or []), 1)


class ThrottleTests(AuthTestCase):
    """Failed logins wait longer and longer, per client; the daemon does not."""

    def test_failure_delay_grows(self) -> None:
        daemon = self.start(SUBMISSION, htpasswd_args=[["-B", "-b", "-c", "bob", SECRET]])
        bad = self.smtps(daemon)
        wrong = f"PLAIN {plain_blob('bob', WRONG)}"
        delays = []
        for _ in range(2):
            began = time.monotonic()
            self.assertEqual(bad.docmd("AUTH", wrong), FAILED)
            delays.append(time.monotonic() - began)
        # The third failure: while its reply waits, another client logs in at once.
        began = time.monotonic()
        bad.send(f"AUTH {wrong}\r\n")
        # The attempt has reached the daemon and its reply waits: the failure is logged.
        daemon.wait_for_log(lambda text: "failure 3 from this address" in text)
        good_began = time.monotonic()
        good = self.smtps(daemon)
        self.assertEqual(self.authenticate(good, "PLAIN", "bob", SECRET), OK)
        good_took = time.monotonic() - good_began
        good_done = time.monotonic() - began
        self.assertEqual(bad.getreply(), FAILED)
        delays.append(time.monotonic() - began)

        report = f"failure delays {[round(d, 2) for d in delays]} s, good login {good_took:.2f} s"
        self.assertLess(good_took, 1.0, report)
        # ... and finished while the third failure was still waiting for its 535.
        self.assertLess(good_done, 4 * FIRST_DELAY * 0.9, report)
        self.assertGreaterEqual(delays[0], FIRST_DELAY * 0.9, report)
        self.assertGreaterEqual(delays[1], 2 * FIRST_DELAY * 0.9, report)
        self.assertGreaterEqual(delays[2], 4 * FIRST_DELAY * 0.9, report)
        self.assertGreater(delays[1], delays[0] + 0.3, report)
        self.assertGreater(delays[2], delays[1] + 0.6, report)
        self.assertLess(delays[2], 4 * FIRST_DELAY + 3.0, report)
        self.assertGreaterEqual(sum(delays), 1.5, report)
        log = daemon.log_text()
        for count in (1, 2, 3):
            self.assertIn(f"failure {count} from this address", log)




class PipelinedFailureTests(AuthTestCase):
    """
    Commands pipelined behind a failing AUTH wait for its delayed 535 and are then
    answered in order, whichever checker (password file: in a thread; MAILSINK_AUTH: at
    once) refused the password.
    """

    def start_insecure(self, source: str) -> Daemon:
        sections = {"auth": {"allow_insecure": "true"},
                    "smtp": {"tls": "none", "auth": "required"}}
        if source == "file":
            return self.start(sections, passwords=f"pat:{{PLAIN}}{SECRET}\n")
        return self.start(sections, env={"MAILSINK_AUTH": f"pat:{SECRET}"})

    def pipeline(self, daemon: Daemon, commands: list[str]) -> list[tuple[float, str]]:
        """After EHLO, send C{commands} at once; each reply line with its delay in s."""
        sock = socket.create_connection(("127.0.0.1", daemon.ports["smtp"]),
                                        timeout=CLIENT_TIMEOUT)
        self.addCleanup(sock.close)
        reader = sock.makefile("rb")
        self.addCleanup(reader.close)
        self.assertTrue(reader.readline().startswith(b"220 "))
        sock.sendall(f"EHLO {HELO}\r\n".encode())
        while reader.readline()[3:4] != b" ":
            pass
        began = time.monotonic()
        sock.sendall("".join(f"{command}\r\n" for command in commands).encode())
        replies = []
        for _ in commands:
            line = reader.readline().decode().rstrip("\r\n")
            replies.append((time.monotonic() - began, line))
        return replies

    def check_pipeline(self, source: str, commands: list[str], expected: list[str],
                       min_delays: list[float]) -> None:
        replies = self.pipeline(self.start_insecure(source), commands)
        self.assertEqual([line for _, line in replies], expected)
        for (delay, line), least in zip(replies, min_delays, strict=True):
            self.assertGreaterEqual(delay, least * 0.9, (line, replies))

    MAIL_AFTER_FAILURE = [f"AUTH PLAIN {plain_blob('pat', WRONG)}",
                          "MAIL FROM:<a@example.com>", "NOOP"]
    MAIL_AFTER_FAILURE_REPLIES = ["535 5.7.8 Error: authentication failed",
                                  "530 5.7.0 Authentication required", "250 2.0.0 Ok"]
    GUESSES = [f"AUTH PLAIN {plain_blob('pat', WRONG)}",
               f"AUTH PLAIN {plain_blob('pat', WRONG + '2')}",
               f"AUTH PLAIN {plain_blob('pat', SECRET)}"]
    GUESSES_REPLIES = ["535 5.7.8 Error: authentication failed",
                       "535 5.7.8 Error: authentication failed",
                       "235 2.7.0 Authentication successful"]
    GUESSES_DELAYS = [FIRST_DELAY, 3 * FIRST_DELAY, 3 * FIRST_DELAY]
    """The second failure waits twice the first, after it; the right guess waits for both."""

    def test_mail_after_failed_auth_password_file(self) -> None:
        self.check_pipeline("file", self.MAIL_AFTER_FAILURE, self.MAIL_AFTER_FAILURE_REPLIES,
                            [FIRST_DELAY] * 3)

    def test_mail_after_failed_auth_environment(self) -> None:
        self.check_pipeline("environment", self.MAIL_AFTER_FAILURE,
                            self.MAIL_AFTER_FAILURE_REPLIES, [FIRST_DELAY] * 3)

    def test_pipelined_guesses_wait_password_file(self) -> None:
        self.check_pipeline("file", self.GUESSES, self.GUESSES_REPLIES, self.GUESSES_DELAYS)

    def test_pipelined_guesses_wait_environment(self) -> None:
        self.check_pipeline("environment", self.GUESSES, self.GUESSES_REPLIES,
                            self.GUESSES_DELAYS)
