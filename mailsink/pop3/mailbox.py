"""
A Maildir seen by one POP3 session: a snapshot taken at login, as
L{twisted.mail.pop3.IMailbox}.

- Messages are those of C{new/} and C{cur/}, oldest first (by the delivery time in the
  Maildir unique name, else the file's modification time).
- Sizes are POP3 sizes: the message as it crosses the wire, with CRLF line ends (the files
  use LF), before byte-stuffing. Computing them reads each file once; the result is cached
  per unique name and file size (Maildir messages never change).
- The UIDL is the Maildir unique name (the part before C{:2,flags}) when it is 1-70
  printable characters, else C{~} and its SHA-256: stable across restarts and renames.
- DELE only marks; L{commit} (at QUIT, the UPDATE state) unlinks the marked files, and a
  file already gone is fine. RETR sets the Maildir C{S} flag (C{new/X} becomes
  C{cur/X:2,S}): one truth for read state with the web view and IMAP.
- All file work (listing, reading, renaming, unlinking) runs through C{run_blocking}, off
  the reactor thread. A message is read whole into memory for RETR/TOP, so memory per
  session is bounded by the largest message (C{[mailsink] max_message_size}).
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
from typing import Any

import attrs
from twisted.internet.defer import Deferred
from twisted.mail.pop3 import IMailbox
from zope.interface import implementer

from mailsink.threads import RunBlocking

_DELIVERY_TIME = re.compile(r"(\d+)\.M(\d+)")
_UID_CHARS = re.compile(r"[\x21-\x7e]{1,70}")
_CHUNK = 1024 * 1024
_SIZE_CACHE_LIMIT = 100_000
_size_cache: dict[tuple[str, int], int] = {}
_size_lock = threading.Lock()


class MessageGone(Exception):
    """The message's file was removed (by another session, the web view, IMAP)."""


def base_name(filename: str) -> str:
    """The Maildir unique name: the file name without C{:2,flags}."""
    return filename.split(":", 1)[0]


def uidl_for(name: str) -> str:
    """A POP3 unique-id (1-70 chars 0x21-0x7E) for the unique name C{name}."""
    if _UID_CHARS.fullmatch(name) and not name.startswith("~"):
        return name
    return "~" + hashlib.sha256(name.encode("utf-8", "surrogateescape")).hexdigest()


def to_wire(data: bytes) -> bytes:
    """The message with CRLF line ends, ending in CRLF (not yet byte-stuffed)."""
    wire = data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    if wire and not wire.endswith(b"\r\n"):
        wire += b"\r\n"
    return wire


def dot_stuff(wire: bytes) -> bytes:
    """RFC 1939 byte-stuffing: a line that begins with C{.} gets another one."""
    return re.sub(rb"(?m)^\.", b"..", wire)


def top_of(data: bytes, lines: int) -> bytes:
    """The header, the blank line and the first C{lines} body lines (LF form)."""
    text = data.replace(b"\r\n", b"\n")
    if text.startswith(b"\n"):
        head, sep, body = b"", b"\n", text[1:]
    else:
        head, found, body = text.partition(b"\n\n")
        if not found:
            return text
        head, sep = head + b"\n", b"\n"
    pieces = body.split(b"\n")
    if body.endswith(b"\n"):
        pieces.pop()
    return head + sep + b"".join(piece + b"\n" for piece in pieces[:lines])


def _wire_size(path: str, name: str, file_size: int) -> int:
    key = (name, file_size)
    with _size_lock:
        cached = _size_cache.get(key)
    if cached is not None:
        return cached
    size = 0
    last = b""
    with open(path, "rb") as stream:
        while chunk := stream.read(_CHUNK):
            # Each LF becomes CRLF unless a CR is there already.
            size += len(chunk) + chunk.count(b"\n") - chunk.count(b"\r\n")
            if last == b"\r" and chunk.startswith(b"\n"):
                size -= 1
            last = chunk[-1:]
    if size and last != b"\n":
        size += 2
    with _size_lock:
        if len(_size_cache) >= _SIZE_CACHE_LIMIT:
            _size_cache.clear()
        _size_cache[key] = size
    return size


@attrs.define
class Message:
    """One message of the snapshot."""

    name: str
    """The Maildir unique name (no flags)."""
    path: str
    """Where the file was last seen."""
    size: int
    """POP3 size (CRLF line ends)."""
    uidl: str
    deleted: bool = False


def _scan(root: str) -> list[Message]:
    """Blocking: the messages of C{root}'s C{new/} and C{cur/}, oldest first."""
    found: list[tuple[tuple[int, int, str], Message]] = []
    for sub in ("new", "cur"):
        try:
            entries = list(os.scandir(os.path.join(root, sub)))
        except FileNotFoundError:
            continue
        for entry in entries:
            if entry.name.startswith("."):
                continue
            try:
                stat = entry.stat(follow_symlinks=False)
                if not entry.is_file(follow_symlinks=False):
                    continue
                name = base_name(entry.name)
                size = _wire_size(entry.path, name, stat.st_size)
            except FileNotFoundError:
                continue
            match = _DELIVERY_TIME.match(name)
            key = ((int(match.group(1)), int(match.group(2)), name) if match
                   else (int(stat.st_mtime), 0, name))
            found.append((key, Message(name, entry.path, size, uidl_for(name))))
    found.sort(key=lambda pair: pair[0])
    return [message for _, message in found]


def _locate(root: str, message: Message) -> str:
    """Blocking: where C{message}'s file is now (it may have moved to C{cur/})."""
    if os.path.exists(message.path):
        return message.path
    for sub in ("cur", "new"):
        folder = os.path.join(root, sub)
        try:
            names = os.listdir(folder)
        except FileNotFoundError:
            continue
        for filename in names:
            if base_name(filename) == message.name:
                message.path = os.path.join(folder, filename)
                return message.path
    raise MessageGone(message.name)


def _mark_seen(root: str, message: Message) -> None:
    """Blocking: add the Maildir C{S} flag (C{new/X} becomes C{cur/X:2,S})."""
    filename = os.path.basename(message.path)
    _, colon, info = filename.partition(":")
    flags = info[2:] if colon and info.startswith("2,") else ""
    if "S" in flags and os.path.basename(os.path.dirname(message.path)) == "cur":
        return
    new_flags = "".join(sorted(set(flags) | {"S"}))
    target = os.path.join(root, "cur", f"{message.name}:2,{new_flags}")
    try:
        os.rename(message.path, target)
    except FileNotFoundError:
        return
    message.path = target


@implementer(IMailbox)
class MaildirMailbox:
    """A POP3 session's view of one Maildir (see the module docstring)."""

    def __init__(self, path: str, user: str, run_blocking: RunBlocking) -> None:
        self.path = path
        self.user = user
        self._run_blocking = run_blocking
        self.messages: list[Message] = []
        self.loaded = False

    # Asynchronous work for the protocol.

    def load(self) -> Deferred[None]:
        """Take the snapshot (at login: RFC 1939 acquires the maildrop then)."""
        def loaded(messages: list[Message]) -> None:
            self.messages = messages
            self.loaded = True
        return self._run_blocking(lambda: _scan(self.path)).addCallback(loaded)

    def retrieve(self, index: int, lines: int | None = None) -> Deferred[bytes]:
        """
        The message (or with C{lines}, its top) in wire form, byte-stuffed; RETR (not TOP)
        marks it seen. Fails with L{MessageGone} if its file was removed meanwhile.
        """
        message = self._message(index)

        def read() -> bytes:
            path = _locate(self.path, message)
            try:
                with open(path, "rb") as stream:
                    data = stream.read()
            except FileNotFoundError:
                raise MessageGone(message.name) from None
            if lines is None:
                _mark_seen(self.path, message)
                return dot_stuff(to_wire(data))
            return dot_stuff(to_wire(top_of(data, lines)))

        return self._run_blocking(read)

    def commit(self) -> Deferred[list[str]]:
        """The UPDATE state: unlink every marked file; fires with those that could not be."""
        marked = [message for message in self.messages if message.deleted]

        def remove() -> list[str]:
            failed = []
            for message in marked:
                try:
                    os.unlink(_locate(self.path, message))
                except (FileNotFoundError, MessageGone):
                    continue
                except OSError:
                    failed.append(message.name)
            return failed

        return self._run_blocking(remove)

    # twisted.mail.pop3.IMailbox (0-based indexes; ValueError for a bad one).

    def _message(self, index: int) -> Message:
        if not 0 <= index < len(self.messages):
            raise ValueError(f"no message {index + 1}")
        return self.messages[index]

    def listMessages(self, i: int | None = None) -> Any:
        if i is None:
            return [0 if m.deleted else m.size for m in self.messages]
        message = self._message(i)
        return 0 if message.deleted else message.size

    def getMessage(self, index: int) -> Any:
        raise NotImplementedError("use retrieve(): reading a file blocks")

    def getUidl(self, index: int) -> bytes:
        return self._message(index).uidl.encode("ascii")

    def deleteMessage(self, index: int) -> None:
        self._message(index).deleted = True

    def undeleteMessages(self) -> None:
        for message in self.messages:
            message.deleted = False

    def sync(self) -> Deferred[list[str]]:
        return self.commit()

    def logout(self) -> None:
        """Leaving without QUIT (or after it) changes nothing more on disk."""
        self.messages = []
