"""
One answer shared by every caller until the data changes: the tag counts each list answer
carries are asked once, not once per request (200 waiting requests answered by one message
would otherwise queue 200 identical queries on the index's one database thread).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class SharedAnswers(Generic[K, V]):
    """
    C{ask(key)} runs C{compute(key)} once and hands every caller a copy (made by C{copy})
    of its answer, callers arriving while it runs included, until L{forget}. A failure is
    not kept: the next caller asks again.
    """

    def __init__(self, compute: Callable[[K], Deferred[V]], copy: Callable[[V], V]) -> None:
        self._compute = compute
        self._copy = copy
        self._known: dict[K, V | list[Deferred[V]]] = {}

    def forget(self) -> None:
        """The data changed: the next caller asks anew (answers in flight go to theirs)."""
        self._known = {}

    def ask(self, key: K) -> Deferred[V]:
        asked: Deferred[V] = Deferred()
        known = self._known.get(key)
        if isinstance(known, list):  # an answer in flight: wait for it too
            known.append(asked)
            return asked
        if key in self._known:
            asked.callback(self._copy(known))  # type: ignore[arg-type]
            return asked
        waiters: list[Deferred[V]] = [asked]
        self._known[key] = waiters
        known_now = self._known

        def answered(outcome: V | Failure) -> None:
            if isinstance(outcome, Failure):
                if known_now.get(key) is waiters:
                    del known_now[key]
                for waiter in waiters:
                    waiter.errback(outcome)
                return
            if known_now.get(key) is waiters:
                known_now[key] = outcome
            for waiter in waiters:
                waiter.callback(self._copy(outcome))

        self._compute(key).addBoth(answered)
        return asked
