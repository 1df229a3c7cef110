"""
Lint rules over the MIME structure (mailsink.checks.lint_mime) and the tree they read
(mailsink.checks.structure): part numbers, places, and the defects a tolerant reader hides.
"""

from __future__ import annotations

import base64

from hypothesis import given, settings
from hypothesis import strategies as st
from lint_samples import PDF, clean_message, codes, findings, message
from twisted.trial.unittest import TestCase

from mailsink.checks.lint_mime import base64_problem
from mailsink.checks.structure import Delimiters, leaves, locate, parse

FIXED = settings(derandomize=True, database=None, max_examples=200, deadline=None)


def multipart(parts: str, boundary: str = "B", subtype: str = "mixed") -> bytes:
    return message(f"Content-Type: multipart/{subtype}; boundary=\"{boundary}\"\n",
                   parts.encode("utf-8", "surrogateescape"))


def attachment(headers: str, payload: bytes = PDF) -> bytes:
    encoded = base64.encodebytes(payload).decode()
    return multipart(f"--B\n\nSee the attachment.\n--B\n{headers}"
                     f"Content-Transfer-Encoding: base64\n\n{encoded}--B--\n")


class StructureTests(TestCase):
    def test_part_numbers_and_places(self) -> None:
        data = clean_message().as_bytes()
        root = parse(data)
        self.assertEqual([(leaf.field, leaf.content_type) for leaf in leaves(root)],
                         [("1.1", "text/plain"), ("1.2.1", "text/html"),
                          ("1.2.2", "image/png"), ("2", "application/pdf")])
        pdf = leaves(root)[-1]
        self.assertEqual(pdf.filename, "invoice.pdf")
        entity, header = locate(root, data.index(b"filename="))
        self.assertIs(entity, pdf)
        self.assertEqual(header.name if header else None, "Content-Disposition")
        entity, header = locate(root, data.index(b"Subject:") + 3)
        self.assertIs(entity, root)
        self.assertEqual(header.name if header else None, "Subject")
        self.assertIs(root.delimiters, Delimiters.CLOSED)

    def test_delimiters(self) -> None:
        for body, expected in [("--B\n\none\n--B--\n", Delimiters.CLOSED),
                               ("--B\n\none\n--B\n\ntwo\n", Delimiters.UNCLOSED),
                               ("no parts at all\n", Delimiters.MISSING),
                               ("--Bx\n\none\n", Delimiters.MISSING)]:
            with self.subTest(body=body):
                data = b"Content-Type: multipart/mixed; boundary=B\n\n" + body.encode()
                self.assertIs(parse(data).delimiters, expected)


class MultipartTests(TestCase):
    def test_without_boundary(self) -> None:
        raw = message("Content-Type: multipart/alternative\n", b"--x\n\nhi\n--x--\n")
        found = findings(raw, "multipart-without-boundary")
        self.assertEqual([(f.field, f.severity) for f in found], [("body", "error")])

    def test_boundary_not_found(self) -> None:
        found = findings(multipart("--C\n\nhi\n--C--\n"), "boundary-not-found")
        self.assertEqual([(f.field, f.severity) for f in found], [("body", "error")])
        self.assertIn("'B'", found[0].message)

    def test_boundary_not_closed(self) -> None:
        raw = multipart("--B\nContent-Type: multipart/alternative; boundary=I\n\n--I\n\n"
                        "text\n--I\nContent-Type: text/html\n\n<p>html</p>\n--B--\n")
        found = findings(raw, "boundary-not-closed")
        self.assertEqual([(f.field, f.severity) for f in found], [("1", "warning")])


class CharsetTests(TestCase):
    def test_unknown_charset(self) -> None:
        raw = message("Content-Type: text/plain; charset=utf-9\n")
        found = findings(raw, "unknown-charset")
        self.assertEqual([(f.field, f.severity) for f in found], [("body", "warning")])
        self.assertIn("'utf-9'", found[0].message)

    def test_text_not_in_its_charset(self) -> None:
        raw = message("Content-Type: text/plain; charset=utf-8\n"
                      "Content-Transfer-Encoding: 8bit\n", "caf\xe9\n".encode("latin-1"))
        found = findings(raw, "undecodable-text")
        self.assertIn("not valid utf-8 (byte 0xe9 at 3)", found[0].message)
        latin1 = message("Content-Type: text/plain; charset=iso-8859-1\n"
                         "Content-Transfer-Encoding: 8bit\n", "caf\xe9\n".encode("latin-1"))
        self.assertEqual(codes(latin1), [])

    def test_quoted_printable_is_decoded_first(self) -> None:
        raw = message("Content-Type: text/plain; charset=utf-8\n"
                      "Content-Transfer-Encoding: quoted-printable\n", b"caf=E9\n")
        self.assertEqual(codes(raw), ["undecodable-text"])
        good = message("Content-Type: text/plain; charset=utf-8\n"
                       "Content-Transfer-Encoding: quoted-printable\n", b"caf=C3=A9\n")
        self.assertEqual(codes(good), [])

    def test_undeclared_charset(self) -> None:
        raw = message("Content-Transfer-Encoding: 8bit\n", "Grüße\n".encode())
        self.assertEqual(codes(raw), ["undeclared-charset"])


class EncodingTests(TestCase):
    def test_invalid_base64(self) -> None:
        for payload, why in [("JVBERi0xLjQK!!!!\n", "'!'"),
                             ("JVBERi0xLjQ\n", "3 characters left over"),
                             ("JVBE=Ri0xLjQK\n", "padding in the middle")]:
            with self.subTest(payload=payload):
                raw = multipart(f"--B\n\nhi\n--B\nContent-Type: application/pdf; name=a.pdf\n"
                                f"Content-Transfer-Encoding: base64\n\n{payload}--B--\n")
                found = findings(raw, "invalid-base64")
                self.assertEqual([(f.field, f.severity) for f in found], [("2", "error")])
                self.assertIn(why, found[0].message)

    @FIXED
    @given(st.binary(max_size=300), st.sampled_from([b"\n", b"\r\n"]))
    def test_base64_from_a_library_is_valid(self, data: bytes, line_end: bytes) -> None:
        self.assertIsNone(base64_problem(base64.encodebytes(data).replace(b"\n", line_end)))
        self.assertIsNone(base64_problem(base64.b64encode(data)))

    def test_unknown_transfer_encoding(self) -> None:
        raw = message("Content-Type: text/plain; charset=utf-8\n"
                      "Content-Transfer-Encoding: utf-8\n")
        found = findings(raw, "unknown-transfer-encoding")
        self.assertEqual([(f.field, f.severity) for f in found], [("body", "error")])


class AttachmentTests(TestCase):
    def test_without_file_name(self) -> None:
        for headers in ("Content-Type: application/pdf\nContent-Disposition: attachment\n",
                        "Content-Type: application/pdf\n"):
            with self.subTest(headers=headers):
                found = findings(attachment(headers), "attachment-without-filename")
                self.assertEqual([(f.field, f.severity) for f in found], [("2", "warning")])
                self.assertIn("'noname'", found[0].message)

    def test_named_by_content_type_or_disposition(self) -> None:
        for headers in ("Content-Type: application/pdf; name=\"invoice.pdf\"\n",
                        "Content-Type: application/pdf\nContent-Disposition: attachment; "
                        "filename*=utf-8''R%C3%A9sum%C3%A9.pdf\n"):
            with self.subTest(headers=headers):
                self.assertEqual(codes(attachment(headers)), [])

    def test_type_does_not_match_extension(self) -> None:
        raw = attachment("Content-Type: image/png\n"
                         "Content-Disposition: attachment; filename=\"invoice.pdf\"\n")
        found = findings(raw, "content-type-mismatch")
        self.assertEqual([(f.field, f.severity) for f in found], [("2", "warning")])
        self.assertIn("declare application/pdf", found[0].message)

    def test_generic_type(self) -> None:
        raw = attachment("Content-Type: application/octet-stream\n"
                         "Content-Disposition: attachment; filename=\"Invoice.PDF\"\n")
        found = findings(raw, "generic-content-type")
        self.assertEqual([(f.field, f.severity) for f in found], [("2", "info")])

    def test_unlisted_extension_is_left_alone(self) -> None:
        raw = attachment("Content-Type: application/x-custom\n"
                         "Content-Disposition: attachment; filename=\"data.bin2\"\n")
        self.assertEqual(codes(raw), [])
