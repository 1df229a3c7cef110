"""
Who parses new message files for the index: a child process (L{ProcessParser}, the
daemon's choice), or a thread of this process (L{ThreadParser}: tests, and the fallback
whenever the child cannot be used). Both answer C{parse([(loc, path), ...])} with a
L{Batch}: called in the index's database thread, it gives the L{Parsed} files, vanished
ones skipped. (Decoding the child's answer costs interpreter time the reactor thread should
not spend, and the database thread stores the files next anyway.)
"""

from __future__ import annotations

import functools
import json
import os
import sys
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import ProcessDone, ProcessExitedAlready
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

import mailsink
from mailsink.index.codec import Loc, Parsed, facts_from_data
from mailsink.index.reading import FactsOf, read_facts

log = Logger()

Files = list[tuple[Loc, str]]
Batch = Callable[[], list[Parsed]]
"""The parsed files, when called (off the reactor thread; it never raises)."""

REQUEST_TIMEOUT = 60.0
"""Longest one batch may take in the child before it is killed and the batch parsed here."""
RESTARTS = 3
RESTART_WINDOW = 60.0
"""A child that dies this many times within this many seconds is not started again."""
STOP_TIMEOUT = 5.0
ERROR_LINE_LIMIT = 4096
"""Bytes kept of a stderr line still without its end."""


class Parser(Protocol):
    def start(self) -> None: ...

    def parse(self, files: Files) -> Deferred[Batch]: ...

    def stop(self) -> Deferred[None]: ...


class ThreadParser:
    """Parses in one thread of this process."""

    def __init__(self, reactor: Any, facts_of: FactsOf) -> None:
        self._reactor = reactor
        self.facts_of = facts_of
        self._pool = ThreadPool(1, 1, "mailsink-index-parse")

    def start(self) -> None:
        if not self._pool.started:
            self._pool.start()

    def parse(self, files: Files) -> Deferred[Batch]:
        self.start()
        parsed = deferToThreadPool(self._reactor, self._pool, read_facts, files,
                                   self.facts_of)
        return parsed.addCallback(lambda found: lambda: found)

    def stop(self) -> Deferred[None]:
        if self._pool.started:
            self._pool.stop()
        return succeed(None)


class ProcessParser:
    """
    Parses in a child process (L{mailsink.index.parse_worker}) that is started with the
    index and restarted if it dies; a batch the child cannot answer (it died, it took over
    L{REQUEST_TIMEOUT}, its answer made no sense) is parsed by C{fallback} instead, and so
    is everything once the child died L{RESTARTS} times within L{RESTART_WINDOW} seconds.
    """

    def __init__(self, reactor: Any, fallback: ThreadParser,
                 python: str = sys.executable) -> None:
        self._reactor = reactor
        self._fallback = fallback
        self._python = python
        self._child: _Child | None = None
        self._deaths: deque[float] = deque(maxlen=RESTARTS)
        self._given_up = False
        self._stopping = False

    def start(self) -> None:
        if self._child is not None or self._given_up or self._stopping:
            return
        child = _Child(self)
        package_parent = os.path.dirname(os.path.dirname(os.path.abspath(mailsink.__file__)))
        # -P: not the working directory on sys.path; mailsink's own place after the
        # standard library's. The child needs none of the daemon's secrets.
        code = (f"import sys; sys.path.append({package_parent!r}); "
                "from mailsink.index.parse_worker import main; main()")
        env = {key: value for key, value in os.environ.items()
               if not key.startswith(("MAILSINK_", "LISTEN_"))}
        try:
            self._reactor.spawnProcess(child, self._python, [self._python, "-P", "-c", code],
                                       env=env, childFDs={0: "w", 1: "r", 2: "r"})
        except Exception as error:  # no file descriptors or processes left, say
            self._died(f"could not start: {error}")
            return
        self._child = child

    def parse(self, files: Files) -> Deferred[Batch]:
        if not files:
            return succeed(list)
        self.start()
        if self._child is None:
            return self._fallback.parse(files)
        return self._child.ask(files)

    def stop(self) -> Deferred[None]:
        self._stopping = True
        if self._child is not None:  # what it leaves unanswered goes to the fallback first
            return self._child.finish().addCallback(lambda _: self._fallback.stop())
        return self._fallback.stop()

    # Called by the child's protocol.

    def _failed(self, files: Files, why: str) -> Deferred[Batch]:
        _parsing_here(files, why)
        return self._fallback.parse(files)

    def _ended(self, child: _Child, reason: Failure) -> None:
        if self._child is child:
            self._child = None
        if not self._stopping:
            self._died(f"ended ({reason.getErrorMessage()})")

    def _died(self, why: str) -> None:
        """Count a death; past L{RESTARTS} within L{RESTART_WINDOW}, parse here for good."""
        now = self._reactor.seconds()
        self._deaths.append(now)
        log.warn("index parse worker {why}", why=why)
        if len(self._deaths) == RESTARTS and now - self._deaths[0] < RESTART_WINDOW:
            self._given_up = True
            log.error("index parse worker died {count} times within {window:.0f}s; the "
                      "daemon parses new mail itself from now on", count=RESTARTS,
                      window=RESTART_WINDOW)


class _Child(ProcessProtocol):
    """One run of the worker: requests in order, one answer line each."""

    def __init__(self, owner: ProcessParser) -> None:
        self._owner = owner
        self._reactor = owner._reactor
        self._waiting: deque[tuple[Files, Deferred[Batch], IDelayedCall]] = deque()
        self._buffer = b""
        self._errors = b""
        self._ended: Deferred[None] = Deferred()
        self._over = False
        self._stop_timer: IDelayedCall | None = None

    def ask(self, files: Files) -> Deferred[Batch]:
        answered: Deferred[Batch] = Deferred()
        timer = self._reactor.callLater(REQUEST_TIMEOUT, self._kill,
                                        f"no answer within {REQUEST_TIMEOUT:g}s")
        self._waiting.append((files, answered, timer))
        request = json.dumps([path for _, path in files]).encode("ascii") + b"\n"
        assert self.transport is not None
        self.transport.write(request)
        return answered

    def finish(self) -> Deferred[None]:
        """End of input: the child answers what it was asked, then exits."""
        if not self._over:
            assert self.transport is not None
            self.transport.closeStdin()
            if self._stop_timer is None:
                self._stop_timer = self._reactor.callLater(STOP_TIMEOUT, self._kill,
                                                           "did not exit when stopped")
        return self._ended

    def outReceived(self, data: bytes) -> None:
        self._buffer += data
        while b"\n" in self._buffer and not self._over:
            line, self._buffer = self._buffer.split(b"\n", 1)
            if not self._waiting:
                self._kill("answered what nobody asked")
                return
            files, answered, timer = self._waiting.popleft()
            timer.cancel()
            answered.callback(functools.partial(self._decoded, files, line))

    def _decoded(self, files: Files, line: bytes) -> list[Parsed]:
        """The answer's files (in a worker thread); if it makes no sense, the files are
        parsed right here and the child is stopped."""
        try:
            return _decode(files, line)
        except (ValueError, TypeError, KeyError, IndexError, AttributeError) as error:
            why = f"unreadable answer ({error})"
        self._reactor.callFromThread(self._kill, why)
        _parsing_here(files, why)
        return read_facts(files, self._owner._fallback.facts_of)

    def errReceived(self, data: bytes) -> None:
        """Each whole line is a warning (a traceback arrives in pieces)."""
        lines = (self._errors + data).split(b"\n")
        self._errors = lines.pop()[-ERROR_LINE_LIMIT:]
        for line in lines:
            _warn(line)

    def processEnded(self, reason: Failure) -> None:
        self._over = True
        _warn(self._errors)
        if self._stop_timer is not None and self._stop_timer.active():
            self._stop_timer.cancel()
        waiting, self._waiting = self._waiting, deque()
        why = "stopped" if reason.check(ProcessDone) else reason.getErrorMessage()
        for files, answered, timer in waiting:
            if timer.active():
                timer.cancel()
            self._owner._failed(files, f"ended before answering ({why})").chainDeferred(
                answered)
        self._owner._ended(self, reason)
        self._ended.callback(None)

    def _kill(self, why: str) -> None:
        if self._over:
            return
        log.warn("index parse worker {why}; stopping it", why=why)
        try:
            assert self.transport is not None
            self.transport.signalProcess("KILL")
        except ProcessExitedAlready:
            pass


def _parsing_here(files: Files, why: str) -> None:
    log.warn("index parse worker: {why}; parsing {count} files in the daemon",
             why=why, count=len(files))


def _warn(line: bytes) -> None:
    text = line.decode("utf-8", "replace").rstrip()
    if text.strip():
        log.warn("index parse worker: {line}", line=text)


def _decode(files: Files, line: bytes) -> list[Parsed]:
    answers = json.loads(line)
    if not isinstance(answers, list) or len(answers) != len(files):
        raise ValueError(f"{len(files)} files asked, answer is not a list of as many")
    parsed = []
    for (loc, _), answer in zip(files, answers, strict=True):
        if answer is not None:
            size, mtime_ns, data = answer
            parsed.append(Parsed(loc, int(size), int(mtime_ns), facts_from_data(data)))
    return parsed
