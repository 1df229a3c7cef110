"""
The message index: summaries of every Maildir message in SQLite, kept current, searchable.

The Maildir is the truth; the index (C{state_dir/index.sqlite3}) is a cache that may be
deleted at any time and is then rebuilt. It learns of new mail three ways: L{added} from
the store after each delivery, inotify on each mailbox's C{new/} and C{cur/} where the
platform has it, and a rescan every two seconds that lists only directories whose mtime
changed (the safety net, and the only way on other platforms or for changes made on
another host of a shared volume). Read state is the Maildir C{S} flag; deleting removes
the file.

Threads: every SQLite call runs in one dedicated thread (L{IndexStore}); reading and
parsing message files is the parser's (L{mailsink.index.parser}: a child process in the
daemon, else a second thread); the reactor thread only queues work and publishes events.
Changes found on disk go through one queue processed one batch at a time (each batch: find
what is new, parse it, store it), so a file is parsed once.

Message IDs (see L{mailsink.index.codec.message_id}): the Maildir unique name without its
C{:2,FLAGS} info when it is made of C{[A-Za-z0-9._-]}, else C{"x"} and its URL-safe
base64 without padding. The same unique name in two places: the first one indexed wins,
the other is logged and ignored until the first goes.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable, Collection
from typing import Any

from twisted.internet.defer import Deferred, inlineCallbacks, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.task import LoopingCall
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from mailsink.index.catchup import CatchUp
from mailsink.index.codec import Changes, Loc, Page, Stats
from mailsink.index.db import IndexStore
from mailsink.index.parser import Parser
from mailsink.index.shared_answers import SharedAnswers
from mailsink.index.tag_rules import NO_RULES, TagRules
from mailsink.index.tags import (
    Plan,
    delete_plan,
    finish_plan,
    rename_plan,
    retag_ids,
    set_tags,
    tag_counts,
)
from mailsink.index.watch import Watcher
from mailsink.message.shapes import Summary

__all__ = ["MessageIndex", "Page", "Stats"]

log = Logger()

BATCH = 200
"""Files parsed and stored per step; every step commits, so the index fills progressively."""
RESCAN_INTERVAL = 2.0
FULL_RESCAN_EVERY = 30
"""Every this many rescans, list every directory whatever its mtime says."""
CATCH_UP_TIMEOUT = 2.0
"""Longest an API request waits for messages delivered before it to be indexed."""
CHUNK = 500
"""Messages renamed or deleted per database-thread call, so queries interleave."""

Subscriber = Callable[[str, Any], None]


class MessageIndex:
    """
    Summaries of the messages under C{maildir_root}, answering from its own threads.

    Every query takes C{mailboxes}: None for all (an admin), else the mailboxes to look
    in (C{""} is the shared Maildir, others are per-user folder names).
    """

    def __init__(self, maildir_root: str, state_dir: str, parser: Parser, reactor: Any,
                 clock: IReactorTime | None = None, *, facts_version: str = "",
                 inotify: bool = True, rescan_interval: float = RESCAN_INTERVAL,
                 tag_rules: TagRules = NO_RULES,
                 delivered_here: Callable[[str], bool] = lambda filename: False) -> None:
        self.db_path = os.path.join(state_dir, "index.sqlite3")
        self._store = IndexStore(maildir_root, self.db_path, facts_version, tag_rules)
        self._reactor = reactor
        self._clock: IReactorTime = clock if clock is not None else reactor
        self._rescan_interval = rescan_interval
        self._db_pool = ThreadPool(1, 1, "mailsink-index-db")
        self._parser = parser
        self._watcher = Watcher(reactor, maildir_root, self._file_event,
                                self._folder_event) if inotify else None
        self._subscribers: list[Subscriber] = []
        self._urgent: dict[Loc, None] = {}
        self._delivered_here = delivered_here
        """Whether a file name in C{new/} is this process's delivery, which L{added} tells
        of: its inotify event (at the rename, before the fsync and the 250) is ignored.
        (A rescan that lists C{new/} in that moment still finds it: a rare early listing.)"""
        self._vanished: dict[Loc, None] = {}
        self._backlog: dict[Loc, None] = {}
        self._rescan_wanted: str | None = None
        self._urgent_turn = True
        self._busy = False
        self._open = False
        self._stopping = False
        self._initial = True
        self._kick_call: IDelayedCall | None = None
        self._idle_waiters: list[Deferred[None]] = []
        self._catch_up = CatchUp(self._clock)
        self._tag_counts: SharedAnswers[frozenset[str] | None, dict[str, int]] = \
            SharedAnswers(lambda key: self._db(tag_counts, self._store, key), dict)
        """L{tag_counts} answers, shared until the index changes."""
        self.awaited: Callable[[], bool] = lambda: False
        """Whether someone waits for new mail right now (API C{wait}): no gathering pause."""
        self._in_step: list[Loc] = []
        self._ready_waiters: list[Deferred[None]] = []
        self._stop_waiters: list[Deferred[None]] = []
        self._ticks = 0
        self._rescan_loop = LoopingCall(self._tick)
        self._rescan_loop.clock = self._clock
        self._prune_loop: LoopingCall | None = None
        self._retention = (0, 0.0)
        self._pruning = False
        self._prune_again = False
        self.is_ready = False
        """True once the first reconcile with the Maildir finished (C{/readyz})."""

    # Life cycle.

    @inlineCallbacks
    def start(self) -> Any:
        """
        Open (or create, or rebuild) the database; fires once queries can be answered.
        The reconcile with the disk goes on in the background: see L{when_ready}.
        """
        self._db_pool.start()
        self._parser.start()
        yield self._db(self._store.open)
        self._open = True
        self._rescan_wanted = "initial"
        self._rescan_loop.start(self._rescan_interval, now=False)
        if self._watcher is not None:
            self._watcher.start()
        self._kick()

    def when_ready(self) -> Deferred[None]:
        """Fires when the first reconcile finished (at once if it has)."""
        if self.is_ready:
            return succeed(None)
        waiter: Deferred[None] = Deferred()
        self._ready_waiters.append(waiter)
        return waiter

    @inlineCallbacks
    def stop(self) -> Any:
        """Stop watching, let the running step finish, close the database, stop threads."""
        self._stopping = True
        self._catch_up.release_all()
        if self._rescan_loop.running:
            self._rescan_loop.stop()
        if self._prune_loop is not None and self._prune_loop.running:
            self._prune_loop.stop()
        if self._watcher is not None:
            self._watcher.stop()
        if self._kick_call is not None and self._kick_call.active():
            self._kick_call.cancel()
        if self._busy:
            waiter: Deferred[None] = Deferred()
            self._stop_waiters.append(waiter)
            yield waiter
        if self._db_pool.started:
            yield self._db(self._store.close)
            self._db_pool.stop()
        yield self._parser.stop()

    def subscribe(self, callback: Subscriber) -> Callable[[], None]:
        """
        Call C{callback(kind, payload)} on the reactor thread for each change: C{"new"}
        and C{"update"} with a L{Summary}, C{"delete"} with a list of IDs, C{"truncate"}
        with None. Returns a function that unsubscribes.
        """
        self._subscribers.append(callback)
        return lambda: self._subscribers.remove(callback)

    # Keeping current.

    def added(self, mailbox: str, path: str) -> None:
        """The store delivered C{path} into C{mailbox}'s C{new/}: index it soon (cheap)."""
        loc = (mailbox, os.path.basename(os.path.dirname(path)), os.path.basename(path))
        self._urgent[loc] = None
        self._catch_up.announce(loc)
        self._kick_soon(0 if self.awaited() else 0.02)

    def caught_up(self, timeout: float = CATCH_UP_TIMEOUT) -> Deferred[None]:
        """
        Fires once every message delivered so far is indexed (at most C{timeout} later):
        an API client that sent a message and then asks for it finds it, as with Mailpit,
        which stores before it answers.
        """
        caught = None if self._stopping else self._catch_up.wait(timeout)
        if caught is None:
            return succeed(None)
        if not self._busy:
            self._kick()
        return caught

    def delivered(self, path: str) -> None:
        """
        L{added} for C{Maildir(..., delivered=index.delivered)}: the mailbox is read from
        C{path} (C{root/new/X} is C{""}, C{root/alice/new/X} is C{"alice"}).
        """
        folder = os.path.dirname(os.path.dirname(os.path.abspath(path)))
        relative = os.path.relpath(folder, self._store.root)
        if relative == ".":
            self.added("", path)
        elif os.sep not in relative and not relative.startswith("."):
            self.added(relative, path)
        else:
            log.warn("delivered {path} is not under {root}; the rescan will find it if it is",
                     path=path, root=self._store.root)

    def rescan(self, full: bool = False) -> Deferred[None]:
        """Look at the disk now; fires when everything pending has been indexed."""
        if self._rescan_wanted != "initial":
            self._rescan_wanted = "full" if full else (self._rescan_wanted or "quick")
        self._kick_soon()
        return self.settled()

    def settled(self) -> Deferred[None]:
        """Fires once no indexing work is pending or running."""
        if not self._pending() and not self._busy and not self._kick_scheduled():
            return succeed(None)
        waiter: Deferred[None] = Deferred()
        self._idle_waiters.append(waiter)
        self._kick_soon()
        return waiter

    def _tick(self) -> None:
        self._ticks += 1
        full = self._ticks % FULL_RESCAN_EVERY == 0
        if self._rescan_wanted != "initial":
            self._rescan_wanted = "full" if full else (self._rescan_wanted or "quick")
        self._kick()

    def _file_event(self, loc: Loc, gone: bool) -> None:
        if not gone and loc[1] == "new" and self._delivered_here(loc[2]):
            return  # the store tells of it (L{added}) once it is durable, before the 250
        (self._vanished if gone else self._urgent)[loc] = None
        self._kick_soon()

    def _folder_event(self) -> None:
        if self._rescan_wanted is None:
            self._rescan_wanted = "quick"
        self._kick_soon()

    def _kick_scheduled(self) -> bool:
        return self._kick_call is not None and self._kick_call.active()

    def _kick_soon(self, delay: float = 0.02) -> None:
        """Start work after a moment, so events arriving together are handled together."""
        if self._kick_scheduled() and delay == 0 and self._kick_call is not None:
            self._kick_call.reset(0)
        elif not self._kick_scheduled() and not self._stopping:
            self._kick_call = self._reactor.callLater(delay, self._kick)

    def _pending(self) -> bool:
        return bool(self._urgent or self._vanished or self._backlog or self._rescan_wanted)

    def _kick(self) -> None:
        """Run the next step of indexing work unless one is running."""
        if self._busy or self._stopping or not self._open:
            return
        step = self._next_step()
        if step is not None:
            self._busy = True
            step().addErrback(self._step_failed).addBoth(self._step_done)
            return
        if self._initial:
            self._initial = False
            self.is_ready = True
            log.info("index ready: {path}", path=self.db_path)
            for waiter in self._take(self._ready_waiters):
                waiter.callback(None)
        # Waiters may have started work again; only an index still idle settles them.
        if not self._busy and not self._pending():
            for waiter in self._take(self._idle_waiters):
                waiter.callback(None)

    def _next_step(self) -> Callable[[], Deferred[Any]] | None:
        urgent = bool(self._urgent or self._vanished)
        if urgent and (self._urgent_turn or not self._backlog):
            self._urgent_turn = False
            appeared, vanished = _take(self._urgent, BATCH), _take(self._vanished, 10**9)
            self._in_step = appeared
            return lambda: self._index(appeared, vanished, True)
        self._urgent_turn = True
        if self._rescan_wanted is not None:
            kind, self._rescan_wanted = self._rescan_wanted, None
            return lambda: self._rescan_step(kind)
        if self._backlog:
            appeared = _take(self._backlog, BATCH)
            return lambda: self._index(appeared, [], self.is_ready)
        return None

    @inlineCallbacks
    def _rescan_step(self, kind: str) -> Any:
        changes, mailboxes = yield self._db(self._store.rescan, kind != "quick")
        if self.is_ready:
            self._publish(changes.events)
        for loc in changes.to_parse:
            self._backlog[loc] = None
        if self._watcher is not None:
            self._watcher.watch(mailboxes)

    @inlineCallbacks
    def _index(self, appeared: list[Loc], vanished: list[Loc], publish: bool) -> Any:
        """One step: settle moves and deletions, parse what is new, store it."""
        changes: Changes = yield self._db(self._store.apply, appeared, vanished)
        self._publish(changes.events)
        if not changes.to_parse:
            return
        path = self._store.folders.path
        batch = yield self._parser.parse([(loc, path(loc)) for loc in changes.to_parse])
        stored: Changes = yield self._db(lambda: self._store.insert(batch()))
        if publish:
            self._publish(stored.events)
        if publish and any(kind == "new" for kind, _ in stored.events):
            self._prune_soon()

    def _step_failed(self, failure: Failure) -> None:
        log.failure("indexing step failed", failure)
        if failure.check(sqlite3.DatabaseError) and not failure.check(sqlite3.OperationalError):
            log.warn("index database is corrupt; rebuilding it from the Maildir")
            self._db(self._store.reset).addCallback(self._rebuilt).addErrback(
                lambda f: log.failure("cannot rebuild the index", f))

    def _rebuilt(self, _: object) -> None:
        self._backlog.clear()
        self._rescan_wanted = "initial"
        self._publish([("truncate", None)])
        self._kick_soon()

    def _step_done(self, _: object) -> None:
        self._busy = False
        self._tag_counts.forget()  # a step may change rows without events (the first build)
        self._catch_up.settle(self._in_step)
        self._in_step = []
        if self._stopping:
            for waiter in self._take(self._stop_waiters):
                waiter.callback(None)
            return
        if self._urgent and not self._backlog and not self._rescan_wanted \
                and not self._catch_up.waiting and not self.awaited():
            # Under load new mail keeps coming: gather a bigger batch first.
            self._kick_call = self._reactor.callLater(0.05, self._kick)
            return
        self._kick()

    def _publish(self, events: list[tuple[str, Any]]) -> None:
        if events:
            self._tag_counts.forget()
        for kind, payload in events:
            for subscriber in list(self._subscribers):
                try:
                    subscriber(kind, payload)
                except Exception:
                    log.failure("index subscriber {subscriber!r} failed", subscriber=subscriber)

    @staticmethod
    def _take(waiters: list[Deferred[None]]) -> list[Deferred[None]]:
        taken = list(waiters)
        waiters.clear()
        return taken

    def _db(self, work: Callable[..., Any], *args: Any) -> Deferred[Any]:
        return deferToThreadPool(self._reactor, self._db_pool, work, *args)

    # Queries.

    def page(self, query: str, start: int, limit: int,
             mailboxes: Collection[str] | None) -> Deferred[Page]:
        """Newest first (received time, then ID), with total/unread and the match counts."""
        return self._db(self._store.page, query or "", start, limit, _frozen(mailboxes))

    def get(self, message_id: str, mailboxes: Collection[str] | None) -> Deferred[Summary | None]:
        return self._db(self._store.get, message_id, _frozen(mailboxes))

    def latest(self, query: str | None,
               mailboxes: Collection[str] | None) -> Deferred[Summary | None]:
        """The newest message, or the newest matching C{query}."""
        return self._db(self._store.latest, query or "", _frozen(mailboxes))

    def path(self, message_id: str, mailboxes: Collection[str] | None) -> Deferred[str | None]:
        """The message file's current absolute path (found again if it was renamed)."""
        return self._db(self._store.path, message_id, _frozen(mailboxes)).addCallback(
            self._publish_then)

    def counts(self, mailboxes: Collection[str] | None) -> Deferred[tuple[int, int]]:
        """(messages, unread)."""
        return self._db(self._store.counts, _frozen(mailboxes))

    def mailbox_counts(self) -> Deferred[dict[str, tuple[int, int]]]:
        """(messages, unread) of each mailbox holding any."""
        return self._db(self._store.mailbox_counts)

    def stats(self, mailboxes: Collection[str] | None = None) -> Deferred[Stats]:
        """Database path and size, counts, and messages deleted and pruned so far."""
        return self._db(self._store.stats, _frozen(mailboxes))

    def _publish_then(self, result: tuple[Any, Changes]) -> Any:
        value, changes = result
        self._publish(changes.events)
        return value

    # Changes.

    @inlineCallbacks
    def set_read(self, ids: list[str] | None, read: bool, query: str | None,
                 mailboxes: Collection[str] | None) -> Any:
        """
        Mark messages read or unread by renaming their files (C{new/X} -> C{cur/X:2,S}, or
        the C{S} flag added or removed); C{ids} None and no query: all. Fires with how
        many changed.
        """
        chosen = yield self._db(self._store.select, ids, query, _frozen(mailboxes), read)
        changed = 0
        for at in range(0, len(chosen), CHUNK):
            count = yield self._db(self._store.set_read, chosen[at:at + CHUNK], read)
            changed += self._publish_then(count)
        return changed

    @inlineCallbacks
    def delete(self, ids: list[str] | None, query: str | None,
               mailboxes: Collection[str] | None) -> Any:
        """Delete the files (C{ids} None and no query: all); fires with how many went."""
        chosen = yield self._db(self._store.select, ids, query, _frozen(mailboxes))
        everything = ids is None and not query and mailboxes is None
        removed = yield self._delete(chosen, False, publish=not everything)
        if everything:
            self._publish([("truncate", None)])
        return removed

    @inlineCallbacks
    def _delete(self, ids: list[str], pruning: bool, publish: bool = True) -> Any:
        removed = 0
        for at in range(0, len(ids), CHUNK):
            count, changes = yield self._db(self._store.delete, ids[at:at + CHUNK], pruning)
            if publish:
                self._publish(changes.events)
            removed += count
        return removed

    # Tags (L{mailsink.index.tags}: kept as Maildir keywords).

    def tag_counts(self, mailboxes: Collection[str] | None) -> Deferred[dict[str, int]]:
        """
        Tag name -> how many messages carry it, by name. Every list answer carries them, so
        one count serves all the requests asking until the index next changes (200 waiting
        requests answered by one message ask once, not 200 times).
        """
        return self._tag_counts.ask(_frozen(mailboxes))

    def set_tags(self, ids: list[str], tags: list[str],
                 mailboxes: Collection[str] | None) -> Deferred[None]:
        """Give the messages exactly C{tags}; fails with L{TagLimit} past 26 a folder."""
        def chosen(found: list[str]) -> Deferred[None]:
            return self._db(set_tags, self._store, found, tags).addCallback(
                lambda changes: self._publish(changes.events))
        return self._db(self._store.select, ids, None, _frozen(mailboxes)).addCallback(chosen)

    @inlineCallbacks
    def rename_tag(self, old: str, new: str, mailboxes: Collection[str] | None) -> Any:
        """Rename a tag (renamed in C{dovecot-keywords}, or merged into C{new}); fires
        with False if no folder names it."""
        plan = yield self._db(rename_plan, self._store, old, new, _frozen(mailboxes))
        yield self._follow_plan(plan, old)
        return bool(plan)

    @inlineCallbacks
    def delete_tag(self, tag: str, mailboxes: Collection[str] | None) -> Any:
        """Take C{tag} off every message and free its letters."""
        plan = yield self._db(delete_plan, self._store, tag, _frozen(mailboxes))
        yield self._follow_plan(plan, tag)

    @inlineCallbacks
    def _follow_plan(self, plan: Plan, tag: str) -> Any:
        """Rename files (or refresh rows) C{CHUNK} at a time, so queries interleave."""
        for mailbox, letter, target, ids in plan:
            for at in range(0, len(ids), CHUNK):
                changes = yield self._db(retag_ids, self._store, ids[at:at + CHUNK], letter,
                                         target)
                self._publish(changes.events)
            if target is not None:
                changes = yield self._db(finish_plan, self._store, mailbox, tag, letter,
                                         target)
                self._publish(changes.events)

    # Retention.

    @inlineCallbacks
    def prune(self, max_messages: int, max_age_seconds: float) -> Any:
        """
        Delete the oldest messages beyond C{max_messages} per mailbox and those received
        more than C{max_age_seconds} ago (0: no limit). Waits for L{when_ready}, so a
        half-built index prunes nothing wrongly. Fires with how many went.
        """
        yield self.when_ready()
        now = self._clock.seconds()
        ids = yield self._db(self._store.to_prune, max_messages, max_age_seconds, now)
        removed = yield self._delete(ids, True)
        if removed:
            log.info("pruned {count} messages (max_messages={max_messages}, "
                     "max_age={max_age}s)", count=removed, max_messages=max_messages,
                     max_age=max_age_seconds)
        return removed

    def start_pruning(self, max_messages: int, max_age_seconds: float,
                      interval: float = 60.0) -> None:
        """Prune every C{interval} seconds and after each delivery, with these limits."""
        self._retention = (max_messages, max_age_seconds)
        if not (max_messages or max_age_seconds) or self._prune_loop is not None:
            return
        self._prune_loop = LoopingCall(self._prune_now)
        self._prune_loop.clock = self._clock
        self._prune_loop.start(interval, now=True)

    def _prune_soon(self) -> None:
        if not any(self._retention):
            return
        if self._pruning:
            self._prune_again = True
        else:
            self._prune_now()

    def _prune_now(self) -> Deferred[None]:
        self._pruning = True
        self._prune_again = False

        def done(result: object) -> None:
            self._pruning = False
            if isinstance(result, Failure):
                log.failure("pruning failed", result)
            if self._prune_again and not self._stopping:
                self._prune_now()

        return self.prune(*self._retention).addBoth(done)


def _take(queue: dict[Loc, None], count: int) -> list[Loc]:
    taken = []
    for loc in queue:
        taken.append(loc)
        if len(taken) >= count:
            break
    for loc in taken:
        del queue[loc]
    return taken


def _frozen(mailboxes: Collection[str] | None) -> frozenset[str] | None:
    return None if mailboxes is None else frozenset(mailboxes)

