"""Lint rules over the HTML body (mailsink.checks.lint_html)."""

from __future__ import annotations

import time

from lint_samples import codes, findings, message
from twisted.trial.unittest import TestCase

PNG_BASE64 = "iVBORw0KGgo=\n"


def related(html: str, image_cid: str = "logo@shop.example.com",
            disposition: str = "inline") -> bytes:
    """alternative(text, related(html, image)) as a mail library builds it."""
    return message(
        "Content-Type: multipart/alternative; boundary=A\n",
        f"--A\nContent-Type: text/plain; charset=utf-8\n\nHello.\n"
        f"--A\nContent-Type: multipart/related; boundary=R\n\n"
        f"--R\nContent-Type: text/html; charset=utf-8\n\n{html}\n"
        f"--R\nContent-Type: image/png\nContent-Disposition: {disposition}\n"
        f"Content-ID: <{image_cid}>\nContent-Transfer-Encoding: base64\n\n{PNG_BASE64}"
        f"--R--\n--A--\n".encode())


class HtmlTests(TestCase):
    def test_html_without_text(self) -> None:
        raw = message("Content-Type: text/html; charset=utf-8\n", "<p>Hello</p>\n")
        found = findings(raw, "html-without-text")
        self.assertEqual([(f.field, f.severity) for f in found], [("body", "warning")])
        self.assertIn("MIME_HTML_ONLY", found[0].message)

    def test_clean_related_message(self) -> None:
        self.assertEqual(codes(related('<img src="cid:logo@shop.example.com" alt="Shop">')),
                         [])

    def test_img_without_alt(self) -> None:
        html = ('<img src="https://shop.example.com/a.png"><img alt="" src="b.png">'
                "<IMG\nSRC='c.png' data-alt=x><img src=cid:logo@shop.example.com alt>")
        found = findings(related(html), "img-without-alt")
        self.assertEqual([(f.field, f.severity) for f in found], [("2.1", "warning")])
        self.assertIn("2 <img> tags without alt (the first: src "
                      "'https://shop.example.com/a.png')", found[0].message)

    def test_img_search_is_linear(self) -> None:
        """Unclosed tags one after another must not rescan the rest of the HTML each time."""
        html = "<img src='x " * 200_000
        started = time.monotonic()
        found = findings(related(html), "img-without-alt")
        self.assertLess(time.monotonic() - started, 5.0)
        self.assertIn("200,000 <img> tags", found[0].message)

    def test_cid_without_part(self) -> None:
        raw = related('<img src="cid:logo@shop.example.com" alt="Shop">'
                      '<td background="cid:missing%40shop.example.com">')
        found = findings(raw, "cid-without-part")
        self.assertEqual([(f.field, f.severity) for f in found], [("2.1", "warning")])
        self.assertIn("cid:missing@shop.example.com", found[0].message)

    def test_inline_part_nobody_refers_to(self) -> None:
        raw = related('<p>no image</p>')
        found = findings(raw, "unreferenced-inline-part")
        self.assertEqual([(f.field, f.severity) for f in found], [("2.2", "warning")])
        self.assertIn("Gmail and Outlook show it as an attachment", found[0].message)
        attached = related('<p>no image</p>', disposition="attachment; filename=logo.png")
        self.assertNotIn("unreferenced-inline-part", codes(attached))

    def test_cid_match_ignores_case(self) -> None:
        raw = related('<img src="cid:LOGO@shop.example.com" alt="Shop">')
        self.assertEqual(codes(raw), [])
