"""
IMAP UIDs for a Maildir: a small append-only map in the state folder.

C{state_dir/imap/<sha256 of the Maildir path>.uids} holds a header line
C{mailsink-imap-uids 1 <UIDVALIDITY>} (UIDVALIDITY = when the map was made) and then one
C{<uid> <base name>} line per message ever seen, in the order UIDs were given. A new line
is appended (and fsynced) under an exclusive C{flock}, after reading whatever other
processes appended, so UIDs stay unique forever within a UIDVALIDITY, across restarts and
processes. A torn last line (a crash mid-write) is never read as a mapping.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import threading
import time
from collections.abc import Iterable

MAGIC = "mailsink-imap-uids"
_ARRIVAL = re.compile(r"(\d+)\.(?:M(\d+))?")


def base_name(name: str) -> str:
    """A Maildir file name without its C{:2,FLAGS} info: stable while flags change."""
    return name.split(":", 1)[0]


def arrival_key(base: str) -> tuple[int, int, str]:
    """Order of arrival from the name (seconds, microseconds), then the name."""
    match = _ARRIVAL.match(base)
    if match is None:
        return (1 << 62, 0, base)
    return (int(match.group(1)), int(match.group(2) or 0), base)


def map_path(state_dir: str, maildir: str) -> str:
    digest = hashlib.sha256(os.path.realpath(maildir).encode("utf-8", "surrogateescape"))
    return os.path.join(state_dir, "imap", digest.hexdigest()[:32] + ".uids")


class UidMap:
    """
    UIDs of one Maildir's messages, shared by every session of this process.

    L{lookup} and L{assign} read and write the file: the IMAP server calls them from its
    worker threads only (under L{lock}), never from the reactor thread.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.lock = threading.RLock()
        self.by_base: dict[str, int] = {}
        self.sizes: dict[str, int] = {}
        """Sizes (with CRLF line ends) of messages read so far: files never change."""
        self.dates: dict[str, float] = {}
        """Modification times of messages read so far (renames keep them)."""
        self.next_uid = 1
        self.validity = 0
        self._offset = 0
        self._open()

    def _open(self) -> None:
        os.makedirs(os.path.dirname(self.path), mode=0o700, exist_ok=True)
        try:
            with open(self.path, "rb") as file:
                header = file.readline()
        except FileNotFoundError:
            header = b""
        parts = header.decode("ascii", "replace").split()
        if len(parts) == 3 and parts[0] == MAGIC and parts[2].isdigit() \
                and header.endswith(b"\n"):
            self.validity = int(parts[2])
            self._offset = len(header)
            self._read_tail()
            return
        self._create()

    def _create(self) -> None:
        """A new map (and so a new UIDVALIDITY), written atomically."""
        self.validity = max(1, int(time.time()))
        tmp = f"{self.path}.{os.getpid()}.tmp"
        header = f"{MAGIC} 1 {self.validity}\n".encode()
        with open(tmp, "wb") as file:
            file.write(header)
            file.flush()
            os.fsync(file.fileno())
        os.rename(tmp, self.path)
        _fsync_dir(os.path.dirname(self.path))
        self.by_base = {}
        self.next_uid = 1
        self._offset = len(header)

    def _read_tail(self) -> None:
        """Take in complete lines appended since the last read (by anyone)."""
        try:
            with open(self.path, "rb") as file:
                file.seek(self._offset)
                data = file.read()
        except FileNotFoundError:
            return
        end = data.rfind(b"\n") + 1
        if not end:
            return
        for line in data[:end].split(b"\n"):
            uid_text, _, base = line.partition(b" ")
            if not base or not uid_text.isdigit():
                continue
            uid = int(uid_text)
            self.by_base[base.decode("utf-8", "surrogateescape")] = uid
            if uid >= self.next_uid:
                self.next_uid = uid + 1
        self._offset += end

    def lookup(self) -> dict[str, int]:
        """Base name to UID (kept up to date with other processes' additions)."""
        with self.lock:
            return self._lookup()

    def _lookup(self) -> dict[str, int]:
        try:
            size = os.stat(self.path).st_size
        except FileNotFoundError:
            size = self._offset
        if size > self._offset:
            self._read_tail()
        return self.by_base

    def assign(self, bases: Iterable[str]) -> None:
        """Give UIDs, in order of arrival, to the base names that have none yet."""
        with self.lock:
            self._assign(bases)

    def _assign(self, bases: Iterable[str]) -> None:
        fresh = sorted(set(bases) - self.by_base.keys(), key=arrival_key)
        if not fresh:
            return
        with open(self.path, "ab") as file:
            fcntl.flock(file.fileno(), fcntl.LOCK_EX)
            try:
                self._read_tail()
                lines = []
                if os.fstat(file.fileno()).st_size > self._offset:
                    lines.append(b"\n")  # a torn line stays apart from ours
                for base in fresh:
                    if base in self.by_base:
                        continue
                    uid = self.next_uid
                    self.next_uid += 1
                    self.by_base[base] = uid
                    lines.append(b"%d %s\n" % (uid, base.encode("utf-8", "surrogateescape")))
                file.write(b"".join(lines))
                file.flush()
                os.fsync(file.fileno())
                self._offset = os.fstat(file.fileno()).st_size
            finally:
                fcntl.flock(file.fileno(), fcntl.LOCK_UN)


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_maps: dict[str, UidMap] = {}
_maps_lock = threading.Lock()


def uid_map_for(state_dir: str, maildir: str) -> UidMap:
    """The process-wide map of C{maildir} (read from disk the first time: call it from a
    worker thread)."""
    path = map_path(state_dir, maildir)
    with _maps_lock:
        found = _maps.get(path)
        if found is None:
            found = _maps[path] = UidMap(path)
        return found
