"""
A session's messages as it knows them (L{Entry}: UID, base name, folder, file name), and
finding them again on disk when another program renamed them (a mail client setting
flags, say). The functions here touch the disk: call them from a worker thread.
"""

from __future__ import annotations

import os

from mailsink.imap.uids import base_name


class Entry:
    """One message as a session knows it."""

    __slots__ = ("base", "name", "sub", "uid")

    def __init__(self, uid: int, base: str, sub: str, name: str) -> None:
        self.uid = uid
        self.base = base
        self.sub = sub
        self.name = name


def scan(path: str) -> dict[str, tuple[str, str]]:
    """Base name to (C{cur} or C{new}, file name) for every message in the Maildir."""
    found: dict[str, tuple[str, str]] = {}
    for sub in ("new", "cur"):
        try:
            entries = os.scandir(os.path.join(path, sub))
        except FileNotFoundError:
            continue
        with entries:
            for entry in entries:
                name = entry.name
                if name.startswith("."):
                    continue
                found[base_name(name)] = (sub, name)
    return found


def find_file(path: str, sub: str, name: str, base: str,
              scanned: dict[str, tuple[str, str]] | None
              ) -> tuple[tuple[str, str] | None, dict[str, tuple[str, str]] | None]:
    """
    (Worker thread.) Where a message is now: (C{sub}, C{name}) if it is still there, else
    found in a scan (made once, then passed back in as C{scanned}); None if gone.
    """
    if os.path.exists(os.path.join(path, sub, name)):
        return (sub, name), scanned
    if scanned is None:
        scanned = scan(path)
    return scanned.get(base), scanned


Moves = list[tuple[int, str, str]]
"""(UID, C{sub}, name) of messages another program renamed."""


def moves_in(entries: dict[int, Entry], scanned: dict[str, tuple[str, str]] | None) -> Moves:
    """(Worker thread.) The session's messages (C{entries}: read, never changed) that a
    scan found somewhere other than where the session knows them."""
    if scanned is None:
        return []
    moves = []
    for uid, entry in entries.items():
        where = scanned.get(entry.base)
        if where is not None and where != (entry.sub, entry.name):
            moves.append((uid, *where))
    return moves
