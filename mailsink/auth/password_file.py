"""
A cred checker over an htpasswd-style file that is re-read when it changes.

Reading, parsing and bcrypt are slow or blocking, so every check runs through
C{run_blocking} (a thread pool), never on the reactor thread. Successful checks are cached
by a digest of user and password, so a client that logs in a thousand times pays bcrypt
once; the cache is emptied whenever the file is re-read, and failures are never cached.
"""

from __future__ import annotations

import hashlib
import os
import threading
from typing import Any

from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import IUsernameHashedPassword, IUsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from zope.interface import implementer

from mailsink.auth.passwords import (
    PasswordEntry,
    parse_password_file,
    plaintext_password,
    verify_password,
)
from mailsink.config import ConfigError
from mailsink.threads import RunBlocking

log = Logger()

Stamp = tuple[int, int, int, int]
AvatarId = bytes | tuple[()]
"""What L{ICredentialsChecker.requestAvatarId} promises; mailsink's checkers give bytes."""

CACHE_LIMIT = 10_000
"""Cached successes kept at most; past it the cache starts again (bounds memory)."""


def _stamp(stat: os.stat_result) -> Stamp:
    """What tells a changed file from the one read before."""
    return (stat.st_mtime_ns, stat.st_ctime_ns, stat.st_size, stat.st_ino)


def _read(path: str) -> tuple[str, Stamp]:
    """The file's text and the stamp of exactly the version read (blocking)."""
    with open(path, "rb") as f:
        stamp = _stamp(os.fstat(f.fileno()))
        data = f.read()
    return data.decode("utf-8", "surrogateescape"), stamp


def username_text(credentials: Any) -> str | None:
    """The credentials' user name as text, or None if absent or not UTF-8."""
    name = getattr(credentials, "username", None)
    if isinstance(name, bytes):
        try:
            name = name.decode("utf-8")
        except UnicodeDecodeError:
            return None
    return name if isinstance(name, str) and name else None


@implementer(ICredentialsChecker)
class PasswordFileChecker:
    """Checks user names and passwords (or CRAM-MD5 responses) against a password file."""

    credentialInterfaces = (IUsernamePassword, IUsernameHashedPassword)

    def __init__(self, path: str, run_blocking: RunBlocking) -> None:
        """Load the file now (start-up): a file that cannot be read is a L{ConfigError}."""
        self.path = path
        self._run_blocking = run_blocking
        self._lock = threading.Lock()
        self._entries: dict[str, PasswordEntry] = {}
        self._stamp: Stamp | None = None
        self._cache: dict[bytes, bytes] = {}
        self._generation = 0
        self._has_plaintext = False
        self._unavailable_warned = False
        try:
            text, stamp = _read(path)
        except OSError as e:
            raise ConfigError("auth", "password_file", f"{path}: {e.strerror or e}") from e
        self._install(text, stamp)

    def offers_plaintext(self) -> bool:
        """Whether any user has a C{{PLAIN}} password (CRAM-MD5 needs one); no disk access."""
        return self._has_plaintext

    def requestAvatarId(self, credentials: Any) -> Deferred[AvatarId]:
        """The user name as UTF-8 bytes, or L{UnauthorizedLogin}; all work off the reactor."""
        return self._run_blocking(lambda: self._check(credentials))

    def _check(self, credentials: Any) -> bytes:
        """Refresh the table if the file changed, then check; runs in a worker thread."""
        self._refresh()
        user = username_text(credentials)
        if user is None:
            raise UnauthorizedLogin("no user name")
        with self._lock:
            entry = self._entries.get(user)
            generation = self._generation
        if entry is None:
            raise UnauthorizedLogin("unknown user")
        avatar_id = user.encode("utf-8")
        if IUsernamePassword.providedBy(credentials):
            password = credentials.password
            if isinstance(password, str):
                password = password.encode("utf-8")
            key = hashlib.sha256(avatar_id + b"\0" + password).digest()
            with self._lock:
                if self._cache.get(key) == avatar_id:
                    return avatar_id
            if not verify_password(entry, password):
                raise UnauthorizedLogin("wrong password")
            with self._lock:
                if generation == self._generation:
                    if len(self._cache) >= CACHE_LIMIT:
                        self._cache.clear()
                    self._cache[key] = avatar_id
            return avatar_id
        plain = plaintext_password(entry)
        if plain is not None and credentials.checkPassword(plain):
            return avatar_id
        raise UnauthorizedLogin("wrong password, or no plain-text password for CRAM-MD5")

    def _refresh(self) -> None:
        """Re-read the file if its stamp changed; keep the last good table if it is gone."""
        try:
            current = _stamp(os.stat(self.path))
            with self._lock:
                if current == self._stamp:
                    self._unavailable_warned = False
                    return
            text, stamp = _read(self.path)
        except OSError as e:
            with self._lock:
                warn = not self._unavailable_warned
                self._unavailable_warned = True
                count = len(self._entries)
            if warn:
                log.warn("{path}: {error}; keeping the {count} users read before",
                         path=self.path, error=e.strerror or str(e), count=count)
            return
        self._install(text, stamp)

    def _install(self, text: str, stamp: Stamp) -> None:
        """Parse C{text} and make it the table, unless another thread just did."""
        entries, problems = parse_password_file(text)
        with self._lock:
            if stamp == self._stamp:
                return
            reloading = self._stamp is not None
            self._entries = entries
            self._has_plaintext = any(e.scheme == "plain" for e in entries.values())
            self._stamp = stamp
            self._cache.clear()
            self._generation += 1
            self._unavailable_warned = False
        for problem in problems:
            log.warn("{path} line {line}: {reason}; the line is skipped",
                     path=self.path, line=problem.line, reason=problem.reason)
        if reloading:
            log.info("{path} changed: re-read, {count} users", path=self.path,
                     count=len(entries))
