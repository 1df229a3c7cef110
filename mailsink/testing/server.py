"""
A real mailsink for a test session: C{twistd -n mailsink} on free loopback ports with an
INI of its own in a folder of its own, waited for until it serves, stopped by its process.

The INI accepts what an application under test may send: plain SMTP, STARTTLS and
implicit TLS listeners, any user name and password (also without TLS), and the web view.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
from typing import NamedTuple

from mailsink.testing.readiness import ProbeFailed, smtp_greets, wait_ready, web_ready
from mailsink.testing.sink import Sink

TWISTD = os.path.join(os.path.dirname(sys.executable), "twistd")
"""The twistd of the Python running the tests, so it finds the same mailsink."""
START_TIMEOUT = 30.0
"""Seconds the sink may take to serve on every port."""
STOP_TIMEOUT = 10.0
"""Seconds the sink may take to exit after SIGTERM before its process group gets SIGKILL."""
START_ATTEMPTS = 3
"""Starts tried when another program took a free port before the sink could bind it."""
LOG_TAIL = 40
"""Lines of the sink's log quoted when it fails."""
HOST = "127.0.0.1"
CERT_NAME = "mailsink-cert.pem"
_PORT_TAKEN = ("Address already in use", "Couldn't listen")


class SinkFailed(Exception):
    """The sink did not start, or exited while it should run; the text quotes its log."""


class SinkProcess:
    """One C{twistd -n mailsink} in C{root}: its INI, Maildir, state and log live there."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.config_path = os.path.join(root, "mailsink.ini")
        self.log_path = os.path.join(root, "twistd.log")
        self.cert_path = os.path.join(root, "state", CERT_NAME)
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Sink:
        """Start the sink and wait until it serves; its addresses. Raises L{SinkFailed}."""
        attempt = 1
        while True:
            ports = _Ports(*(_free_port() for _ in _Ports._fields))
            sink = Sink(web_url=f"http://{HOST}:{ports.web}", smtp_host=HOST,
                        smtp_port=ports.smtp, starttls_port=ports.starttls,
                        smtps_port=ports.smtps, cert_path=self.cert_path)
            self._write_config(ports)
            log_start = self._log_size()
            self._spawn()
            try:
                wait_ready([
                    (f"the web listener at {sink.web_url}", web_ready(sink.web_url)),
                    (f"SMTP on port {ports.smtp}", smtp_greets(HOST, ports.smtp)),
                    (f"STARTTLS on port {ports.starttls}", smtp_greets(HOST, ports.starttls)),
                    (f"SMTPS on port {ports.smtps}",
                     smtp_greets(HOST, ports.smtps, implicit_tls=True)),
                ], START_TIMEOUT, pause=self._wait_on_process)
            except SinkFailed:
                port_taken = any(text in self._log_since(log_start) for text in _PORT_TAKEN)
                if port_taken and attempt < START_ATTEMPTS:
                    attempt += 1
                    continue
                raise
            except (TimeoutError, ProbeFailed) as error:
                self.stop()
                raise SinkFailed(f"mailsink did not start: {error}\n{self._log_quote()}") \
                    from None
            return sink

    def check_alive(self) -> None:
        """Raise L{SinkFailed} with the log if the sink is not running."""
        if self.process is None:
            raise SinkFailed("mailsink was never started")
        status = self.process.poll()
        if status is not None:
            raise SinkFailed(f"mailsink exited with status {status}\n{self._log_quote()}")

    def stop(self) -> None:
        """SIGTERM to the sink's process group, SIGKILL to it after L{STOP_TIMEOUT}."""
        process = self.process
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=STOP_TIMEOUT)

    def log_tail(self) -> str:
        """The last L{LOG_TAIL} lines the sink wrote."""
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as stream:
                return "".join(stream.readlines()[-LOG_TAIL:])
        except FileNotFoundError:
            return ""

    def _log_quote(self) -> str:
        return f"last lines of {self.log_path}:\n{self.log_tail()}"

    def _wait_on_process(self, seconds: float) -> None:
        """The pause between readiness probes: a wait that ends early if the sink exits."""
        assert self.process is not None
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=seconds)
        self.check_alive()

    def _log_size(self) -> int:
        try:
            return os.path.getsize(self.log_path)
        except FileNotFoundError:
            return 0

    def _log_since(self, offset: int) -> str:
        with open(self.log_path, "rb") as stream:
            stream.seek(offset)
            return stream.read().decode("utf-8", "replace")

    def _write_config(self, ports: _Ports) -> None:
        sections: dict[str, dict[str, str]] = {
            "mailsink": {"hostname": "localhost", "maildir": "mail", "state_dir": "state"},
            "auth": {"accept_any": "true", "allow_insecure": "true"},
            "smtp": {"listen": _endpoint(ports.smtp), "tls": "none", "auth": "optional"},
            "smtp:starttls": {"listen": _endpoint(ports.starttls),
                              "tls": "starttls-required", "auth": "optional"},
            "smtp:smtps": {"listen": _endpoint(ports.smtps), "tls": "implicit",
                           "auth": "optional"},
            "web": {"listen": _endpoint(ports.web)},
        }
        with open(self.config_path, "w", encoding="utf-8") as stream:
            for name, keys in sections.items():
                stream.write(f"[{name}]\n")
                stream.writelines(f"{key} = {value}\n" for key, value in keys.items())
                stream.write("\n")

    def _spawn(self) -> None:
        if not os.path.exists(TWISTD):
            raise SinkFailed(f"no twistd next to {sys.executable}: install mailsink (and so "
                             "Twisted) into the environment that runs the tests")
        # The INI says everything: MAILSINK_* variables of the test run would override it.
        env = {k: v for k, v in os.environ.items() if not k.startswith("MAILSINK_")}
        env["PYTHONUNBUFFERED"] = "1"
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [TWISTD, "-n", "--pidfile=", "mailsink", "-c", self.config_path],
                cwd=self.root, env=env, stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True)


class _Ports(NamedTuple):
    smtp: int
    starttls: int
    smtps: int
    web: int


def _free_port() -> int:
    """A port on L{HOST} that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


def _endpoint(port: int) -> str:
    return f"tcp:{port}:interface={HOST}"
