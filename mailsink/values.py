"""
Parsers for the value types of the INI file.

Each parser takes the raw string and returns the typed value or raises L{ValueError} with a
short phrase saying what was expected; the config loader adds the section and key.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Sequence

_SIZE = re.compile(r"([0-9]+)\s*([KMGkmg]?)[Bb]?")
_SIZE_FACTORS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3}
_DURATION = re.compile(r"([0-9]+)\s*([smhd]?)")
_DURATION_FACTORS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
_BOOLEANS = {
    "true": True, "yes": True, "on": True, "1": True,
    "false": False, "no": False, "off": False, "0": False,
}
_HOST_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")
_PATH_SEGMENT = re.compile(r"[A-Za-z0-9._~!$&'()*+,;=:@-]+")


def parse_size(text: str) -> int:
    """Bytes from C{25M}-style text; suffixes are powers of 1024."""
    match = _SIZE.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"{text!r} is not a size; use a number with K, M or G, e.g. 25M")
    return int(match.group(1)) * _SIZE_FACTORS[match.group(2).upper()]


def format_size(size: int) -> str:
    """A byte count as L{parse_size} reads it: C{26214400} gives C{"25M"}."""
    for unit, factor in (("G", 1024 ** 3), ("M", 1024 ** 2), ("K", 1024)):
        if size >= factor and size % factor == 0:
            return f"{size // factor}{unit}"
    return f"{size} bytes"


def parse_duration(text: str) -> int:
    """Seconds from C{10m}-style text (s, m, h, d; a bare number is seconds)."""
    match = _DURATION.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"{text!r} is not a duration; use a number with s, m, h or d, e.g. 7d")
    return int(match.group(1)) * _DURATION_FACTORS[match.group(2)]


def parse_bool(text: str) -> bool:
    """C{true}/C{false} and the usual synonyms."""
    try:
        return _BOOLEANS[text.strip().lower()]
    except KeyError:
        raise ValueError(f"{text!r} is not true or false") from None


def parse_count(text: str) -> int:
    """A non-negative whole number."""
    stripped = text.strip()
    if not re.fullmatch(r"[0-9]+", stripped):
        raise ValueError(f"{text!r} is not a whole number of 0 or more")
    return int(stripped)


def parse_port(text: str) -> int:
    """A TCP port number."""
    port = parse_count(text)
    if not 0 < port < 65536:
        raise ValueError(f"{text!r} is not a port number (1-65535)")
    return port


def parse_choice(choices: Sequence[str]) -> _ChoiceParser:
    """A parser accepting exactly one of C{choices} (case-insensitive)."""
    return _ChoiceParser(tuple(choices))


class _ChoiceParser:
    def __init__(self, choices: tuple[str, ...]) -> None:
        self.choices = choices

    def __call__(self, text: str) -> str:
        value = text.strip().lower()
        if value not in self.choices:
            raise ValueError(f"{text!r} is not one of {' | '.join(self.choices)}")
        return value


def parse_hostname(text: str) -> str:
    """A DNS name or an IP address literal, as used in greetings and certificates."""
    name = text.strip()
    try:
        return str(ipaddress.ip_address(name))
    except ValueError:
        pass
    labels = name.rstrip(".").split(".")
    if not name or len(name) > 253 or not all(_HOST_LABEL.fullmatch(label) for label in labels):
        raise ValueError(f"{text!r} is not a host name (letters, digits, '-' and '.')")
    return name.rstrip(".")


def parse_host_port(default_port: int) -> Callable[[str], tuple[str, int] | None]:
    """
    A parser of C{HOST:PORT} (C{[::1]:PORT} for IPv6, C{HOST} alone for C{default_port});
    empty text gives None (the service is off).
    """
    def parse(text: str) -> tuple[str, int] | None:
        address = text.strip()
        if not address:
            return None
        bracketed = re.fullmatch(r"\[([^\]]+)\](?::(.*))?", address)
        if bracketed:
            host, port = bracketed.group(1), bracketed.group(2)
        elif address.count(":") == 1:
            host, port = address.split(":")
        else:
            host, port = address, None
        if port is not None and not port:
            raise ValueError(f"{text!r} names no port after ':'")
        try:
            if bracketed:
                host = str(ipaddress.IPv6Address(host))
            return parse_hostname(host), default_port if port is None else parse_port(port)
        except ValueError:
            raise ValueError(f"{text!r} is not HOST:PORT (e.g. localhost:{default_port})") \
                from None

    return parse


def parse_regex(text: str) -> str:
    """A Python regular expression, checked for syntax; empty means none."""
    try:
        re.compile(text)
    except (re.error, OverflowError, RecursionError) as error:
        raise ValueError(f"{text!r} is not a valid regular expression: {error}") from None
    return text


def parse_base_path(text: str) -> str:
    """
    A URL path prefix such as C{/mailsink/}: starts and ends with C{/}, repeated slashes
    collapsed; its segments are plain URL characters (no C{%}, C{?} or C{#}, no C{.} or
    C{..} segment), so the path a browser or proxy sends is the path written here.
    """
    path = text.strip()
    if not (path.startswith("/") and path.endswith("/")):
        raise ValueError(f"{path!r} must start and end with '/' (e.g. /mailsink/)")
    segments = [segment for segment in path.split("/") if segment]
    for segment in segments:
        if segment in (".", "..") or not _PATH_SEGMENT.fullmatch(segment):
            raise ValueError(f"{path!r} has {segment!r}, which is not a plain path segment "
                             "(letters, digits and - . _ ~ ! $ & ' ( ) * + , ; = : @)")
    return "/" + "".join(segment + "/" for segment in segments)


def parse_words(text: str) -> tuple[str, ...]:
    """White-space or comma separated words, e.g. endpoint strings or user names."""
    return tuple(word for word in re.split(r"[\s,]+", text.strip()) if word)


def parse_endpoints(text: str) -> tuple[str, ...]:
    """Endpoint strings separated by white space (commas belong to endpoint syntax)."""
    return tuple(text.split())
