"""
The index's picture of the Maildir folders on disk, kept by listing directories only.

Mailboxes are the shared Maildir itself (C{""}) and each direct sub-folder of it that has
C{cur/ new/ tmp/} (its folder name); Maildir++ dot-folders and anything else are skipped,
and so are file names beginning with a dot. A rescan lists only the directories whose
mtime changed since they were last listed, or that changed less than L{RACE_SECONDS}
before that listing (a later change in the same timestamp tick would not show).
Blocking: used from the index's database thread.
"""

from __future__ import annotations

import os
import sys
import time

import attrs

from mailsink.index.codec import SUBDIRS, Loc

RACE_SECONDS = 2.0
"""How long after a directory (or new file) changed it is still looked at again."""
_RESERVED = frozenset({"cur", "new", "tmp"})


@attrs.define
class Diff:
    """What a rescan found: files that appeared, vanished, or changed in place."""

    appeared: list[Loc] = attrs.Factory(list)
    vanished: list[Loc] = attrs.Factory(list)
    changed: list[Loc] = attrs.Factory(list)


class FolderWatch:
    """Names of the message files per mailbox and sub-folder, and directory mtimes."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.mailboxes: set[str] = {""}
        self._files: dict[tuple[str, str], set[str]] = {}
        self._seen: dict[str, tuple[int | None, float]] = {}
        self._pending: set[str] = set()
        self._fresh: dict[Loc, tuple[int, int, float]] = {}

    def folder(self, mailbox: str) -> str:
        return os.path.join(self.root, mailbox) if mailbox else self.root

    def path(self, loc: Loc) -> str:
        """The absolute path of a message file."""
        return os.path.join(self.folder(loc[0]), loc[1], loc[2])

    def remember(self, mailbox: str, subdir: str, filename: str) -> Loc:
        mailbox, subdir = sys.intern(mailbox), sys.intern(subdir)
        self._files.setdefault((mailbox, subdir), set()).add(filename)
        return mailbox, subdir, filename

    def forget_file(self, loc: Loc) -> None:
        names = self._files.get((loc[0], loc[1]))
        if names is not None:
            names.discard(loc[2])
        self._fresh.pop(loc, None)

    def forget(self) -> None:
        """Forget every file (before loading the picture again)."""
        self._files.clear()
        self._seen.clear()
        self._fresh.clear()

    def note_fresh(self, loc: Loc, size: int, mtime_ns: int) -> None:
        """A file indexed moments after it was written: look at its size again for a while."""
        if time.time() - mtime_ns / 1e9 < RACE_SECONDS:
            self._fresh[loc] = (size, mtime_ns, time.time())

    def locate(self, mailbox: str, base: str) -> Loc | None:
        """Find a message by its unique base name in C{new/} or C{cur/} (it was renamed)."""
        for subdir in SUBDIRS:
            try:
                with os.scandir(os.path.join(self.folder(mailbox), subdir)) as entries:
                    for entry in entries:
                        if entry.name == base or entry.name.startswith(base + ":"):
                            return mailbox, subdir, entry.name
            except OSError:
                continue
        return None

    def scan(self, full: bool, stored: dict[Loc, tuple[int, int]] | None = None) -> Diff:
        """
        List the directories that may have changed (all when C{full}) and compare. With
        C{stored} (sizes and mtimes from the database), every file is also stat'ed and
        compared: a file rewritten in place shows as changed.
        """
        now = time.time()
        diff = Diff()
        self._discover(full, now)
        keys = {(mailbox, subdir) for mailbox in self.mailboxes for subdir in SUBDIRS}
        keys.update(key for key, names in self._files.items() if names)
        for mailbox, subdir in sorted(keys):
            path = os.path.join(self.folder(mailbox), subdir)
            if not self._needs_listing(path, now, full or stored is not None):
                continue
            listed = _list(path, stored is not None)
            known = self._files.get((mailbox, subdir), set())
            diff.appeared.extend((mailbox, subdir, name) for name in listed
                                 if name not in known)
            diff.vanished.extend((mailbox, subdir, name) for name in known
                                 if name not in listed)
            if stored is not None:
                for name, info in listed.items():
                    before = stored.get((mailbox, subdir, name))
                    if before is not None and info is not None and before != info:
                        diff.changed.append((mailbox, subdir, name))
        for loc, (size, mtime_ns, since) in list(self._fresh.items()):
            try:
                current = os.stat(self.path(loc))
            except OSError:
                del self._fresh[loc]
                continue
            if (current.st_size, current.st_mtime_ns) != (size, mtime_ns):
                diff.changed.append(loc)
                self._fresh[loc] = (current.st_size, current.st_mtime_ns, now)
            elif now - since > RACE_SECONDS:
                del self._fresh[loc]
        return diff

    def _needs_listing(self, path: str, now: float, always: bool) -> bool:
        try:
            mtime: int | None = os.stat(path).st_mtime_ns
        except OSError:
            mtime = None
        seen = self._seen.get(path)
        if (always or seen is None or seen[0] != mtime
                or (mtime is not None and mtime / 1e9 >= seen[1] - RACE_SECONDS)):
            self._seen[path] = (mtime, now)
            return True
        return False

    def _discover(self, full: bool, now: float) -> None:
        if self._needs_listing(self.root, now, full):
            candidates: set[str] = set()
            try:
                with os.scandir(self.root) as entries:
                    for entry in entries:
                        if (not entry.name.startswith(".") and entry.name not in _RESERVED
                                and entry.is_dir()):
                            candidates.add(entry.name)
            except OSError:
                pass
            self.mailboxes &= candidates | {""}
            self._pending = candidates - self.mailboxes
        for name in sorted(self._pending):
            folder = os.path.join(self.root, name)
            if all(os.path.isdir(os.path.join(folder, sub)) for sub in _RESERVED):
                self.mailboxes.add(sys.intern(name))
                self._pending.discard(name)


def _list(path: str, with_stat: bool) -> dict[str, tuple[int, int] | None]:
    """Message file names in a directory (with size and mtime when asked)."""
    found: dict[str, tuple[int, int] | None] = {}
    try:
        with os.scandir(path) as entries:
            for entry in entries:
                if entry.name.startswith("."):
                    continue
                try:
                    if not entry.is_file():
                        continue
                    if with_stat:
                        info = entry.stat()
                        found[entry.name] = (info.st_size, info.st_mtime_ns)
                    else:
                        found[entry.name] = None
                except OSError:
                    continue
    except OSError:
        pass
    return found
