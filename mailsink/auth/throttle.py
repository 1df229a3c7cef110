"""
Slowing down password guessing, per client address.

Each failed login from an address makes the next failure reply from that address wait
longer (doubling up to a ceiling); other addresses are not affected, and an address that
stays quiet is forgotten. Only the failing connection waits: the reactor does not.
"""

from __future__ import annotations

import attrs
from twisted.internet.interfaces import IReactorTime

FIRST_DELAY = 0.5
"""Seconds the first failure from an address waits before its 535."""
MAX_DELAY = 16.0
"""The ceiling the delay doubles up to."""
FORGET_AFTER = 15 * 60.0
"""Seconds without a failure after which an address starts afresh."""


@attrs.define
class _Record:
    failures: int
    last: float


class FailureThrottle:
    """Counts failures per address and says how long the next failure reply waits."""

    def __init__(self, clock: IReactorTime) -> None:
        self._clock = clock
        self._records: dict[str, _Record] = {}

    def failed(self, address: str) -> float:
        """Record a failure from C{address}; return the seconds its reply should wait."""
        now = self._clock.seconds()
        self._forget_quiet(now)
        record = self._records.pop(address, None) or _Record(0, now)
        record.failures += 1
        record.last = now
        self._records[address] = record  # most recent last: quiet ones gather in front
        return min(FIRST_DELAY * 2 ** (record.failures - 1), MAX_DELAY)

    def succeeded(self, address: str) -> None:
        """A correct login clears the address's record."""
        self._records.pop(address, None)

    def failures(self, address: str) -> int:
        """Failures remembered for C{address}."""
        record = self._records.get(address)
        return record.failures if record else 0

    def _forget_quiet(self, now: float) -> None:
        while self._records:
            oldest = next(iter(self._records))
            if now - self._records[oldest].last <= FORGET_AFTER:
                return
            del self._records[oldest]
