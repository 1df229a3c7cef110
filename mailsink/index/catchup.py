"""
Read your writes for the API: which delivered messages the index has not stored yet, and
the requests waiting for them. Mailpit stores a message before it answers, so its clients
and test helpers send and then ask at once; mailsink answers the 250 first and indexes a
moment later, so an API request waits (briefly, bounded) for what was delivered before it.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime

from mailsink.index.codec import Loc


class CatchUp:
    """Delivered-but-not-indexed messages and the Deferreds waiting for them."""

    def __init__(self, clock: IReactorTime) -> None:
        self._clock = clock
        self._unsettled: set[Loc] = set()
        self._waiters: list[tuple[set[Loc], Deferred[None]]] = []
        self._timers: dict[Deferred[None], IDelayedCall] = {}

    @property
    def waiting(self) -> bool:
        """Whether a request waits (the index should not pause to batch then)."""
        return bool(self._waiters)

    def announce(self, loc: Loc) -> None:
        """C{loc} was delivered: requests from now on wait for it."""
        self._unsettled.add(loc)

    def wait(self, timeout: float) -> Deferred[None] | None:
        """A Deferred firing once what was announced so far is settled (or C{timeout}
        passed); None when nothing is outstanding."""
        outstanding = set(self._unsettled)
        if not outstanding:
            return None
        caught: Deferred[None] = Deferred()
        self._waiters.append((outstanding, caught))
        self._timers[caught] = self._clock.callLater(timeout, self._release, caught)
        return caught

    def settle(self, indexed: list[Loc]) -> None:
        """These went through an indexing step: release the waiters they held."""
        self._unsettled.difference_update(indexed)
        still = []
        for outstanding, caught in self._waiters:
            outstanding.intersection_update(self._unsettled)
            if outstanding and not caught.called:
                still.append((outstanding, caught))
            else:
                self._release(caught)
        self._waiters = still

    def release_all(self) -> None:
        """Stopping: nobody waits any longer."""
        waiters, self._waiters = self._waiters, []
        for _, caught in waiters:
            self._release(caught)

    def _release(self, caught: Deferred[None]) -> None:
        timer = self._timers.pop(caught, None)
        if timer is not None and timer.active():
            timer.cancel()
        if not caught.called:
            caught.callback(None)
