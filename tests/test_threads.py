"""The worker pool every blocking call goes through (mailsink.threads)."""

from __future__ import annotations

import threading
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import DeferredList, inlineCallbacks
from twisted.trial import unittest

from mailsink.threads import ThreadPoolService


class ThreadPoolServiceTests(unittest.TestCase):
    def pool(self, size: int = 3) -> ThreadPoolService:
        pool = ThreadPoolService("test-pool", size, reactor)
        pool.startService()
        self.addCleanup(pool.stopService)
        return pool

    @inlineCallbacks
    def test_runs_off_the_reactor_thread_and_answers_on_it(self) -> Any:
        pool = self.pool()
        reactor_thread = threading.get_ident()
        worker = yield pool.run_blocking(threading.get_ident)
        self.assertNotEqual(worker, reactor_thread)
        answered_on: list[int] = []
        yield pool.run_blocking(lambda: 1).addCallback(
            lambda _: answered_on.append(threading.get_ident()))
        self.assertEqual(answered_on, [reactor_thread])

    @inlineCallbacks
    def test_arguments_and_result(self) -> Any:
        result = yield self.pool().run_blocking(lambda a, b=0: a + b, 2, b=3)
        self.assertEqual(result, 5)

    @inlineCallbacks
    def test_an_exception_is_a_failure(self) -> Any:
        def broken() -> None:
            raise ValueError("no disk")

        with self.assertRaises(ValueError):
            yield self.pool().run_blocking(broken)

    @inlineCallbacks
    def test_work_given_before_start_runs_once_started(self) -> Any:
        pool = ThreadPoolService("test-pool", 2, reactor)
        done = pool.run_blocking(lambda: "later")
        self.assertFalse(done.called)
        pool.startService()
        self.addCleanup(pool.stopService)
        self.assertEqual((yield done), "later")

    @inlineCallbacks
    def test_never_more_threads_than_its_size(self) -> Any:
        pool = self.pool(size=3)
        gate = threading.Event()
        running: set[str] = set()
        lock = threading.Lock()

        def blocked() -> None:
            with lock:
                running.add(threading.current_thread().name)
            gate.wait(10)

        calls = [pool.run_blocking(blocked) for _ in range(10)]
        reactor.callLater(0.2, gate.set)
        yield DeferredList(calls, fireOnOneErrback=True)
        self.assertLessEqual(len(running), 3)
        self.assertEqual(len([t for t in threading.enumerate()
                              if t.name.startswith("PoolThread-test-pool-")]), len(running))

    @inlineCallbacks
    def test_idle_threads_are_reused(self) -> Any:
        pool = self.pool(size=5)
        names = set()
        for _ in range(20):
            names.add((yield pool.run_blocking(lambda: threading.current_thread().name)))
        self.assertEqual(len(names), 1)

    def test_stop_finishes_given_work_and_ends_the_threads(self) -> None:
        pool = ThreadPoolService("test-stop", 2, reactor)
        pool.startService()
        done: list[int] = []
        gate = threading.Event()

        def slow(n: int) -> None:
            gate.wait(10)
            done.append(n)

        for n in range(4):
            pool.run_blocking(slow, n)
        threading.Timer(0.1, gate.set).start()
        pool.stopService()
        self.assertEqual(sorted(done), [0, 1, 2, 3])
        self.assertFalse([t for t in threading.enumerate()
                          if t.name.startswith("PoolThread-test-stop-")])

    def test_work_given_after_stop_runs_at_once(self) -> None:
        """Shutting down: a late delivery's fsync must still happen, not wait forever."""
        pool = ThreadPoolService("test-late", 2, reactor)
        pool.startService()
        pool.stopService()
        ran_on: list[int] = []
        done = pool.run_blocking(lambda: ran_on.append(threading.get_ident()) or "synced")
        self.assertEqual(self.successResultOf(done), "synced")
        self.assertEqual(ran_on, [threading.get_ident()])
