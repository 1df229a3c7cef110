"""
Tags in the index (database thread only, beside L{mailsink.index.db.IndexStore}).

The truth is the Maildir: a message's tags are the keyword letters of its file name, named
by its folder's C{dovecot-keywords} (L{mailsink.tags.keywords}). The index copies them into
each row's facts and C{tags_lc} whenever it indexes or follows a file, so a deleted index
is rebuilt with every tag.

C{X-Tags} and C{[tags]} rule tags are written as keywords when a message arrives: a file
in C{new/} without info is tagged once, moved to C{cur/X:2,<letters>} (a Maildir rename,
still unread), so tags removed later stay removed after a rebuild; a message that earns no
tag stays in C{new/}. Past 26 tags in one folder an arriving tag is dropped with a warning,
and setting one through the API raises L{TagLimit}.
"""

from __future__ import annotations

import os
from collections.abc import Collection
from typing import TYPE_CHECKING

import attrs
from twisted.logger import Logger

from mailsink.index.codec import (
    SEARCH_COLUMNS,
    Changes,
    Loc,
    Parsed,
    facts_to_json,
    search_values,
    split_name,
)
from mailsink.message.search import TAG_SEPARATOR, like_pattern
from mailsink.message.shapes import Facts, Summary
from mailsink.tags.keywords import (
    KeywordFile,
    TagLimit,
    keyword_file,
    keyword_letters,
    with_keyword_letters,
)
from mailsink.tags.names import unique_tags

if TYPE_CHECKING:
    from mailsink.index.db import IndexStore

__all__ = ["TagLimit", "delete_plan", "file_tags", "finish_plan", "rename_plan", "retag_ids",
           "set_tags", "tag_counts"]

log = Logger()


def keywords(store: IndexStore, mailbox: str) -> KeywordFile:
    """The keyword file of C{mailbox}'s folder."""
    return keyword_file(store.folders.folder(mailbox))


def file_tags(store: IndexStore, loc: Loc) -> tuple[str, ...]:
    """The tags C{loc}'s file name carries."""
    return keywords(store, loc[0]).tags_of(loc[2])


def tagged_on_arrival(store: IndexStore, item: Parsed) -> Parsed:
    """
    C{item} with its tags: a new file (C{new/}, no info) gets its X-Tags and rule tags
    written as keywords (moved to C{cur/}); any other file's tags are its letters.
    """
    mailbox, subdir, filename = item.loc
    if subdir != "new" or ":" in filename:
        return attrs.evolve(item, facts=attrs.evolve(item.facts,
                                                     tags=file_tags(store, item.loc)))
    if not item.facts.tags and not store.tag_rules.rules:
        return item  # nothing to tag (most mail): no copies made
    wanted = unique_tags((*item.facts.tags, *store.tag_rules.tags_for(
        Summary("", mailbox, False, 0.0, item.size, item.facts))))
    if not wanted:
        return attrs.evolve(item, facts=attrs.evolve(item.facts, tags=()))
    folder = keywords(store, mailbox)
    try:
        letters, missing = folder.letters_for(wanted)
    except OSError as error:
        log.warn("cannot write {path}: {error}; {file} keeps no tags", path=folder.path,
                 error=str(error), file=filename)
        return attrs.evolve(item, facts=attrs.evolve(item.facts, tags=()))
    if missing:
        log.warn("no keyword letter left in {path} for tags {tags} of {file}; they are "
                 "not kept (26 at most a Maildir)", path=folder.path, tags=missing,
                 file=filename)
    if not letters:
        return attrs.evolve(item, facts=attrs.evolve(item.facts, tags=()))
    target = (mailbox, "cur", with_keyword_letters(filename, letters))
    try:
        os.rename(store.folders.path(item.loc), store.folders.path(target))
    except OSError as error:
        log.warn("cannot tag {path}: {error}", path=store.folders.path(item.loc),
                 error=str(error))
        return attrs.evolve(item, facts=attrs.evolve(item.facts, tags=()))
    store.folders.forget_file(item.loc)
    return attrs.evolve(item, loc=target,
                        facts=attrs.evolve(item.facts, tags=folder.tags_of(target[2])))


def refresh_tags(store: IndexStore, summary: Summary, loc: Loc) -> Summary:
    """C{summary} with the tags of its file at C{loc}, its row updated if they changed."""
    tags = file_tags(store, loc)
    if tags == summary.facts.tags:
        return summary
    facts = attrs.evolve(summary.facts, tags=tags)
    _store_facts(store, summary.id, facts)
    return attrs.evolve(summary, facts=facts)


def _store_facts(store: IndexStore, mid: str, facts: Facts) -> None:
    tags_lc = search_values(facts)[SEARCH_COLUMNS.index("tags_lc")]
    store.conn.execute("UPDATE messages SET tags_lc = ?, facts = ? WHERE id = ?",
                       (tags_lc, facts_to_json(facts), mid))


def set_tags(store: IndexStore, ids: list[str], tags: list[str]) -> Changes:
    """
    Give each message exactly C{tags} (none: clear) by renaming its file. Raises
    L{TagLimit}, changing nothing, when a folder has no letter left for a new tag.
    """
    changes = Changes()
    locs = {mid: loc for mid in ids if (loc := store._scoped_loc(mid, None)) is not None}
    letters: dict[str, str] = {}
    for mailbox in sorted({loc[0] for loc in locs.values()}):
        folder = keywords(store, mailbox)
        _, missing = folder.letters_for(tags, create=False)
        free = 26 - len(folder.names())
        if len(missing) > free:
            raise TagLimit(missing[free:])
        letters[mailbox], missing = folder.letters_for(tags)
        if missing:  # another thread (IMAP) took the last letters meanwhile
            raise TagLimit(missing)
    for mid, loc in locs.items():
        _retag(store, mid, loc, letters[loc[0]], changes)
    store.conn.commit()
    changes.flush()
    return changes


Plan = list[tuple[str, str, str | None, list[str]]]
"""Per folder: (mailbox, the tag's letter, what to do, the IDs carrying it): C{None} when
its C{dovecot-keywords} line was renamed (rows to refresh), C{""} to take the letter off,
else the letter to move the messages to."""


def rename_plan(store: IndexStore, old: str, new: str,
                mailboxes: Collection[str] | None) -> Plan:
    """
    Start renaming C{old} to C{new} in every folder (of C{mailboxes}) naming it: its line
    in C{dovecot-keywords} is renamed here when C{new} is not there yet (files keep their
    letter), else the messages are to move to C{new}'s letter (the two tags merge).
    """
    plan: Plan = []
    for mailbox in _mailboxes(store, mailboxes):
        folder = keywords(store, mailbox)
        letter = folder.letter_of(old)
        if letter is None:
            continue
        target = folder.letter_of(new)
        ids = [mid for mid, _ in _carrying(store, mailbox, old)]
        if target is None or target == letter:
            folder.rename(letter, new)
            plan.append((mailbox, letter, None, ids))
        else:
            plan.append((mailbox, letter, target, ids))
    return plan


def delete_plan(store: IndexStore, tag: str, mailboxes: Collection[str] | None) -> Plan:
    """Start deleting C{tag}: the folders (of C{mailboxes}) naming it, and their carriers."""
    plan: Plan = []
    for mailbox in _mailboxes(store, mailboxes):
        letter = keywords(store, mailbox).letter_of(tag)
        if letter is not None:
            plan.append((mailbox, letter, "", [mid for mid, _ in _carrying(store, mailbox, tag)]))
    return plan


def retag_ids(store: IndexStore, ids: list[str], letter: str, target: str | None) -> Changes:
    """
    One chunk of a plan: refresh the rows (C{target} None), or rename the files to carry
    C{target} instead of C{letter} (C{""}: nothing instead).
    """
    changes = Changes()
    for mid in ids:
        loc = store._scoped_loc(mid, None)
        if loc is None:
            continue
        if target is None:
            summary = store._summary(mid)
            if summary is not None:
                changes.events.append(("update", refresh_tags(store, summary, loc)))
        else:
            _retag(store, mid, loc, _swapped(loc, letter, target), changes)
    store.conn.commit()
    changes.flush()
    return changes


def finish_plan(store: IndexStore, mailbox: str, tag: str, letter: str,
                target: str) -> Changes:
    """
    End a delete or merge in one call: messages that got the letter meanwhile (new mail)
    move too, then the letter is freed, unless a file could not be renamed.
    """
    changes = Changes()
    for mid, loc in _carrying(store, mailbox, tag):
        _retag(store, mid, loc, _swapped(loc, letter, target), changes)
    store.conn.commit()
    changes.flush()
    folder = keywords(store, mailbox)
    if _carrying(store, mailbox, tag):
        log.warn("some messages still carry {tag} (see above); {path} keeps its letter",
                 tag=tag, path=folder.path)
    elif folder.letter_of(tag) == letter:
        folder.forget(letter)
    return changes


def _swapped(loc: Loc, letter: str, target: str) -> str:
    return "".join(sorted(set(keyword_letters(loc[2])) - {letter} | set(target)))


def tag_counts(store: IndexStore, mailboxes: Collection[str] | None) -> dict[str, int]:
    """Tag name -> messages carrying it (in C{mailboxes}; None: all), by name."""
    counts: dict[str, int] = {}
    spelled: dict[str, str] = {}
    rows = store.conn.execute("SELECT tags_lc, mailbox, count(*) FROM messages "
                              "WHERE tags_lc != '' GROUP BY tags_lc, mailbox")
    for tags_lc, mailbox, count in rows:
        if mailboxes is not None and mailbox not in mailboxes:
            continue
        for lower in tags_lc.strip(TAG_SEPARATOR).split(TAG_SEPARATOR):
            counts[lower] = counts.get(lower, 0) + count
            if lower not in spelled:
                spelled.update((name.lower(), name) for name in
                               keywords(store, mailbox).names().values()
                               if name.lower() not in spelled)
    return dict(sorted(((spelled.get(lower, lower), count) for lower, count in counts.items()),
                       key=lambda item: item[0].lower()))


def _mailboxes(store: IndexStore, mailboxes: Collection[str] | None) -> list[str]:
    known = set(store.folders.mailboxes) | {""}
    return sorted(known if mailboxes is None else known & set(mailboxes))


def _carrying(store: IndexStore, mailbox: str, tag: str) -> list[tuple[str, Loc]]:
    """(ID, place) of the indexed messages of C{mailbox} tagged C{tag}."""
    rows = store.conn.execute(
        "SELECT id, mailbox, subdir, filename FROM messages WHERE mailbox = ? AND "
        "tags_lc LIKE ? ESCAPE '\\'",
        (mailbox, like_pattern(f"{TAG_SEPARATOR}{tag.lower()}{TAG_SEPARATOR}")))
    return [(row[0], (row[1], row[2], row[3])) for row in rows]


def _retag(store: IndexStore, mid: str, loc: Loc, letters: str, changes: Changes) -> None:
    """Rename C{mid}'s file (found again if it moved) to carry exactly C{letters}."""
    for _attempt in range(2):
        if keyword_letters(loc[2]) == letters and (loc[1] == "cur" or not letters):
            return
        target = (loc[0], "cur", with_keyword_letters(loc[2], letters))
        try:
            os.rename(store.folders.path(loc), store.folders.path(target))
        except FileNotFoundError:
            found = store.folders.locate(loc[0], split_name(loc[2])[0])
            if found is None:
                store._gone(mid, loc, changes)
                return
            store._move(mid, found, changes)
            loc = found
            continue
        except OSError as error:
            log.warn("cannot tag {path}: {error}", path=store.folders.path(loc),
                     error=str(error))
            return
        store._move(mid, target, changes)
        return
