"""Lint rules for bulk mail (mailsink.checks.lint_bulk): List-Unsubscribe and size."""

from __future__ import annotations

from lint_samples import codes, findings, message
from twisted.trial.unittest import TestCase

from mailsink.checks.lint_bulk import GMAIL_LIMIT, SES_LIMIT

ONE_CLICK = "List-Unsubscribe-Post: List-Unsubscribe=One-Click\n"


class ListUnsubscribeTests(TestCase):
    def test_neither_https_nor_mailto(self) -> None:
        for value in ("https://shop.example.com/u/123", "<http://shop.example.com/u/123>",
                      "<tel:+15555550100>"):
            with self.subTest(value=value):
                found = findings(message(f"List-Unsubscribe: {value}\n" + ONE_CLICK),
                                 "list-unsubscribe-invalid")
                self.assertEqual([(f.field, f.severity) for f in found],
                                 [("List-Unsubscribe", "error")])

    def test_https_needs_one_click_post(self) -> None:
        header = "List-Unsubscribe: <https://shop.example.com/u/123>\n"
        found = findings(message(header), "list-unsubscribe-not-one-click")
        self.assertEqual([(f.field, f.severity) for f in found],
                         [("List-Unsubscribe-Post", "error")])
        self.assertIn("RFC 8058", found[0].reference)
        wrong = message(header + "List-Unsubscribe-Post: List-Unsubscribe=Yes\n")
        self.assertIn("list-unsubscribe-not-one-click", codes(wrong))
        self.assertEqual(codes(message(header + ONE_CLICK)), [])

    def test_mailto_alone_or_with_https(self) -> None:
        self.assertEqual(codes(message("List-Unsubscribe: <mailto:u@shop.example.com>\n")),
                         [])
        both = ("List-Unsubscribe: <mailto:u@shop.example.com?subject=unsubscribe>,\n"
                " <https://shop.example.com/u/123>\n" + ONE_CLICK)
        self.assertEqual(codes(message(both)), [])


class SizeTests(TestCase):
    def test_limits_count_line_ends_as_crlf(self) -> None:
        line = b"x" * 75 + b"\n"
        lines = SES_LIMIT // 77 + 1  # over 10 MB only once each LF is a CRLF
        self.assertLess(lines * len(line), SES_LIMIT)
        found = findings(message("", line * lines), "message-over-10mb")
        self.assertEqual([(f.field, f.severity) for f in found], [("message", "warning")])
        self.assertIn("Amazon SES", found[0].message)
        self.assertEqual(codes(message("", line * (lines - 200))), [])

    def test_over_25_megabytes(self) -> None:
        found = findings(message("", (b"y" * 76 + b"\n") * (GMAIL_LIMIT // 77 + 10)))
        self.assertEqual([f.code for f in found], ["message-over-25mb"])
        self.assertIn("552 5.3.4", found[0].message)
