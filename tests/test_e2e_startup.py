"""
End-to-end start-up checks of the real daemon (C{twistd -n mailsink -c INI}): bad
settings stop it at once with one line naming the section and key, and environment
variables win over the file.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import smtplib
import socket
import ssl
import subprocess
import tempfile
import time

from daemon import Daemon, free_port, loopback_endpoint, run_twistd, write_ini
from twisted.trial.unittest import TestCase

QUICKLY = 15.0
"""Seconds within which a refused start-up must have exited."""


def plain_smtp(port: int | None = None) -> dict[str, str]:
    """An [smtp] section without TLS on a free (or the given) loopback port."""
    return {"listen": loopback_endpoint(port or free_port()), "tls": "none", "auth": "none"}


class StartupErrorTests(TestCase):
    """Each bad setting: exit status non-zero, quickly, one line saying what is wrong."""

    def setUp(self) -> None:
        self.root = tempfile.mkdtemp(prefix="mailsink-e2e-startup-")
        self.addCleanup(shutil.rmtree, self.root, True)

    def refused(self, sections: dict[str, dict[str, str]] | None = None, *,
                config_path: str | None = None, env: dict[str, str] | None = None) -> str:
        """Run twistd on C{sections}; it must exit non-zero quickly. Returns its output."""
        if config_path is None:
            config_path = write_ini(
                os.path.join(self.root, "mailsink.ini"),
                {"mailsink": {"maildir": "mail", "state_dir": "state"}, **(sections or {})})
        started = time.monotonic()
        result = run_twistd(["-n", "--pidfile=", "mailsink", "-c", config_path],
                            cwd=self.root, env=env)
        elapsed = time.monotonic() - started
        self.assertNotEqual(result.returncode, 0, result.stdout)
        self.assertLess(elapsed, QUICKLY, result.stdout)
        self.assertNotIn("Traceback", result.stdout)
        return result.stdout

    def assert_one_line(self, output: str, pattern: str) -> str:
        lines = [line for line in output.splitlines() if re.search(pattern, line)]
        self.assertEqual(len(lines), 1, f"want one line matching {pattern!r} in:\n{output}")
        return lines[0]

    def test_unknown_key(self) -> None:
        smtp = {**plain_smtp(), "colour": "blue"}
        output = self.refused({"smtp": smtp})
        self.assert_one_line(output, r"mailsink: \[smtp\] colour: unknown key; known: listen, "
                                     r"tls, auth")

    def test_bad_size(self) -> None:
        output = self.refused({"mailsink": {"maildir": "mail", "state_dir": "state",
                                            "max_message_size": "lots"},
                               "smtp": plain_smtp()})
        self.assert_one_line(output, r"mailsink: \[mailsink\] max_message_size: 'lots' is not "
                                     r"a size")

    def test_bad_tls_mode(self) -> None:
        output = self.refused({"smtp": {**plain_smtp(), "tls": "sometimes"}})
        self.assert_one_line(output, r"mailsink: \[smtp\] tls: 'sometimes' is not one of "
                                     r"none \| starttls \| starttls-required \| implicit")

    def test_bad_value_from_environment(self) -> None:
        output = self.refused({"smtp": plain_smtp()}, env={"MAILSINK_SMTP_TLS": "sometimes"})
        self.assert_one_line(output, r"mailsink: \[smtp\] tls: 'sometimes' is not one of")

    def test_unknown_section(self) -> None:
        output = self.refused({"smpt": plain_smtp()})
        self.assert_one_line(output, r"mailsink: \[smpt\]: unknown section; known: ")

    def test_missing_config_file(self) -> None:
        missing = os.path.join(self.root, "nowhere", "mailsink.ini")
        output = self.refused(config_path=missing)
        self.assert_one_line(output, rf"mailsink: \[mailsink\]: cannot read "
                                     rf"{re.escape(missing)}: No such file or directory")

    def test_pop3_without_credentials(self) -> None:
        output = self.refused({"smtp": plain_smtp(), "pop3": {"listen": loopback_endpoint(
            free_port())}})
        self.assert_one_line(output, r"mailsink: \[pop3\] listen: POP3 needs credentials")

    def test_relay_bad_recipient_expression(self) -> None:
        output = self.refused({"smtp": plain_smtp(), "relay": {
            "host": "smtp.example.com", "allowed_recipients": "(unclosed"}})
        self.assert_one_line(output, r"mailsink: \[relay\] allowed_recipients: .*not a valid "
                                     r"regular expression")

    def test_relay_host_starts(self) -> None:
        daemon = Daemon.for_test(self, {"smtp": plain_smtp(),
                                        "relay": {"host": "smtp.example.com"}})
        self.assertTrue(daemon.running)

    def test_smtp_auth_required_without_credentials(self) -> None:
        output = self.refused({"smtp:submission": {**plain_smtp(), "tls": "starttls-required",
                                                   "auth": "required"}})
        self.assert_one_line(output, r"mailsink: \[smtp:submission\] auth: is required but no "
                                     r"credentials are configured")

    def test_smtp_auth_required_without_tls(self) -> None:
        output = self.refused({"auth": {"accept_any": "true"},
                               "smtp": {**plain_smtp(), "tls": "none", "auth": "required"}})
        self.assert_one_line(output, r"mailsink: \[smtp\] auth: is required but tls = none, "
                                     r".*allow_insecure")

    def test_missing_password_file(self) -> None:
        output = self.refused({"auth": {"password_file": "no-such-file"},
                               "smtp": plain_smtp()})
        self.assert_one_line(output, r"mailsink: \[auth\] password_file: .*no-such-file")

    def test_port_in_use(self) -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            port = taken.getsockname()[1]
            output = self.refused({"smtp": plain_smtp(port)})
        self.assert_one_line(output, rf"mailsink: \[smtp\] listen: cannot listen on "
                                     rf"tcp:{port}:interface=127\.0\.0\.1\b.*in use")


class EnvironmentTests(TestCase):
    """MAILSINK_<SECTION>_<KEY> wins over the file."""

    def test_listen_from_environment_wins(self) -> None:
        file_ports = {"smtp": free_port(), "smtp:smtps": free_port()}
        env_ports = {"smtp": free_port(), "smtp:smtps": free_port()}
        daemon = Daemon.for_test(
            self,
            {"smtp": plain_smtp(file_ports["smtp"]),
             "smtp:smtps": {"listen": loopback_endpoint(file_ports["smtp:smtps"]),
                            "tls": "implicit", "auth": "none"}},
            env={"MAILSINK_SMTP_LISTEN": loopback_endpoint(env_ports["smtp"]),
                 "MAILSINK_SMTP_SMTPS_LISTEN": loopback_endpoint(env_ports["smtp:smtps"])},
            start=False)
        daemon.start(wait=False)
        daemon.wait_ready({env_ports["smtp"]: "none", env_ports["smtp:smtps"]: "implicit"})
        for port in file_ports.values():
            with self.assertRaises(ConnectionRefusedError):
                socket.create_connection(("127.0.0.1", port), timeout=5).close()
        log = daemon.log_text()
        self.assertIn(f"[smtp] listening on tcp:{env_ports['smtp']}:", log)
        self.assertIn(f"[smtp:smtps] listening on tcp:{env_ports['smtp:smtps']}:", log)

        with smtplib.SMTP("127.0.0.1", env_ports["smtp"], timeout=10) as client:
            code, _ = client.ehlo("env.client.test")
            self.assertEqual(code, 250)
            client.mail("env@example.com")
            client.rcpt("rcpt@example.com")
            code, text = client.data(b"Subject: env\r\n\r\nfrom the environment\r\n")
            self.assertEqual(code, 250, text)
        self.assertEqual(len(daemon.new_files()), 1)

        self.assertIn(daemon.stop(), (0, -signal.SIGTERM))
        self.assertIn("Server Shut Down.", daemon.log_text())


class HelpTests(TestCase):
    def test_help(self) -> None:
        root = tempfile.mkdtemp(prefix="mailsink-e2e-help-")
        self.addCleanup(shutil.rmtree, root, True)
        result = run_twistd(["mailsink", "--help"], cwd=root)
        self.assertEqual(result.returncode, 0, result.stdout)
        self.assertIn("--config", result.stdout)
        self.assertIn("MAILSINK_<SECTION>_<KEY>", result.stdout)


class ListenerLineTests(TestCase):
    """Each listener is logged once, in mailsink's words, at start-up and at shutdown."""

    def test_one_line_per_listener(self) -> None:
        sections = {"smtp": plain_smtp(),
                    "smtp:smtps": {"listen": loopback_endpoint(free_port()), "tls": "implicit",
                                   "auth": "none"},
                    "pop3": {"tls": "starttls"}, "imap": {"tls": "starttls"}, "web": {}}
        daemon = Daemon.for_test(self, sections, env={"MAILSINK_AUTH": "u:p"})
        self.assertIn(daemon.stop(), (0, -signal.SIGTERM))
        log = daemon.log_text()
        for twisted_words in ("starting on", "Starting factory", "Stopping factory",
                              "Port ", "Closed)"):
            self.assertNotIn(twisted_words, log)
        for section in sections:
            self.assertEqual(log.count(f"[{section}] listening on "), 1, log)
            self.assertEqual(log.count(f"[{section}] stopped listening on "), 1, log)


class SSLEndpointTests(TestCase):
    """interface.md: an C{ssl:} endpoint string is implicit TLS with its own certificate."""

    def test_ssl_endpoint_without_tls_is_implicit(self) -> None:
        root = tempfile.mkdtemp(prefix="mailsink-e2e-ssl-")
        self.addCleanup(shutil.rmtree, root, True)
        key, cert = os.path.join(root, "key.pem"), os.path.join(root, "cert.pem")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days",
                        "2", "-subj", "/CN=own.example", "-keyout", key, "-out", cert],
                       check=True, capture_output=True, timeout=60)
        port = free_port()
        listen = f"ssl:{port}:interface=127.0.0.1:privateKey={key}:certKey={cert}"
        daemon = Daemon.for_test(self, {"smtp": plain_smtp(),
                                        "smtp:own": {"listen": listen, "auth": "none"}})
        daemon.wait_ready({port: "implicit"})
        self.assertIn(f"[smtp:own] listening on ssl:{port}:", daemon.log_text())
        self.assertIn("(tls = implicit)", daemon.log_text().split("[smtp:own] listening")[1])
        context = ssl.create_default_context(cafile=cert)
        context.check_hostname = False
        with smtplib.SMTP_SSL("127.0.0.1", port, context=context, timeout=10) as client:
            self.assertEqual(client.sock.getpeercert()["subject"],
                             ((("commonName", "own.example"),),))
            code, _ = client.ehlo("ssl.client.test")
            self.assertEqual(code, 250)
            self.assertFalse(client.has_extn("starttls"))
            client.mail("ssl@example.com")
            client.rcpt("rcpt@example.com")
            self.assertEqual(client.data(b"Subject: ssl\r\n\r\nover ssl:\r\n")[0], 250)
        self.assertEqual(len(daemon.new_files()), 1)
