"""
One SMTP session as it happens (L{SessionRecorder}) and as it is kept (L{Session}).

The SMTP protocol tells the recorder what the wire saw: each command line (AUTH payloads
already replaced by C{***}), each reply, TLS, logins, stored messages, and the problems it
recognised (a TLS ClientHello on a plaintext port, a client dropping the link during DATA,
a chaos-injected error). At the end the recorder settles the outcome, and L{freeze} takes
the sentences of L{mailsink.sessions.diagnosis} into the L{Session} that is kept.

The transcript is bounded: its first L{HEAD_LINES} and last L{TAIL_LINES} entries, each
cut to L{MAX_TEXT} octets (200 lines, under 64 KB), with the count of those left out.
"""

from __future__ import annotations

import collections
import itertools
import secrets
from collections.abc import Callable
from typing import Any, NamedTuple

import attrs

from mailsink.message.shapes import rfc3339

HEAD_LINES = 150
TAIL_LINES = 50
MAX_TEXT = 320
"""UTF-8 octets kept of one transcript entry: 200 entries stay under 64 KB."""

OUTCOMES = ("delivered", "refused", "failed", "no-mail", "dropped")
CLIENT, SERVER, NOTE = "C", "S", "*"
"""Who a transcript entry is from: the client, mailsink's reply, or a note about the link."""

FAILED_PROBLEMS = frozenset({"tls-on-plaintext", "plaintext-on-implicit",
                             "silent-on-implicit", "tls-failed", "storage"})
"""Problems that mean the client never got to deliver, whatever it sent."""


class Entry(NamedTuple):
    """One line of a transcript (a named tuple: one is made per line of every session)."""

    time: float
    side: str
    text: str

    def to_json(self) -> dict[str, str]:
        return {"Time": rfc3339(self.time), "Side": self.side, "Text": self.text}


@attrs.frozen
class Session:
    """A finished SMTP session, as the API shows it and the store keeps it."""

    id: str
    started: float
    ended: float
    listener: str
    client: str
    helo: str
    tls_mode: str
    """C{none}, C{implicit} or C{starttls}."""
    tls_version: str
    tls_cipher: str
    user: str
    """The user that logged in (or, failing that, tried to); "" for none."""
    mechanism: str
    messages: tuple[str, ...]
    outcome: str
    error: str
    diagnosis: str
    transcript: tuple[Entry, ...]
    omitted: int = 0
    """Transcript entries left out between the head and the tail."""
    logged_in: bool = False

    def summary_json(self) -> dict[str, Any]:
        """Everything but the transcript (the list's rows)."""
        return {
            "ID": self.id, "Started": rfc3339(self.started), "Ended": rfc3339(self.ended),
            "Listener": self.listener, "Client": self.client, "Helo": self.helo,
            "TLS": {"Mode": self.tls_mode, "Version": self.tls_version,
                    "Cipher": self.tls_cipher},
            "User": self.user, "Mechanism": self.mechanism, "LoggedIn": self.logged_in,
            "Messages": list(self.messages), "Outcome": self.outcome, "Error": self.error,
            "Diagnosis": self.diagnosis,
        }

    def to_json(self) -> dict[str, Any]:
        """The whole session, transcript included."""
        entries = [entry.to_json() for entry in self.transcript]
        if self.omitted:
            entries.insert(HEAD_LINES, {"Time": entries[HEAD_LINES]["Time"], "Side": NOTE,
                                        "Text": f"… {self.omitted} more lines"})
        return {**self.summary_json(), "Transcript": entries}


_ID_PREFIX = secrets.token_hex(4)
_ID_COUNTER = itertools.count(1)


def new_session_id() -> str:
    """16 hex digits: this run's random prefix and a counter (unique, cheap, URL-safe)."""
    return f"{_ID_PREFIX}{next(_ID_COUNTER) & 0xFFFFFFFF:08x}"


def _cut(text: str) -> str:
    """C{text}, or as much of it as fits in L{MAX_TEXT} UTF-8 octets with the count cut."""
    if len(text) <= MAX_TEXT // 4 or (len(text) <= MAX_TEXT
                                       and len(text.encode("utf-8")) <= MAX_TEXT):
        return text  # a character is at most 4 octets: short text needs no encoding
    room = MAX_TEXT - len(f"… ({len(text)} more characters)".encode())
    kept = text[:room].encode("utf-8")[:room].decode("utf-8", "ignore")
    return f"{kept}… ({len(text) - len(kept)} more characters)"


class SessionRecorder:
    """Collects one session on the reactor thread; L{end} hands the L{Session} to C{sink}."""

    def __init__(self, listener: str, client: str, clock: Callable[[], float]) -> None:
        self.id = new_session_id()
        self.listener = listener
        self.client = client
        self._now = clock
        self.started = clock()
        self.helo = ""
        self.tls_mode = "none"
        self.tls_version = ""
        self.tls_cipher = ""
        self.user = ""
        self.mechanism = ""
        self.logged_in = False
        self.messages: list[str] = []
        self.refused_since_stored = False
        """A 4xx/5xx reply came after the last message stored (a later one was refused)."""
        self.last_error: tuple[int, str, str] | None = None
        """(code, reply text, the command it answered) of the last 4xx/5xx reply."""
        self.problems: dict[str, str] = {}
        """What the protocol recognised, by kind, with a detail (see L{diagnosis})."""
        self.quit = False
        self.in_transaction = False
        self.data_octets = 0
        self.last_command = ""
        self._head: list[Entry] = []
        self._tail: collections.deque[Entry] = collections.deque(maxlen=TAIL_LINES)
        self._omitted = 0
        self._ended = False

    # What the wire saw.

    def client_said(self, text: str) -> None:
        """A command line (with any AUTH payload already replaced by C{***})."""
        verb = text.split(" ", 1)[0].upper()
        if verb.isalpha():
            self.last_command = verb
        self._add(CLIENT, text)

    def server_said(self, code: int, text: str) -> None:
        if "\n" in text:
            lines = text.split("\n")
            self._add(SERVER, "\n".join([f"{code}-{line}" for line in lines[:-1]]
                                        + [f"{code} {lines[-1]}"]))
        else:
            self._add(SERVER, f"{code} {text}")
        if code >= 400:
            self.last_error = (code, text.split("\n", 1)[0], self.last_command)
            self.refused_since_stored = True

    def note(self, text: str) -> None:
        """Something about the link rather than a line of SMTP."""
        self._add(NOTE, text)

    def _add(self, side: str, text: str) -> None:
        entry = Entry(self._now(), side, _cut(text))
        if len(self._head) < HEAD_LINES:
            self._head.append(entry)
            return
        if len(self._tail) == TAIL_LINES:
            self._omitted += 1
        self._tail.append(entry)

    # What it meant.

    def tls_started(self, mode: str, version: str, cipher: str) -> None:
        self.tls_mode, self.tls_version, self.tls_cipher = mode, version, cipher
        self.note(f"TLS handshake done ({mode}): {version} with {cipher}")

    def login(self, user: str, mechanism: str, succeeded: bool) -> None:
        self.user, self.mechanism, self.logged_in = user, mechanism, succeeded

    def stored(self, message_id: str) -> None:
        self.messages.append(message_id)
        self.refused_since_stored = False

    def problem(self, kind: str, detail: str = "") -> None:
        """Note a recognised problem (see L{mailsink.sessions.diagnosis} for the kinds)."""
        self.problems.setdefault(kind, detail)

    @property
    def outcome(self) -> str:
        if self.messages:
            return "delivered"
        if FAILED_PROBLEMS.intersection(self.problems):
            return "failed"
        if "data-dropped" in self.problems:
            return "dropped"
        if self.last_error is not None:
            return "refused"
        if self.in_transaction and not self.quit:
            return "dropped"
        return "no-mail"

    def end(self, reason: str = "") -> bool:
        """The link is gone (C{reason}: a note on why); False if it had ended already."""
        if self._ended:
            return False
        self._ended = True
        if reason:
            self.note(reason)
        return True

    def freeze(self, diagnosis: str, error: str) -> Session:
        """The finished L{Session}, with the sentences the diagnosis made of it."""
        return Session(
            id=self.id, started=self.started, ended=self._now(), listener=self.listener,
            client=self.client, helo=self.helo, tls_mode=self.tls_mode,
            tls_version=self.tls_version, tls_cipher=self.tls_cipher, user=self.user,
            mechanism=self.mechanism, messages=tuple(self.messages), outcome=self.outcome,
            error=error, diagnosis=diagnosis,
            transcript=tuple(self._head) + tuple(self._tail), omitted=self._omitted,
            logged_in=self.logged_in)
