"""
inotify for the index, where the platform has it: file events in each mailbox's C{new/}
and C{cur/}, and folder events in the Maildir root (a new per-user folder). Without
inotify (or if it fails) nothing is reported and the index's periodic rescan does the work.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from twisted.logger import Logger
from twisted.python.filepath import FilePath

from mailsink.index.codec import SUBDIRS, Loc

log = Logger()

try:
    from twisted.internet import inotify
except ImportError:  # pragma: no cover (not Linux)
    inotify = None  # type: ignore[assignment]


class Watcher:
    """Reports C{file_event(loc, gone)} and C{folder_event()} on the reactor thread."""

    def __init__(self, reactor: Any, root: str, file_event: Callable[[Loc, bool], None],
                 folder_event: Callable[[], None]) -> None:
        self._reactor = reactor
        self._root = root
        self._file_event = file_event
        self._folder_event = folder_event
        self._notifier: Any = None
        self._watched: set[str] = set()
        self._broken = False

    def start(self) -> None:
        """Begin watching the root (mailboxes follow with L{watch})."""
        if inotify is None or self._broken:
            return
        try:
            self._notifier = inotify.INotify(self._reactor)
            self._notifier.startReading()
            self._watched = set()
            mask = (inotify.IN_CREATE | inotify.IN_MOVED_TO | inotify.IN_DELETE
                    | inotify.IN_MOVED_FROM | inotify.IN_ONLYDIR)
            self._notifier.watch(FilePath(self._root), mask=mask,
                                 callbacks=[self._root_changed])
        except Exception as error:
            log.info("no inotify ({error}); the index rescans every few seconds",
                     error=str(error))
            self._broken = True
            self.stop()

    def stop(self) -> None:
        if self._notifier is not None:
            self._notifier.loseConnection()
            self._notifier = None

    def watch(self, mailboxes: list[str]) -> None:
        """Watch these mailboxes' C{new/} and C{cur/} too (idempotent)."""
        if self._notifier is not None and (not self._notifier.connected
                                           or self._notifier.disconnecting):
            # Twisted drops the whole notifier when a watched directory is deleted.
            self._notifier = None
            self.start()
        if self._notifier is None:
            return
        mask = (inotify.IN_CREATE | inotify.IN_CLOSE_WRITE | inotify.IN_MOVED_TO
                | inotify.IN_MOVED_FROM | inotify.IN_DELETE)
        for mailbox in mailboxes:
            if mailbox in self._watched:
                continue
            self._watched.add(mailbox)
            for subdir in SUBDIRS:
                path = os.path.join(self._root, mailbox, subdir)
                try:
                    self._notifier.watch(FilePath(path), mask=mask,
                                         callbacks=[self._files_changed(mailbox, subdir)])
                except Exception as error:
                    log.debug("cannot watch {path}: {error}", path=path, error=str(error))

    def _files_changed(self, mailbox: str, subdir: str) -> Callable[[Any, Any, int], None]:
        def changed(_: Any, path: FilePath[Any], mask: int) -> None:
            if mask & inotify.IN_ISDIR:
                return
            name = os.fsdecode(path.basename())
            if name.startswith(".") or "/" in name:
                return
            gone = bool(mask & (inotify.IN_DELETE | inotify.IN_MOVED_FROM))
            if gone or mask & (inotify.IN_CREATE | inotify.IN_CLOSE_WRITE | inotify.IN_MOVED_TO):
                self._file_event((mailbox, subdir, name), gone)
        return changed

    def _root_changed(self, _: Any, path: FilePath[Any], mask: int) -> None:
        if mask & inotify.IN_ISDIR:
            self._folder_event()
