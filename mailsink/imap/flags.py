"""
IMAP flags as Maildir file names carry them, and changing them on disk.

Flags live only in the file names (C{:2,FLAGS}): C{\\Seen} is C{S}, C{\\Deleted} C{T},
C{\\Flagged} C{F}, C{\\Answered} C{R}, C{\\Draft} C{D}; keywords (mailsink's tags) are
the letters C{a}-C{z} named by the folder's C{dovecot-keywords} (L{mailsink.tags.keywords}),
shown when the name is an IMAP atom (a tag with a space is not). STORE renames a file into
C{cur/} with its new letters; EXPUNGE unlinks the files marked C{T}. Both are worked out
and done in a worker thread, from the session's message list, which they never change.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping

from twisted.mail import imap4

from mailsink.imap.entries import Entry, find_file
from mailsink.imap.sequences import select_ids
from mailsink.tags.keywords import LETTERS, TagLimit, keyword_file
from mailsink.tags.names import is_imap_atom

FLAG_LETTERS = {"\\Seen": "S", "\\Deleted": "T", "\\Flagged": "F", "\\Answered": "R",
                "\\Draft": "D"}
LETTER_FLAGS = {letter: flag for flag, letter in FLAG_LETTERS.items()}
SYSTEM_FLAGS = tuple(FLAG_LETTERS)


def flags_of(name: str, keywords: Mapping[str, str] | None = None) -> list[str]:
    """
    The IMAP flags a Maildir file name carries (letters after C{:2,}): system flags, then
    the keywords C{keywords} (letter -> name) names.
    """
    info = name.partition(":2,")[2]
    flags = [LETTER_FLAGS[c] for c in sorted(info) if c in LETTER_FLAGS]
    if keywords:
        flags.extend(keywords[c] for c in sorted(info)
                     if c in keywords and is_imap_atom(keywords[c]))
    return flags


def keyword_flags(flags: list[str]) -> tuple[list[str], list[str]]:
    """A STORE's flags split into system flag letters and keyword names (others dropped)."""
    letters, names = [], []
    for flag in flags:
        letter = next((c for f, c in FLAG_LETTERS.items() if f.lower() == flag.lower()), None)
        if letter is not None:
            letters.append(letter)
        elif is_imap_atom(flag):
            names.append(flag)
    return letters, names


Stored = tuple[dict[int, tuple[str, str]], "Exception | None", dict[int, list[str]]]


def store_flags(path: str, uids: list[int], entries: dict[int, Entry],
                messages: imap4.MessageSet, by_uid: bool, letters: set[str],
                mode: int, keywords: tuple[str, ...] = ()) -> Stored:
    """
    (Worker thread.) Add (C{mode} > 0), remove (< 0) or set (0) flag letters and keywords
    on a session's messages (C{uids}, C{entries}: read, never changed): the new (C{cur},
    name) per UID renamed, the error that stopped the renames, and every picked message's
    flags by sequence number. A new keyword gets a letter in C{dovecot-keywords}; past 26
    the store fails with L{TagLimit} before any rename.
    """
    folder = keyword_file(path)
    found, missing = folder.letters_for(keywords, create=mode >= 0)
    if missing and mode >= 0:
        return {}, TagLimit(missing), {}
    letters = letters | set(found)
    picked = select_ids(uids, messages, by_uid)
    plan = []
    for _seq, u in picked:
        entry = entries[u]
        current = set(entry.name.partition(":2,")[2])
        if mode > 0:
            wanted = current | letters
        elif mode < 0:
            wanted = current - letters
        else:
            wanted = (current - set(LETTER_FLAGS) - set(LETTERS)) | letters
        if wanted != current or (entry.sub == "new" and wanted):
            plan.append((u, entry.base, entry.sub, entry.name, "".join(sorted(wanted))))
    done, error = _rename_all(path, plan) if plan else ({}, None)
    names = folder.names()
    result = {seq: flags_of(done[u][1] if u in done else entries[u].name, names)
              for seq, u in picked}
    return done, error, result


def _rename_all(path: str, plan: list[tuple[int, str, str, str, str]]
                ) -> tuple[dict[int, tuple[str, str]], OSError | None]:
    """
    (Worker thread.) Rename each (uid, base, sub, name, new info) into C{cur/} with its new
    flags; the new (C{cur}, name) per UID done, and the error that stopped the rest.
    """
    done: dict[int, tuple[str, str]] = {}
    scanned: dict[str, tuple[str, str]] | None = None
    try:
        for uid, base, sub, name, info in plan:
            where, scanned = find_file(path, sub, name, base, scanned)
            if where is None:
                continue
            target = f"{base}:2,{info}"
            os.rename(os.path.join(path, *where), os.path.join(path, "cur", target))
            done[uid] = ("cur", target)
    except OSError as error:
        return done, error
    return done, None


def expunge_deleted(path: str, uids: list[int], entries: dict[int, Entry]
                    ) -> tuple[list[int], list[int], list[int]]:
    """
    (Worker thread.) Unlink a session's \\Deleted messages (C{uids}, C{entries}: read,
    never changed): the UIDs kept, the sequence numbers gone (highest first), the UIDs
    gone.
    """
    doomed = [(seq, uid) for seq, uid in enumerate(uids, 1)
              if "T" in entries[uid].name.partition(":2,")[2]]
    if not doomed:
        return uids, [], []
    _unlink_all(path, [(entries[uid].base, entries[uid].sub, entries[uid].name)
                       for _seq, uid in doomed])
    gone_uids = {uid for _seq, uid in doomed}
    kept = [uid for uid in uids if uid not in gone_uids]
    return kept, [seq for seq, _uid in doomed][::-1], sorted(gone_uids)


def _unlink_all(path: str, doomed: list[tuple[str, str, str]]) -> None:
    """(Worker thread.) Unlink messages given as (base, sub, name), wherever they are."""
    scanned: dict[str, tuple[str, str]] | None = None
    for base, sub, name in doomed:
        where, scanned = find_file(path, sub, name, base, scanned)
        if where is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(path, *where))
