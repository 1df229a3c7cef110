"""The bulk DATA decoder: end marker, dot-stuffing, line ends, limits, any chunking."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import TestCase

from mailsink.smtp.body import LONG_LINE_FLUSH, MAX_LINE, DataDecoder


def stuff(lines: list[bytes]) -> bytes:
    """What an SMTP client sends for these message lines (RFC 5321 4.5.2)."""
    return b"".join((b"." + line if line.startswith(b".") else line) + b"\r\n"
                    for line in lines) + b".\r\n"


def decode(wire: bytes, sizes: list[int], max_line: int | None = MAX_LINE
           ) -> tuple[bytes, bytes | None, DataDecoder]:
    decoder = DataDecoder(max_line)
    message = b""
    position = 0
    for size in sizes or [len(wire)]:
        chunk = decoder.feed(wire[position:position + size])
        position += size
        message += chunk.message
        if chunk.rest is not None:
            return message, chunk.rest + wire[position:], decoder
    while position < len(wire):
        chunk = decoder.feed(wire[position:])
        position = len(wire)
        message += chunk.message
        if chunk.rest is not None:
            return message, chunk.rest, decoder
    return message, None, decoder


line_text = st.binary(max_size=40).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))
long_line_text = st.integers(LONG_LINE_FLUSH - 3, LONG_LINE_FLUSH + 3).map(
    lambda n: b"." * (n % 3) + b"z" * n)
"""Lines around the size at which an unfinished line is passed on, some dot-stuffed."""


class DecoderTests(TestCase):
    @settings(max_examples=300, deadline=None)
    @given(lines=st.lists(line_text, max_size=20), sizes=st.lists(
        st.integers(min_value=1, max_value=17), max_size=60), after=st.binary(max_size=20))
    def test_any_message_any_chunking(self, lines: list[bytes], sizes: list[int],
                                      after: bytes) -> None:
        message, rest, decoder = decode(stuff(lines) + after, sizes)
        self.assertEqual(message, b"".join(line + b"\n" for line in lines))
        self.assertEqual(rest, after)
        self.assertFalse(decoder.line_too_long)

    def test_empty_message(self) -> None:
        self.assertEqual(decode(b".\r\nQUIT\r\n", [])[:2], (b"", b"QUIT\r\n"))

    def test_leading_dot_on_first_line_is_unstuffed(self) -> None:
        self.assertEqual(decode(b"..x\r\n.\r\n", [1] * 9)[:2], (b".x\n", b""))

    def test_bare_lf_never_ends_data(self) -> None:
        """SMTP smuggling: only CRLF.CRLF ends DATA."""
        wire = b"a\n.\r\nMAIL FROM:<x@y>\r\nb\r\n.\nc\r\n.\r\nNEXT"
        message, rest, _ = decode(wire, [])
        self.assertEqual(rest, b"NEXT")
        self.assertEqual(message, b"a\n.\nMAIL FROM:<x@y>\nb\n\nc\n")

    def test_not_ended(self) -> None:
        message, rest, _ = decode(b"abc\r\ndef", [])
        self.assertEqual((message, rest), (b"abc\n", None))

    def test_longest_line_allowed(self) -> None:
        message, rest, decoder = decode(b"x" * 998 + b"\r\n.\r\n", [100] * 20)
        self.assertEqual((len(message), rest, decoder.line_too_long), (999, b"", False))

    def test_line_too_long_skips_to_end_marker(self) -> None:
        for sizes in ([], [7] * 400, [1000, 1000, 1000]):
            _message, rest, decoder = decode(b"ok\r\n" + b"x" * 999 + b"\r\nmore\r\n.\r\nQ",
                                            sizes)
            self.assertTrue(decoder.line_too_long)
            self.assertEqual(rest, b"Q")

    def test_unterminated_long_line_keeps_memory_bounded(self) -> None:
        decoder = DataDecoder(MAX_LINE)
        for _ in range(1000):
            decoder.feed(b"y" * 4096)
        self.assertTrue(decoder.line_too_long)
        self.assertLess(len(decoder._pending) + len(decoder._tail), 10)
        self.assertEqual(decoder.feed(b"\r\n.\r\nX").rest, b"X")

    def test_long_lines_accepted_by_default(self) -> None:
        """Without max_line, lines of any length pass through byte for byte."""
        long = b"h" * (3 * LONG_LINE_FLUSH + 5)
        lines = [b"X-Long: " + long, b"", b"." + long, b"short", b".." + long + b"\r", b"end"]
        for sizes in ([], [4096] * 60, [LONG_LINE_FLUSH + 1] * 10, [1] * 40 + [70000] * 10):
            message, rest, decoder = decode(stuff(lines) + b"QUIT\r\n", sizes, max_line=None)
            self.assertEqual(message, b"".join(line + b"\n" for line in lines))
            self.assertEqual(rest, b"QUIT\r\n")
            self.assertFalse(decoder.line_too_long)

    def test_unterminated_long_line_passed_on_in_pieces(self) -> None:
        """A 20 MB line without a break is never held: what is kept stays under the flush size."""
        decoder = DataDecoder()
        out = 0
        for n in range(5000):
            chunk = decoder.feed(b"." + b"y" * 4095 if n == 0 else b"y" * 4095 + b"\r")
            out += len(chunk.message)
            self.assertLessEqual(len(decoder._pending), LONG_LINE_FLUSH + 4096)
        chunk = decoder.feed(b"\r\n.\r\nX")
        out += len(chunk.message)
        self.assertEqual(chunk.rest, b"X")
        # Every byte fed (bare CRs are data), less the stuffing dot, plus the line's LF.
        self.assertEqual(out, 5000 * 4096 - 1 + 1)

    @settings(max_examples=40, deadline=None)
    @given(lines=st.lists(st.one_of(line_text, long_line_text), max_size=6),
           size=st.integers(min_value=1, max_value=LONG_LINE_FLUSH * 2))
    def test_any_long_lines_any_chunking(self, lines: list[bytes], size: int) -> None:
        wire = stuff(lines) + b"after"
        message, rest, _ = decode(wire, [size] * (len(wire) // size + 1), max_line=None)
        self.assertEqual(message, b"".join(line + b"\n" for line in lines))
        self.assertEqual(rest, b"after")

    def test_skip_drops_the_rest(self) -> None:
        decoder = DataDecoder()
        self.assertEqual(decoder.feed(b"keep\r\npart").message, b"keep\n")
        decoder.skip()
        self.assertEqual(decoder.feed(b"ial\r\ndrop\r\n.").message, b"")
        chunk = decoder.feed(b"\r\nafter")
        self.assertEqual((chunk.message, chunk.rest), (b"", b"after"))

    def test_counts_wire_bytes(self) -> None:
        decoder = DataDecoder()
        decoder.feed(b"ab\r\n..c\r\n")
        self.assertEqual(decoder.wire_bytes, 9)

    @settings(max_examples=300, deadline=None)
    @given(wire=st.lists(st.sampled_from([b"\r", b"\n", b".", b"a", b"\r\n", b"\r\n.\r\n"]),
                         max_size=40).map(b"".join),
           sizes=st.lists(st.integers(min_value=1, max_value=5), max_size=50))
    def test_chunking_never_changes_the_result(self, wire: bytes, sizes: list[int]) -> None:
        whole = decode(wire, [])
        split = decode(wire, sizes)
        self.assertEqual(whole[:2], split[:2])
