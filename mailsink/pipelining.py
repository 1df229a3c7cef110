"""
The input loop shared by the SMTP and POP3 servers: pipelined command lines are taken from
a buffer one at a time, and while a command's answer waits on a Deferred (the disk, the
cred portal) the lines behind it stay in the buffer.

Why not C{LineOnlyReceiver} and act on each line as it arrives:
- Replies stay in order: a command answered later holds back the ones pipelined behind
  it, so no reply overtakes an earlier one (PIPELINING, RFC 2920 and RFC 2449).
- STARTTLS injection: nothing behind a command has been acted on while that command runs,
  so STARTTLS or STLS can drop the plaintext pipelined behind it (L{drop_pipelined})
  before TLS begins (RFC 3207 section 4.2, RFC 2595 section 4).
- Backpressure: past L{MAX_BUFFERED_WHILE_WAITING} octets held behind a waiting command,
  reading pauses until the command is answered.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred

MAX_BUFFERED_WHILE_WAITING = 1024 * 1024
"""Pipelined input kept while a command waits; beyond it, reading pauses."""


class PipelinedInput:
    """Buffered, one-command-at-a-time input; mixed into a line protocol."""

    max_line: int
    """Longest command line in octets; the protocol sets it."""

    # Provided by the protocol.
    transport: Any
    lineReceived: Callable[[bytes], None]
    _line_too_long: Callable[[], None]
    """Answer a line longer than L{max_line} (the line itself is skipped)."""
    _take_input: Callable[[], bool]
    """Act on the next piece of the buffer (usually L{_take_line}); False to stop for now."""

    _buffer = b""
    _start = 0
    """Octets at the front of L{_buffer} already acted on (cutting each line off the front
    would copy the rest every time: quadratic in what a client pipelines)."""
    _blocked = False
    _processing = False
    _reading_paused = False
    _discarding_long_line = False

    def buffer_input(self, data: bytes) -> None:
        """Add received bytes to the buffer and act on what may be acted on now."""
        self._buffer = self._buffer[self._start:] + data if self._start else self._buffer + data
        self._start = 0
        self._process()

    def take_buffered(self) -> bytes:
        """All the input not acted on yet, taken out of the buffer (for message data)."""
        rest = self._buffer[self._start:] if self._start else self._buffer
        self._buffer, self._start = b"", 0
        return rest

    def put_back(self, rest: bytes) -> None:
        """Input taken with L{take_buffered} and not used (what follows message data)."""
        self._buffer, self._start = rest, 0

    def drop_pipelined(self) -> bool:
        """Forget the input not yet acted on (for STARTTLS); True if there was some."""
        return bool(self.take_buffered())

    def _pending(self) -> int:
        return len(self._buffer) - self._start

    def _connected(self) -> bool:
        return self.transport is not None and not self.transport.disconnecting

    def _process(self) -> None:
        """Run the buffered commands in order; stop while one waits for an answer."""
        self._processing = True
        try:
            while self._pending() and not self._blocked and self._connected():
                if not self._take_input():
                    break
        finally:
            self._processing = False
        if self.transport is None:
            return
        if self._blocked and self._pending() > MAX_BUFFERED_WHILE_WAITING:
            self._reading_paused = True
            self.transport.pauseProducing()
        elif self._reading_paused and not self._blocked:
            self._reading_paused = False
            self.transport.resumeProducing()

    def _take_line(self) -> bool:
        """Handle one buffered command line; False when the line is not complete yet."""
        end = self._buffer.find(b"\n", self._start)
        if end < 0:
            if self._pending() > self.max_line:
                if not self._discarding_long_line:
                    self._line_too_long()
                self._discarding_long_line = True
                self.take_buffered()
            return False
        line, self._start = self._buffer[self._start:end], end + 1
        if self._discarding_long_line:
            self._discarding_long_line = False
        elif len(line) > self.max_line + 1:
            self._line_too_long()
        else:
            self.lineReceived(line.removesuffix(b"\r"))
        return True

    def _block_until(self, waiting: Deferred[Any]) -> None:
        """
        Hold later commands back until C{waiting} has fired (keeps replies in order);
        a Deferred that has fired already releases them at once.
        """
        self._blocked = True

        def unblock(result: object) -> object:
            self._blocked = False
            if not self._processing and self._connected():
                self._process()
            return result

        waiting.addBoth(unblock)
