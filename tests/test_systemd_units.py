"""
Checks of the shipped systemd units and the system service's INI file.

The units are verified with C{systemd-analyze verify} (system units) and
C{systemd-analyze --user verify} (user unit).  Without C{systemd-analyze}
those tests are skipped, except when C{CI=true}: CI installs Debian's
C{systemd} package, so a missing tool there is a failure.
"""

from __future__ import annotations

import configparser
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from unittest import SkipTest

from twisted.trial.unittest import TestCase

ROOT = Path(__file__).resolve().parent.parent
SYSTEMD = ROOT / "systemd"
SYSTEM_SERVICE = SYSTEMD / "mailsink.service"
SYSTEM_SOCKET = SYSTEMD / "mailsink.socket"
SYSTEM_INI = SYSTEMD / "mailsink.ini"
USER_SERVICE = SYSTEMD / "user" / "mailsink.service"

OUR_UNITS = frozenset({"mailsink.service", "mailsink.socket"})
VERIFY_TIMEOUT = 120

# Twisted endpoint domain for the address family of a ListenStream= address.
# A bare port ("25") is not accepted: systemd makes it a dual-stack AF_INET6
# socket (or AF_INET on a host without IPv6), so no one domain fits it.
_IPV4 = re.compile(r"^\d{1,3}(?:\.\d{1,3}){3}:(\d+)$")
_IPV6 = re.compile(r"^\[[0-9A-Fa-f:.%\w]*\]:(\d+)$")

# The port each SMTP listener of systemd/mailsink.ini must adopt.
EXPECTED_PORTS = {"smtp": 25, "smtp:smtps": 465, "smtp:submission": 587}

_UNIT_NAME = re.compile(
    r"[\w@\\.-]+\.(?:service|socket|target|mount|automount|swap|path|timer|slice|scope|device)\b"
)

# Documented keys (interface.md, "The INI file") of the sections this INI uses.
_MAILSINK_KEYS = frozenset(
    {
        "hostname",
        "maildir",
        "state_dir",
        "max_message_size",
        "max_recipients",
        "max_messages",
        "max_age",
        "isolation",
        "chaos",
    }
)
_SMTP_LISTENER_KEYS = frozenset({"listen", "tls", "auth"})


def parseUnit(path: Path) -> list[tuple[str, str, str]]:
    """
    Parse a unit file into (section, key, value) triples, in file order,
    keeping repeated keys (which configparser cannot do).
    """
    entries = []
    section = ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            continue
        key, sep, value = line.partition("=")
        if not sep:
            raise ValueError(f"{path}: not a key=value line: {raw!r}")
        entries.append((section, key.strip(), value.strip()))
    return entries


def unitValues(path: Path, section: str, key: str) -> list[str]:
    return [v for s, k, v in parseUnit(path) if s == section and k == key]


def readIni(path: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None)
    with path.open(encoding="utf-8") as f:
        parser.read_file(f)
    return parser


def parseSystemdEndpoint(description: str) -> dict[str, str]:
    """
    Split a C{systemd:key=value:...} endpoint string into its options.
    """
    kind, _, rest = description.partition(":")
    if kind != "systemd":
        raise ValueError(f"not a systemd: endpoint: {description!r}")
    options = {}
    for part in rest.split(":"):
        key, sep, value = part.partition("=")
        if not sep:
            raise ValueError(f"positional argument in {description!r}")
        options[key] = value
    return options


def socketListens() -> list[tuple[str, str]]:
    """
    All Listen*= entries of the socket unit, in order: systemd passes the
    descriptors of one socket unit in this order.
    """
    return [
        (k, v) for s, k, v in parseUnit(SYSTEM_SOCKET) if s == "Socket" and k.startswith("Listen")
    ]


def domainAndPort(address: str) -> tuple[str, int]:
    for pattern, domain in ((_IPV4, "INET"), (_IPV6, "INET6")):
        match = pattern.match(address)
        if match:
            return domain, int(match.group(1))
    raise ValueError(
        f"ListenStream={address}: give an explicit IPv4 or [IPv6] address so the "
        "socket's family (and so the endpoint's domain=) is known"
    )


def findSystemdAnalyze() -> str:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        if os.environ.get("CI") == "true":
            raise AssertionError("systemd-analyze not found, but CI=true (install systemd)")
        raise SkipTest("systemd-analyze not installed")
    return tool


def relevantLines(output: str, directory: str) -> list[str]:
    """
    The lines of systemd-analyze output that may concern our units: those
    naming our units or their directory, and those naming no unit at all.
    Lines about other (host) units only are dropped.
    """
    lines = []
    for line in output.splitlines():
        if not line.strip():
            continue
        names = {name.rsplit("/", 1)[-1] for name in _UNIT_NAME.findall(line)}
        if directory in line or names & OUR_UNITS or not names:
            lines.append(line)
    return lines


class VerifyMixin:
    """
    Run systemd-analyze verify on copies of our units whose ExecStart names an
    existing executable (verify checks that it exists; the real paths only
    exist on an installed system).
    """

    def copyUnits(self, *units: Path) -> Path:
        # Not self.mktemp(): under pytest that is relative to the checkout.
        base = Path(tempfile.mkdtemp(prefix="mailsink-units-"))
        self.addCleanup(shutil.rmtree, base, ignore_errors=True)
        directory = base / "units"
        directory.mkdir()
        for unit in units:
            text = unit.read_text(encoding="utf-8")
            text, count = re.subn(
                r"^(ExecStart=[-@:+!|]*)\S+",
                lambda m: m.group(1) + sys.executable,
                text,
                flags=re.MULTILINE,
            )
            if unit.suffix == ".service":
                self.assertEqual(count, 1, f"{unit}: expected exactly one ExecStart=")
            (directory / unit.name).write_text(text, encoding="utf-8")
        return directory

    def verify(self, directory: Path, *, user: bool) -> tuple[int, str]:
        tool = findSystemdAnalyze()
        env = dict(os.environ)
        env.update(
            SYSTEMD_LOG_LEVEL="warning",
            SYSTEMD_LOG_COLOR="0",
            SYSTEMD_LOG_TARGET="console",
            SYSTEMD_PAGER="",
            # Our directory first, then the default search path (trailing ':').
            SYSTEMD_UNIT_PATH=f"{directory}:",
        )
        if user:
            # A user manager needs a runtime directory; do not depend on (or
            # touch) the caller's session.
            runtime = directory.parent / "runtime"
            config = directory.parent / "config"
            runtime.mkdir(mode=0o700)
            config.mkdir(mode=0o700)
            env.update(XDG_RUNTIME_DIR=str(runtime), XDG_CONFIG_HOME=str(config))
        command = [tool]
        if user:
            command.append("--user")
        command += ["verify", "--man=no"]
        helpText = subprocess.run(
            [tool, "--help"], capture_output=True, text=True, timeout=30, env=env, check=False
        ).stdout
        if "--recursive-errors" in helpText:
            # Judge only the units named here, not the host's units they pull in.
            command.append("--recursive-errors=no")
        command += sorted(str(p) for p in directory.iterdir())
        try:
            result = subprocess.run(
                command,
                capture_output=True,
                text=True,
                timeout=VERIFY_TIMEOUT,
                env=env,
                cwd=str(directory),
                check=False,
            )
        except subprocess.TimeoutExpired as e:
            self.fail(f"{' '.join(command)} did not finish within {e.timeout}s")
        return result.returncode, result.stdout + result.stderr

    def assertVerifies(self, directory: Path, *, user: bool) -> None:
        returncode, output = self.verify(directory, user=user)
        problems = relevantLines(output, str(directory))
        self.assertEqual(
            (returncode, problems),
            (0, []),
            f"systemd-analyze{' --user' if user else ''} verify complained:\n{output}",
        )


class SystemdAnalyzeTests(VerifyMixin, TestCase):
    def test_systemUnits(self) -> None:
        """
        The system service and socket verify without warnings.
        """
        self.assertVerifies(self.copyUnits(SYSTEM_SERVICE, SYSTEM_SOCKET), user=False)

    def test_userUnit(self) -> None:
        """
        The user service verifies in user mode without warnings.
        """
        self.assertVerifies(self.copyUnits(USER_SERVICE), user=True)

    def test_detectsBrokenUnit(self) -> None:
        """
        The harness is not vacuous: an unknown directive and a bad value in a
        copy of our units are reported (systemd-analyze itself exits 0 for
        these, so the output has to be read).
        """
        for unit, user in ((SYSTEM_SERVICE, False), (USER_SERVICE, True)):
            directory = self.copyUnits(unit)
            copy = directory / unit.name
            text, count = re.subn(
                r"^\[Service\]$",
                "[Service]\nNoSuchDirective=yes\nUMask=banana",
                copy.read_text(encoding="utf-8"),
                flags=re.MULTILINE,
            )
            self.assertEqual(count, 1)
            copy.write_text(text, encoding="utf-8")
            _, output = self.verify(directory, user=user)
            problems = "\n".join(relevantLines(output, str(directory)))
            self.assertIn("NoSuchDirective", problems, output)
            self.assertIn("banana", problems, output)


class ExecStartTests(TestCase):
    def test_systemExecStart(self) -> None:
        self.assertEqual(
            unitValues(SYSTEM_SERVICE, "Service", "ExecStart"),
            ["/opt/mailsink/bin/twistd -n --pidfile= mailsink -c /etc/mailsink/mailsink.ini"],
        )

    def test_userExecStart(self) -> None:
        self.assertEqual(
            unitValues(USER_SERVICE, "Service", "ExecStart"),
            ["%h/.local/bin/twistd -n --pidfile= mailsink -c %E/mailsink/mailsink.ini"],
        )

    def test_systemHardening(self) -> None:
        """
        The contract: a dynamic user, state under /var/lib/mailsink, no new
        privileges, read-only system, private /tmp, and ports from the socket.
        """
        settings = {k: v for s, k, v in parseUnit(SYSTEM_SERVICE) if s == "Service"}
        for key, value in {
            "DynamicUser": "yes",
            "StateDirectory": "mailsink",
            "NoNewPrivileges": "yes",
            "ProtectSystem": "strict",
            "PrivateTmp": "yes",
            "CapabilityBoundingSet": "",
        }.items():
            self.assertEqual(settings.get(key), value, key)
        # cffi callbacks (pyOpenSSL, hence TLS) need write+execute memory.
        self.assertNotIn("MemoryDenyWriteExecute", settings)
        self.assertIn("mailsink.socket", unitValues(SYSTEM_SERVICE, "Unit", "Requires"))
        self.assertEqual(unitValues(SYSTEM_SOCKET, "Socket", "Service"), ["mailsink.service"])


class SocketAndIniTests(TestCase):
    def test_socketPorts(self) -> None:
        """
        The socket unit binds 25, 465 and 587, in that order, and nothing else
        (any other Listen*= line would shift the descriptor indices).
        """
        listens = socketListens()
        self.assertEqual([k for k, _ in listens], ["ListenStream"] * 3)
        self.assertEqual([domainAndPort(v)[1] for _, v in listens], [25, 465, 587])

    def test_iniMatchesSocket(self) -> None:
        """
        Each SMTP listener of systemd/mailsink.ini adopts the descriptor the
        socket unit binds for its port, with the matching address family.
        """
        listens = [domainAndPort(v) for _, v in socketListens()]
        ini = readIni(SYSTEM_INI)
        self.assertEqual(set(ini.sections()) - {"mailsink", "auth"}, set(EXPECTED_PORTS))
        for section, port in EXPECTED_PORTS.items():
            endpoints = ini.get(section, "listen").split()
            self.assertTrue(endpoints, section)
            for endpoint in endpoints:
                options = parseSystemdEndpoint(endpoint)
                self.assertEqual(set(options), {"domain", "index"}, endpoint)
                index = int(options["index"])
                self.assertLess(index, len(listens), endpoint)
                self.assertEqual(listens[index], (options["domain"], port), endpoint)

    def test_iniListenerPolicies(self) -> None:
        ini = readIni(SYSTEM_INI)
        self.assertEqual(ini.get("smtp", "tls"), "starttls")
        self.assertEqual(ini.get("smtp:smtps", "tls"), "implicit")
        self.assertEqual(ini.get("smtp:submission", "tls"), "starttls-required")

    def test_iniKeysDocumented(self) -> None:
        """
        Only documented keys, and the store lives in the StateDirectory.
        """
        ini = readIni(SYSTEM_INI)
        self.assertLessEqual(set(ini["mailsink"]), _MAILSINK_KEYS)
        for section in EXPECTED_PORTS:
            self.assertLessEqual(set(ini[section]), _SMTP_LISTENER_KEYS, section)
        for key in ("maildir", "state_dir"):
            self.assertTrue(ini.get("mailsink", key).startswith("/var/lib/mailsink/"), key)
