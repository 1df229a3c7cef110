"""
Decoding the bytes of an SMTP DATA section in bulk, not line by line.

Python that calls a method per line cannot keep up with a disk; this works on whole
chunks with C{bytes} methods (find, split, replace) that run in C, and holds back only the
unfinished last line. It finds the end marker (only C{CRLF . CRLF}: a bare LF never ends
DATA, which closes the SMTP smuggling hole), undoes dot-stuffing and turns CRLF into the LF
that Maildir files use.

Lines over RFC 5321's 998 octets are passed on by default, as production servers take them
(an unfinished line longer than L{LONG_LINE_FLUSH} is handed on in pieces, so a 20 MB line is
never held whole); with C{max_line} set, such a message is refused instead.
"""

from __future__ import annotations

import attrs

MAX_LINE = 998
"""RFC 5321 section 4.5.3.1.6: 998 octets of text before the CRLF."""

LONG_LINE_FLUSH = 65536
"""An unfinished line longer than this is passed on in pieces (memory stays flat)."""

_END = b"\r\n.\r\n"


@attrs.define
class Chunk:
    """What one call of L{DataDecoder.feed} found."""

    message: bytes
    """Decoded message bytes (LF line ends), empty once the decoder is skipping."""
    rest: bytes | None
    """Bytes after the end marker (pipelined commands), or None while DATA goes on."""


class DataDecoder:
    """
    State of one DATA section. Feed it the wire bytes as they come; it returns decoded
    message bytes and, once the end marker is seen, what followed it.

    After L{skip} (or, with C{max_line} set, a line over it) it only looks for the end
    marker, keeping a few bytes, so a client that sends too much costs no memory.
    """

    def __init__(self, max_line: int | None = None) -> None:
        self.max_line = max_line
        """Refuse lines longer than this (RFC 5321 strictness); None passes them on."""
        self.wire_bytes = 0
        self.line_too_long = False
        self._skipping = False
        self._pending = b""
        self._after_crlf = True
        self._mid_line = False
        """The start of the unfinished line was already passed on (see L{LONG_LINE_FLUSH})."""
        self._tail = b""

    @property
    def skipping(self) -> bool:
        """True once the rest of the section is being dropped."""
        return self._skipping

    def skip(self) -> None:
        """Drop everything up to the end marker (e.g. the message is too big)."""
        if not self._skipping:
            self._skipping = True
            self._tail = (self._stub() + self._pending)[-(len(_END) - 1):]
            self._pending = b""

    def feed(self, data: bytes) -> Chunk:
        """Decode the next bytes of the DATA section."""
        self.wire_bytes += len(data)
        if self._skipping:
            return self._feed_skipping(data)
        data = self._pending + data
        # Work only on whole lines; the unfinished last line waits for more bytes.
        # A bare LF also counts as a line end here (so line lengths and the held-back
        # tail stay bounded), but only CRLF starts a line that can end DATA.
        cut = data.rfind(b"\n") + 1
        probe = self._stub() + memoryview(data)[:cut]  # one copy, not two
        # Both the end marker and dot-stuffing start with CRLF-dot: one search rules
        # both out for nearly every chunk.
        dot = probe.find(b"\r\n.")
        if dot >= 0:
            end = probe.find(_END, dot)
            if end >= 0:
                rest = probe[end + len(_END):] + data[cut:]
                return Chunk(self._decode(probe[: end + 2], stuffed=True), rest)
        message = self._decode(probe, stuffed=dot >= 0)
        if cut:
            self._after_crlf = data[cut - 2: cut] == b"\r\n"
            self._mid_line = False
        self._pending = data[cut:]
        if self.max_line is not None and len(self._pending) > self.max_line + 1:
            self.line_too_long = True
        if self.line_too_long:
            self.skip()
            return Chunk(b"", None)
        if len(self._pending) > LONG_LINE_FLUSH:
            message += self._pass_on_unfinished_line()
        return Chunk(message, None)

    def _pass_on_unfinished_line(self) -> bytes:
        """
        Hand on the unfinished line but a trailing CR (it may start the CRLF): so long a line
        can be neither the end marker nor change its dot-stuffing by what follows.
        """
        keep = 1 if self._pending.endswith(b"\r") else 0
        piece = self._pending[: len(self._pending) - keep]
        self._pending = self._pending[len(piece):]
        if not self._mid_line and self._after_crlf and piece.startswith(b"."):
            piece = piece[1:]
        self._mid_line = True
        return piece

    def _stub(self) -> bytes:
        """Two bytes standing for what came before: a CRLF, a bare LF, or part of a line."""
        if self._mid_line:
            return b"\0\0"
        return b"\r\n" if self._after_crlf else b"\0\n"

    def _decode(self, probe: bytes, stuffed: bool) -> bytes:
        """Dot-unstuff and convert line ends of C{probe} (which starts with the stub)."""
        if len(probe) <= 2:
            return b""
        if stuffed:
            probe = probe.replace(b"\r\n.", b"\r\n")
        if self.max_line is not None and self._has_long_line(probe.split(b"\r\n"),
                                                             self.max_line):
            self.line_too_long = True
            return b""
        # The stub became a leading "\n" (after CRLF), or "\0\n" or "\0\0" (after a
        # bare LF, or within a line).
        return probe.replace(b"\r\n", b"\n")[1 if self._stub() == b"\r\n" else 2:]

    @staticmethod
    def _has_long_line(lines: list[bytes], max_line: int) -> bool:
        """Whether a line is over C{max_line}; bare LFs also end lines here."""
        if max(map(len, lines)) <= max_line:
            return False
        return any(len(segment) > max_line
                   for line in lines if len(line) > max_line
                   for segment in line.split(b"\n"))

    def _feed_skipping(self, data: bytes) -> Chunk:
        probe = self._tail + data
        end = probe.find(_END)
        if end >= 0:
            return Chunk(b"", probe[end + len(_END):])
        self._tail = probe[-(len(_END) - 1):]
        return Chunk(b"", None)
