"""
Is a sink ready? Its web listener answers C{GET /readyz} with 200 and its SMTP listeners
greet. Each probe is one short, bounded attempt; L{wait_ready} repeats them under one
deadline, pausing between attempts in a way the caller chooses (a started sink's pause is a
wait on its process, so an exit is noticed at once).
"""

from __future__ import annotations

import socket
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence

POLL_INTERVAL = 0.05
"""Seconds between two attempts of a probe that said "not yet"."""

Probe = Callable[[float], bool]
"""Given the seconds one attempt may take: ready or not yet."""

_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def web_ready(url: str) -> Probe:
    """C{GET url/readyz} answers 200 (a refused connection or 503: not yet)."""

    def probe(timeout: float) -> bool:
        try:
            with _DIRECT.open(f"{url}/readyz", timeout=timeout) as response:
                return bool(response.status == 200)
        except urllib.error.HTTPError as error:
            if error.code == 503:
                return False  # still indexing
            raise ProbeFailed(f"GET {url}/readyz answered {error.code}") from None
        except urllib.error.URLError as error:
            if isinstance(error.reason, ssl.SSLError):
                raise ProbeFailed(f"GET {url}/readyz: {error.reason}") from None
            return False
        except OSError:
            return False

    return probe


def smtp_greets(host: str, port: int, implicit_tls: bool = False) -> Probe:
    """C{host:port} greets with 220 (over TLS from the first byte if C{implicit_tls})."""

    def probe(timeout: float) -> bool:
        try:
            sock = socket.create_connection((host, port), timeout=timeout)
        except OSError:
            return False
        try:
            if implicit_tls:
                sock = _unverified().wrap_socket(sock, server_hostname=host)
            greeting = b""
            while b"\n" not in greeting and len(greeting) < 1024:
                chunk = sock.recv(1024)
                if not chunk:
                    return False
                greeting += chunk
            if not greeting.startswith(b"220"):
                raise ProbeFailed(f"{host}:{port} greeted with {greeting!r}, not SMTP's 220")
            sock.sendall(b"QUIT\r\n")
            return True
        except (OSError, ssl.SSLError):
            return False
        finally:
            sock.close()

    return probe


def wait_ready(probes: Sequence[tuple[str, Probe]], timeout: float,
               pause: Callable[[float], None] = time.sleep) -> None:
    """
    Try each named probe until it says ready, all within C{timeout} seconds, calling
    C{pause(POLL_INTERVAL)} after each "not yet". Raises C{TimeoutError} naming the one that
    never was; C{pause} may raise to give up sooner.
    """
    deadline = time.monotonic() + timeout
    for name, probe in probes:
        while not probe(max(0.1, min(5.0, deadline - time.monotonic()))):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{name} was not ready within {timeout:g} s")
            pause(POLL_INTERVAL)


class ProbeFailed(Exception):
    """An answer that waiting will not change: not a mailsink listener, or TLS refused."""


def _unverified() -> ssl.SSLContext:
    """A probe checks that TLS works, not whose certificate it is."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context
