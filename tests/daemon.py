"""
Run the real mailsink daemon (C{twistd -n mailsink -c INI}) for end-to-end tests.

L{Daemon} writes an INI file into a temporary folder (listener sections without C{listen}
get a free loopback port), starts twistd with its output in a log file there, waits until
every listener answers (mail listeners greet; C{[web]} ones answer C{GET /readyz} with 200),
and stops it with SIGTERM (SIGKILL if that does not work).
L{Daemon.for_test} ties all of that to a test's cleanups; L{SharedDaemon} gives a TestCase
class one daemon for all its tests.

No waiting here is a bare sleep: every wait is a loop of short, bounded attempts (a socket
connect, a process wait, a log read) under an overall deadline.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

TWISTD = os.path.join(os.path.dirname(sys.executable), "twistd")
START_TIMEOUT = 30.0
"""Seconds the daemon may take to listen on every port and greet."""
STOP_TIMEOUT = 10.0
"""Seconds the daemon may take to exit after SIGTERM before it gets SIGKILL."""
RUN_TIMEOUT = 30.0
"""Seconds a twistd run that is expected to exit (start-up errors, --help) may take."""
POLL_INTERVAL = 0.05

CERT_NAME = "mailsink-cert.pem"
_LISTENER_SECTION = re.compile(r"(smtp|pop3|imap|web)(:.+)?")
_TCP_PORT = re.compile(r"^tcp:(?:port=)?(\d+)")
HTTP = "http"
"""The readiness mode of C{[web]} listeners: C{GET /readyz} must answer 200."""
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http_json(method: str, url: str, body: Any = None,
              timeout: float = 30.0) -> tuple[int, bytes]:
    """C{method url} with C{body} as JSON (no proxy): the status and the answer's bytes."""
    data = None if body is None else json.dumps(body).encode("utf-8")
    request = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with _DIRECT.open(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()
"""HTTP to the daemon on loopback, never through a proxy from the environment."""

Sections = Mapping[str, Mapping[str, str]]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def loopback_endpoint(port: int) -> str:
    """The endpoint string for C{port} on 127.0.0.1."""
    return f"tcp:{port}:interface=127.0.0.1"


def write_ini(path: str, sections: Sections) -> str:
    """Write C{sections} (name to key/value) as an INI file at C{path}; returns C{path}."""
    lines: list[str] = []
    for name, keys in sections.items():
        lines.append(f"[{name}]")
        lines += [f"{key} = {value}" for key, value in keys.items()]
        lines.append("")
    with open(path, "w", encoding="utf-8") as stream:
        stream.write("\n".join(lines))
    return path


def daemon_environment(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment without C{MAILSINK_*} variables, plus C{extra}."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILSINK_")}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


def run_twistd(args: list[str], *, cwd: str, env: Mapping[str, str] | None = None,
               timeout: float = RUN_TIMEOUT) -> subprocess.CompletedProcess[str]:
    """Run C{twistd ARGS} to completion; stdout and stderr together in C{.stdout}."""
    return subprocess.run(
        [TWISTD, *args], cwd=cwd, env=daemon_environment(env), stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout,
        check=False)


def trusting_context(cafile: str) -> ssl.SSLContext:
    """A client context that trusts only C{cafile} and checks the host name."""
    context = ssl.create_default_context(cafile=cafile)
    assert context.check_hostname and context.verify_mode == ssl.CERT_REQUIRED
    return context


def unverified_context() -> ssl.SSLContext:
    """A client context that checks nothing (for probes and deliberately failing clients)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


class DaemonExited(AssertionError):
    """The daemon exited while it was expected to run."""


class Daemon:
    """
    One mailsink daemon in its own temporary folder.

    C{sections} become the INI file. C{[mailsink] maildir} and C{state_dir} default to
    C{mail} and C{state} in the folder; a listener section without C{listen} gets a free
    port on 127.0.0.1 (see L{ports}). L{tls_modes} maps listener sections to their
    C{tls} setting, or L{HTTP} for C{[web]} sections.
    """

    _running: ClassVar[set[Daemon]] = set()

    def __init__(self, sections: Sections, *, env: Mapping[str, str] | None = None,
                 root: str | None = None) -> None:
        self.root = root if root is not None else tempfile.mkdtemp(prefix="mailsink-e2e-")
        self._owns_root = root is None
        self.env = dict(env or {})
        self.sections = {name: dict(keys) for name, keys in sections.items()}
        settings = self.sections.setdefault("mailsink", {})
        settings.setdefault("maildir", "mail")
        settings.setdefault("state_dir", "state")
        self.ports: dict[str, int] = {}
        """Listener section name to the port it was given."""
        self.tls_modes: dict[str, str] = {}
        for name, keys in self.sections.items():
            if _LISTENER_SECTION.fullmatch(name):
                if "listen" not in keys:
                    keys["listen"] = loopback_endpoint(free_port())
                match = _TCP_PORT.match(keys["listen"])
                if match:
                    self.ports[name] = int(match.group(1))
                if name.partition(":")[0] == "web":
                    self.tls_modes[name] = HTTP
                else:
                    self.tls_modes[name] = keys.get("tls", "starttls")
        self.config_path = write_ini(os.path.join(self.root, "mailsink.ini"), self.sections)
        self.maildir = os.path.join(self.root, settings["maildir"])
        self.state_dir = os.path.join(self.root, settings["state_dir"])
        self.cert_path = os.path.join(self.state_dir, CERT_NAME)
        self.log_path = os.path.join(self.root, "twistd.log")
        self.process: subprocess.Popen[bytes] | None = None
        self.pid: int | None = None
        """The pid of the last process started (kept after it exits)."""

    @classmethod
    def for_test(cls, test: Any, sections: Sections, *, start: bool = True,
                 **kwargs: Any) -> Daemon:
        """A daemon stopped and deleted by C{test}'s cleanups; started unless told not."""
        daemon = cls(sections, **kwargs)
        test.addCleanup(daemon.close)
        if start:
            daemon.start()
        return daemon

    # Running.

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self, wait: bool = True) -> None:
        """Start twistd (output appended to L{log_path}); by default wait for readiness."""
        if self.running:
            raise RuntimeError("the daemon is running already")
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [TWISTD, "-n", "--pidfile=", "mailsink", "-c", self.config_path],
                cwd=self.root, env=daemon_environment(self.env), stdin=subprocess.DEVNULL,
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.pid = self.process.pid
        Daemon._running.add(self)
        if wait:
            self.wait_ready()

    def wait_ready(self, ports: Mapping[int, str] | None = None,
                   timeout: float = START_TIMEOUT) -> None:
        """
        Wait until every port (default: all of L{ports}) accepts a connection and greets
        (over TLS for C{implicit} ones); a greeting proves the reactor runs, so start-up
        work such as tidying C{tmp/} is done. A port whose mode is L{HTTP} must instead
        answer C{GET /readyz} with 200 (503 while the index is built: keep waiting).
        """
        if ports is None:
            ports = {port: self.tls_modes[name] for name, port in self.ports.items()}
        deadline = time.monotonic() + timeout
        for port, mode in ports.items():
            while not self._greets(port, mode, deadline):
                self._check_alive()
                if time.monotonic() > deadline:
                    raise AssertionError(
                        f"mailsink did not answer on port {port} within {timeout:g} s; "
                        f"log:\n{self.log_text()}")
                assert self.process is not None
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.process.wait(timeout=POLL_INTERVAL)

    def _greets(self, port: int, mode: str, deadline: float) -> bool:
        if mode == HTTP:
            return self._http_ready(port, deadline)
        try:
            sock = socket.create_connection(
                ("127.0.0.1", port), timeout=max(0.1, min(5.0, deadline - time.monotonic())))
        except OSError:
            return False
        try:
            if mode == "implicit":
                sock = unverified_context().wrap_socket(sock, server_hostname="localhost")
            greeting = b""
            while b"\n" not in greeting:
                chunk = sock.recv(1024)
                if not chunk:
                    return False
                greeting += chunk
            if not greeting.startswith((b"220", b"+OK", b"* OK")):  # SMTP, POP3, IMAP
                raise AssertionError(f"port {port} greeted with {greeting!r}")
            sock.sendall(b"QUIT\r\n")
            return True
        except (OSError, ssl.SSLError):
            return False
        finally:
            sock.close()

    @staticmethod
    def _http_ready(port: int, deadline: float) -> bool:
        """C{GET /readyz} on C{port} answers 200 (a refused connection or 503: not yet)."""
        timeout = max(0.1, min(5.0, deadline - time.monotonic()))
        try:
            with _DIRECT.open(f"http://127.0.0.1:{port}/readyz", timeout=timeout) as response:
                return bool(response.status == 200)
        except urllib.error.HTTPError as error:
            if error.code == 503:
                return False
            raise AssertionError(f"port {port}: GET /readyz answered {error.code}") from error
        except OSError:
            return False

    def _check_alive(self) -> None:
        if self.process is None:
            raise DaemonExited("the daemon was never started")
        code = self.process.poll()
        if code is not None:
            raise DaemonExited(f"twistd exited with status {code}; log:\n{self.log_text()}")

    def stop(self) -> int | None:
        """SIGTERM, wait, SIGKILL if need be; returns the exit status (None if never run)."""
        process = self.process
        if process is None:
            return None
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=STOP_TIMEOUT)
        Daemon._running.discard(self)
        return process.returncode

    def kill(self) -> None:
        """SIGKILL the daemon (a crash, a power cut for the process) and reap it."""
        assert self.process is not None
        self.process.kill()
        self.process.wait(timeout=STOP_TIMEOUT)
        Daemon._running.discard(self)

    def close(self) -> None:
        """Stop the daemon and delete its folder (if this object made it)."""
        self.stop()
        if self._owns_root:
            shutil.rmtree(self.root, ignore_errors=True)

    # Looking at it.

    def log_text(self) -> str:
        """Everything twistd wrote so far (all runs)."""
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as stream:
                return stream.read()
        except FileNotFoundError:
            return ""

    def wait_for_log(self, predicate: Callable[[str], bool], *, since: int = 0,
                     timeout: float = 10.0) -> str:
        """
        Poll the log until C{predicate(text after offset since)} holds; returns that text.
        Fails after C{timeout} seconds with the log in the message.
        """
        deadline = time.monotonic() + timeout
        while True:
            text = self.log_text()[since:]
            if predicate(text):
                return text
            if time.monotonic() > deadline:
                raise AssertionError(f"not in the log within {timeout:g} s; log since the "
                                     f"offset:\n{text}")
            time.sleep(POLL_INTERVAL)

    def _folder(self, sub: str) -> str:
        return os.path.join(self.maildir, sub)

    def new_files(self) -> set[str]:
        """Names of the files in the Maildir's C{new/}."""
        return set(os.listdir(self._folder("new")))

    def tmp_files(self) -> set[str]:
        """Names of the files in the Maildir's C{tmp/}."""
        return set(os.listdir(self._folder("tmp")))

    def read_new(self, name: str) -> bytes:
        """The bytes of C{new/NAME}."""
        with open(os.path.join(self._folder("new"), name), "rb") as stream:
            return stream.read()

    def wait_tmp_empty(self, timeout: float = 10.0) -> None:
        """Wait until C{tmp/} is empty (aborted messages are removed in a worker thread)."""
        deadline = time.monotonic() + timeout
        while self.tmp_files():
            if time.monotonic() > deadline:
                raise AssertionError(f"tmp/ still holds {sorted(self.tmp_files())}")
            time.sleep(POLL_INTERVAL)


@atexit.register
def _stop_leftovers() -> None:
    """Runners that never call class cleanups (trial) still stop every daemon."""
    for daemon in list(Daemon._running):
        daemon.close()


class SharedDaemon:
    """
    Mixin for a TestCase class whose tests share one daemon, built from
    C{daemon_sections} and C{daemon_env}. It starts in C{setUpClass} (or in the first
    C{setUp}, for runners without class fixtures) and stops in the class cleanups (or at
    exit).
    """

    daemon_sections: ClassVar[dict[str, dict[str, str]]] = {}
    daemon_env: ClassVar[dict[str, str]] = {}
    """Extra environment for the daemon (e.g. C{MAILSINK_AUTH})."""
    daemon: ClassVar[Daemon]

    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()  # type: ignore[misc]
        cls._start_shared_daemon()

    @classmethod
    def _start_shared_daemon(cls) -> None:
        if "daemon" in cls.__dict__:
            return
        daemon = Daemon(cls.daemon_sections, env=cls.daemon_env)
        cls.daemon = daemon
        cls.addClassCleanup(daemon.close)  # type: ignore[attr-defined]
        daemon.start()

    def setUp(self) -> None:
        super().setUp()  # type: ignore[misc]
        self._start_shared_daemon()
        if not self.daemon.running:
            raise DaemonExited(f"the shared daemon is gone; log:\n{self.daemon.log_text()}")
