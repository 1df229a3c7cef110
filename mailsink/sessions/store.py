"""
Sessions kept in SQLite (C{state_dir/sessions.sqlite3}), the newest C{max_sessions} of them.

L{SessionDatabase} is plain blocking code for one worker thread. L{SessionLog} is what the
daemon uses on the reactor thread: a finished session costs an append to a list; the list
goes to the database in one transaction per batch (at most every L{BATCH_DELAY} seconds),
and reads first write what is waiting, so the API always sees every session that ended
before the request.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Callable, Sequence
from typing import Any

import attrs
from twisted.application.service import MultiService
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from mailsink.sessions.record import Entry, Session
from mailsink.threads import ThreadPoolService

log = Logger()

FILE_NAME = "sessions.sqlite3"
BATCH_DELAY = 0.2
"""Seconds a finished session may wait to be written with others."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT UNIQUE NOT NULL,
    started REAL NOT NULL,
    ended REAL NOT NULL,
    listener TEXT NOT NULL,
    client TEXT NOT NULL,
    helo TEXT NOT NULL,
    tls TEXT NOT NULL,
    user TEXT NOT NULL,
    logged_in INTEGER NOT NULL,
    mechanism TEXT NOT NULL,
    messages TEXT NOT NULL,
    outcome TEXT NOT NULL,
    error TEXT NOT NULL,
    diagnosis TEXT NOT NULL,
    transcript TEXT NOT NULL,
    omitted INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS sessions_outcome ON sessions (outcome, seq);
CREATE INDEX IF NOT EXISTS sessions_user ON sessions (user, seq);
"""
_COLUMNS = ("id, started, ended, listener, client, helo, tls, user, logged_in, mechanism, "
            "messages, outcome, error, diagnosis, transcript, omitted")


@attrs.frozen
class SessionFilter:
    """Which sessions a request asks for, and may see."""

    outcome: str = ""
    """C{failed} means every outcome but C{delivered} and C{no-mail}; others as named."""
    listener: str = ""
    user: str | None = None
    """Only sessions this user logged in with (None: everyone's, for admins)."""


FAILURES = ("refused", "failed", "dropped")


def _row(session: Session) -> tuple[Any, ...]:
    return (session.id, session.started, session.ended, session.listener, session.client,
            session.helo,
            json.dumps([session.tls_mode, session.tls_version, session.tls_cipher]),
            session.user, int(session.logged_in), session.mechanism,
            json.dumps(list(session.messages)), session.outcome, session.error,
            session.diagnosis,
            json.dumps([[e.time, e.side, e.text] for e in session.transcript],
                       ensure_ascii=False),
            session.omitted)


def _session(row: Sequence[Any]) -> Session:
    (id, started, ended, listener, client, helo, tls, user, logged_in, mechanism, messages,
     outcome, error, diagnosis, transcript, omitted) = row
    tls_mode, tls_version, tls_cipher = json.loads(tls)
    return Session(
        id=id, started=started, ended=ended, listener=listener, client=client, helo=helo,
        tls_mode=tls_mode, tls_version=tls_version, tls_cipher=tls_cipher, user=user,
        mechanism=mechanism, messages=tuple(json.loads(messages)), outcome=outcome,
        error=error, diagnosis=diagnosis,
        transcript=tuple(Entry(*item) for item in json.loads(transcript)),
        omitted=omitted, logged_in=bool(logged_in))


class SessionDatabase:
    """The table of sessions (blocking: call from one worker thread)."""

    def __init__(self, path: str) -> None:
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        os.chmod(path, 0o600)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)

    def add(self, sessions: Sequence[Session], keep: int) -> None:
        """Write C{sessions} and drop all but the newest C{keep}, in one transaction."""
        with self._db:
            self._db.execute("BEGIN")
            self._db.executemany(
                f"INSERT OR REPLACE INTO sessions ({_COLUMNS}) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [_row(session) for session in sessions])
            self._db.execute("DELETE FROM sessions WHERE seq <= "
                             "(SELECT seq FROM sessions ORDER BY seq DESC LIMIT 1 OFFSET ?)",
                             (keep,))

    def _where(self, chosen: SessionFilter) -> tuple[str, list[Any]]:
        clauses: list[str] = []
        arguments: list[Any] = []
        if chosen.outcome == "failed":
            clauses.append(f"outcome IN ({', '.join('?' * len(FAILURES))})")
            arguments += FAILURES
        elif chosen.outcome:
            clauses.append("outcome = ?")
            arguments.append(chosen.outcome)
        if chosen.listener:
            clauses.append("listener = ?")
            arguments.append(chosen.listener)
        if chosen.user is not None:
            clauses.append("user = ? AND logged_in = 1")
            arguments.append(chosen.user)
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", arguments

    def page(self, chosen: SessionFilter, start: int, limit: int
             ) -> tuple[int, int, list[Session]]:
        """(total, matching, the page of matching sessions, newest first)."""
        where, arguments = self._where(SessionFilter(user=chosen.user))
        total = self._db.execute(f"SELECT count(*) FROM sessions{where}", arguments).fetchone()[0]
        where, arguments = self._where(chosen)
        matching = self._db.execute(f"SELECT count(*) FROM sessions{where}",
                                    arguments).fetchone()[0]
        rows = self._db.execute(
            f"SELECT {_COLUMNS} FROM sessions{where} ORDER BY seq DESC LIMIT ? OFFSET ?",
            [*arguments, limit, start]).fetchall()
        return total, matching, [_session(row) for row in rows]

    def failed_since(self, chosen: SessionFilter, since: float) -> int:
        """How many sessions that C{chosen} may see failed after C{since}."""
        where, arguments = self._where(attrs.evolve(chosen, outcome="failed"))
        return int(self._db.execute(f"SELECT count(*) FROM sessions{where} AND ended > ?",
                                    [*arguments, since]).fetchone()[0])

    def get(self, id: str, chosen: SessionFilter) -> Session | None:
        where, arguments = self._where(chosen)
        where = f"{where} AND id = ?" if where else " WHERE id = ?"
        row = self._db.execute(f"SELECT {_COLUMNS} FROM sessions{where}",
                               [*arguments, id]).fetchone()
        return _session(row) if row else None

    def delete(self, chosen: SessionFilter) -> int:
        where, arguments = self._where(chosen)
        with self._db:
            return self._db.execute(f"DELETE FROM sessions{where}", arguments).rowcount

    def close(self) -> None:
        self._db.close()


class SessionLog(MultiService):
    """
    Finished sessions in, batched to L{SessionDatabase} off the reactor; the API's reads.
    Each session is also handed to C{listeners} (metrics, live events) as it ends.
    With C{keep = 0} nothing is kept and every read finds nothing.
    """

    def __init__(self, state_dir: str, keep: int, reactor: Any,
                 clock: IReactorTime | None = None) -> None:
        """C{reactor} runs the worker thread; C{clock} (default: C{reactor}) the batching."""
        super().__init__()
        self.keep = keep
        self._path = os.path.join(state_dir, FILE_NAME)
        self._clock: IReactorTime = clock if clock is not None else reactor
        self._threads = ThreadPoolService("mailsink-sessions", 1, reactor)
        """One thread: the one SQLite connection is used by it alone, in order."""
        self._threads.setServiceParent(self)
        self._db: SessionDatabase | None = None
        self._waiting: list[Session] = []
        self._timer: IDelayedCall | None = None
        self.listeners: list[Callable[[Session], None]] = []

    def startService(self) -> None:
        super().startService()
        if self.keep:
            self._db = self._open()

    def _open(self) -> SessionDatabase | None:
        """
        The sessions' database; one that cannot be read is moved aside and started anew
        (sessions are a debugging aid: they never keep mail from being taken).
        """
        try:
            os.makedirs(os.path.dirname(self._path), exist_ok=True)
            return SessionDatabase(self._path)
        except (sqlite3.DatabaseError, OSError) as error:
            aside = f"{self._path}.broken"
            log.warn("cannot use {path} ({error}); moved it to {aside} and starting an "
                     "empty one", path=self._path, error=error, aside=aside)
        try:
            for suffix in ("", "-wal", "-shm"):
                if os.path.exists(self._path + suffix):
                    os.replace(self._path + suffix, aside + suffix)
            return SessionDatabase(self._path)
        except (sqlite3.DatabaseError, OSError) as error:
            log.error("cannot keep SMTP sessions in {path} ({error}): check state_dir's "
                      "permissions; sessions are not kept until then", path=self._path,
                      error=error)
            return None

    def stopService(self) -> Deferred[None]:
        """
        Write what waits; sessions still open end after this (twistd closes their
        connections once the services stopped), so they are written one by one as they
        end, and the database closes after the reactor's shutdown.
        """
        stopped: Deferred[None] = super().stopService()  # the thread finishes its work
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        self._write_now()
        if self._db is not None:
            if hasattr(self._clock, "addSystemEventTrigger"):
                self._clock.addSystemEventTrigger("after", "shutdown", self._close)
            else:
                self._close()
        return stopped

    def _write_now(self) -> None:
        """Write what waits on this thread: only at shutdown, a few rows."""
        waiting, self._waiting = self._waiting, []
        if waiting and self._db is not None:
            self._db.add(waiting, self.keep)

    def _close(self) -> None:
        self._write_now()
        db, self._db = self._db, None
        if db is not None:
            db.close()

    def ended(self, session: Session) -> None:
        """A session is over (reactor thread): tell the listeners, keep it soon."""
        for listener in self.listeners:
            try:
                listener(session)
            except Exception:
                log.failure("a session listener failed")
        if self._db is None:
            return
        self._waiting.append(session)
        if not self.running:
            self._write_now()  # a connection closed by the shutdown
        elif self._timer is None:
            self._timer = self._clock.callLater(BATCH_DELAY, self._write_waiting)

    def _write_waiting(self) -> None:
        self._timer = None
        self._run(lambda db: None).addErrback(
            lambda failure: log.failure("cannot write SMTP sessions to {path}", failure,
                                        path=self._path))

    def _run(self, read: Callable[[SessionDatabase], Any]) -> Deferred[Any]:
        """Write what waits, then C{read}, in the worker thread (in this order)."""
        db = self._db
        if db is None:
            return succeed(read(_EMPTY))
        if not self.running:  # shutting down: the worker thread is gone
            self._write_now()
            return succeed(read(db))
        waiting, self._waiting = self._waiting, []
        keep = self.keep

        def work() -> Any:
            if waiting:
                db.add(waiting, keep)
            return read(db)

        return self._threads.run_blocking(work)

    def page(self, chosen: SessionFilter, start: int, limit: int
             ) -> Deferred[tuple[int, int, list[Session]]]:
        return self._run(lambda db: db.page(chosen, start, limit))

    def get(self, id: str, chosen: SessionFilter) -> Deferred[Session | None]:
        return self._run(lambda db: db.get(id, chosen))

    def failed_since(self, chosen: SessionFilter, since: float) -> Deferred[int]:
        return self._run(lambda db: db.failed_since(chosen, since))

    def delete(self, chosen: SessionFilter) -> Deferred[int]:
        return self._run(lambda db: db.delete(chosen))


class _NoSessions:
    """What reads find with C{max_sessions = 0}: nothing."""

    def page(self, chosen: SessionFilter, start: int, limit: int
             ) -> tuple[int, int, list[Session]]:
        return 0, 0, []

    def get(self, id: str, chosen: SessionFilter) -> None:
        return None

    def failed_since(self, chosen: SessionFilter, since: float) -> int:
        return 0

    def delete(self, chosen: SessionFilter) -> int:
        return 0


_EMPTY: Any = _NoSessions()


def no_sessions() -> SessionLog:
    """A log that keeps nothing: what the routes read when the daemon keeps no sessions."""
    return SessionLog("", 0, None)
