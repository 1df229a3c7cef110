"""
The password file: htpasswd-style text parsed by pure functions, and hashes checked.

One C{user:hash} a line; C{#} comment lines and blank lines are ignored, CRLF is tolerated,
and white space around a line is dropped (as Apache does). Hashes are read as C{htpasswd}
writes them: bcrypt (C{$2y$}, C{$2b$}, C{$2a$}), C{{SHA}} (C{-s}), C{$apr1$} (C{-m}), or
C{{PLAIN}secret}. A bad line becomes a L{LineProblem} and is skipped, so one typo never
locks every user out; problems name the line and never quote its hash or password.
No Twisted here: the checkers run these functions in worker threads.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re

import attrs
import bcrypt

BCRYPT_MAX_PASSWORD = 72
"""bcrypt reads only this many bytes of a password; C{htpasswd -B} drops the rest silently."""

_BCRYPT = re.compile(r"\$2[aby]\$(?P<cost>\d\d)\$[./A-Za-z0-9]{53}")
_APR1 = re.compile(r"\$apr1\$(?P<salt>[./0-9A-Za-z]{1,8})\$[./0-9A-Za-z]{22}")
_ITOA64 = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


@attrs.frozen
class PasswordEntry:
    """
    One user's stored password. C{secret} is what C{scheme} needs: the whole bcrypt or
    apr1 hash, the base64 SHA-1 digest (without C{{SHA}}), or the plain password.
    """

    user: str
    scheme: str
    secret: str = attrs.field(repr=False)


@attrs.frozen
class LineProblem:
    """A line that was skipped, with its 1-based number and why (never its content)."""

    line: int
    reason: str


def content_lines(text: str) -> list[tuple[int, str]]:
    """The lines that carry entries, numbered from 1, stripped; comments and blanks dropped."""
    text = text.removeprefix("\ufeff")
    numbered = []
    for number, raw in enumerate(text.split("\n"), start=1):
        line = raw.strip()
        if line and not line.startswith("#"):
            numbered.append((number, line))
    return numbered


def parse_entry(line: str) -> PasswordEntry | str:
    """One stripped C{user:hash} line as an entry, or the reason it cannot be one."""
    try:
        line.encode("utf-8")
    except UnicodeEncodeError:
        return "not valid UTF-8"
    user, colon, stored = line.partition(":")
    if not colon:
        return "no ':' between user name and password hash"
    if not user:
        return "empty user name"
    if any(c.isspace() for c in user):
        return "white space in the user name"
    if stored.startswith("{PLAIN}"):
        if stored == "{PLAIN}":
            return "empty {PLAIN} password"
        return PasswordEntry(user, "plain", stored.removeprefix("{PLAIN}"))
    if stored.startswith("{SHA}"):
        digest = stored.removeprefix("{SHA}")
        try:
            valid = len(base64.b64decode(digest, validate=True)) == 20
        except (binascii.Error, ValueError):
            valid = False
        return PasswordEntry(user, "sha", digest) if valid else "malformed {SHA} hash"
    if stored.startswith("$apr1$"):
        return PasswordEntry(user, "apr1", stored) if _APR1.fullmatch(stored) else (
            "malformed $apr1$ hash")
    if stored.startswith("$2"):
        match = _BCRYPT.fullmatch(stored)
        if not match or not 4 <= int(match["cost"]) <= 31:
            return "malformed bcrypt hash"
        return PasswordEntry(user, "bcrypt", stored)
    return "unknown password hash format (use bcrypt, {SHA}, $apr1$ or {PLAIN})"


def parse_accounts(
    lines: list[tuple[int, str]],
) -> tuple[dict[str, PasswordEntry], list[LineProblem]]:
    """Numbered lines to a user map; a later line for the same user replaces the earlier."""
    entries: dict[str, PasswordEntry] = {}
    where: dict[str, int] = {}
    problems = []
    for number, line in lines:
        parsed = parse_entry(line)
        if isinstance(parsed, str):
            problems.append(LineProblem(number, parsed))
            continue
        if parsed.user in where:
            problems.append(LineProblem(
                where[parsed.user],
                f"user {parsed.user!r} appears again on line {number}, which wins"))
        entries[parsed.user] = parsed
        where[parsed.user] = number
    problems.sort(key=lambda problem: problem.line)
    return entries, problems


def parse_password_file(text: str) -> tuple[dict[str, PasswordEntry], list[LineProblem]]:
    """A whole password file's text to its entries by user, and the lines skipped."""
    return parse_accounts(content_lines(text))


def apr1_hash(password: bytes, salt: bytes) -> str:
    """Apache's MD5-crypt (C{htpasswd -m}): C{$apr1$salt$digest}, salt cut at 8 bytes."""
    magic = b"$apr1$"
    salt = salt[:8]
    context = hashlib.md5(password + magic + salt)
    alternate = hashlib.md5(password + salt + password).digest()
    for left in range(len(password), 0, -16):
        context.update(alternate[:min(16, left)])
    bits = len(password)
    while bits:
        context.update(b"\0" if bits & 1 else password[:1])
        bits >>= 1
    final = context.digest()
    for round_ in range(1000):
        step = hashlib.md5(password if round_ & 1 else final)
        if round_ % 3:
            step.update(salt)
        if round_ % 7:
            step.update(password)
        step.update(final if round_ & 1 else password)
        final = step.digest()
    encoded = []
    for a, b, c in ((0, 6, 12), (1, 7, 13), (2, 8, 14), (3, 9, 15), (4, 10, 5)):
        encoded.append(_to64((final[a] << 16) | (final[b] << 8) | final[c], 4))
    encoded.append(_to64(final[11], 2))
    return f"$apr1${salt.decode('ascii')}${''.join(encoded)}"


def _to64(value: int, count: int) -> str:
    """crypt(3)'s little-endian base-64 of C{count} characters."""
    out = []
    for _ in range(count):
        out.append(_ITOA64[value & 0x3F])
        value >>= 6
    return "".join(out)


def verify_password(entry: PasswordEntry, password: bytes) -> bool:
    """Whether C{password} matches C{entry}; comparisons take constant time."""
    secret = entry.secret.encode("utf-8")
    if entry.scheme == "bcrypt":
        try:
            return bcrypt.checkpw(password[:BCRYPT_MAX_PASSWORD], secret)
        except ValueError:
            return False
    if entry.scheme == "sha":
        digest = base64.b64encode(hashlib.sha1(password).digest())
        return hmac.compare_digest(digest, secret)
    if entry.scheme == "apr1":
        salt = entry.secret.split("$")[2].encode("ascii")
        return hmac.compare_digest(apr1_hash(password, salt).encode("ascii"), secret)
    if entry.scheme == "plain":
        return hmac.compare_digest(password, secret)
    return False


def plaintext_password(entry: PasswordEntry) -> bytes | None:
    """The stored password itself, which CRAM-MD5 needs; only C{{PLAIN}} entries have it."""
    return entry.secret.encode("utf-8") if entry.scheme == "plain" else None


def hash_bcrypt(password: bytes, rounds: int = 12) -> str:
    """
    A C{$2y$} bcrypt hash as C{htpasswd -B} writes it. Refuses passwords over 72 bytes
    (C{ValueError}) rather than silently using only their start.
    """
    if len(password) > BCRYPT_MAX_PASSWORD:
        raise ValueError(f"bcrypt uses only the first {BCRYPT_MAX_PASSWORD} bytes of a "
                         f"password; this one has {len(password)}")
    hashed = bcrypt.hashpw(password, bcrypt.gensalt(rounds)).decode("ascii")
    return "$2y$" + hashed[4:]
