"""
Dovecot's Maildir keywords: letters C{a}-C{z} in a file name's info part (after C{:2,};
capitals are the standard flags), named by the C{dovecot-keywords} file of the Maildir
folder, one C{N name} line each, C{N} 0-25 standing for C{chr(97 + N)}.

So mutt, Dovecot and IMAP clients see the same keywords as the web view. A folder holds at
most 26 names: L{KeywordFile.letters_for} reports the names that found no letter.

The file is read again whenever its size or mtime changed, and written whole (a temporary
file renamed over it). L{keyword_file} gives one L{KeywordFile} per folder and process, so
the index thread and IMAP's worker threads share its lock.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterable, Mapping

from twisted.logger import Logger

log = Logger()

FILE_NAME = "dovecot-keywords"
LETTERS = "abcdefghijklmnopqrstuvwxyz"


def parse_keywords(text: str) -> dict[str, str]:
    """Letter -> name from the file's text; malformed lines are skipped."""
    found: dict[str, str] = {}
    for line in text.splitlines():
        number, _, name = line.partition(" ")
        if number.isdigit() and int(number) < len(LETTERS) and name.strip():
            found[LETTERS[int(number)]] = name.strip()
    return found


def format_keywords(names: Mapping[str, str]) -> str:
    """The file's text for letter -> name."""
    return "".join(f"{LETTERS.index(letter)} {names[letter]}\n" for letter in sorted(names))


def keyword_letters(filename: str) -> str:
    """The keyword letters of a Maildir file name (C{"X:2,Sab"} gives C{"ab"})."""
    info = filename.partition(":2,")[2]
    return "".join(sorted({c for c in info if c in LETTERS}))


def with_keyword_letters(filename: str, letters: Iterable[str]) -> str:
    """C{filename} with exactly C{letters} as its keywords, its other flags kept, sorted."""
    base, _, info = filename.partition(":2,")
    kept = {c for c in info if c not in LETTERS} | set(letters)
    return f"{base}:2,{''.join(sorted(kept))}"


class TagLimit(Exception):
    """A Maildir folder has no keyword letter left for these tags."""

    def __init__(self, tags: Iterable[str]) -> None:
        self.tags = tuple(tags)
        super().__init__(f"a Maildir holds at most {len(LETTERS)} tags (Dovecot's keyword "
                         f"letters a-z); no letter is left for: {', '.join(self.tags)}; "
                         "delete or rename a tag first")


class KeywordFile:
    """The C{dovecot-keywords} file of one Maildir folder; safe to use from any thread."""

    def __init__(self, folder: str) -> None:
        self.path = os.path.join(folder, FILE_NAME)
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._names: dict[str, str] = {}

    def names(self) -> dict[str, str]:
        """Letter -> name, as the file says now."""
        with self._lock:
            return dict(self._load())

    def tags_of(self, filename: str) -> tuple[str, ...]:
        """The tag names a file name carries, by name (letters the file names not are left out)."""
        letters = keyword_letters(filename)
        if not letters:
            return ()
        names = self.names()
        return tuple(sorted((names[c] for c in letters if c in names), key=str.lower))

    def letters_for(self, tags: Iterable[str], create: bool = True) -> tuple[str, list[str]]:
        """
        The letters of C{tags} (names compared case-insensitively), new names given free
        letters when C{create}; and the tags left without one (the folder is full).
        """
        with self._lock:
            names = dict(self._load())
            by_name = {name.lower(): letter for letter, name in names.items()}
            letters: set[str] = set()
            missing: list[str] = []
            for tag in tags:
                letter = by_name.get(tag.lower())
                if letter is None and create:
                    free = [c for c in LETTERS if c not in names]
                    if free:
                        letter = free[0]
                        names[letter] = tag
                        by_name[tag.lower()] = letter
                if letter is None:
                    missing.append(tag)
                else:
                    letters.add(letter)
            if names != self._names:
                self._write(names)
            return "".join(sorted(letters)), missing

    def letter_of(self, tag: str) -> str | None:
        """The letter of C{tag} (case-insensitively), if the folder names it."""
        with self._lock:
            for letter, name in self._load().items():
                if name.lower() == tag.lower():
                    return letter
        return None

    def rename(self, letter: str, name: str) -> None:
        """Give C{letter} a new name."""
        with self._lock:
            names = dict(self._load())
            names[letter] = name
            self._write(names)

    def forget(self, letter: str) -> None:
        """Free C{letter} (no message of the folder should carry it any more)."""
        with self._lock:
            names = dict(self._load())
            if names.pop(letter, None) is not None:
                self._write(names)

    def _load(self) -> dict[str, str]:
        try:
            info = os.stat(self.path)
        except FileNotFoundError:
            self._stamp, self._names = None, {}
            return self._names
        stamp = (info.st_size, info.st_mtime_ns)
        if stamp != self._stamp:
            try:
                with open(self.path, encoding="utf-8", errors="replace") as stream:
                    self._names = parse_keywords(stream.read())
            except OSError as error:
                log.warn("cannot read {path}: {error}", path=self.path, error=str(error))
                return self._names
            self._stamp = stamp
        return self._names

    def _write(self, names: dict[str, str]) -> None:
        temporary = f"{self.path}.{os.getpid()}.{threading.get_ident()}.tmp"
        try:
            with open(temporary, "w", encoding="utf-8") as stream:
                stream.write(format_keywords(names))
                stream.flush()
                os.fsync(stream.fileno())
            os.replace(temporary, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise
        self._names = names
        info = os.stat(self.path)
        self._stamp = (info.st_size, info.st_mtime_ns)


_files: dict[str, KeywordFile] = {}
_files_lock = threading.Lock()


def keyword_file(folder: str) -> KeywordFile:
    """The one L{KeywordFile} of this process for the Maildir folder C{folder}."""
    key = os.path.abspath(folder)
    with _files_lock:
        found = _files.get(key)
        if found is None:
            found = _files[key] = KeywordFile(key)
        return found
