"""L{CatchUp}, read your writes for the API, on a Clock."""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from mailsink.index.catchup import CatchUp

ONE = ("", "new", "1.M1P1Q1.host")
TWO = ("", "new", "2.M2P1Q2.host")


class CatchUpTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.catch_up = CatchUp(self.clock)

    def test_nothing_outstanding(self) -> None:
        self.assertIsNone(self.catch_up.wait(2))

    def test_waits_for_what_was_announced_before(self) -> None:
        self.catch_up.announce(ONE)
        waiting = self.catch_up.wait(2)
        assert waiting is not None
        self.catch_up.announce(TWO)  # after the request: not waited for
        self.assertTrue(self.catch_up.waiting)
        self.catch_up.settle([TWO])
        self.assertNoResult(waiting)
        self.catch_up.settle([ONE])
        self.successResultOf(waiting)
        self.assertFalse(self.catch_up.waiting)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_timeout_and_stop_release(self) -> None:
        self.catch_up.announce(ONE)
        first, second = self.catch_up.wait(2), self.catch_up.wait(5)
        assert first is not None and second is not None
        self.clock.advance(2)
        self.successResultOf(first)
        self.assertNoResult(second)
        self.catch_up.release_all()
        self.successResultOf(second)
        self.assertEqual(self.clock.getDelayedCalls(), [])
