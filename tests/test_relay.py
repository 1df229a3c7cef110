"""
The relay: release's header surgery and the recipient rules (unit tests), and end to end
with real daemons: a target mailsink with listeners in each TLS mode (one demanding AUTH),
and a source mailsink whose C{[relay]} points at it.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import shlex
import smtplib
import socket
import subprocess
import sys
import tempfile
import time
import unittest
from concurrent.futures import ThreadPoolExecutor
from email.message import EmailMessage
from typing import ClassVar

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from daemon import Daemon, SharedDaemon, free_port, http_json

from mailsink.relay.diagnose import for_relay
from mailsink.relay.policy import (
    RecipientPolicy,
    auto_relay_recipients,
    envelope,
    strip_for_release,
)

RELAY_TIMEOUT = 3
"""[relay] timeout in the end-to-end tests: each diagnosis must come within it."""

STORED = (
    b"Return-Path: <sender@example.com>\n"
    b"Delivered-To: to@example.com\n"
    b"Delivered-To: hidden@example.com\n"
    b"Received: from client.example (unknown [127.0.0.1])\n"
    b"\tby sink.example (mailsink, listener smtp) with ESMTP id ABC\n"
    b"\t; Mon, 23 Nov 2026 20:00:00 +0000 (UTC)\n"
    b"Received: from elsewhere by mx.example.net; Mon, 23 Nov 2026 19:00:00 +0000\n"
    b"From: Sender <sender@example.com>\n"
    b"To: to@example.com\n"
    b"Bcc: hidden@example.com,\n"
    b" other@example.com\n"
    b"Subject: hello\n"
    b"\n"
    b"Return-Path: <body@example.com>\n"
    b"Bcc: body stays\n"
)


class ReleaseHeaderTests(unittest.TestCase):
    def test_trace_block_and_bcc_dropped(self) -> None:
        released = strip_for_release(STORED)
        header, _, body = released.partition(b"\n\n")
        self.assertNotIn(b"Return-Path", header)
        self.assertNotIn(b"Delivered-To", header)
        self.assertNotIn(b"mailsink", header)
        self.assertNotIn(b"Bcc", header)
        self.assertNotIn(b"other@example.com", header)
        self.assertIn(b"Received: from elsewhere by mx.example.net", header)
        self.assertTrue(header.startswith(b"Received: from elsewhere"))
        self.assertIn(b"Subject: hello", header)
        self.assertEqual(body, b"Return-Path: <body@example.com>\nBcc: body stays\n")

    def test_foreign_received_kept(self) -> None:
        raw = b"Received: from a by b; Mon, 1 Jan 2024 00:00:00 +0000\r\nSubject: x\r\n\r\nhi\r\n"
        self.assertEqual(strip_for_release(raw), raw)

    def test_envelope(self) -> None:
        self.assertEqual(envelope(STORED),
                         ("sender@example.com", ("to@example.com", "hidden@example.com")))


class PolicyTests(unittest.TestCase):
    def test_any(self) -> None:
        self.assertIsNone(RecipientPolicy().refusal(["a@example.com"]))
        self.assertIn("no recipients", RecipientPolicy().refusal([]) or "")

    def test_allowed(self) -> None:
        policy = RecipientPolicy(allowed=r"@example\.com$")
        self.assertIsNone(policy.refusal(["a@EXAMPLE.com"]))
        self.assertEqual(policy.refusal(["a@example.com", "b@example.org"]),
                         r"b@example.org is not allowed by [relay] allowed_recipients "
                         r"(@example\.com$)")

    def test_blocked(self) -> None:
        policy = RecipientPolicy(blocked=r"^ceo@")
        self.assertIsNone(policy.refusal(["a@example.com"]))
        self.assertEqual(policy.refusal(["ceo@example.com"]),
                         "ceo@example.com is blocked by [relay] blocked_recipients (^ceo@)")

    def test_auto_relay_match(self) -> None:
        self.assertEqual(auto_relay_recipients(["a@x", "b@y"], ""), ["a@x", "b@y"])
        self.assertEqual(auto_relay_recipients(["a@x", "b@y"], "@y$"), ["b@y"])

    def test_wording_names_relay_keys(self) -> None:
        self.assertEqual(for_relay("TLS handshake failed: x — the server speaks plaintext "
                                   "first: set tls = starttls"),
                         "TLS handshake failed: x — the server speaks plaintext first: set "
                         "[relay] tls = starttls")
        self.assertIn("[relay] tls_verify = false", for_relay(
            "certificate is not trusted (self-signed certificate): pass --cafile with the "
            "server's certificate or CA, or --insecure to skip the check"))
        self.assertEqual(for_relay("certificate is for a.example, not 127.0.0.1"),
                         "certificate is for a.example, not 127.0.0.1: set [relay] host to a "
                         "name the certificate holds")


# End to end.

def _other_name_certificate(folder: str) -> tuple[str, str]:
    """A self-signed certificate (and key) for other.example only."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "other.example")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("other.example")]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path = os.path.join(folder, "other.pem")
    key_path = os.path.join(folder, "other.key")
    with open(cert_path, "wb") as stream:
        stream.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(key_path, "wb") as stream:
        stream.write(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    return cert_path, key_path


def _running(command_line: str) -> list[str]:
    """Process ids whose command line holds C{command_line}."""
    found = subprocess.run(["pgrep", "-f", command_line], capture_output=True, text=True,
                           check=False, timeout=10)
    return found.stdout.split()


def _metric(text: str, name: str, listener: str | None = None) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and (listener is None or f'listener="{listener}"' in line):
            total += float(line.rsplit(" ", 1)[1])
    return total


class RelayEndToEndTests(SharedDaemon, unittest.TestCase):
    """The target: a mailsink that takes mail in every TLS mode, one listener with AUTH."""

    daemon_sections: ClassVar[dict[str, dict[str, str]]] = {}
    folder: ClassVar[str]
    cert_path: ClassVar[str]

    @classmethod
    def setUpClass(cls) -> None:
        cls.folder = tempfile.mkdtemp(prefix="mailsink-relay-")
        cls.cert_path, key_path = _other_name_certificate(cls.folder)
        cls.daemon_sections = {
            "tls": {"cert": cls.cert_path, "key": key_path},
            "smtp": {"tls": "starttls"},
            "smtp:smtps": {"tls": "implicit"},
            "smtp:auth": {"tls": "starttls", "auth": "required"},
            "smtp:pool": {"tls": "none"},
            "web": {},
        }
        cls._start_target()
        super().setUpClass()

    @classmethod
    def _start_target(cls) -> None:
        daemon = Daemon(cls.daemon_sections, env={"MAILSINK_AUTH": "relay:secret"})
        cls.daemon = daemon
        cls.addClassCleanup(daemon.close)
        daemon.start()

    # Helpers.

    def source(self, relay: dict[str, str] | None, env: dict[str, str] | None = None,
               start: bool = True) -> Daemon:
        sections: dict[str, dict[str, str]] = {"smtp": {"tls": "none"}, "web": {}}
        if relay is not None:
            sections["relay"] = {"timeout": f"{RELAY_TIMEOUT}s", **relay}
        return Daemon.for_test(self, sections, env=env, start=start)

    def relay_to(self, listener: str, **keys: str) -> dict[str, str]:
        return {"host": "127.0.0.1", "port": str(self.daemon.ports[listener]),
                "tls_verify": "false", **keys}

    @staticmethod
    def base(daemon: Daemon) -> str:
        return f"http://127.0.0.1:{daemon.ports['web']}"

    def capture(self, daemon: Daemon, to: str = "to@example.com",
                bcc: str = "hidden@example.com") -> str:
        """Send a message into C{daemon}; its ID once indexed."""
        message = EmailMessage()
        message["From"] = "sender@example.com"
        message["To"] = to
        message["Subject"] = "relay me"
        message.set_content("hello\n")
        with smtplib.SMTP("127.0.0.1", daemon.ports["smtp"], timeout=10) as client:
            client.send_message(message, to_addrs=[to, bcc])
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            status, body = http_json("GET", self.base(daemon) + "/api/v1/messages")
            messages = json.loads(body)["messages"] if status == 200 else []
            if messages:
                return str(messages[0]["ID"])
            time.sleep(0.05)
        raise AssertionError("the message was never indexed")

    def relay_test(self, daemon: Daemon) -> dict[str, str]:
        started = time.monotonic()
        status, body = http_json("POST", self.base(daemon) + "/api/v1/relay/test")
        self.assertEqual(status, 200, body)
        self.assertLess(time.monotonic() - started, RELAY_TIMEOUT * 3 + 5)
        answer: dict[str, str] = json.loads(body)
        return answer

    def target_metrics(self) -> str:
        status, body = http_json("GET", f"http://127.0.0.1:{self.daemon.ports['web']}/metrics")
        self.assertEqual(status, 200)
        return body.decode("utf-8")

    def wait_target_files(self, before: set[str], count: int) -> list[str]:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            new = self.daemon.new_files() - before
            if len(new) >= count:
                return sorted(new)
            time.sleep(0.05)
        raise AssertionError(f"the target got {len(self.daemon.new_files() - before)} of "
                             f"{count} messages")

    def release_one(self, source: Daemon) -> bytes:
        """Capture a message in C{source}, release it; the copy the target stored."""
        before = self.daemon.new_files()
        message_id = self.capture(source)
        status, body = http_json("POST", f"{self.base(source)}/api/v1/message/{message_id}/"
                                     f"release", {"To": ["dest@example.com"]})
        self.assertEqual((status, body), (200, b"ok"))
        return self.daemon.read_new(self.wait_target_files(before, 1)[0])

    # Tests.

    def test_release_delivers_without_trace_headers_and_reuses_connections(self) -> None:
        source = self.source(self.relay_to("smtp", pool_size="2"))
        message_id = self.capture(source)
        raw_url = f"{self.base(source)}/api/v1/message/{message_id}/raw"
        _, original = http_json("GET", raw_url)
        handshakes = _metric(self.target_metrics(), "mailsink_tls_handshakes_total")
        before = self.daemon.new_files()
        for _ in range(3):
            status, body = http_json("POST", f"{self.base(source)}/api/v1/message/{message_id}/"
                                         f"release", {"To": ["dest@example.com"]})
            self.assertEqual((status, body), (200, b"ok"))
        names = self.wait_target_files(before, 3)
        relayed = self.daemon.read_new(names[0])
        header = relayed.partition(b"\n\n")[0]
        # The target's own trace block only: one Return-Path, Delivered-To the new recipient.
        self.assertEqual(header.count(b"Return-Path:"), 1)
        self.assertIn(b"Return-Path: <sender@example.com>", header)
        self.assertEqual(re.findall(rb"Delivered-To: (\S+)", header), [b"dest@example.com"])
        self.assertEqual(header.count(b"(mailsink"), 1)
        self.assertNotIn(b"Bcc", header)
        self.assertNotIn(b"hidden@example.com", relayed)
        self.assertIn(b"Subject: relay me", header)
        # Three messages, one connection (one TLS handshake), still open in the pool.
        metrics = self.target_metrics()
        self.assertEqual(_metric(metrics, "mailsink_tls_handshakes_total") - handshakes, 1)
        self.assertEqual(_metric(metrics, "mailsink_connections", "smtp"), 1)
        # The stored original is untouched.
        self.assertEqual(http_json("GET", raw_url)[1], original)

    def test_relay_test_ok_and_webui(self) -> None:
        source = self.source(self.relay_to("smtp:smtps", tls="implicit",
                                           allowed_recipients="@example\\.com$"))
        self.assertEqual(self.relay_test(source),
                         {"status": "ok", "message": "SMTP connection successful"})
        _, body = http_json("GET", self.base(source) + "/api/v1/webui")
        relay = json.loads(body)["MessageRelay"]
        self.assertEqual((relay["Enabled"], relay["SMTPServer"], relay["AllowedRecipients"],
                          relay["BlockedRecipients"]),
                         (True, f"127.0.0.1:{self.daemon.ports['smtp:smtps']}",
                          "@example\\.com$", ""))

    def test_wrong_tls_modes(self) -> None:
        implicit_on_starttls = self.source(self.relay_to("smtp", tls="implicit"))
        answer = self.relay_test(implicit_on_starttls)
        self.assertEqual(answer["status"], "error")
        self.assertRegex(answer["message"], r"speaks plaintext first: set \[relay\] tls = "
                                            r"starttls$")
        starttls_on_implicit = self.source(self.relay_to("smtp:smtps", tls="starttls"))
        answer = self.relay_test(starttls_on_implicit)
        self.assertEqual(answer["status"], "error")
        self.assertRegex(answer["message"], r"expects TLS from the first byte: set \[relay\] "
                                            r"tls = implicit$")

    def test_untrusted_certificate(self) -> None:
        source = self.source(self.relay_to("smtp", tls_verify="true"))
        answer = self.relay_test(source)
        self.assertEqual(answer["status"], "error")
        self.assertRegex(answer["message"], r"^certificate is not trusted .*set \[relay\] "
                                            r"tls_verify = false")

    def test_certificate_for_another_name(self) -> None:
        source = self.source(self.relay_to("smtp", tls_verify="true"),
                             env={"SSL_CERT_FILE": self.cert_path})
        self.assertEqual(self.relay_test(source),
                         {"status": "error", "message": "certificate is for other.example, "
                          "not 127.0.0.1: set [relay] host to a name the certificate holds"})

    def test_auth(self) -> None:
        anonymous = self.source(self.relay_to("smtp:auth"))
        answer = self.relay_test(anonymous)  # the test tries MAIL FROM, as sending would
        self.assertEqual(answer["status"], "error")
        self.assertRegex(answer["message"], r"^530 the server requires authentication: set "
                                            r"\[relay\] username and password$")
        message_id = self.capture(anonymous)
        status, body = http_json("POST", f"{self.base(anonymous)}/api/v1/message/{message_id}/"
                                     f"release", {"To": ["dest@example.com"]})
        self.assertEqual(status, 400)
        self.assertRegex(body.decode(), r"requires authentication: set \[relay\] username "
                                        r"and password$")
        wrong = self.source(self.relay_to("smtp:auth", username="relay", password="wrong"))
        answer = self.relay_test(wrong)
        self.assertEqual(answer["status"], "error")
        self.assertRegex(answer["message"], r"^535 authentication failed: check \[relay\] "
                                            r"username and password")
        right = self.source(self.relay_to("smtp:auth", username="relay"),
                            env={"MAILSINK_RELAY_PASSWORD": "secret"})
        self.assertEqual(self.relay_test(right)["status"], "ok")
        self.release_one(right)

    def test_failed_release_keeps_the_original(self) -> None:
        port = free_port()
        source = self.source({"host": "127.0.0.1", "port": str(port), "tls": "none",
                              "blocked_recipients": "^ceo@"})
        message_id = self.capture(source)
        raw_url = f"{self.base(source)}/api/v1/message/{message_id}/raw"
        _, original = http_json("GET", raw_url)
        release = f"{self.base(source)}/api/v1/message/{message_id}/release"
        status, body = http_json("POST", release, {"To": ["dest@example.com"]})
        self.assertEqual(status, 400)
        self.assertEqual(body.decode(), f"127.0.0.1:{port} refused the connection — nothing "
                                        f"listens on that port: check [relay] host and port")
        status, body = http_json("POST", release, {"To": ["ceo@example.com"]})
        self.assertEqual((status, body.decode()), (400, "ceo@example.com is blocked by "
                                                        "[relay] blocked_recipients (^ceo@)"))
        status, _ = http_json("POST", release, {"To": "dest@example.com"})
        self.assertEqual(status, 400)
        self.assertEqual(http_json("GET", raw_url), (200, original))
        self.assertEqual(self.relay_test(source)["status"], "error")

    def test_relay_off(self) -> None:
        source = self.source(None)
        message_id = self.capture(source)
        status, body = http_json("POST", f"{self.base(source)}/api/v1/message/{message_id}/"
                                     f"release", {"To": ["dest@example.com"]})
        self.assertEqual((status, body), (400, b"relay is not configured: set [relay] host"))
        status, body = http_json("POST", self.base(source) + "/api/v1/relay/test")
        self.assertEqual((status, json.loads(body)), (200, {
            "status": "error", "message": "relay is not configured: set [relay] host"}))
        _, body = http_json("GET", self.base(source) + "/api/v1/webui")
        self.assertFalse(json.loads(body)["MessageRelay"]["Enabled"])

    def test_auto_relay(self) -> None:
        source = self.source(self.relay_to("smtp", auto_relay="true",
                                           auto_relay_match="^keep@"))
        before = self.daemon.new_files()
        self.capture(source, to="keep@example.com", bcc="drop@example.com")
        names = self.wait_target_files(before, 1)
        relayed = self.daemon.read_new(names[0])
        self.assertEqual(re.findall(rb"Delivered-To: (\S+)", relayed), [b"keep@example.com"])

    def test_auth_before_starttls(self) -> None:
        source = self.source(self.relay_to("smtp:auth", tls="none", username="relay",
                                           password="secret"))
        port = self.daemon.ports["smtp:auth"]
        self.assertEqual(self.relay_test(source),
                         {"status": "error", "message": f"127.0.0.1:{port} does not offer AUTH "
                          f"before STARTTLS: set [relay] tls = starttls"})

    def test_xoauth2_token(self) -> None:
        right = self.source(self.relay_to("smtp:auth", username="relay", token="secret"))
        self.assertEqual(self.relay_test(right)["status"], "ok")
        relayed = self.release_one(right)
        self.assertIn(b"(Authenticated sender: relay)", relayed)
        wrong = self.source(self.relay_to("smtp:auth", username="relay"),
                            env={"MAILSINK_RELAY_TOKEN": "expired"})
        answer = self.relay_test(wrong)
        self.assertEqual(answer["status"], "error")
        self.assertRegex(answer["message"], r"^535 authentication failed: check \[relay\] "
                                            r"username and token; OAuth2 access tokens expire")

    def test_token_command(self) -> None:
        folder = tempfile.mkdtemp(prefix="mailsink-token-")
        script = os.path.join(folder, "token.py")
        with open(script, "w") as stream:
            stream.write("import sys\nprint(sys.argv[1])\n")
        command = f"{shlex.quote(sys.executable)} {shlex.quote(script)}"
        good = self.source(self.relay_to("smtp:auth", username="relay",
                                         token_command=f"{command} secret"))
        self.assertEqual(self.relay_test(good)["status"], "ok")
        failing = self.source(self.relay_to("smtp:auth", username="relay",
                                            token_command="echo 'no refresh token' >&2; "
                                                          "exit 3"))
        self.assertEqual(self.relay_test(failing),
                         {"status": "error", "message": "[relay] token_command failed (exit "
                          "status 3): run it by hand to see why"})
        # A pipeline that hangs: killed with all its processes at the timeout.
        marker = f"{RELAY_TIMEOUT * 1000 + 7}"
        hanging = self.source(self.relay_to("smtp:auth", username="relay",
                                            token_command=f"sleep {marker} | cat"))
        started = time.monotonic()
        self.assertEqual(self.relay_test(hanging),
                         {"status": "error", "message": f"[relay] token_command did not "
                          f"finish in {RELAY_TIMEOUT} s: check the command"})
        self.assertLess(time.monotonic() - started, RELAY_TIMEOUT + 5)
        self.assertEqual(_running(f"sleep {marker}"), [])
        # What a successful command leaves running in the background goes with it.
        lingering = f"{RELAY_TIMEOUT * 1000 + 8}"
        background = self.source(self.relay_to(
            "smtp:auth", username="relay",
            token_command=f"sleep {lingering} >/dev/null 2>&1 & echo secret"))
        self.assertEqual(self.relay_test(background)["status"], "ok")
        self.assertEqual(_running(f"sleep {lingering}"), [])

    def test_pool_size_bounds_connections(self) -> None:
        source = self.source(self.relay_to("smtp:pool", tls="none", pool_size="2"))
        message_id = self.capture(source)
        before = self.daemon.new_files()
        release = f"{self.base(source)}/api/v1/message/{message_id}/release"
        with ThreadPoolExecutor(6) as workers:
            answers = list(workers.map(
                lambda n: http_json("POST", release, {"To": [f"dest{n}@example.com"]}), range(6)))
        self.assertEqual(answers, [(200, b"ok")] * 6)
        self.wait_target_files(before, 6)
        # Six at once through a pool of two: at most two connections, kept open.
        open_now = _metric(self.target_metrics(), "mailsink_connections", "smtp:pool")
        self.assertIn(open_now, (1, 2))

    def test_silent_server(self) -> None:
        """A port that accepts connections and never says anything."""
        with socket.socket() as silent:
            silent.bind(("127.0.0.1", 0))
            silent.listen(8)
            port = silent.getsockname()[1]
            where = f"127.0.0.1:{port}"
            relay = {"host": "127.0.0.1", "port": str(port)}
            implicit = self.source({**relay, "tls": "implicit"})
            self.assertEqual(self.relay_test(implicit),
                             {"status": "error", "message": f"{where} did not finish the TLS "
                              f"handshake in {RELAY_TIMEOUT} s"})
            starttls = self.source({**relay, "tls": "starttls"})
            self.assertEqual(self.relay_test(starttls),
                             {"status": "error", "message": f"{where} sent no greeting in "
                              f"{RELAY_TIMEOUT} s — the server may be overloaded, or "
                              f"something between holds the connection"})

    def test_relay_test_names_its_own_sender(self) -> None:
        """A server refusing the test's MAIL FROM (chaos here): the answer says whose it was."""
        refusing = Daemon.for_test(self, {"mailsink": {"chaos": "true"},
                                          "smtp": {"tls": "none"}, "web": {}})
        status, _ = http_json("PUT", f"http://127.0.0.1:{refusing.ports['web']}/api/v1/chaos",
                          {"Sender": {"ErrorCode": 550, "Probability": 100}})
        self.assertEqual(status, 200)
        source = self.source({"host": "127.0.0.1", "port": str(refusing.ports["smtp"]),
                              "tls": "none"})
        answer = self.relay_test(source)
        self.assertEqual(answer["status"], "error")
        self.assertRegex(answer["message"], r"^the server answered 550 .* \(to the test's "
                                            r"MAIL FROM:<>; a release uses the message's own "
                                            r"sender\)$")
