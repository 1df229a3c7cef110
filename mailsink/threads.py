"""
A pool of worker threads as a service: blocking work (disk, bcrypt, smtplib) runs there,
started and stopped with the daemon, so the reactor thread never waits on it.

Every message's store work goes through here, so the hand-over is kept lean: one put on a
C queue, a thread started only when no idle one is left, the answer back with one
C{callFromThread}. (Twisted's C{ThreadPool} spent about an eighth of the reactor's
interpreter time on its coordination under intake load.)
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from queue import SimpleQueue
from typing import Any, TypeVar

from twisted.application.service import Service
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.logger import Logger
from twisted.python.failure import Failure

T = TypeVar("T")

RunBlocking = Callable[[Callable[[], Any]], Deferred[Any]]
"""Runs a blocking call off the reactor (a pool's L{ThreadPoolService.run_blocking})."""

log = Logger()

_Job = tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any], Deferred[Any]]


class ThreadPoolService(Service):
    """Up to C{size} named worker threads; work given before start-up waits for it."""

    def __init__(self, name: str, size: int, reactor: Any) -> None:
        self._name = name
        self._size = size
        self._reactor = reactor
        self._jobs: SimpleQueue[_Job | None] = SimpleQueue()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._queued = 0
        """Jobs put and not yet taken by a thread."""
        self._idle = 0
        """Threads waiting for a job."""
        self._started = False
        self._stopped = False

    def run_blocking(self, work: Callable[..., T], *args: Any, **kwargs: Any) -> Deferred[T]:
        """
        Run C{work(*args, **kwargs)} in the pool; once the pool has stopped (the daemon is
        shutting down), right here: a delivery whose file was written as the pool stopped
        still gets the fsync its C{250} waits for.
        """
        if self._stopped:
            return maybeDeferred(work, *args, **kwargs)
        done: Deferred[T] = Deferred()
        with self._lock:
            self._queued += 1
            more = self._started and self._queued > self._idle \
                and len(self._threads) < self._size
        self._jobs.put((work, args, kwargs, done))
        if more:
            self._add_thread()
        return done

    def startService(self) -> None:
        super().startService()
        with self._lock:
            self._started, self._stopped = True, False
            wanted = min(self._queued, self._size)
        for _ in range(wanted):
            self._add_thread()

    def stopService(self) -> Any:
        """Let the threads finish what was given, then end them (blocking, as at exit)."""
        super().stopService()
        with self._lock:
            self._started = False
            self._stopped = True
            threads, self._threads = self._threads, []
        for _ in threads:
            self._jobs.put(None)
        for thread in threads:
            thread.join()

    def _add_thread(self) -> None:
        with self._lock:
            if len(self._threads) >= self._size:
                return
            thread = threading.Thread(target=self._work, daemon=True,
                                      name=f"PoolThread-{self._name}-{len(self._threads)}")
            self._threads.append(thread)
        try:
            thread.start()
        except RuntimeError as error:  # the system allows no more threads
            with self._lock:
                self._threads.remove(thread)
            log.error("cannot start a {name} thread ({error}); its work waits for one",
                      name=self._name, error=str(error))

    def _work(self) -> None:
        call = self._reactor.callFromThread
        with self._lock:
            self._idle += 1
        while True:
            job = self._jobs.get()
            with self._lock:
                self._idle -= 1
                if job is not None:
                    self._queued -= 1
            if job is None:
                return
            work, args, kwargs, done = job
            try:
                answer: tuple[Callable[..., Any], Any] = (done.callback, work(*args, **kwargs))
            except BaseException:
                answer = (done.errback, Failure())
            # Idle again before the answer goes out: work that its callbacks give at once
            # finds this thread instead of starting another.
            with self._lock:
                self._idle += 1
            call(*answer)
            del job, work, args, kwargs, done, answer  # hold nothing while idle
