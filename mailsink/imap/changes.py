"""
What changed in a Maildir since a session last looked: a scan of both folders (skipped
when their modification times say nothing changed), UIDs given to new messages, and the
session's new message list with the EXPUNGE, EXISTS and flag changes to tell its client.
All of it runs in a worker thread and only reads the session's state.
"""

from __future__ import annotations

import os
import time

from mailsink.imap.entries import Entry, scan
from mailsink.imap.flags import flags_of
from mailsink.imap.uids import UidMap, uid_map_for
from mailsink.tags.keywords import keyword_file


class Snapshot:
    """What a scan found: base name to (UID, C{cur} or C{new}, file name)."""

    __slots__ = ("next_uid", "on_disk", "stamps")

    def __init__(self, on_disk: dict[str, tuple[int, str, str]],
                 stamps: tuple[int, ...] | None, next_uid: int) -> None:
        self.on_disk = on_disk
        self.stamps = stamps
        self.next_uid = next_uid


def folder_stamps(path: str) -> tuple[int, ...] | None:
    """
    The folders' modification times, or None when they are too recent to trust
    (a change in the same clock tick as the last scan would leave them equal).
    """
    stamps = []
    for sub in ("new", "cur"):
        try:
            stamps.append(os.stat(os.path.join(path, sub)).st_mtime_ns)
        except FileNotFoundError:
            stamps.append(0)
    if time.time_ns() - max(stamps) < 2_000_000_000:
        return None
    return tuple(stamps)


def read_disk(path: str, uid_map: UidMap,
              previous: tuple[int, ...] | None) -> Snapshot | None:
    """
    (Worker thread.) List the Maildir and give UIDs to new messages; None when neither
    folder changed since the scan that saw the stamps C{previous}.
    """
    stamps = folder_stamps(path)
    if stamps is not None and stamps == previous:
        return None
    found = scan(path)
    with uid_map.lock:
        known = uid_map.lookup()
        fresh = [base for base in found if base not in known]
        if fresh:
            uid_map.assign(fresh)
            known = uid_map.by_base
        on_disk = {base: (known[base], sub, name) for base, (sub, name) in found.items()
                   if base in known}
        next_uid = uid_map.next_uid
    return Snapshot(on_disk, stamps, next_uid)


class Changes:
    """A session's messages after a rescan, and what to tell its client."""

    __slots__ = ("added", "changed", "entries", "expunged", "next_uid", "recent", "stamps",
                 "uids")

    def __init__(self, uids: list[int], entries: dict[int, Entry], expunged: list[int],
                 changed: dict[int, list[str]], added: bool, recent: int,
                 stamps: tuple[int, ...] | None, next_uid: int) -> None:
        self.uids = uids
        self.entries = entries
        self.expunged = expunged
        self.changed = changed
        self.added = added
        self.recent = recent
        self.stamps = stamps
        self.next_uid = next_uid


def rescan(path: str, uid_map: UidMap, previous: tuple[int, ...] | None, uids: list[int],
           entries: dict[int, Entry]) -> Changes | None:
    """
    (Worker thread.) Scan the Maildir and work out a session's new message list from its
    current one (C{uids}, C{entries}: read, never changed; entries that changed are new
    objects). None when neither folder changed since the scan that saw C{previous}.
    """
    snapshot = read_disk(path, uid_map, previous)
    if snapshot is None:
        return None
    keywords = keyword_file(path).names()
    on_disk = snapshot.on_disk
    kept: list[int] = []
    new_entries: dict[int, Entry] = {}
    expunged: list[int] = []
    changed_uids: dict[int, list[str]] = {}
    for seq, uid in enumerate(uids, 1):
        entry = entries[uid]
        found = on_disk.get(entry.base)
        if found is None or found[0] != uid:
            expunged.append(seq)
            continue
        _uid, sub, name = found
        if name != entry.name or sub != entry.sub:
            if flags_of(name, keywords) != flags_of(entry.name, keywords):
                changed_uids[uid] = flags_of(name, keywords)
            entry = Entry(uid, entry.base, sub, name)
        kept.append(uid)
        new_entries[uid] = entry
    added = sorted(found[0] for base, found in on_disk.items()
                   if found[0] not in new_entries)
    recent = 0
    by_uid = {found[0]: (base, found[1], found[2]) for base, found in on_disk.items()} \
        if added else {}
    for uid in added:
        base, sub, name = by_uid[uid]
        new_entries[uid] = Entry(uid, base, sub, name)
        if sub == "new":
            recent += 1
    if added and kept and added[0] < kept[-1]:
        kept = sorted(kept + added)
    else:
        kept.extend(added)
    changed = {}
    if changed_uids:
        position = {uid: seq for seq, uid in enumerate(kept, 1)}
        changed = {position[uid]: flags for uid, flags in changed_uids.items()}
    return Changes(kept, new_entries, expunged[::-1], changed, bool(added), recent,
                   snapshot.stamps, snapshot.next_uid)


def open_maildir(state_dir: str, path: str) -> tuple[UidMap, Changes | None]:
    """(Worker thread.) The Maildir's UID map (read the first time) and a first scan."""
    uid_map = uid_map_for(state_dir, path)
    return uid_map, rescan(path, uid_map, None, [], {})

