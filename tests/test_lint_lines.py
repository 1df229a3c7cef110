"""
Lint rules over raw lines and bytes (mailsink.checks.lint_lines): long lines, bare CR and
LF, 8-bit bytes where no encoding or SMTPUTF8 allows them; and how the input's line ends
are read (mailsink.checks.source).
"""

from __future__ import annotations

import time
import tracemalloc

from lint_samples import THUNDERBIRD, codes, findings, message, stored
from twisted.trial.unittest import TestCase

from mailsink.checks.source import read_source


class LongLineTests(TestCase):
    def test_long_line_in_a_part(self) -> None:
        raw = message("Content-Type: multipart/mixed; boundary=XX\n",
                      b"--XX\nContent-Type: text/plain\n\nhello\n--XX\n"
                      b"Content-Type: text/html; charset=utf-8\n\n<p>" + b"x" * 3000 +
                      b"</p>\n" + b"y" * 1200 + b"\n--XX--\n")
        found = findings(raw, "line-too-long")
        self.assertEqual(len(found), 1)
        self.assertEqual((found[0].field, found[0].severity), ("2", "error"))
        self.assertIn("part 2 (text/html) has 2 lines over 998 octets (the longest 3,007)",
                      found[0].message)
        self.assertIn("Postfix splits lines at 2048", found[0].message)
        self.assertIn("quoted-printable or base64", found[0].message)

    def test_long_header_and_body(self) -> None:
        raw = message("X-Tracking: " + "a" * 1000 + "\n", "b" * 999 + "\nshort\n")
        found = findings(raw, "line-too-long")
        self.assertEqual([f.field for f in found], ["X-Tracking", "body"])
        self.assertIn("the X-Tracking header has a line over 998 octets (the longest 1,012)",
                      found[0].message)
        self.assertIn("RFC 2047", found[0].message)
        self.assertIn("the body has a line over 998 octets (the longest 999)",
                      found[1].message)

    def test_998_octets_is_fine(self) -> None:
        for length in (997, 998):
            with self.subTest(length=length):
                raw = message("", "c" * length + "\n" + "d" * 600 + "\n")
                self.assertNotIn("line-too-long", codes(raw))
        self.assertIn("line-too-long", codes(message("", "e" * 999)))  # no final LF

    def test_five_megabyte_line_in_a_big_message(self) -> None:
        """25 MB with a 5 MB line: found, quickly, without copying the message many times."""
        body = (b"line of text\n" * (20 * 1024 * 1024 // 13)) + b"z" * (5 * 1024 * 1024)
        raw = message("", body + b"\n")
        tracemalloc.start()
        try:
            started = time.monotonic()
            found = findings(raw, "line-too-long")
            elapsed = time.monotonic() - started
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        self.assertEqual(len(found), 1)
        self.assertIn("the longest 5,242,880", found[0].message)
        self.assertLess(elapsed, 5.0)
        self.assertLess(peak, 4 * len(raw))


class BareLineEndTests(TestCase):
    def test_bare_cr_in_stored_message(self) -> None:
        """mailsink stores CRLF as LF, so any CR left was sent alone."""
        raw = message("X-Note: one\rtwo\n", "line\rone\nline two\n")
        found = findings(raw, "bare-cr")
        self.assertEqual([(f.field, f.severity) for f in found],
                         [("X-Note", "error"), ("body", "error")])
        self.assertIn("sendmail 8.18", found[0].message)

    def test_bare_cr_and_lf_in_crlf_file(self) -> None:
        eml = (b"From: a@shop.example.com\r\nDate: Tue, 02 Dec 2025 14:30:00 +0100\r\n"
               b"Message-ID: <m@shop.example.com>\r\n"
               b"Content-Type: multipart/mixed; boundary=B\r\n\r\n--B\r\n\r\nfine\r\n--B\r\n"
               b"Content-Type: text/plain\r\n\r\nbare\nfeed and bare\rreturn\r\n--B--\r\n")
        self.assertEqual([(f.code, f.field) for f in findings(eml)
                          if f.code.startswith("bare")], [("bare-cr", "2"), ("bare-lf", "2")])
        self.assertIn("Postfix 3.9", findings(eml, "bare-lf")[0].message)

    def test_bare_lf_cannot_show_in_lf_input(self) -> None:
        """In LF input (the stored form) every LF is a line end; in CRLF input, not."""
        crlf = THUNDERBIRD.replace(b"\n", b"\r\n").replace(b"Hallo Bob,\r\n",
                                                          b"Hallo Bob,\n")
        self.assertEqual(read_source(crlf).bare_lfs,
                         (THUNDERBIRD.index(b"Hallo Bob,\n") + len(b"Hallo Bob,"),))
        self.assertEqual(read_source(crlf.replace(b"\r\n", b"\n")).bare_lfs, ())

    def test_crlf_file_reads_like_the_stored_form(self) -> None:
        crlf = THUNDERBIRD.replace(b"\n", b"\r\n")
        self.assertEqual(read_source(crlf).data, THUNDERBIRD)
        self.assertNotIn("bare-lf", codes(crlf))
        self.assertNotIn("bare-cr", codes(crlf))


class EightBitTests(TestCase):
    def test_body_without_encoding(self) -> None:
        raw = message("Content-Type: text/plain; charset=utf-8\n", "Grüße\n".encode())
        found = findings(raw, "unencoded-8bit-body")
        self.assertEqual([(f.field, f.severity) for f in found], [("body", "error")])
        self.assertIn("missing, so 7bit", found[0].message)
        declared = message("Content-Type: text/plain; charset=utf-8\n"
                           "Content-Transfer-Encoding: 8bit\n", "Grüße\n".encode())
        self.assertEqual(codes(declared), [])

    def test_quoted_printable_with_raw_bytes(self) -> None:
        raw = message("Content-Type: text/plain; charset=utf-8\n"
                      "Content-Transfer-Encoding: quoted-printable\n", "Gr=C3=BC\xdfe\n"
                      .encode("latin-1"))
        found = findings(raw, "unencoded-8bit-body")
        self.assertIn("quoted-printable", found[0].message)

    def test_header_without_rfc2047(self) -> None:
        raw = message("X-Mailer: Mäiler\n", drop=()).replace(b"Subject: Hello",
                                                            "Subject: Grüße".encode())
        found = findings(raw, "unencoded-8bit-header")
        self.assertEqual([f.field for f in found], ["Subject", "X-Mailer"])
        self.assertIn("not sent with SMTPUTF8", found[0].message)

    def test_header_8bit_allowed_with_smtputf8(self) -> None:
        data = ("From: Jörg <jörg@shop.example.com>\nDate: Tue, 02 Dec 2025 14:30:00 +0100\n"
                "Message-ID: <m@shop.example.com>\nSubject: Grüße\n\nhi\n").encode()
        self.assertEqual(codes(stored(data, protocol="UTF8SMTPS",
                                      mail_from="jörg@shop.example.com")), [])
        self.assertIn("unencoded-8bit-header", codes(stored(data, protocol="ESMTPS")))

    def test_part_header(self) -> None:
        raw = message("Content-Type: multipart/mixed; boundary=B\n",
                      "--B\n\nhi\n--B\nContent-Type: application/pdf\n"
                      "Content-Disposition: attachment; filename=\"Übersicht.pdf\"\n"
                      "Content-Transfer-Encoding: base64\n\nJVBERg==\n--B--\n".encode())
        found = findings(raw, "unencoded-8bit-header")
        self.assertEqual([f.field for f in found], ["2"])
        self.assertIn("part 2's Content-Disposition header", found[0].message)
