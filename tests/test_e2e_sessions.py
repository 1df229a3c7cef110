"""
End-to-end tests of the SMTP sessions (issue 12): the real daemon on loopback ports, real
clients (smtplib, raw sockets, Python's ssl, openssl s_client, swaks), and every session
read back through C{GET /api/v1/sessions} and C{/api/v1/session/{ID}}: its outcome, its
error, and a diagnosis that says what to change (and which listener to use instead).
Then secrecy -- no password or AUTH payload in state_dir, the API or the log -- filters,
paging, DELETE, pruning, a restart, isolation, the live C{session} event and /metrics.

A session is found by the client's own address and port (or, for command-line tools, as
the one new session on its listener), polled for under a deadline: the daemon settles a
session when the connection is gone, a moment after the client has left.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import shutil
import signal
import smtplib
import socket
import ssl
import subprocess
import time
import unittest
import urllib.error
import urllib.parse
import urllib.request
import uuid
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from daemon import Daemon, SharedDaemon, trusting_context, unverified_context
from twisted.trial.unittest import TestCase

CLIENT_TIMEOUT = 10.0
TOOL_TIMEOUT = 30.0
SETTLE = 10.0
"""Seconds a session may take to be listed after its client has gone."""
HELO = "sessions.client.test"
USER = "alice"
PASSWORD = f"Pw-{uuid.uuid4()}"
"""Distinctive enough to search every file, answer and log line for."""
WRONG = f"Pw-{uuid.uuid4()}"
SMTP, SUBMISSION, SMTPS = "smtp", "smtp:submission", "smtp:smtps"
FAILURES = ("refused", "failed", "dropped")
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))
_QUEUED = re.compile(r"2\.0\.0 Ok: queued as (\S+)")


def b64(text: str) -> str:
    return base64.b64encode(text.encode("utf-8")).decode("ascii")


def xoauth2(user: str, password: str) -> str:
    return f"user={user}\x01auth=Bearer {password}\x01\x01"


def secret_forms(password: str) -> set[str]:
    """The password and every encoding of it a client sends in an AUTH exchange."""
    return {password, b64(password), b64(f"\0{USER}\0{password}"),
            b64(f"{USER}\0{USER}\0{password}"), b64(xoauth2(USER, password)),
            password.removeprefix("Pw-")[:13]}


def http(port: int, path: str, method: str = "GET", body: Any = None,
         viewer: tuple[str, str] | None = None) -> tuple[int, bytes]:
    """One request to the web listener (no proxy), as C{viewer} (user, password) if given."""
    data = None if body is None else json.dumps(body).encode("utf-8")
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data,
                                     method=method)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    if viewer is not None:
        request.add_header("Authorization", "Basic " + b64(f"{viewer[0]}:{viewer[1]}"))
    try:
        with _DIRECT.open(request, timeout=CLIENT_TIMEOUT) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def run_tool(argv: list[str]) -> subprocess.CompletedProcess[str]:
    """A command-line client, bounded, with nothing on its standard input."""
    if shutil.which(argv[0]) is None:
        raise unittest.SkipTest(f"{argv[0]} is not installed")
    return subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=TOOL_TIMEOUT, check=False)


if TYPE_CHECKING:
    _TestCaseBase = TestCase
else:
    _TestCaseBase = object


class SessionChecks(_TestCaseBase):
    """Reading sessions through the API of C{self.daemon}'s C{[web]} listener."""

    daemon: Daemon
    viewer: tuple[str, str] | None = None
    """Who reads the API by default (with [web] auth = required)."""

    def api(self, path: str, method: str = "GET", body: Any = None,
            viewer: tuple[str, str] | None = None) -> Any:
        """The JSON answer of a request that must succeed (C{ok} for plain answers)."""
        status, data = http(self.daemon.ports["web"], path, method, body,
                            viewer or self.viewer)
        self.assertEqual(status, 200, f"{method} {path}: {data[:500]!r}")
        return data.decode() if data == b"ok" else json.loads(data)

    def listing(self, query: str = "", viewer: tuple[str, str] | None = None) -> Any:
        return self.api(f"/api/v1/sessions?limit=1000{'&' + query if query else ''}",
                        viewer=viewer)

    def known(self) -> set[str]:
        """The IDs of every session listed now."""
        return {summary["ID"] for summary in self.listing()["sessions"]}

    def wait_for(self, chosen: Callable[[dict[str, Any]], bool], what: str,
                 timeout: float = SETTLE) -> dict[str, Any]:
        """The first listed session C{chosen} accepts, polled for; then its whole JSON."""
        deadline = time.monotonic() + timeout
        while True:
            for summary in self.listing()["sessions"]:
                if chosen(summary):
                    return dict(self.api(f"/api/v1/session/{summary['ID']}"))
            if time.monotonic() > deadline:
                self.fail(f"no session {what} within {timeout:g} s; log:\n"
                          f"{self.daemon.log_text()[-3000:]}")
            time.sleep(0.05)

    def session_of(self, port: int, before: set[str], timeout: float = SETTLE
                   ) -> dict[str, Any]:
        """The session of the client whose local port was C{port}."""
        client = f"127.0.0.1:{port}"
        return self.wait_for(lambda s: s["Client"] == client and s["ID"] not in before,
                             f"from {client}", timeout)

    def new_session(self, listener: str, before: set[str]) -> dict[str, Any]:
        """The one session on C{listener} that was not there C{before}."""
        return self.wait_for(lambda s: s["Listener"] == listener and s["ID"] not in before,
                             f"new on [{listener}]")

    def where(self, listener: str) -> str:
        """How diagnoses name a listener: C{[smtp:smtps] port 1465}."""
        return f"[{listener}] port {self.daemon.ports[listener]}"

    def assert_failure(self, session: dict[str, Any], outcome: str, error: str,
                       *phrases: str) -> None:
        self.assertEqual((session["Outcome"], session["Error"]), (outcome, error), session)
        for phrase in phrases:
            self.assertIn(phrase, session["Diagnosis"])

    def assert_logged_alike(self, session: dict[str, Any]) -> None:
        """The 465-vs-587 warning in the log reads as the session's diagnosis, word for word."""
        self.assertIn(f"[{session['Listener']}] 127.0.0.1: {session['Diagnosis']}\n",
                      self.daemon.log_text())

    def client_lines(self, session: dict[str, Any]) -> list[str]:
        return [entry["Text"] for entry in session["Transcript"] if entry["Side"] == "C"]

    def assert_never_greeted(self, session: dict[str, Any]) -> None:
        """Implicit TLS without a handshake: no reply reached the wire, so none is shown."""
        failed = "TLS handshake failed: "
        reason = session["Error"][len(failed):] if session["Error"].startswith(failed) else ""
        self.assertEqual([(e["Side"], e["Text"]) for e in session["Transcript"]],
                         [("*", f"connection closed: {reason}" if reason
                           else "connection closed")])

    def smtp(self, listener: str, *, starttls: bool = False) -> tuple[smtplib.SMTP, int]:
        """An smtplib client after EHLO (and STARTTLS, trusting the daemon); its port."""
        port = self.daemon.ports[listener]
        client: smtplib.SMTP
        if self.daemon.tls_modes[listener] == "implicit":
            client = smtplib.SMTP_SSL("127.0.0.1", port, local_hostname=HELO,
                                      timeout=CLIENT_TIMEOUT,
                                      context=trusting_context(self.daemon.cert_path))
        else:
            client = smtplib.SMTP("127.0.0.1", port, local_hostname=HELO,
                                  timeout=CLIENT_TIMEOUT)
        self.addCleanup(client.close)
        self.assertEqual(client.ehlo()[0], 250)
        if starttls:
            self.assertEqual(client.starttls(
                context=trusting_context(self.daemon.cert_path))[0], 220)
            self.assertEqual(client.ehlo()[0], 250)
        return client, client.sock.getsockname()[1]

    def login(self, client: smtplib.SMTP, mechanism: str, password: str) -> tuple[int, bytes]:
        """smtplib's own AUTH exchange for C{mechanism}; the last reply."""
        client.user, client.password = USER, password
        authobjects: dict[str, Callable[..., str | None]] = {
            "PLAIN": client.auth_plain, "LOGIN": client.auth_login,
            "CRAM-MD5": client.auth_cram_md5,
            # XOAUTH2's error challenge is answered with an empty line.
            "XOAUTH2": lambda challenge=None: (xoauth2(USER, password) if challenge is None
                                               else "")}
        try:
            return client.auth(mechanism, authobjects[mechanism])
        except smtplib.SMTPAuthenticationError as error:
            return error.smtp_code, error.smtp_error

    def send(self, client: smtplib.SMTP, tag: str) -> str:
        """One message through C{client}; its ID."""
        client.mail("sender@example.com")
        client.rcpt("rcpt@example.com")
        code, text = client.data(f"Subject: sessions {tag}\r\n\r\nbody {tag}\r\n".encode())
        self.assertEqual(code, 250, text)
        match = _QUEUED.fullmatch(text.decode())
        assert match is not None, text
        return match.group(1)


AUTH_ENV = {"MAILSINK_AUTH": f"{USER}:{PASSWORD}"}


class DiagnosisTests(SessionChecks, SharedDaemon, TestCase):
    """One test per diagnosis of the issue, on one daemon with each kind of listener."""

    daemon_sections = {
        "mailsink": {"max_message_size": "10K", "chaos": "true"},
        SMTP: {"tls": "starttls", "auth": "optional"},
        SUBMISSION: {"tls": "starttls-required", "auth": "required"},
        SMTPS: {"tls": "implicit", "auth": "required"},
        "web": {},
    }
    daemon_env = AUTH_ENV

    def test_tls_client_hello_on_a_plaintext_port(self) -> None:
        before = self.known()
        with socket.create_connection(("127.0.0.1", self.daemon.ports[SMTP]),
                                      timeout=CLIENT_TIMEOUT) as raw:
            port = raw.getsockname()[1]
            with self.assertRaises((ssl.SSLError, OSError)):
                unverified_context().wrap_socket(raw, server_hostname="localhost")
        session = self.session_of(port, before)
        self.assert_failure(session, "failed", "TLS ClientHello on a plaintext port",
                            "this client began a TLS handshake",
                            f"point it at {self.where(SMTPS)}, or set its security to "
                            "STARTTLS")
        self.assertEqual(self.client_lines(session), [])
        self.assert_logged_alike(session)
        # openssl s_client (implicit TLS by default) on the STARTTLS-only port.
        before = self.known()
        result = run_tool(["openssl", "s_client", "-connect",
                           f"127.0.0.1:{self.daemon.ports[SUBMISSION]}",
                           "-servername", "localhost"])
        self.assertNotEqual(result.returncode, 0, result.stdout)
        session = self.new_session(SUBMISSION, before)
        self.assert_failure(session, "failed", "TLS ClientHello on a plaintext port",
                            f"point it at {self.where(SMTPS)}")

    def test_silence_on_an_implicit_tls_port(self) -> None:
        """The one 10 s wait: a client that waits for a greeting that never comes."""
        before = self.known()
        started = time.monotonic()
        with socket.create_connection(("127.0.0.1", self.daemon.ports[SMTPS]),
                                      timeout=CLIENT_TIMEOUT + 5) as raw:
            session = self.session_of(raw.getsockname()[1], before, timeout=SETTLE + 5)
            self.assertGreater(time.monotonic() - started, 9.5)
            with contextlib.suppress(ConnectionResetError):
                self.assertEqual(raw.recv(1024), b"")
        self.assert_failure(session, "failed", "no TLS handshake within 10 s",
                            "this client sent no TLS handshake within 10 s",
                            "expects TLS from the first byte",
                            f"point it at {self.where(SMTP)} or {self.where(SUBMISSION)}, "
                            "or set its security to SSL/TLS")
        self.assert_never_greeted(session)
        self.assert_logged_alike(session)

    def test_smtp_in_the_clear_on_an_implicit_tls_port(self) -> None:
        before = self.known()
        with socket.create_connection(("127.0.0.1", self.daemon.ports[SMTPS]),
                                      timeout=CLIENT_TIMEOUT) as raw:
            raw.sendall(f"EHLO {HELO}\r\n".encode())
            with contextlib.suppress(ConnectionResetError):
                self.assertEqual(raw.recv(1024), b"")
            port = raw.getsockname()[1]
        session = self.session_of(port, before)
        self.assert_failure(session, "failed", "SMTP in the clear on an implicit-TLS port",
                            "this client sent SMTP commands in the clear",
                            f"point it at {self.where(SMTP)} or {self.where(SUBMISSION)}, "
                            "or set its security to SSL/TLS")
        self.assert_never_greeted(session)
        self.assert_logged_alike(session)

    def test_client_does_not_trust_the_certificate(self) -> None:
        before = self.known()
        with socket.create_connection(("127.0.0.1", self.daemon.ports[SMTPS]),
                                      timeout=CLIENT_TIMEOUT) as raw:
            port = raw.getsockname()[1]
            with self.assertRaises(ssl.SSLCertVerificationError):
                ssl.create_default_context().wrap_socket(raw, server_hostname="localhost")
        session = self.session_of(port, before)
        trust = (f"add {self.daemon.cert_path} to the client's trusted certificates",
                 "or turn certificate verification off")
        self.assert_failure(session, "failed", "TLS handshake failed: tlsv1 alert unknown ca",
                            "the client does not trust mailsink's certificate", *trust)
        self.assert_never_greeted(session)
        # openssl s_client with STARTTLS, refusing to go on with an unverified certificate.
        before = self.known()
        result = run_tool(["openssl", "s_client", "-connect",
                           f"127.0.0.1:{self.daemon.ports[SMTP]}", "-starttls", "smtp",
                           "-servername", "localhost", "-verify_return_error"])
        self.assertNotEqual(result.returncode, 0, result.stdout)
        session = self.new_session(SMTP, before)
        self.assertEqual(session["Outcome"], "failed")
        self.assertRegex(session["Error"], r"^TLS handshake failed: .*(unknown ca|certificate)")
        for phrase in ("the client does not trust mailsink's certificate", *trust):
            self.assertIn(phrase, session["Diagnosis"])
        self.assertEqual(self.client_lines(session), ["EHLO mail.example.com", "STARTTLS"])

    def test_tls_version_mailsink_does_not_offer(self) -> None:
        context = unverified_context()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            context.minimum_version = ssl.TLSVersion.TLSv1
            context.maximum_version = ssl.TLSVersion.TLSv1_1
        context.set_ciphers("DEFAULT:@SECLEVEL=0")  # let this client offer TLS 1.1 at all
        before = self.known()
        with socket.create_connection(("127.0.0.1", self.daemon.ports[SMTPS]),
                                      timeout=CLIENT_TIMEOUT) as raw:
            port = raw.getsockname()[1]
            with self.assertRaises(ssl.SSLError):
                context.wrap_socket(raw, server_hostname="localhost")
        session = self.session_of(port, before)
        self.assert_failure(session, "failed", "TLS handshake failed: unsupported protocol",
                            "the client asked for a TLS version mailsink does not offer",
                            "mailsink speaks TLS 1.2 and 1.3, so allow those in the client")
        self.assert_never_greeted(session)

    def test_auth_before_starttls(self) -> None:
        before = self.known()
        client, port = self.smtp(SMTP)
        self.assertEqual(client.docmd("AUTH", f"PLAIN {b64(chr(0) + USER + chr(0) + PASSWORD)}"),
                         (538, b"5.7.11 Encryption required for requested authentication "
                               b"mechanism"))
        client.quit()
        session = self.session_of(port, before)
        self.assert_failure(session, "refused", "538 5.7.11 Encryption required for requested "
                            "authentication mechanism", "the client tried AUTH before STARTTLS",
                            f"set the client's security to STARTTLS, or point it at "
                            f"{self.where(SMTPS)}")
        self.assertEqual(self.client_lines(session), [f"ehlo {HELO}", "AUTH PLAIN ***", "quit"])

    def test_mail_without_auth_with_swaks(self) -> None:
        before = self.known()
        result = run_tool(["swaks", "--server", f"127.0.0.1:{self.daemon.ports[SUBMISSION]}",
                           "-tls", "--helo", HELO, "--from", "swaks@example.com",
                           "--to", "x@example.com", "--timeout", "10"])
        self.assertNotEqual(result.returncode, 0)
        self.assertIn("<~* 530 5.7.0 Authentication required", result.stdout)
        session = self.new_session(SUBMISSION, before)
        self.assert_failure(session, "refused", "530 5.7.0 Authentication required",
                            f"the client sent MAIL without logging in, and [{SUBMISSION}] "
                            "requires AUTH (530): give the client a user name and password",
                            f"or send to {self.where(SMTP)}")
        self.assertEqual(session["TLS"]["Mode"], "starttls")
        self.assertEqual(session["Helo"], HELO)

    def test_wrong_credentials_name_the_user_only(self) -> None:
        before = self.known()
        client, port = self.smtp(SUBMISSION, starttls=True)
        self.assertEqual(self.login(client, "PLAIN", WRONG),
                         (535, b"5.7.8 Error: authentication failed"))
        client.quit()
        session = self.session_of(port, before)
        self.assert_failure(session, "refused", "535 5.7.8 Error: authentication failed",
                            f"the login of user '{USER}' failed (535): check the user name and "
                            "password the client uses")
        self.assertEqual((session["User"], session["Mechanism"], session["LoggedIn"]),
                         (USER, "PLAIN", False))
        answer = json.dumps(session)
        for form in secret_forms(WRONG):
            self.assertNotIn(form, answer)
        client, _ = self.smtp(SUBMISSION, starttls=True)  # a good login clears the throttle
        self.assertEqual(self.login(client, "PLAIN", PASSWORD)[0], 235)

    def test_commands_before_starttls(self) -> None:
        before = self.known()
        client, port = self.smtp(SUBMISSION)
        self.assertEqual(client.docmd("MAIL", "FROM:<a@example.com>"),
                         (530, b"5.7.0 Must issue a STARTTLS command first"))
        client.quit()
        session = self.session_of(port, before)
        self.assert_failure(session, "refused", "530 5.7.0 Must issue a STARTTLS command first",
                            f"[{SUBMISSION}] requires STARTTLS before anything else (530): set "
                            f"the client's security to STARTTLS, or send to {self.where(SMTP)}")

    def test_message_too_large(self) -> None:
        before = self.known()
        client, port = self.smtp(SMTP)
        client.docmd("MAIL", "FROM:<a@example.com>")  # no SIZE: refused while streaming
        client.rcpt("b@example.com")
        code, _ = client.data(b"Subject: big\r\n\r\n" + b"x" * 20_000 + b"\r\n")
        self.assertEqual(code, 552)
        client.quit()
        session = self.session_of(port, before)
        self.assert_failure(session, "refused", "552 5.3.4 Message size exceeds fixed maximum "
                            "message size (10240 bytes)",
                            "the message is larger than [mailsink] max_message_size (10K) (552)")
        self.assertNotIn("x" * 100, json.dumps(session))

    def test_client_drops_the_connection_during_data(self) -> None:
        before = self.known()
        with socket.create_connection(("127.0.0.1", self.daemon.ports[SMTP]),
                                      timeout=CLIENT_TIMEOUT) as raw:
            port = raw.getsockname()[1]
            replies = b""
            raw.sendall(f"EHLO {HELO}\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\n"
                        f"DATA\r\n".encode())
            while b"\r\n354 " not in replies:
                chunk = raw.recv(4096)
                self.assertTrue(chunk, replies)
                replies += chunk
            raw.sendall(b"Subject: half\r\n\r\nhalf a message")
        session = self.session_of(port, before)
        self.assert_failure(session, "dropped", "connection closed during DATA",
                            "the client closed the connection in the middle of the message "
                            "data", "so nothing was stored")
        self.assertRegex(session["Diagnosis"], r"after \d+ octets")
        self.assertNotIn("half a message", json.dumps(session))

    def test_chaos_injected_error(self) -> None:
        triggers = {"Recipient": {"ErrorCode": 451, "Probability": 100}}
        self.api("/api/v1/chaos", "PUT", triggers)
        self.addCleanup(self.api, "/api/v1/chaos", "PUT", {})
        before = self.known()
        client, port = self.smtp(SMTP)
        client.mail("a@example.com")
        self.assertEqual(client.rcpt("b@example.com"), (451, b"4.3.0 Chaos: recipient rejected"))
        client.quit()
        session = self.session_of(port, before)
        self.assert_failure(session, "refused", "451 4.3.0 Chaos: recipient rejected",
                            "this error was injected on purpose by mailsink's chaos triggers "
                            "(Recipient answered 451), not a real failure",
                            "turn them off with PUT /api/v1/chaos")

    def test_delivered_session_and_its_message_link_both_ways(self) -> None:
        before = self.known()
        client, port = self.smtp(SUBMISSION, starttls=True)
        self.assertEqual(self.login(client, "PLAIN", PASSWORD)[0], 235)
        tag = uuid.uuid4().hex
        message_id = self.send(client, tag)
        client.quit()
        session = self.session_of(port, before)
        self.assertEqual((session["Outcome"], session["Error"], session["Diagnosis"]),
                         ("delivered", "", ""))
        self.assertEqual(session["Messages"], [message_id])
        self.assertEqual((session["User"], session["Mechanism"], session["LoggedIn"],
                          session["Helo"], session["Listener"]),
                         (USER, "PLAIN", True, HELO, SUBMISSION))
        self.assertEqual(session["TLS"]["Mode"], "starttls")
        self.assertRegex(session["TLS"]["Version"], r"^TLSv1\.[23]$")
        lines = self.client_lines(session)
        self.assertIn("AUTH PLAIN ***", lines)
        self.assertEqual(lines[-2:], ["data", "quit"])
        notes = [e["Text"] for e in session["Transcript"] if e["Side"] == "*"]
        self.assertTrue(any(re.fullmatch(r"message data: \d+ octets", n) for n in notes), notes)
        self.assertNotIn(f"body {tag}", json.dumps(session))

        message = self.api(f"/api/v1/message/{message_id}")
        self.assertEqual(message["SessionID"], session["ID"])
        self.assertEqual(message["Transport"]["SessionID"], session["ID"])
        back = self.api(f"/api/v1/session/{message['SessionID']}")
        self.assertEqual(back["Messages"], [message_id])
        self.assertEqual(self.listing(f"listener={SUBMISSION}&outcome=delivered")
                         ["sessions"][0]["ID"], session["ID"])

    def test_unknown_session_and_bad_outcome(self) -> None:
        port = self.daemon.ports["web"]
        self.assertEqual(http(port, "/api/v1/session/0123456789abcdef"),
                         (404, b"session not found"))
        status, text = http(port, "/api/v1/sessions?outcome=lost")
        self.assertEqual(status, 400)
        self.assertIn(b"outcome must be one of", text)

    def test_filters_and_paging(self) -> None:
        before = self.known()
        client, refused = self.smtp(SMTP)  # at least one failure, and a session per listener
        client.docmd("AUTH", "PLAIN =")
        client.quit()
        client, quiet = self.smtp(SMTPS)
        client.quit()
        self.session_of(refused, before)
        implicit = self.session_of(quiet, before)  # greeted once the handshake was done
        self.assertRegex(implicit["Transcript"][0]["Text"],
                         r"^TLS handshake done \(implicit\): TLSv1\.3 with ")
        self.assertEqual(implicit["Transcript"][1]["Text"], "220 localhost ESMTP mailsink")
        everything = self.listing()
        sessions = everything["sessions"]
        self.assertEqual(everything["total"], len(sessions))
        failed = self.listing("outcome=failed")
        self.assertEqual([s["ID"] for s in failed["sessions"]],
                         [s["ID"] for s in sessions if s["Outcome"] in FAILURES])
        self.assertEqual((failed["total"], failed["sessions_count"], failed["count"]),
                         (len(sessions), len(failed["sessions"]), len(failed["sessions"])))
        self.assertGreater(failed["count"], 0)
        for listener in (SMTP, SUBMISSION, SMTPS):
            chosen = self.listing("listener=" + urllib.parse.quote(listener))["sessions"]
            self.assertEqual([s["ID"] for s in chosen],
                             [s["ID"] for s in sessions if s["Listener"] == listener])
            self.assertGreater(len(chosen), 0, listener)
        both = self.listing(f"outcome=refused&listener={SMTP}")["sessions"]
        self.assertEqual([s["ID"] for s in both], [s["ID"] for s in sessions
                                                   if s["Outcome"] == "refused"
                                                   and s["Listener"] == SMTP])
        pages = []
        for start in range(0, len(sessions) + 2, 2):
            page = self.api(f"/api/v1/sessions?start={start}&limit=2")
            self.assertEqual((page["start"], page["count"]),
                             (start, min(2, max(0, len(sessions) - start))))
            pages += page["sessions"]
        self.assertEqual(pages, sessions)
        ended = [s["Ended"] for s in sessions]
        self.assertEqual(ended, sorted(ended, reverse=True))  # the newest (to end) first

    def test_session_event_on_the_sse_stream(self) -> None:
        url = f"http://127.0.0.1:{self.daemon.ports['web']}/api/v1/events"
        with _DIRECT.open(url, timeout=CLIENT_TIMEOUT) as stream:
            self.assertEqual(stream.readline(), b": mailsink events\n")
            client, port = self.smtp(SMTP)
            client.quit()
            deadline = time.monotonic() + SETTLE
            while True:
                self.assertLess(time.monotonic(), deadline, "no session event")
                line = stream.readline()
                if not line.startswith(b"data: "):
                    continue
                event = json.loads(line[6:])
                if event["Type"] == "session" and event["Data"]["Client"] == f"127.0.0.1:{port}":
                    break
        data = event["Data"]
        self.assertEqual((data["Listener"], data["Outcome"], data["Helo"]),
                         (SMTP, "no-mail", HELO))
        self.assertNotIn("Transcript", data)
        self.assertEqual(self.api(f"/api/v1/session/{data['ID']}")["Ended"], data["Ended"])

    def metric(self, listener: str, outcome: str) -> float:
        status, text = http(self.daemon.ports["web"], "/metrics")
        self.assertEqual(status, 200)
        match = re.search(rf'^mailsink_smtp_sessions_total\{{listener="{re.escape(listener)}",'
                          rf'outcome="{outcome}"\}} (\S+)$', text.decode(), re.M)
        return float(match.group(1)) if match else 0.0

    def test_metrics_count_sessions_by_listener_and_outcome(self) -> None:
        counts = {(SMTP, "refused"): self.metric(SMTP, "refused"),
                  (SMTP, "no-mail"): self.metric(SMTP, "no-mail"),
                  (SMTPS, "no-mail"): self.metric(SMTPS, "no-mail")}
        before = self.known()
        client, refused = self.smtp(SMTP)
        client.docmd("AUTH", "LOGIN")
        client.quit()
        client, quiet = self.smtp(SMTP)
        client.quit()
        self.session_of(refused, before)
        self.session_of(quiet, before)
        self.assertEqual(self.metric(SMTP, "refused"), counts[SMTP, "refused"] + 1)
        self.assertEqual(self.metric(SMTP, "no-mail"), counts[SMTP, "no-mail"] + 1)
        self.assertEqual(self.metric(SMTPS, "no-mail"), counts[SMTPS, "no-mail"])
        self.assertGreaterEqual(counts[SMTPS, "no-mail"], 1)  # the start-up readiness check

    def test_no_password_or_auth_payload_anywhere(self) -> None:
        """PLAIN, LOGIN, CRAM-MD5, XOAUTH2 (smtplib) and PLAIN (swaks): wrong, then right."""
        before = self.known()
        ports = {}
        for mechanism in ("PLAIN", "LOGIN", "CRAM-MD5", "XOAUTH2"):
            client, port = self.smtp(SUBMISSION, starttls=True)
            self.assertEqual(self.login(client, mechanism, WRONG)[0], 535, mechanism)
            self.assertEqual(self.login(client, mechanism, PASSWORD)[0], 235, mechanism)
            self.send(client, mechanism)
            client.quit()
            ports[mechanism] = port
        result = run_tool(["swaks", "--server", f"127.0.0.1:{self.daemon.ports[SUBMISSION]}",
                           "-tls", "-a", "PLAIN", "--auth-user", USER, "--auth-password",
                           PASSWORD, "--helo", HELO, "--from", "swaks@example.com",
                           "--to", "x@example.com", "--timeout", "10"])
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        self.assertIn(b64(f"\0{USER}\0{PASSWORD}"), result.stdout)  # swaks did send it
        swaks = self.new_session(SUBMISSION, before | {
            self.session_of(port, before)["ID"] for port in ports.values()})
        self.assertEqual(self.client_lines(swaks)[1:4], ["STARTTLS", f"EHLO {HELO}",
                                                         "AUTH PLAIN ***"])
        # The wrong login, then the right one: the mechanism's name and *** only.
        shown = {"PLAIN": ["AUTH PLAIN ***"] * 2,
                 "LOGIN": ["AUTH LOGIN ***", "***"] * 2,
                 "CRAM-MD5": ["AUTH CRAM-MD5", "***"] * 2,
                 "XOAUTH2": ["AUTH XOAUTH2 ***", "***", "AUTH XOAUTH2 ***"]}
        for mechanism, port in ports.items():
            session = self.session_of(port, before)
            self.assertEqual((session["Outcome"], session["User"], session["Mechanism"],
                              session["LoggedIn"]), ("delivered", USER, mechanism, True))
            lines = self.client_lines(session)
            self.assertEqual(lines[3:3 + len(shown[mechanism])], shown[mechanism], lines)

        places: dict[str, bytes] = {"log": self.daemon.log_text().encode()}
        self.assertGreaterEqual(places["log"].count(f"authenticated as {USER}".encode()), 5)
        self.assertGreaterEqual(places["log"].count(
            f"authentication failed for '{USER}'".encode()), 4)
        for folder in (self.daemon.state_dir, self.daemon.maildir):
            for parent, _, names in os.walk(folder):
                for name in names:
                    with open(os.path.join(parent, name), "rb") as stream:
                        places[os.path.join(parent, name)] = stream.read()
        for name in ("sessions.sqlite3", "sessions.sqlite3-wal"):
            self.assertIn(os.path.join(self.daemon.state_dir, name), places)
        listing = self.listing()
        places["sessions"] = json.dumps(listing).encode()
        for summary in listing["sessions"]:
            places[summary["ID"]] = json.dumps(self.api(f"/api/v1/session/{summary['ID']}")
                                               ).encode()
        messages = self.api("/api/v1/messages?limit=1000")
        places["messages"] = json.dumps(messages).encode()
        for message in messages["messages"]:
            places[message["ID"]] = json.dumps(self.api(f"/api/v1/message/{message['ID']}")
                                               ).encode()
            status, places[message["ID"] + "/raw"] = http(
                self.daemon.ports["web"], f"/api/v1/message/{message['ID']}/raw")
            self.assertEqual(status, 200)
        forms = secret_forms(PASSWORD) | secret_forms(WRONG)
        for where, content in places.items():
            for form in forms:
                self.assertNotIn(form.encode(), content, where)


class RetentionTests(SessionChecks, TestCase):
    """max_sessions, a restart, DELETE."""

    def quit_as(self, name: str) -> int:
        """A session that says EHLO C{name} and QUIT, read to the end; the client's port."""
        with socket.create_connection(("127.0.0.1", self.daemon.ports[SMTP]),
                                      timeout=CLIENT_TIMEOUT) as raw:
            raw.sendall(f"EHLO {name}\r\nQUIT\r\n".encode())
            while raw.recv(4096):
                pass
            return int(raw.getsockname()[1])

    def test_pruned_kept_across_a_restart_and_deleted(self) -> None:
        self.daemon = Daemon.for_test(self, {"mailsink": {"max_sessions": "3"},
                                             SMTP: {"tls": "none"}, "web": {}})
        ids = {}
        for number in range(5):
            before = self.known()
            ids[number] = self.session_of(self.quit_as(f"h{number}.test"), before)["ID"]
        listing = self.listing()
        self.assertEqual(listing["total"], 3)
        self.assertEqual([s["ID"] for s in listing["sessions"]], [ids[4], ids[3], ids[2]])

        self.quit_as("h5.test")  # ended just before the stop: written as the daemon stops
        self.assertIn(self.daemon.stop(), (0, -signal.SIGTERM))  # twistd re-raises SIGTERM
        before = set(ids.values())
        self.daemon.start()  # its readiness check is one more session
        self.wait_for(lambda s: s["Helo"] == "" and s["ID"] not in before, "of the check")
        listing = self.listing()
        self.assertEqual(listing["total"], 3)
        helos = [s["Helo"] for s in listing["sessions"]]
        self.assertEqual(helos, ["", "h5.test", "h4.test"])
        kept = self.api(f"/api/v1/session/{ids[4]}")
        self.assertEqual(self.client_lines(kept), ["EHLO h4.test", "QUIT"])
        self.assertEqual(http(self.daemon.ports["web"], f"/api/v1/session/{ids[2]}")[0], 404)

        self.assertEqual(self.api("/api/v1/sessions", "DELETE"), "ok")
        listing = self.listing()
        self.assertEqual((listing["total"], listing["sessions"]), (0, []))

    def test_session_open_at_the_stop_is_kept(self) -> None:
        """twistd closes open connections after the services stopped: still written."""
        self.daemon = Daemon.for_test(self, {SMTP: {"tls": "none"}, "web": {}})
        raw = socket.create_connection(("127.0.0.1", self.daemon.ports[SMTP]),
                                       timeout=CLIENT_TIMEOUT)
        self.addCleanup(raw.close)
        raw.sendall(b"EHLO open.at.stop\r\nMAIL FROM:<a@example.com>\r\n")
        received = b""
        while received.count(b"\r\n250 ") < 2:
            received += raw.recv(4096)
        self.assertIn(self.daemon.stop(), (0, -signal.SIGTERM))
        self.daemon.start()
        session = self.wait_for(lambda s: s["Helo"] == "open.at.stop", "open at the stop")
        self.assertEqual(self.client_lines(session),
                         ["EHLO open.at.stop", "MAIL FROM:<a@example.com>"])
        self.assertEqual(session["Outcome"], "dropped")


ALICE, BOB, ROOT = (USER, PASSWORD), ("bob", "bob-" + PASSWORD), ("root", "root-" + PASSWORD)


class IsolationTests(SessionChecks, TestCase):
    """isolation = user with [web] auth = required: sessions by who logged in."""

    viewer = ROOT

    def test_users_see_their_own_sessions_admins_all(self) -> None:
        self.daemon = Daemon.for_test(
            self, {"mailsink": {"isolation": "user"}, "auth": {"admins": "root"},
                   SMTP: {"tls": "starttls", "auth": "optional"},
                   SMTPS: {"tls": "implicit", "auth": "required"},
                   "web": {"auth": "required"}},
            env={"MAILSINK_AUTH": " ".join(f"{u}:{p}" for u, p in (ALICE, BOB, ROOT))})
        before = self.known()
        ports = {}
        client, ports["alice"] = self.smtp(SMTPS)
        self.assertEqual(self.login(client, "PLAIN", PASSWORD)[0], 235)
        self.send(client, "alice")
        client.quit()
        client, ports["alice-failed"] = self.smtp(SMTPS)
        self.assertEqual(self.login(client, "PLAIN", WRONG)[0], 535)
        client.quit()
        client, ports["bob"] = self.smtp(SMTPS)
        client.user, client.password = BOB
        self.assertEqual(client.auth("PLAIN", client.auth_plain)[0], 235)
        client.quit()
        client, ports["anonymous"] = self.smtp(SMTP, starttls=True)
        self.send(client, "anonymous")
        client.quit()
        ids = {name: self.session_of(port, before)["ID"] for name, port in ports.items()}

        web = self.daemon.ports["web"]
        self.assertEqual(http(web, "/api/v1/sessions")[0], 401)
        self.assertEqual(http(web, "/api/v1/sessions", viewer=(USER, WRONG))[0], 401)
        self.assertEqual(self.visible(ALICE), [ids["alice"]])
        self.assertEqual(self.visible(BOB), [ids["bob"]])
        everything = self.visible(ROOT)
        self.assertLessEqual(set(ids.values()), set(everything))
        self.assertEqual(self.listing(viewer=ALICE)["total"], 1)
        self.assertEqual(http(web, f"/api/v1/session/{ids['bob']}", viewer=ALICE)[0], 404)
        self.assertEqual(http(web, f"/api/v1/session/{ids['anonymous']}", viewer=ALICE)[0],
                         404)
        self.assertEqual(self.api(f"/api/v1/session/{ids['alice']}", viewer=ALICE)["ID"],
                         ids["alice"])
        self.assertEqual(self.api(f"/api/v1/session/{ids['anonymous']}", viewer=ROOT)["ID"],
                         ids["anonymous"])

        self.assertEqual(self.api("/api/v1/sessions", "DELETE", viewer=ALICE), "ok")
        self.assertEqual(self.visible(ALICE), [])
        self.assertEqual(self.visible(BOB), [ids["bob"]])
        self.assertEqual(self.visible(ROOT), [i for i in everything if i != ids["alice"]])

    def visible(self, viewer: tuple[str, str]) -> list[str]:
        return [s["ID"] for s in self.listing(viewer=viewer)["sessions"]]
