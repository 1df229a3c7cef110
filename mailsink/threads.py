"""
A pool of worker threads as a service: blocking work (disk, bcrypt, smtplib) runs there,
started and stopped with the daemon, so the reactor thread never waits on it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool

T = TypeVar("T")

RunBlocking = Callable[[Callable[[], Any]], Deferred[Any]]
"""Runs a blocking call off the reactor (a pool's L{ThreadPoolService.run_blocking})."""


class ThreadPoolService(Service):
    """Named worker threads; work given before start-up waits for it."""

    def __init__(self, name: str, size: int, reactor: Any) -> None:
        self.threads = ThreadPool(minthreads=0, maxthreads=size, name=name)
        self._reactor = reactor

    def run_blocking(self, work: Callable[..., T], *args: Any, **kwargs: Any) -> Deferred[T]:
        """Run C{work(*args, **kwargs)} in the pool."""
        return deferToThreadPool(self._reactor, self.threads, work, *args, **kwargs)

    def startService(self) -> None:
        super().startService()
        self.threads.start()

    def stopService(self) -> Any:
        super().stopService()
        self.threads.stop()
