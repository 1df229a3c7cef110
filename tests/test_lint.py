"""
The lint as a whole (mailsink.checks.lint): clean messages from real mailers trip no rule,
a typical broken one trips the rules it should, the report's shape and order, a failing
rule is logged and skipped, no input makes it raise, and it is quick.
"""

from __future__ import annotations

import base64
import json
import os
import time
from collections.abc import Iterator

from hypothesis import given, settings
from hypothesis import strategies as st
from lint_samples import THUNDERBIRD, clean_message, codes, stored
from twisted.trial.unittest import TestCase

from mailsink.checks import lint as lint_module
from mailsink.checks.findings import Finding, Report, Severity
from mailsink.checks.lint import lint
from mailsink.checks.source import Source
from mailsink.web.compose import compose

FIXED = settings(derandomize=True, database=None, max_examples=300, deadline=None)

PHP_MAIL = b"""\
To: customer@example.net
Subject: Your password reset
From: webmaster@shop.example.com
Bcc: audit@shop.example.com
Content-Type: text/html

<html><body><p>Hallo K\xc3\xb6nig, click <a href="https://shop.example.com/r/abc">here</a>.</p>
<img src="https://shop.example.com/pixel.gif"></body></html>
"""
"""What a hand-rolled PHP mail() call sends: no Date or Message-ID, HTML only, raw UTF-8."""


class CleanMessageTests(TestCase):
    def test_email_library(self) -> None:
        self.assertEqual(codes(stored(clean_message())), [])

    def test_email_library_file_with_crlf_line_ends(self) -> None:
        message = clean_message()
        crlf = message.as_bytes(policy=message.policy.clone(linesep="\r\n"))
        self.assertIn(b"\r\n", crlf)
        self.assertEqual(codes(crlf), ["envelope-unknown"])

    def test_thunderbird(self) -> None:
        self.assertEqual(codes(stored(THUNDERBIRD, mail_from="joerg@example.org")), [])

    def test_mailsinks_own_send_route(self) -> None:
        composed = compose({
            "From": {"Email": "app@shop.example.com", "Name": "Shop"},
            "To": [{"Email": "customer@example.net", "Name": "Kündin"}],
            "Subject": "Grüße", "Text": "Hallo\n",
            "HTML": '<p>Hallo <img src="cid:logo" alt="logo"></p>',
            "Attachments": [
                {"Content": base64.b64encode(b"\x89PNG" + os.urandom(300)).decode(),
                 "Filename": "logo.png", "ContentType": "image/png", "ContentID": "logo"},
                {"Content": base64.b64encode(b"%PDF" + os.urandom(3000)).decode(),
                 "Filename": "invoice.pdf", "ContentType": "application/pdf"}],
        }, hostname="shop.example.com", max_size=1 << 20)
        raw = stored(composed.message, mail_from=composed.mail_from,
                     recipients=composed.recipients, protocol="HTTP")
        self.assertEqual(codes(raw), [])


class BrokenMessageTests(TestCase):
    def test_php_mail(self) -> None:
        report = lint(stored(PHP_MAIL, mail_from="www-data@web1.hosting.example"))
        self.assertEqual([finding.code for finding in report.findings], [
            "missing-date", "missing-message-id", "unencoded-8bit-body", "bcc-header",
            "undeclared-charset", "html-without-text", "img-without-alt",
            "from-domain-not-aligned"])
        self.assertEqual(report.to_json()["Errors"], 4)
        self.assertEqual(report.to_json()["Warnings"], 4)


class ReportTests(TestCase):
    def test_json_shape(self) -> None:
        document = lint(stored(PHP_MAIL)).to_json()
        self.assertEqual(sorted(document), ["Errors", "Findings", "Warnings"])
        first = document["Findings"][0]
        self.assertEqual(sorted(first), ["Code", "Field", "Message", "Reference", "Severity"])
        self.assertEqual((first["Code"], first["Severity"], first["Field"]),
                         ("missing-date", "error", "Date"))
        json.dumps(document)

    def test_errors_first_then_warnings_then_info(self) -> None:
        made = [Finding(f"c{n}", severity, "body", "m", "r") for n, severity in
                enumerate([Severity.INFO, Severity.WARNING, Severity.ERROR, Severity.WARNING])]
        self.assertEqual([f.code for f in Report.of(made).findings], ["c2", "c1", "c3", "c0"])

    def test_codes_are_kebab_case_and_sentences_one_line(self) -> None:
        samples = [stored(PHP_MAIL), b"Content-Type: multipart/mixed\n\n\xff\r" * 3]
        for raw in samples:
            for finding in lint(raw).findings:
                self.assertRegex(finding.code, r"^[a-z0-9]+(-[a-z0-9]+)*$")
                self.assertNotIn("\n", finding.message)
                self.assertTrue(finding.reference)


class RobustnessTests(TestCase):
    def test_a_failing_rule_is_logged_and_skipped(self) -> None:
        def broken(source: Source) -> Iterator[Finding]:
            raise ValueError("bug")
            yield  # pragma: no cover

        self.patch(lint_module, "RULES", (broken, *lint_module.RULES))
        self.assertEqual([f.code for f in lint(stored(PHP_MAIL)).findings][:2],
                         ["missing-date", "missing-message-id"])
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)

    def test_findings_per_rule_are_bounded(self) -> None:
        parts = b"".join(b"--B\nContent-Type: application/pdf\n\nx\n" for _ in range(50))
        raw = stored(b"Content-Type: multipart/mixed; boundary=B\n\n" + parts + b"--B--\n")
        found = [f for f in lint(raw).findings if f.code == "attachment-without-filename"]
        self.assertEqual(len(found), lint_module.MAX_PER_RULE)

    @FIXED
    @given(st.binary(max_size=2000))
    def test_never_raises_on_any_bytes(self, raw: bytes) -> None:
        lint(raw)
        self.assertEqual(self.flushLoggedErrors(), [])

    @FIXED
    @given(st.lists(st.sampled_from([
        b"Content-Type: multipart/mixed; boundary=B\n", b"--B\n", b"--B--\n", b"\n",
        b"Content-Transfer-Encoding: base64\n", b"Content-Type: text/html; charset=x\n",
        b"From: \"a <b@c>\n", b"Date: Mon, 99 Foo\n", b"<img src=cid:x\n", b"=?\xff\r\n",
        b"Content-ID: <x>\n", b"Content-Disposition: attachment; filename*=utf-8''%ff\n",
    ]), max_size=40))
    def test_never_raises_on_broken_structure(self, lines: list[bytes]) -> None:
        lint(b"".join(lines))
        lint(stored(b"".join(lines)))
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_one_megabyte_message_is_quick(self) -> None:
        message = clean_message()
        message.add_attachment(os.urandom(750_000), maintype="application", subtype="zip",
                               filename="data.zip")
        raw = stored(message)
        self.assertGreater(len(raw), 1_000_000)
        started = time.monotonic()
        for _ in range(10):
            lint(raw)
        self.assertLess((time.monotonic() - started) / 10, 0.2)
