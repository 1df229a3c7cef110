"""Lint rules over the top-level headers (mailsink.checks.lint_headers, .address)."""

from __future__ import annotations

from lint_samples import codes, findings, message, stored
from twisted.trial.unittest import TestCase

from mailsink.checks.address import mailboxes
from mailsink.checks.lint_headers import date_problem


class FromTests(TestCase):
    def test_missing(self) -> None:
        found = findings(message(drop=("From",)), "missing-from")
        self.assertEqual([(f.severity, f.field) for f in found], [("error", "From")])
        self.assertIn("Gmail refuses", found[0].message)

    def test_invalid_forms(self) -> None:
        for value in ("John Smith", "app@", "<@shop.example.com>", "app@shop..example.com",
                      "app@shop.example.com <app@shop.example.com>",
                      '"unclosed <app@shop.example.com>', "Team: app@shop.example.com;",
                      "App <app@shop.example.com> trailing"):
            with self.subTest(value=value):
                found = findings(message(f"From: {value}\n", drop=("From",)),
                                 "invalid-from")
                self.assertEqual(len(found), 1)
                self.assertEqual((found[0].severity, found[0].field), ("error", "From"))

    def test_valid_forms(self) -> None:
        for value in ("app@shop.example.com", "App <app@shop.example.com>",
                      '"Shop, Inc." <app@shop.example.com>', "John Q. Public <jq@x.example>",
                      "=?utf-8?q?J=C3=B6rg?= <j@x.example>", "app@shop.example.com (Shop)",
                      '"quoted\\"local"@x.example', "ops@[192.0.2.1]"):
            with self.subTest(value=value):
                found = codes(message(f"From: {value}\n", drop=("From",)))
                self.assertNotIn("invalid-from", found)
                self.assertNotIn("several-from-without-sender", found)

    def test_several_addresses_need_a_sender(self) -> None:
        two = "From: a@shop.example.com, b@shop.example.com\n"
        found = findings(message(two, drop=("From",)), "several-from-without-sender")
        self.assertEqual(len(found), 1)
        self.assertIn("2 addresses", found[0].message)
        with_sender = message(two + "Sender: a@shop.example.com\n", drop=("From",))
        self.assertNotIn("several-from-without-sender", codes(with_sender))

    def test_mailbox_parser(self) -> None:
        self.assertEqual(mailboxes('Bob <bob(work)@x.example>, "A, B" <ab@y.example>')
                         .addresses, ("bob@x.example", "ab@y.example"))
        self.assertIn("no @domain", mailboxes("Bob").problem or "")
        self.assertIn("not closed", mailboxes("(Bob a@b.example").problem or "")
        self.assertIn("names no address", mailboxes(" , ").problem or "")


class DateTests(TestCase):
    def test_missing(self) -> None:
        found = findings(message(drop=("Date",)), "missing-date")
        self.assertEqual([(f.severity, f.field) for f in found], [("error", "Date")])

    def test_invalid(self) -> None:
        for value, why in [("2025-12-02T14:30:00Z", "expected"),
                           ("Wed, 02 Dec 2025 14:30:00 +0100", "Tuesday"),
                           ("Tue, 31 Feb 2025 14:30:00 +0100", "day is out of range"),
                           ("Tue, 02 Dez 2025 14:30:00 +0100", "no month"),
                           ("02 Dec 2025 14:30:00 +0175", "59 minutes"),
                           ("Tue, 02 Dec 2025 14:30:00", "expected"),
                           ("Tue, 02 Dec 25 14:30:00 +0100", "expected")]:
            with self.subTest(value=value):
                found = findings(message(f"Date: {value}\n", drop=("Date",)), "invalid-date")
                self.assertEqual(len(found), 1)
                self.assertEqual(found[0].severity, "warning")
                self.assertIn(why, found[0].message)

    def test_valid(self) -> None:
        for value in ("Tue, 02 Dec 2025 14:30:00 +0100", "2 Dec 2025 14:30 -0000",
                      "Tue, 2 Dec 2025 13:30:00 GMT", "Tue, 02 Dec 2025 13:30:00 +0000 (UTC)",
                      "Tue,  2 Dec 2025 14:30:00 +0100"):
            with self.subTest(value=value):
                self.assertIsNone(date_problem(value))


class MessageIdTests(TestCase):
    def test_missing(self) -> None:
        found = findings(message(drop=("Message-ID",)), "missing-message-id")
        self.assertEqual(len(found), 1)
        self.assertIn("Gmail refuses such mail (550 5.7.1)", found[0].message)

    def test_invalid(self) -> None:
        for value in ("1234.5678@shop.example.com", "<no-at-sign>", "<a b@c.example>",
                      "<a@b.example> <c@d.example>", "<@shop.example.com>", "<>"):
            with self.subTest(value=value):
                raw = message(f"Message-ID: {value}\n", drop=("Message-ID",))
                self.assertEqual(codes(raw), ["invalid-message-id"])

    def test_valid(self) -> None:
        for value in ("<CAF=x+y@mail.gmail.com>", "<a.b.c@[192.0.2.1]>",
                      " <0100018c@email.amazonses.com> "):
            with self.subTest(value=value):
                raw = message(f"Message-ID: {value}\n", drop=("Message-ID",))
                self.assertEqual(codes(raw), [])


class DuplicateTests(TestCase):
    def test_once_only_headers_twice(self) -> None:
        raw = message("Subject: again\nTo: other@example.net\nTo: third@example.net\n"
                      "Received: from a\nReceived: from b\n")
        found = findings(raw, "duplicate-header")
        self.assertEqual([(f.field, f.severity) for f in found],
                         [("To", "error"), ("Subject", "error")])
        self.assertIn("appears 3 times", found[0].message)
        self.assertIn("list all addresses in one header", found[0].message)

    def test_trace_headers_are_not_the_clients(self) -> None:
        """mailsink's Delivered-To per recipient and Received are left out."""
        raw = stored(b"From: a@shop.example.com\nDate: Tue, 02 Dec 2025 14:30:00 +0100\n"
                     b"Message-ID: <m@shop.example.com>\n\nbody\n",
                     recipients=("a@example.net", "b@example.net"))
        self.assertEqual(codes(raw), [])
