"""
The store as C{mailsink ls} and C{mailsink show} see it from a terminal: the Maildir read
directly (the daemon need not run), with the same message IDs as the web view and the API,
so an ID copied from one works in the other.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

from mailsink.index.codec import message_id, received_at, split_name
from mailsink.message import mime

HEAD_LIMIT = 256 * 1024
"""Bytes read of each message to learn its sender and subject."""
SUBDIRS = ("new", "cur")


@dataclass(frozen=True)
class Listed:
    """One message as C{mailsink ls} prints it."""

    id: str
    mailbox: str
    """"" for the shared Maildir, else the folder: a per-user one or a C{[mailbox:NAME]}."""
    received: float
    read: bool
    sender: str
    subject: str
    path: str


def mailboxes(root: str) -> list[str]:
    """The shared Maildir (C{""}) and every Maildir folder under it (per-user, rules')."""
    found = [""]
    try:
        names = sorted(os.listdir(root))
    except OSError:
        return found
    for name in names:
        folder = os.path.join(root, name)
        if name.startswith(".") or name in ("cur", "new", "tmp"):
            continue
        if all(os.path.isdir(os.path.join(folder, sub)) for sub in ("cur", "new", "tmp")):
            found.append(name)
    return found


def _files(root: str, only: str | None = None) -> Iterator[tuple[str, str, str]]:
    """(mailbox, file name, path) of every message file (of mailbox C{only} if given)."""
    for mailbox in mailboxes(root) if only is None else [only]:
        for sub in SUBDIRS:
            folder = os.path.join(root, mailbox, sub)
            try:
                names = os.listdir(folder)
            except OSError:
                continue
            for name in names:
                if not name.startswith("."):
                    yield mailbox, name, os.path.join(folder, name)


def listing(root: str, only: str | None = None) -> list[Listed]:
    """
    Every message under C{root} (or in mailbox C{only}, C{""} the shared Maildir), newest
    first; files vanishing meanwhile are skipped.
    """
    found = []
    for mailbox, name, path in _files(root, only):
        try:
            with open(path, "rb") as stream:
                mtime = os.fstat(stream.fileno()).st_mtime
                head = stream.read(HEAD_LIMIT)
        except OSError:
            continue
        base, flags = split_name(name)
        facts = mime.facts(head)
        sender = facts.sender.address if facts.sender else ""
        found.append(Listed(message_id(base), mailbox, received_at(base, mtime), "S" in flags,
                            printable(sender), printable(facts.subject), path))
    found.sort(key=lambda item: (item.received, item.id), reverse=True)
    return found


def printable(text: str) -> str:
    """
    Text for one terminal line: control and other unprintable characters (a line break or
    an escape sequence decoded from a subject) become spaces, runs of spaces one.
    """
    return " ".join("".join(char if char.isprintable() else " " for char in text).split())


def find(root: str, wanted: str) -> str | None:
    """The path of message C{wanted} (an ID as C{ls}, the web view and the API give it)."""
    for _, name, path in _files(root):
        if message_id(split_name(name)[0]) == wanted:
            return path
    return None
