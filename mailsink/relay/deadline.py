"""
One relay operation's deadline: C{[relay] timeout} from the moment mailsink starts talking
to the server for a relay test or a release until it has the answer, however many steps
lie between (a token, the connection, the greeting, TLS, EHLO, AUTH, MAIL FROM, the data).

Each step waits only for the time left, so a server that answers every step just in time
cannot stretch one operation to a multiple of the timeout. Only the second look that words
a failure (L{mailsink.relay.diagnose}) may go on for L{GRACE} seconds past the end.
"""

from __future__ import annotations

from typing import Any, TypeVar

import attrs
from twisted.internet import error as net
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure

GRACE = 0.75
"""Seconds past the deadline a diagnosis may take to look at the port again: enough for a
TLS handshake with a distant server, and under the one second promised beyond C{timeout}."""

T = TypeVar("T")


@attrs.frozen
class Deadline:
    """When one operation must be over (C{at}, on the reactor's clock)."""

    at: float
    timeout: float
    """The configured C{[relay] timeout}, as the sentences name it."""

    @classmethod
    def start(cls, clock: IReactorTime, timeout: float) -> Deadline:
        """A deadline C{timeout} seconds from now."""
        return cls(clock.seconds() + timeout, float(timeout))

    def left(self, clock: IReactorTime) -> float:
        """Seconds until the deadline (0 once it passed)."""
        return max(0.0, self.at - clock.seconds())

    def passed(self, clock: IReactorTime) -> bool:
        return clock.seconds() >= self.at

    def second_look(self, clock: IReactorTime) -> float:
        """Seconds a diagnosis may spend on a second connection to the port."""
        return self.left(clock) + GRACE

    def bound_connecting(self, clock: IReactorTime, connecting: Deferred[T]) -> Deferred[Any]:
        """
        A connection attempt, cancelled at the deadline; it then fails with
        L{net.TimeoutError}, as an attempt the host never answered does.
        """
        def timed_out(result: object, timeout: float) -> Failure:
            return Failure(net.TimeoutError(string=f"no connection in {self.timeout:g} s"))

        return connecting.addTimeout(self.left(clock), clock, onTimeoutCancel=timed_out)
