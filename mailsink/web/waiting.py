"""
Waiting for mail: API requests with C{?wait=SECONDS} held until enough messages match.

A waiting request costs a Deferred and one timer, no thread and no polling: the index's
C{new} and C{update} events wake it. Events are gathered for one reactor turn; a waiter
that may see a message of the batch and whose query matches it (L{mailsink.message.search.matches},
in memory) asks the index again, and waiters asking the same question share one query. A
waiter is answered once the index counts C{count} matches, or when its time is up with what
the index says then (the usual page, empty or short); a client that leaves first releases
its waiter.
"""

from __future__ import annotations

from typing import Any, cast

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest
from twisted.web.server import Request

from mailsink.index.codec import Page, search_row
from mailsink.message.search import Query, matches, parse
from mailsink.message.shapes import Summary
from mailsink.metrics import Metrics

MATCH_LIMIT = 200
"""Arrived messages matched in memory per wake-up; past it, waiters ask the index."""


@attrs.frozen
class Question:
    """What a waiting request asks the index: one page of a search (C{""}: every message)."""

    query: str
    mailboxes: frozenset[str] | None
    """The mailboxes the viewer may read (None: all)."""
    start: int
    limit: int


@attrs.define(eq=False)
class _Waiter:
    question: Question
    parsed: Query
    count: int
    answer: Deferred[Page] = attrs.field(init=False)
    timer: IDelayedCall | None = None
    asking: bool = False
    """The index is being asked for this waiter right now."""
    again: bool = False
    """Something it may match arrived meanwhile: ask once more when that answer comes."""
    time_up: bool = False

    def may_match(self, summary: Summary, row: dict[str, Any]) -> bool:
        mailboxes = self.question.mailboxes
        return (mailboxes is None or summary.mailbox in mailboxes) and matches(self.parsed, row)


class Waiting:
    """The requests waiting for mail; subscribe L{index_event} to the index."""

    def __init__(self, index: Any, clock: IReactorTime, metrics: Metrics) -> None:
        self._index = index
        self._clock = clock
        self._waiters: dict[_Waiter, None] = {}
        self._arrived: list[Summary] = []
        self._flush_call: IDelayedCall | None = None
        metrics.waiting.set_function(lambda: len(self._waiters))

    def anyone_waiting(self) -> bool:
        """Whether a request waits now (the index then indexes new mail at once)."""
        return bool(self._waiters)

    def index_event(self, kind: str, payload: Any) -> None:
        """The index's subscriber callback: new or changed summaries wake waiters."""
        if kind not in ("new", "update") or not self._waiters:
            return
        self._arrived.append(payload)
        if self._flush_call is None:
            self._flush_call = self._clock.callLater(0, self._flush)

    def until(self, request: IRequest, question: Question, count: int,
              seconds: float) -> Deferred[Page]:
        """
        The page C{question} asks for, once it counts at least C{count} matches, or after
        C{seconds} whatever it holds then. Ends (with C{CancelledError}) if the client goes.
        """
        waiter = _Waiter(question, parse(question.query), count)
        waiter.answer = Deferred(lambda _: self._release(waiter))
        self._waiters[waiter] = None
        waiter.timer = self._clock.callLater(seconds, self._time_up, waiter)
        served = cast(Request, request)  # what Site hands a resource; IRequest lacks this
        served.notifyFinish().addErrback(lambda _: waiter.answer.cancel())
        if not self._index.is_ready:  # messages indexed by the first build are not "new"
            self._index.when_ready().addCallback(lambda _: self._ask([waiter]))
        self._ask([waiter])
        return waiter.answer

    def _flush(self) -> None:
        """
        Ask again for the waiters the arrived messages may satisfy: matched in memory once
        per distinct question, and only for a bounded batch (a mark-all-read or a tag on
        10,000 messages would hold the reactor for seconds): past L{MATCH_LIMIT} messages
        every waiter simply asks the index, once per question.
        """
        self._flush_call = None
        arrived, self._arrived = self._arrived, []
        if len(arrived) > MATCH_LIMIT:
            self._ask(list(self._waiters))
            return
        rows = [(summary, search_row(summary)) for summary in arrived]
        verdicts: dict[Question, bool] = {}
        chosen = []
        for waiter in self._waiters:
            question = waiter.question
            if question not in verdicts:
                verdicts[question] = any(waiter.may_match(summary, row)
                                         for summary, row in rows)
            if verdicts[question]:
                chosen.append(waiter)
        self._ask(chosen)

    def _ask(self, waiters: list[_Waiter]) -> None:
        """Ask the index for each of C{waiters}, once per distinct question."""
        groups: dict[Question, list[_Waiter]] = {}
        for waiter in waiters:
            if waiter not in self._waiters:
                continue
            if waiter.asking:
                waiter.again = True
                continue
            waiter.asking = True
            groups.setdefault(waiter.question, []).append(waiter)
        for question, group in groups.items():
            asked = self._index.page(question.query, question.start, question.limit,
                                     question.mailboxes)
            asked.addCallbacks(self._answered, self._failed, callbackArgs=(group,),
                               errbackArgs=(group,))

    def _answered(self, page: Page, group: list[_Waiter]) -> None:
        again = []
        for waiter in group:
            waiter.asking = False
            if waiter not in self._waiters:
                continue
            if waiter.time_up or page.matches >= waiter.count:
                self._release(waiter)
                waiter.answer.callback(page)
            elif waiter.again:
                waiter.again = False
                again.append(waiter)
        self._ask(again)

    def _failed(self, failure: Failure, group: list[_Waiter]) -> None:
        for waiter in group:
            waiter.asking = False
            if waiter in self._waiters:
                self._release(waiter)
                waiter.answer.errback(failure)

    def _time_up(self, waiter: _Waiter) -> None:
        waiter.timer = None
        waiter.time_up = True
        self._ask([waiter])  # a query running for it now answers it instead

    def _release(self, waiter: _Waiter) -> None:
        self._waiters.pop(waiter, None)
        if waiter.timer is not None and waiter.timer.active():
            waiter.timer.cancel()
        waiter.timer = None
