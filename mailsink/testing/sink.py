"""
Where a mail sink listens: what a test needs to send to it and to ask its API.

One value for both cases the pytest plugin knows: a sink it started (every listener known,
with the generated certificate) and one already running elsewhere (C{--mailsink-url}), for
which only the web URL and the plain SMTP address can be known.
"""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass

DEFAULT_SMTP_PORT = 1025
"""The plain SMTP port of mailsink's shipped INI (and Mailpit's): a running sink's guess."""


@dataclass(frozen=True)
class Sink:
    """The addresses of one running sink."""

    web_url: str
    """The web view and API, e.g. C{http://127.0.0.1:8025} (no trailing slash)."""
    smtp_host: str
    smtp_port: int
    """Plain SMTP: no TLS, AUTH optional."""
    starttls_port: int | None = None
    """SMTP with STARTTLS required first, AUTH optional; None when not known."""
    smtps_port: int | None = None
    """SMTP over implicit TLS (the port 465 style), AUTH optional; None when not known."""
    cert_path: str | None = None
    """The sink's certificate (PEM) for clients that verify it; None when not known."""


def remote_sink(url: str, smtp: str | None = None) -> Sink:
    """
    The L{Sink} at C{url}, a sink someone else runs. Its API does not say where SMTP
    listens, so C{smtp} (C{HOST:PORT}, C{HOST} or C{:PORT}) does, completed from the URL's
    host and L{DEFAULT_SMTP_PORT}. Raises C{ValueError} for a URL or address it cannot use.
    """
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{url!r} is not an http(s) URL of a mailsink web listener")
    host, port = parts.hostname, DEFAULT_SMTP_PORT
    if smtp:
        host, port = _host_port(smtp, host, port)
    return Sink(web_url=url.rstrip("/"), smtp_host=host, smtp_port=port)


def _host_port(text: str, host: str, port: int) -> tuple[str, int]:
    """C{HOST:PORT} (C{[::1]:PORT} for IPv6), either part optional."""
    text = text.strip()
    if text.startswith("["):
        address, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise ValueError(f"{text!r} is not HOST:PORT")
        given_host, given_port = address, rest[1:]
    elif text.count(":") > 1:
        given_host, given_port = text, ""  # a bare IPv6 address
    else:
        given_host, _, given_port = text.partition(":")
    if given_port:
        if not given_port.isdigit() or not 0 < int(given_port) < 65536:
            raise ValueError(f"{text!r}: the port must be a number from 1 to 65535")
        port = int(given_port)
    return given_host or host, port
