"""Lint rules comparing envelope and headers (mailsink.checks.lint_envelope)."""

from __future__ import annotations

from lint_samples import clean_message, codes, findings, message, stored
from twisted.trial.unittest import TestCase

from mailsink.checks.lint_envelope import organizational_domain


class AlignmentTests(TestCase):
    def test_from_domain_differs_from_mail_from(self) -> None:
        raw = stored(clean_message(), mail_from="bounce-123@mailer.example.net")
        found = findings(raw, "from-domain-not-aligned")
        self.assertEqual([(f.field, f.severity) for f in found], [("From", "warning")])
        self.assertIn("shop.example.com differs from the MAIL FROM domain mailer.example.net",
                      found[0].message)
        self.assertIn("DKIM", found[0].message)

    def test_relaxed_alignment(self) -> None:
        for mail_from in ("bounces@shop.example.com", "b@em123.shop.example.com",
                          "b@example.com", "b@SHOP.EXAMPLE.COM"):
            with self.subTest(mail_from=mail_from):
                raw = stored(clean_message(), mail_from=mail_from)
                self.assertEqual(codes(raw), [])

    def test_null_sender_is_not_compared(self) -> None:
        self.assertEqual(codes(stored(clean_message(), mail_from="")), [])

    def test_organizational_domain(self) -> None:
        self.assertEqual(organizational_domain("mail.shop.example.co.uk"), "example.co.uk")
        self.assertEqual(organizational_domain("a.b.example.com."), "example.com")
        self.assertEqual(organizational_domain("localhost"), "localhost")


class BccTests(TestCase):
    def test_bcc_header_left_in(self) -> None:
        found = findings(message("Bcc: boss@shop.example.com\n"), "bcc-header")
        self.assertEqual([(f.field, f.severity) for f in found], [("Bcc", "error")])

    def test_empty_bcc_reveals_nothing(self) -> None:
        self.assertEqual(codes(message("Bcc:\n")), [])


class EnvelopeUnknownTests(TestCase):
    def test_file_without_trace_headers(self) -> None:
        found = findings(clean_message().as_bytes())
        self.assertEqual([(f.code, f.severity, f.field) for f in found],
                         [("envelope-unknown", "info", "message")])

    def test_a_clients_own_return_path_is_not_an_envelope(self) -> None:
        data = b"Return-Path: <x@y.example>\n" + clean_message().as_bytes()
        self.assertEqual(codes(data), ["envelope-unknown"])
