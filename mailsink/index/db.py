"""
The index's SQLite database and its picture of the Maildir folders.

L{IndexStore} is synchronous and not thread-safe:
L{mailsink.index.message_index.MessageIndex} calls it from one dedicated thread only. It
keeps in memory the file names of each C{new/} and C{cur/} (to notice outside changes by
listing directories, no file reads) and the message and unread counts per mailbox;
summaries stay in SQLite.

Mutating methods fill a L{Changes}: the events to publish, and the files that still have
to be read and parsed (outside this thread) before L{IndexStore.insert} takes them.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Collection, Iterable
from typing import Any

import attrs
from twisted.logger import Logger

from mailsink.index.codec import (
    SEARCH_COLUMNS,
    Changes,
    Loc,
    Page,
    Parsed,
    Stats,
    facts_from_json,
    facts_to_json,
    flagged,
    is_read,
    message_id,
    received_at,
    schema_fingerprint,
    search_values,
    split_name,
)
from mailsink.index.scan import FolderWatch
from mailsink.index.tag_rules import NO_RULES, TagRules
from mailsink.index.tags import file_tags, refresh_tags, tagged_on_arrival
from mailsink.message.search import where
from mailsink.message.shapes import Facts, Summary

log = Logger()

SCHEMA_VERSION = 2
_COLUMNS = ("id", "mailbox", "subdir", "filename", "created", "read", "size", "mtime_ns",
            "attachments", *SEARCH_COLUMNS, "facts")
_SCHEMA = f"""
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE messages (
    id TEXT NOT NULL UNIQUE, mailbox TEXT NOT NULL, subdir TEXT NOT NULL,
    filename TEXT NOT NULL, created REAL NOT NULL, read INTEGER NOT NULL,
    size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, attachments INTEGER NOT NULL,
    {", ".join(f"{c} TEXT NOT NULL" for c in SEARCH_COLUMNS)}, facts TEXT NOT NULL);
CREATE INDEX messages_created ON messages (created, id);
CREATE INDEX messages_mailbox ON messages (mailbox, created, id);
CREATE INDEX messages_tags ON messages (tags_lc, mailbox);
"""
_INSERT = f"INSERT INTO messages ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))})"
_UPDATE = ("UPDATE messages SET mailbox = ?, subdir = ?, filename = ?, read = ?, size = ?, "
           f"mtime_ns = ?, attachments = ?, {', '.join(c + ' = ?' for c in SEARCH_COLUMNS)}, "
           "facts = ? WHERE id = ?")
_IDS_PER_QUERY = 500
"""Below SQLite's limit on bound parameters in one statement."""
_SUMMARY = "SELECT id, mailbox, read, created, size, facts FROM messages"
_NEWEST = "ORDER BY created DESC, id DESC"


class IndexStore:
    """The database and the folder picture; one thread only (see the module doc)."""

    def __init__(self, root: str, db_path: str, facts_version: str = "",
                 tag_rules: TagRules = NO_RULES) -> None:
        self.root = root
        self.tag_rules = tag_rules
        """C{[tags]}: tags given to a message when it arrives (L{mailsink.index.tags})."""
        self.db_path = db_path
        self.fingerprint = f"{SCHEMA_VERSION};{schema_fingerprint()};{facts_version}"
        self.folders = FolderWatch(root)
        self.deleted = 0
        self.pruned = 0
        self._conn: sqlite3.Connection | None = None
        self._counts: dict[str, list[int]] = {}
        self._dups: dict[str, set[Loc]] = {}
        self._stored: dict[Loc, tuple[int, int]] | None = None
        self._queued: set[Loc] = set()
        """Files a rescan handed out to parse, not yet back: later rescans skip them."""

    # Life cycle.

    @property
    def conn(self) -> sqlite3.Connection:
        assert self._conn is not None, "the index database is not open"
        return self._conn

    def open(self) -> None:
        """Open (or create) the database and load the folder picture; rebuild if unusable."""
        os.makedirs(os.path.dirname(self.db_path) or ".", exist_ok=True)
        try:
            self._open()
            self._load()
        except sqlite3.DatabaseError as error:
            if isinstance(error, sqlite3.OperationalError) and "locked" in str(error):
                raise
            log.warn("index {path} is unusable ({error}); rebuilding it from the Maildir",
                     path=self.db_path, error=str(error))
            self.close()
            self._remove_files()
            self._open()
            self._load()

    def reset(self) -> None:
        """Throw the database away and start an empty one (it was found corrupt)."""
        self.close()
        self._remove_files()
        self._dups.clear()
        self._queued.clear()
        self._open()
        self._load()

    def _open(self) -> None:
        conn = self._connect()
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
        if "meta" in tables:
            row = conn.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
            if row is not None and row[0] == self.fingerprint:
                return
            log.info("index {path} has another schema; rebuilding it", path=self.db_path)
            self.close()
            self._remove_files()
            conn = self._connect()
        elif tables:
            raise sqlite3.DatabaseError("not an index database")
        conn.executescript(_SCHEMA)
        conn.execute("INSERT INTO meta VALUES ('schema', ?)", (self.fingerprint,))
        conn.commit()

    def _connect(self) -> sqlite3.Connection:
        """A connection in WAL mode; C{synchronous = NORMAL} is enough for a cache."""
        conn = self._conn = sqlite3.connect(self.db_path, timeout=10, check_same_thread=False)
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA cache_size = -16000")
        return conn

    def _remove_files(self) -> None:
        for suffix in ("", "-wal", "-shm", "-journal"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.db_path + suffix)

    def _load(self) -> None:
        stored: dict[Loc, tuple[int, int]] = {}
        counts: dict[str, list[int]] = {}
        self.folders.forget()
        rows = self.conn.execute("SELECT mailbox, subdir, filename, size, mtime_ns, read "
                                 "FROM messages")
        for mailbox, subdir, filename, size, mtime_ns, read in rows:
            loc = self.folders.remember(mailbox, subdir, filename)
            stored[loc] = (size, mtime_ns)
            count = counts.setdefault(mailbox, [0, 0])
            count[0] += 1
            count[1] += not read
        self._counts = counts
        self._stored = stored

    def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(sqlite3.Error):
                self._conn.close()
            self._conn = None

    # Keeping current.

    def rescan(self, full: bool = False) -> tuple[Changes, list[str]]:
        """
        Compare the folders with the picture: list directories whose mtime changed (all
        of them when C{full}), resolve moves and deletions here, return new files to parse.
        The first full rescan after L{open} also compares sizes and mtimes.
        """
        stored, self._stored = self._stored, None
        diff = self.folders.scan(full, stored)
        changes = Changes()
        appeared = [loc for loc in diff.appeared if loc not in self._queued]
        self._apply(appeared, diff.vanished, changes, check=False)
        parse = set(changes.to_parse)
        parse.update(loc for loc in diff.changed if loc not in self._queued)
        # Newest first, so the first pages are right early in a cold build.
        changes.to_parse = sorted(parse, key=_newest_first)
        self._queued.update(changes.to_parse)
        return changes, sorted(self.folders.mailboxes)

    def apply(self, appeared: list[Loc], vanished: Iterable[Loc]) -> Changes:
        """
        L{_apply} with a size/mtime check of files already indexed in the same place. The
        caller parses and L{insert}s the files left to parse before anything else runs.
        """
        self._queued.difference_update(appeared)
        changes = Changes()
        self._apply(appeared, vanished, changes, check=True)
        return changes

    def _apply(self, appeared: Iterable[Loc], vanished: Iterable[Loc], changes: Changes,
               check: bool) -> None:
        """
        Files seen (C{appeared}) or gone (C{vanished}): unknown ones are left to parse,
        renamed ones (mutt's new/X -> cur/X:2,S) move, gone ones are removed. With
        C{check}, an already indexed file whose size or mtime changed is parsed again.
        """
        if not self._counts:  # nothing indexed (a cold build): every file is new
            changes.to_parse.extend(appeared)
            appeared = ()
        appeared = list(appeared)
        known = self._locs_of([message_id(split_name(loc[2])[0]) for loc in appeared])
        for loc in appeared:
            mid = message_id(split_name(loc[2])[0])
            row = known.pop(mid) if mid in known else self._loc_of(mid)
            if row is None:
                changes.to_parse.append(loc)
            elif row[0] == loc:
                if check and self._changed(loc, row[1]):
                    changes.to_parse.append(loc)
            elif self._exists(row[0]):
                self._duplicate(mid, row[0], loc)
            else:
                self._move(mid, loc, changes)
        for loc in vanished:
            mid = message_id(split_name(loc[2])[0])
            row = self._loc_of(mid)
            if row is None or row[0] != loc:
                self._dups.get(mid, set()).discard(loc)
            elif not self._exists(loc):
                self._gone(mid, loc, changes)
        self.conn.commit()
        changes.flush()

    def insert(self, parsed: list[Parsed]) -> Changes:
        """Index files parsed outside this thread (new, or parsed again)."""
        changes = Changes()
        known = self._locs_of([message_id(split_name(item.loc[2])[0]) for item in parsed])
        for item in parsed:
            try:
                self._insert(item, changes, known)
            except (UnicodeError, ValueError, OverflowError, sqlite3.InterfaceError):
                # Facts SQLite cannot take (a lone surrogate, say) must not stall the index:
                # the message is listed without them, as an unparsable one is.
                log.failure("cannot index the facts of {loc}; listing it without them",
                            loc=item.loc)
                self._insert(attrs.evolve(item, facts=Facts()), changes)
        self.conn.commit()
        return changes

    def _insert(self, item: Parsed, changes: Changes,
                known: dict[str, tuple[Loc, Any] | None] | None = None) -> None:
        """
        Index one parsed file (its events into C{changes}); committed by the caller.
        C{known}: rows looked up beforehand (L{_locs_of}), each used once.
        """
        base, _ = split_name(item.loc[2])
        mid = message_id(base)
        row = known.pop(mid) if known and mid in known else self._loc_of(mid)
        if row is not None and row[0] != item.loc:
            if self._exists(row[0]):
                self._duplicate(mid, row[0], item.loc)
                return
            self._move(mid, item.loc, changes)
            row = self._loc_of(mid)
        item = tagged_on_arrival(self, item) if row is None else \
            attrs.evolve(item, facts=attrs.evolve(item.facts, tags=file_tags(self, item.loc)))
        mailbox, subdir, filename = item.loc
        read = is_read(filename)
        facts_json = facts_to_json(item.facts)
        if row is None:
            created = received_at(base, item.mtime_ns / 1e9)
            self.conn.execute(_INSERT, (
                mid, mailbox, subdir, filename, created, read, item.size, item.mtime_ns,
                item.facts.attachments, *search_values(item.facts), facts_json))
            self.folders.remember(mailbox, subdir, filename)
            self._count(mailbox, 1, not read)
            # Built from what is at hand: reading the row back costs a JSON decode.
            changes.events.append(("new", Summary(mid, mailbox, bool(read), created,
                                                  item.size, item.facts)))
        else:
            self.conn.execute(_UPDATE, (
                mailbox, subdir, filename, read, item.size, item.mtime_ns,
                item.facts.attachments, *search_values(item.facts), facts_json, mid))
            summary = self._summary(mid)
            if summary is not None:
                changes.events.append(("update", summary))
        self.folders.note_fresh(item.loc, item.size, item.mtime_ns)

    def _locs_of(self, mids: list[str]) -> dict[str, tuple[Loc, Any] | None]:
        """L{_loc_of} for many IDs in a few queries (a batch of new mail costs one)."""
        found: dict[str, tuple[Loc, Any] | None] = dict.fromkeys(mids)
        unique = list(found)
        for at in range(0, len(unique), _IDS_PER_QUERY):
            chunk = unique[at:at + _IDS_PER_QUERY]
            rows = self.conn.execute(
                "SELECT id, mailbox, subdir, filename, size, mtime_ns FROM messages "
                f"WHERE id IN ({', '.join('?' * len(chunk))})", chunk)
            for row in rows:
                found[row[0]] = ((row[1], row[2], row[3]), row[1:])
        return found

    def _loc_of(self, mid: str) -> tuple[Loc, Any] | None:
        """Where C{mid} is indexed, with its row (mailbox, subdir, filename, size, mtime)."""
        return self._locs_of([mid])[mid]

    def _changed(self, loc: Loc, row: Any) -> bool:
        try:
            info = os.stat(self.folders.path(loc))
        except OSError:
            return False
        return (info.st_size, info.st_mtime_ns) != (row[3], row[4])

    def _exists(self, loc: Loc) -> bool:
        return os.path.isfile(self.folders.path(loc))

    def _duplicate(self, mid: str, kept: Loc, other: Loc) -> None:
        others = self._dups.setdefault(mid, set())
        if other not in others:
            others.add(other)
            log.warn("message {id} is in two places; indexing {kept}, ignoring {other}",
                     id=mid, kept=self.folders.path(kept), other=self.folders.path(other))

    def _move(self, mid: str, loc: Loc, changes: Changes) -> None:
        row = self.conn.execute("SELECT mailbox, subdir, filename, read FROM messages "
                                "WHERE id = ?", (mid,)).fetchone()
        old_mailbox, old_subdir, old_filename, old_read = row
        mailbox, subdir, filename = loc
        read = is_read(filename)
        self.conn.execute("UPDATE messages SET mailbox = ?, subdir = ?, filename = ?, "
                          "read = ? WHERE id = ?", (mailbox, subdir, filename, read, mid))
        self.folders.forget_file((old_mailbox, old_subdir, old_filename))
        self.folders.remember(mailbox, subdir, filename)
        self._count(old_mailbox, -1, -(not old_read))
        self._count(mailbox, 1, not read)
        summary = self._summary(mid)
        if summary is not None:
            changes.events.append(("update", refresh_tags(self, summary, loc)))

    def _gone(self, mid: str, loc: Loc, changes: Changes) -> None:
        """The indexed file is gone: follow a duplicate if one is left, else remove."""
        for other in sorted(self._dups.pop(mid, ())):
            if self._exists(other):
                self._move(mid, other, changes)
                return
        self._remove(mid, loc, changes)

    def _remove(self, mid: str, loc: Loc, changes: Changes) -> None:
        read = self.conn.execute("SELECT read FROM messages WHERE id = ?", (mid,)).fetchone()
        self.conn.execute("DELETE FROM messages WHERE id = ?", (mid,))
        self.folders.forget_file(loc)
        if read is not None:
            self._count(loc[0], -1, -(not read[0]))
        changes.deleted.append(mid)

    def _count(self, mailbox: str, total: int, unread: int) -> None:
        count = self._counts.setdefault(mailbox, [0, 0])
        count[0] += total
        count[1] += unread
        if count[0] <= 0:
            del self._counts[mailbox]

    # Reading.

    def _summary(self, mid: str) -> Summary | None:
        row = self.conn.execute(f"{_SUMMARY} WHERE id = ?", (mid,)).fetchone()
        return _to_summary(row) if row else None

    def counts(self, mailboxes: Collection[str] | None) -> tuple[int, int]:
        """(messages, unread) in those mailboxes (None: all), from memory."""
        total = unread = 0
        for mailbox, (count, unseen) in self._counts.items():
            if mailboxes is None or mailbox in mailboxes:
                total += count
                unread += unseen
        return total, unread

    def mailbox_counts(self) -> dict[str, tuple[int, int]]:
        """(messages, unread) of each mailbox holding any, from memory."""
        return {mailbox: (count, unseen) for mailbox, (count, unseen) in self._counts.items()}

    def page(self, query: str, start: int, limit: int,
             mailboxes: Collection[str] | None) -> Page:
        """Newest first: C{limit} summaries from C{start} on, and the counts."""
        total, unread = self.counts(mailboxes)
        scope, params = _scope(mailboxes)
        condition, search = where(query)
        if condition == "1":
            matches, matches_unread = total, unread
        else:
            row = self.conn.execute(
                f"SELECT count(*), total(read = 0) FROM messages WHERE {scope} "
                f"AND {condition}", [*params, *search]).fetchone()
            matches, matches_unread = row[0], int(row[1])
        messages: list[Summary] = []
        if matches and limit > 0:
            rows = self.conn.execute(
                f"{_SUMMARY} WHERE {scope} AND {condition} {_NEWEST} LIMIT ? OFFSET ?",
                [*params, *search, limit, max(start, 0)])
            messages = [_to_summary(row) for row in rows]
        return Page(total, unread, matches, matches_unread, messages)

    def get(self, mid: str, mailboxes: Collection[str] | None) -> Summary | None:
        scope, params = _scope(mailboxes)
        row = self.conn.execute(f"{_SUMMARY} WHERE id = ? AND {scope}",
                                [mid, *params]).fetchone()
        return _to_summary(row) if row else None

    def latest(self, query: str, mailboxes: Collection[str] | None) -> Summary | None:
        scope, params = _scope(mailboxes)
        condition, search = where(query or "")
        row = self.conn.execute(f"{_SUMMARY} WHERE {scope} AND {condition} {_NEWEST} LIMIT 1",
                                [*params, *search]).fetchone()
        return _to_summary(row) if row else None

    def path(self, mid: str, mailboxes: Collection[str] | None) -> tuple[str | None, Changes]:
        """The file's current path; found again (and the row fixed) if it was renamed."""
        changes = Changes()
        loc = self._scoped_loc(mid, mailboxes)
        if loc is None:
            return None, changes
        if self._exists(loc):
            return self.folders.path(loc), changes
        found = self.folders.locate(loc[0], split_name(loc[2])[0])
        if found is None:
            return None, changes
        self._move(mid, found, changes)
        self.conn.commit()
        return self.folders.path(found), changes

    def _scoped_loc(self, mid: str, mailboxes: Collection[str] | None) -> Loc | None:
        scope, params = _scope(mailboxes)
        row = self.conn.execute(f"SELECT mailbox, subdir, filename FROM messages "
                                f"WHERE id = ? AND {scope}", [mid, *params]).fetchone()
        return (row[0], row[1], row[2]) if row else None

    def stats(self, mailboxes: Collection[str] | None) -> Stats:
        size = 0
        for suffix in ("", "-wal"):
            with contextlib.suppress(OSError):
                size += os.stat(self.db_path + suffix).st_size
        total, unread = self.counts(mailboxes)
        return Stats(self.db_path, size, total, unread, self.deleted, self.pruned)

    # Changing files.

    def select(self, ids: list[str] | None, query: str | None,
               mailboxes: Collection[str] | None, unread: bool | None = None) -> list[str]:
        """IDs of the messages chosen by IDs and/or a query (neither: all), oldest first."""
        scope, params = _scope(mailboxes)
        condition, search = where(query or "")
        state = "" if unread is None else f" AND read = {0 if unread else 1}"
        sql = f"SELECT id FROM messages WHERE {scope} AND {condition}{state}"
        if ids is None:
            return [row[0] for row in self.conn.execute(f"{sql} ORDER BY created, id",
                                                        [*params, *search])]
        chosen: list[str] = []
        unique = list(dict.fromkeys(ids))
        for at in range(0, len(unique), 500):
            chunk = unique[at:at + 500]
            marks = ", ".join("?" * len(chunk))
            chosen.extend(row[0] for row in self.conn.execute(
                f"{sql} AND id IN ({marks})", [*params, *search, *chunk]))
        return chosen

    def set_read(self, ids: list[str], read: bool) -> tuple[int, Changes]:
        """Rename the files as a mail reader does; returns how many changed."""
        changes = Changes()
        changed = 0
        for mid in ids:
            loc = self._scoped_loc(mid, None)
            for _attempt in range(2):
                if loc is None or is_read(loc[2]) == read:
                    break
                target = (loc[0], *flagged(loc[1], loc[2], read))
                try:
                    if target != loc:
                        os.rename(self.folders.path(loc), self.folders.path(target))
                except FileNotFoundError:
                    found = self.folders.locate(loc[0], split_name(loc[2])[0])
                    if found is None:
                        self._gone(mid, loc, changes)
                        loc = None
                    else:
                        self._move(mid, found, changes)
                        loc = found
                    continue
                except OSError as error:
                    log.warn("cannot mark {path} read={read}: {error}", read=read,
                             path=self.folders.path(loc), error=str(error))
                    break
                self._move(mid, target, changes)
                changed += 1
                break
        self.conn.commit()
        changes.flush()
        return changed, changes

    def delete(self, ids: list[str], pruning: bool = False) -> tuple[int, Changes]:
        """Unlink the files and forget them; returns how many rows went."""
        changes = Changes()
        removed = 0
        for mid in ids:
            loc = self._scoped_loc(mid, None)
            if loc is None:
                continue
            path = self.folders.path(loc)
            try:
                os.unlink(path)
            except FileNotFoundError:
                found = self.folders.locate(loc[0], split_name(loc[2])[0])
                if found is not None:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(self.folders.path(found))
            except OSError as error:
                log.warn("cannot delete {path}: {error}", path=path, error=str(error))
                continue
            self._dups.pop(mid, None)
            self._remove(mid, loc, changes)
            removed += 1
        self.conn.commit()
        if pruning:
            self.pruned += removed
        else:
            self.deleted += removed
        changes.flush()
        return removed, changes

    def to_prune(self, max_messages: int, max_age: float, now: float) -> list[str]:
        """IDs beyond C{max_messages} per mailbox, or received more than C{max_age} ago."""
        chosen: dict[str, None] = {}
        if max_age > 0:
            rows = self.conn.execute("SELECT id FROM messages WHERE created < ? "
                                     "ORDER BY created, id", (now - max_age,))
            chosen.update((row[0], None) for row in rows)
        if max_messages > 0:
            for mailbox, (count, _) in list(self._counts.items()):
                if count > max_messages:
                    rows = self.conn.execute(
                        "SELECT id FROM messages WHERE mailbox = ? ORDER BY created, id "
                        "LIMIT ?", (mailbox, count - max_messages))
                    chosen.update((row[0], None) for row in rows)
        return list(chosen)


def _scope(mailboxes: Collection[str] | None) -> tuple[str, list[str]]:
    if mailboxes is None:
        return "1", []
    chosen = sorted(set(mailboxes))
    if not chosen:
        return "0", []
    return f"mailbox IN ({', '.join('?' * len(chosen))})", chosen


def _newest_first(loc: Loc) -> float:
    return -received_at(split_name(loc[2])[0], 0.0)


def _to_summary(row: Any) -> Summary:
    mid, mailbox, read, created, size, facts = row
    return Summary(mid, mailbox, bool(read), created, size, facts_from_json(facts))
