"""
The store: a standard Maildir (C{cur/ new/ tmp/}) written durably.

A message is streamed to C{tmp/}, fsynced, renamed into C{new/}, and C{new/} itself is
fsynced before the returned L{Deferred} fires: only then may SMTP say 250. Deliveries
share that last fsync (group commit, coordinated on the reactor thread). All file work
runs in a thread pool given by the caller (C{run_blocking}), never on the reactor thread.
The store knows nothing of SMTP; trace headers are the caller's bytes like any others.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import socket
import time
from collections.abc import Callable
from typing import Any, TypeVar

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from twisted.python.failure import Failure

from mailsink.threads import RunBlocking

log = Logger()

T = TypeVar("T")

FLUSH_THRESHOLD = 256 * 1024
"""Buffered bytes that start a write to C{tmp/}; smaller messages are written once, whole."""
PAUSE_THRESHOLD = 4 * 1024 * 1024
"""Buffered bytes at which the sending connection is paused until the disk catches up."""
STALE_TMP_AGE = 36 * 3600
"""Seconds after which any C{tmp/} file is abandoned, whoever wrote it (the Maildir spec)."""

_TMP_NAME = re.compile(r"\d+\.M\d+P(?P<pid>\d+)Q\d+(?:R[0-9a-f]+)?\.(?P<host>.+)")
_counter = itertools.count(1)
_OWN_NAMES: dict[int, re.Pattern[str]] = {}


def delivered_here(filename: str) -> bool:
    """
    Whether a file name is a delivery by this very process: a L{Maildir.unique_name} of
    this pid and host, or a copy of one into another mailbox (C{SECS.LEFT-MAILBOX.HOST}).
    """
    pid = os.getpid()
    pattern = _OWN_NAMES.get(pid)
    if pattern is None:
        pattern = re.compile(rf"\d+\.M\d+P{pid}Q\d+(?:-[^:/]+)?\.{re.escape(maildir_hostname())}")
        _OWN_NAMES.clear()  # a fork (twistd daemonising) has a new pid
        _OWN_NAMES[pid] = pattern
    return pattern.fullmatch(filename) is not None


class StoreError(Exception):
    """The message could not be stored; nothing of it was kept."""


def maildir_hostname() -> str:
    """This host's name as Maildir file names spell it (C{/} and C{:} escaped)."""
    return socket.gethostname().replace("/", r"\057").replace(":", r"\072")


class Maildir:
    """One Maildir folder, created if missing, written with L{IncomingMessage}."""

    def __init__(self, path: str, run_blocking: RunBlocking,
                 delivered: Callable[[str], None] | None = None) -> None:
        self.path = path
        self._run_blocking = run_blocking
        self.delivered = delivered
        """Told the path of each message once it is durably in C{new/} (reactor thread)."""
        self._host = maildir_hostname()
        self._new_sync = _GroupSync(lambda: self.fsync_new(), run_blocking)

    def create(self) -> None:
        """Make C{cur/ new/ tmp/} (mode 0700) if missing; blocking, for start-up."""
        for sub in ("cur", "new", "tmp"):
            os.makedirs(os.path.join(self.path, sub), mode=0o700, exist_ok=True)

    def remove_stale_tmp(self, now: float | None = None) -> list[str]:
        """
        Delete C{tmp/} files left by dead processes of this host, or older than 36 hours
        (other hosts sharing the Maildir may be writing theirs). Blocking, for start-up.
        """
        now = time.time() if now is None else now
        tmp = os.path.join(self.path, "tmp")
        removed = []
        for entry in os.scandir(tmp):
            try:
                stale = (now - entry.stat(follow_symlinks=False).st_mtime > STALE_TMP_AGE
                         or self._written_by_dead_process(entry.name))
                if stale:
                    os.unlink(entry.path)
                    removed.append(entry.name)
            except FileNotFoundError:
                continue
        return removed

    def _written_by_dead_process(self, name: str) -> bool:
        match = _TMP_NAME.fullmatch(name)
        if match is None or match.group("host") != self._host:
            return False
        pid = int(match.group("pid"))
        if pid == os.getpid():
            return True
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False

    def unique_name(self) -> str:
        """
        A Maildir-unique name: time, microseconds, pid, and this process's delivery
        counter (unique within the process, so no randomness is needed), then the host.
        """
        now = time.time()
        seconds = int(now)
        micros = int((now - seconds) * 1_000_000)
        return f"{seconds}.M{micros}P{os.getpid()}Q{next(_counter)}.{self._host}"

    def new_message(self, producer: IPushProducer | None = None) -> IncomingMessage:
        """Begin a message; C{producer} is paused while the disk is behind."""
        return IncomingMessage(self, self.unique_name(), producer)

    def run_blocking(self, work: Callable[[], T]) -> Deferred[T]:
        """Run C{work} off the reactor thread."""
        return self._run_blocking(work)

    def fsync_new(self) -> None:
        """Make renames into C{new/} durable now (blocking: a worker thread's call)."""
        fd = os.open(os.path.join(self.path, "new"), os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def new_synced(self) -> Deferred[None]:
        """Fires once an fsync of C{new/} that began after this call is done."""
        return self._new_sync.request()


class IncomingMessage:
    """
    One message being written: bytes in with L{write}, then L{finish} or L{abort}.

    Writes are buffered and handed to the thread pool one batch at a time, in order; a
    message that fits in L{FLUSH_THRESHOLD} costs a single trip to a worker thread.
    """

    def __init__(self, maildir: Maildir, name: str, producer: IPushProducer | None) -> None:
        self.name = name
        self.size = 0
        self._maildir = maildir
        self._producer = producer
        self._paused = False
        self._buffer: list[bytes] = []
        self._buffered = 0
        self._fd: int | None = None
        self._busy: Deferred[None] | None = None
        self._error: BaseException | None = None
        self._closed = False
        self._aborted = False
        self._tmp_path = os.path.join(maildir.path, "tmp", name)

    @property
    def failed(self) -> bool:
        """True once a write failed; the rest of the message is dropped."""
        return self._error is not None

    def write(self, data: bytes) -> None:
        """Append C{data} (called on the reactor thread)."""
        if self._closed or self._error is not None or not data:
            return
        self._buffer.append(data)
        self._buffered += len(data)
        self.size += len(data)
        if self._buffered >= FLUSH_THRESHOLD and self._busy is None:
            self._flush()
        if self._buffered >= PAUSE_THRESHOLD and self._producer and not self._paused:
            self._paused = True
            self._producer.pauseProducing()

    def finish(self) -> Deferred[str]:
        """Write the rest, fsync, rename into C{new/}, fsync C{new/}; fires with the name."""
        self._closed = True
        self._resume()
        done: Deferred[str] = Deferred()

        def complete(_: object = None) -> None:
            if self._error is not None:
                self._discard()
                done.errback(StoreError(str(self._error)))
                return
            chunks, self._buffer, self._buffered = self._buffer, [], 0
            commit = self._maildir.run_blocking(lambda: self._commit(chunks))
            commit.addCallback(lambda _: self._maildir.new_synced().addErrback(self._unrename))
            commit.addCallbacks(self._committed, self._failed_commit(done),
                                callbackArgs=(done,))

        self._after_busy(complete)
        return done

    def abort(self) -> None:
        """Drop the message: nothing of it stays in the Maildir. Idempotent."""
        if self._aborted:
            return
        self._aborted = True
        self._closed = True
        self._buffer, self._buffered = [], 0
        self._resume()
        self._after_busy(lambda _=None: self._discard())

    def _after_busy(self, then: Callable[..., None]) -> None:
        if self._busy is None:
            then()
        else:
            self._busy.addBoth(lambda _: then())

    def _flush(self) -> None:
        chunks, self._buffer, self._buffered = self._buffer, [], 0
        self._busy = self._maildir.run_blocking(lambda: self._append(chunks))
        self._busy.addCallbacks(self._flushed, self._flush_failed)

    def _flushed(self, _: object) -> None:
        self._busy = None
        if self._closed:
            return
        if self._buffered >= FLUSH_THRESHOLD:
            self._flush()
        else:
            self._resume()

    def _flush_failed(self, failure: Any) -> None:
        self._busy = None
        self._error = failure.value
        self._buffer, self._buffered = [], 0
        self._resume()

    def _resume(self) -> None:
        if self._paused and self._producer:
            self._paused = False
            self._producer.resumeProducing()

    def _unrename(self, failure: Failure) -> Deferred[None]:
        """C{new/} could not be synced: the file must not stay there unacknowledged."""
        final_path = os.path.join(self._maildir.path, "new", self.name)
        removed = self._maildir.run_blocking(lambda: unlink_quietly(final_path))
        return removed.addBoth(lambda _: failure)

    def _committed(self, _: object, done: Deferred[str]) -> None:
        if self._maildir.delivered is not None:
            self._maildir.delivered(os.path.join(self._maildir.path, "new", self.name))
        done.callback(self.name)

    def _failed_commit(self, done: Deferred[str]) -> Callable[[Any], None]:
        def failed(failure: Any) -> None:
            self._error = failure.value
            self._discard()
            done.errback(StoreError(str(failure.value)))
        return failed

    def _discard(self) -> None:
        self._maildir.run_blocking(self._remove_tmp).addErrback(
            lambda f: log.failure("cannot remove {path}", f, path=self._tmp_path))

    # Below: worker-thread code.

    def _append(self, chunks: list[bytes]) -> None:
        if self._fd is None:
            self._fd = os.open(self._tmp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL
                               | os.O_CLOEXEC, 0o600)
        _write_all(self._fd, chunks)

    def _commit(self, chunks: list[bytes]) -> None:
        self._append(chunks)
        fd, self._fd = self._fd, None
        assert fd is not None
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(self._tmp_path, os.path.join(self._maildir.path, "new", self.name))

    def _remove_tmp(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)
        unlink_quietly(self._tmp_path)


def _write_all(fd: int, chunks: list[bytes]) -> None:
    """C{writev} until everything is written (short writes happen near a full disk)."""
    pending = [memoryview(chunk) for chunk in chunks if chunk]
    while pending:
        written = os.writev(fd, pending[:1024])
        while written and pending:
            if written >= len(pending[0]):
                written -= len(pending.pop(0))
            else:
                pending[0] = pending[0][written:]
                written = 0


def unlink_quietly(path: str) -> None:
    """Remove a file that may be gone already."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


class _GroupSync:
    """
    Group commit for a directory's fsync, coordinated on the reactor thread: a request
    waits for the next fsync that starts after it; one runs at a time, in a worker thread,
    and serves everyone who asked while the previous one ran.
    """

    def __init__(self, fsync: Callable[[], None], run_blocking: RunBlocking) -> None:
        self._fsync = fsync
        self._run_blocking = run_blocking
        self._waiting: list[Deferred[None]] = []
        self._running = False

    def request(self) -> Deferred[None]:
        synced: Deferred[None] = Deferred()
        self._waiting.append(synced)
        if not self._running:
            self._start()
        return synced

    def _start(self) -> None:
        self._running = True
        batch, self._waiting = self._waiting, []
        maybeDeferred(self._run_blocking, self._fsync).addBoth(self._done, batch)

    def _done(self, result: object, batch: list[Deferred[None]]) -> None:
        self._running = False
        if self._waiting:
            self._start()
        for synced in batch:
            if isinstance(result, Failure):
                synced.errback(result)
            else:
                synced.callback(None)
