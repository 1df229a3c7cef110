"""
Tests for mailsink.message.mime (and mailsink.message.trace): facts, views and parts of
stored messages.
"""

from __future__ import annotations

import base64
import email.utils
import time
import tracemalloc
from collections.abc import Callable
from email import policy
from email.message import EmailMessage
from email.parser import BytesHeaderParser

import attrs
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import TestCase

from mailsink.message import mime
from mailsink.message.mime_cut import header_fields
from mailsink.message.shapes import Address, Facts, MessageView, Part, Transport
from mailsink.store.delivery import Envelope, trace_headers

FIXED = settings(derandomize=True, database=None, max_examples=300, deadline=None)
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4
SUBJECT = "Grüße aus Köln \N{EN DASH} a subject long enough to be folded by the generator"
PDF = b"%PDF-1.4\n" + bytes(range(256)) * 16


def envelope(**changes: object) -> Envelope:
    """A submission over TLS by an authenticated user from an IPv6 client."""
    fields: dict[str, object] = dict(
        mail_from="sender@example.com", recipients=("to@example.com", "hidden@example.com"),
        helo="client.example", client_address="::1", protocol="ESMTPSA",
        tls_version="TLSv1.3", tls_cipher="TLS_AES_256_GCM_SHA384", tls_bits=256,
        user="alice", listener="smtp:submission", received_at=1750000000.0)
    fields.update(changes)
    return Envelope(**fields)  # type: ignore[arg-type]


def stored(message: EmailMessage | bytes, env: Envelope | None = None) -> bytes:
    """The bytes mailsink stores: its trace headers, then the message, LF line ends."""
    body = message if isinstance(message, bytes) else message.as_bytes()
    return trace_headers(env or envelope(), "host", "1.M1P1Q1.host") + body


def rich_message() -> EmailMessage:
    """mixed(alternative(text, related(html, cid image)), pdf, apple-style inline photo)."""
    message = EmailMessage()
    message["From"] = '"Jöhn Dœ" <john@example.com>'
    message["To"] = "to@example.com, Bee <bee@example.com>"
    message["Cc"] = "Team: cee@example.com, dee@example.com;"
    message["Subject"] = SUBJECT
    message["Date"] = "Mon, 02 Jun 2025 10:00:00 +0200"
    message["Message-ID"] = "<rich.1@example.com>"
    message.set_content("Hello  text\n\nwith   spaces and ümlauts.\n" * 50)
    message.add_alternative(
        '<html><body><p>Hello <b>HTML</b></p><img src="cid:logo@example.com"></body></html>',
        subtype="html")
    html_part = message.get_payload(1)
    assert isinstance(html_part, EmailMessage)
    html_part.add_related(PNG, "image", "png", cid="<logo@example.com>")
    message.add_attachment(PDF, maintype="application", subtype="pdf", filename="rëport.pdf")
    message.add_attachment(PNG, maintype="image", subtype="png", filename="photo.png",
                           disposition="inline")
    return message


class FactsTests(TestCase):
    """facts(): what the index keeps for lists and search."""

    def test_headers(self) -> None:
        facts = mime.facts(stored(rich_message()))
        self.assertEqual(facts.message_id, "rich.1@example.com")
        self.assertEqual(facts.sender, Address("Jöhn Dœ", "john@example.com"))
        self.assertEqual(facts.to, (Address("", "to@example.com"),
                                    Address("Bee", "bee@example.com")))
        self.assertEqual(facts.cc, (Address("", "cee@example.com"),
                                    Address("", "dee@example.com")))
        self.assertEqual(facts.subject, SUBJECT)
        self.assertEqual(facts.date, "2025-06-02T10:00:00+02:00")
        self.assertEqual(facts.return_path, "sender@example.com")
        self.assertEqual(facts.attachments, 2)

    def test_encodedWordsByHand(self) -> None:
        raw = (b"From: =?ISO-8859-1?Q?Andr=E9?= Pirard <pirard@example.be>\n"
               b"To: \"=?utf-8?b?w7xiZXI=?=\" <u@example.com>, =?us-ascii?q?Keld?= <k@x.dk>\n"
               b"Reply-To: Group: a@x.org, \"B, Esq.\" <b@x.org>;\n"
               # One UTF-8 character (U+00FC) split across two encoded words.
               b"Subject: Re: =?utf-8?b?w7w=?= =?utf-8?q?x=C3?= =?utf-8?q?=BC?=  done\n"
               b"\nbody\n")
        facts = mime.facts(raw)
        self.assertEqual(facts.sender, Address("André Pirard", "pirard@example.be"))
        self.assertEqual(facts.to, (Address("über", "u@example.com"), Address("Keld", "k@x.dk")))
        self.assertEqual(facts.reply_to, (Address("", "a@x.org"), Address("B, Esq.", "b@x.org")))
        self.assertEqual(facts.subject, "Re: üxü  done")

    def test_rawEightBitHeaders(self) -> None:
        raw = "Subject: Grüße\nFrom: Jörg <j@x.de>\n\nbody\n".encode()
        facts = mime.facts(raw)
        self.assertEqual(facts.subject, "Grüße")
        self.assertEqual(facts.sender, Address("Jörg", "j@x.de"))
        latin1 = mime.facts("Subject: caf\xe9\n\nbody\n".encode("latin-1"))
        self.assertEqual(latin1.subject, "café")

    def test_badEncodedWords(self) -> None:
        raw = (b"Subject: =?x-unknown?q?caf=C3=A9?= =?utf-8?b?!!!?= =?utf-8?q?ok?=\n"
               b"\nbody\n")
        self.assertEqual(mime.facts(raw).subject, "café =?utf-8?b?!!!?= ok")

    def test_missingHeaders(self) -> None:
        for raw in (b"", b"\n", b"\r\n\r\nbody", b"no headers at all", b"\n\nbody\n"):
            with self.subTest(raw=raw):
                facts = mime.facts(raw)
                self.assertEqual((facts.sender, facts.to, facts.subject, facts.date,
                                  facts.message_id, facts.transport),
                                 (None, (), "", "", "", Transport()))
        self.assertEqual(mime.facts(b"\n\nbody text\n").snippet, "body text")

    def test_dates(self) -> None:
        for header, expected in [
            (b"Tue, 1 Jul 2003 10:52:37 +0200", "2003-07-01T10:52:37+02:00"),
            (b"1 Jul 2003 10:52:37 -0000", "2003-07-01T10:52:37+00:00"),
            (b"Tue, 1 Jul 2003 10:52:37 GMT", "2003-07-01T10:52:37+00:00"),
            (b"yesterday", ""), (b"Tue, 45 Jul 2003 10:52:37 +0200", ""), (b"", ""),
        ]:
            with self.subTest(header=header):
                self.assertEqual(mime.facts(b"Date: " + header + b"\n\nx").date, expected)

    def test_messageId(self) -> None:
        self.assertEqual(mime.facts(b"Message-ID:  <a.b@c> (comment)\n\n").message_id, "a.b@c")
        self.assertEqual(mime.facts(b"Message-Id: bare@id\n\n").message_id, "bare@id")

    def test_tags(self) -> None:
        raw = b"X-Tags: one, two ,, Three  Words\nX-Tags: one, four\n\nbody"
        self.assertEqual(mime.facts(raw).tags, ("one", "two", "Three Words", "four"))

    def test_snippetFromText(self) -> None:
        facts = mime.facts(stored(rich_message()))
        self.assertTrue(facts.snippet.startswith("Hello text with spaces and ümlauts. Hello"))
        self.assertEqual(len(facts.snippet), 250)
        self.assertNotIn("  ", facts.snippet)

    def test_snippetFromHtmlWithoutText(self) -> None:
        raw = (b"Content-Type: text/html; charset=utf-8\n\n"
               b"<!DOCTYPE html><html><head><title>Title</title><style>p {color: red}</style>"
               b"<script>var x = '<p>no</p>';</script></head><body><!-- hidden -->"
               b"<p>Caf&eacute; &amp; <b>bar</b></p><div>next\n\n line</div></body></html>")
        self.assertEqual(mime.facts(raw).snippet, "Café & bar next line")

    def test_transferEncodings(self) -> None:
        text = "Grüße, 100% = done\n"
        for encoding, body in [
            ("quoted-printable", b"Gr=C3=BC=C3=9Fe, 100% =3D=\n done\n"),
            ("base64", base64.encodebytes(text.encode())),
            ("8bit", text.encode()),
        ]:
            raw = (b"Content-Type: text/plain; charset=utf-8\n"
                   b"Content-Transfer-Encoding: " + encoding.encode() + b"\n\n" + body)
            with self.subTest(encoding=encoding):
                self.assertEqual(mime.facts(raw).snippet, "Grüße, 100% = done")
                self.assertEqual(mime.view(raw).text, text)

    def test_charsets(self) -> None:
        latin = b"Content-Type: text/plain; charset=iso-8859-1\n\ncaf\xe9"
        self.assertEqual(mime.view(latin).text, "café")
        unknown = b'Content-Type: text/plain; charset="x-unknown"\n\ncaf\xe9 ok'
        self.assertEqual(mime.view(unknown).text, "caf\ufffd ok")
        self.assertEqual(mime.facts(unknown).snippet, "caf\ufffd ok")
        for charset in (b"base64", b"rot13", b"zlib", b"punycode", b'"utf-8\x00"', b"x" * 500):
            with self.subTest(charset=charset):
                raw = b"Content-Type: text/plain; charset=" + charset + b"\n\nabc\xff"
                self.assertEqual(mime.view(raw).text, "abc\ufffd")
        self.assertEqual(mime.view(b"Content-Type: text/plain\n\ncaf\xe9").text, "café")

    def test_attachmentRule(self) -> None:
        """
        Counted: disposition attachment; a named part without a Content-ID; a non-text part
        without one. Not counted: a part with a Content-ID (shown inline), the text and HTML
        bodies, and other unnamed text parts.
        """
        message = EmailMessage()
        message["Subject"] = "rule"
        message.set_content("text body")
        message.add_alternative("<p>html</p>", subtype="html")
        message.add_alternative("BEGIN:VCALENDAR\nEND:VCALENDAR\n", subtype="calendar")
        message.add_attachment(b"nameless", maintype="application", subtype="pdf")
        message.add_attachment(PNG, maintype="image", subtype="png", cid="<c@x>",
                               disposition="inline", filename="cid.png")
        message.add_attachment("notes", subtype="plain", filename="notes.txt",
                               disposition="inline")
        message.add_attachment("a,b\n", subtype="csv", filename="data.csv")
        view = mime.view(stored(message))
        self.assertEqual([(p.part_id, p.filename) for p in view.attachments],
                         [("2", ""), ("4", "notes.txt"), ("5", "data.csv")])
        self.assertEqual([(p.part_id, p.content_id) for p in view.inline], [("3", "c@x")])
        self.assertEqual(mime.facts(stored(message)).attachments, 3)
        self.assertEqual(view.text, "text body\n")
        self.assertEqual(view.html, "<p>html</p>\n")

    def test_speed(self) -> None:
        """facts() of a typical 10 KB message takes well under a millisecond (here: < 5)."""
        raw = stored(rich_message())
        self.assertTrue(8_000 < len(raw) < 16_000, len(raw))
        mime.facts(raw)
        rounds = 200
        started = time.perf_counter()
        for _ in range(rounds):
            mime.facts(raw)
        self.assertLess((time.perf_counter() - started) / rounds, 0.005)


class TraceTests(TestCase):
    """The trace headers mailsink writes read back as the same transport."""

    def test_roundTrip(self) -> None:
        cases = [
            (envelope(), Transport(
                remote_address="::1", helo="client.example", tls_version="TLSv1.3",
                tls_cipher="TLS_AES_256_GCM_SHA384", username="alice",
                mail_from="sender@example.com",
                rcpt_to=("to@example.com", "hidden@example.com"),
                listener="smtp:submission", protocol="ESMTPSA")),
            (envelope(recipients=("one@example.com",), tls_version=None, tls_cipher=None,
                      tls_bits=None, user=None, client_address="192.0.2.7", protocol="ESMTP",
                      listener=""),
             Transport(remote_address="192.0.2.7", helo="client.example",
                       mail_from="sender@example.com", rcpt_to=("one@example.com",),
                       protocol="ESMTP")),
            (envelope(mail_from="", helo=None, tls_bits=None, user="odd (user) name",
                      client_address="2001:db8::1", protocol="UTF8SMTPSA"),
             Transport(remote_address="2001:db8::1", helo="[2001:db8::1]",
                       tls_version="TLSv1.3", tls_cipher="TLS_AES_256_GCM_SHA384",
                       username="odd (user) name", mail_from="",
                       rcpt_to=("to@example.com", "hidden@example.com"),
                       listener="smtp:submission", protocol="UTF8SMTPSA")),
        ]
        for env, expected in cases:
            with self.subTest(env=env):
                raw = stored(b"Subject: x\n\nbody\n", env)
                self.assertEqual(mime.facts(raw).transport, expected)
                self.assertEqual(mime.facts(raw.replace(b"\n", b"\r\n")).transport, expected)

    def test_foreignReceived(self) -> None:
        raw = (b"Return-Path: <a@x>\nDelivered-To: b@y\n"
               b"Received: from mx (mx [192.0.2.1]) by other (Postfix) with ESMTP id 1; x\n"
               b"Received: from h (unknown [1.2.3.4])\n"
               b"\tby host (mailsink) with SMTP id 2\n\t; d\n"
               b"To: c@z\n\nbody")
        facts = mime.facts(raw)
        self.assertEqual(facts.transport, Transport())
        self.assertEqual(facts.bcc, ())
        self.assertEqual(facts.return_path, "a@x")

    def test_bccFromDeliveredTo(self) -> None:
        message = EmailMessage()
        message["To"] = "To@Example.com"
        message["Bcc"] = "Named <named@example.com>"
        message.set_content("x")
        raw = stored(message, envelope(recipients=(
            "to@example.com", "hidden@example.com", "named@example.com", "HIDDEN@example.com")))
        self.assertEqual(mime.facts(raw).bcc, (Address("Named", "named@example.com"),
                                               Address("", "hidden@example.com")))

    def test_clientTraceHeadersBelowAreIgnored(self) -> None:
        """A Delivered-To the client wrote (below mailsink's Received) is not a recipient."""
        raw = stored(b"Delivered-To: forged@example.com\nTo: to@example.com\n\nx",
                     envelope(recipients=("to@example.com",)))
        facts = mime.facts(raw)
        self.assertEqual(facts.transport.rcpt_to, ("to@example.com",))
        self.assertEqual(facts.bcc, ())

    def test_sendmailCommand(self) -> None:
        """
        mailsink-sendmail's header right below mailsink's own, on a loopback connection:
        protocol local and the Unix user; anywhere else it is only a client's header.
        """
        local = (b"Received: from alice (uid 1000)\n\tby devbox (mailsink-sendmail) with local;"
                 b"\n\tSun, 01 Mar 2026 11:30:00 +0000 (UTC)\n")
        plain = envelope(tls_version=None, tls_cipher=None, tls_bits=None, user=None,
                         protocol="ESMTP", listener="smtp", helo="localhost")
        for address in ("127.0.0.1", "::1", "::ffff:127.0.0.1"):
            with self.subTest(address=address):
                transport = mime.facts(stored(local + b"Subject: s\n\nx",
                                              attrs.evolve(plain, client_address=address)))
                self.assertEqual(transport.transport, Transport(
                    remote_address=address, helo="localhost", username="alice",
                    mail_from="sender@example.com",
                    rcpt_to=("to@example.com", "hidden@example.com"), listener="smtp",
                    protocol="local"))
        remote = stored(local + b"Subject: s\n\nx",
                        attrs.evolve(plain, client_address="192.0.2.7"))
        self.assertEqual(mime.facts(remote).transport.protocol, "ESMTP")
        lower = stored(b"Subject: s\n" + local + b"\nx", plain)
        self.assertEqual(mime.facts(lower).transport.username, "")
        authenticated = stored(local + b"\nx", attrs.evolve(plain, user="bob"))
        self.assertEqual(mime.facts(authenticated).transport.username, "bob")

    def test_sendmailFallback(self) -> None:
        """Written into the Maildir by mailsink-sendmail: its trace block, protocol local."""
        raw = (b"Return-Path: <app@example.com>\nDelivered-To: a@example.com\n"
               b"Received: from alice (uid 1000)\n\tby devbox (mailsink-sendmail, written to "
               b"the Maildir directly: 127.0.0.1:1025 refused the connection)\n"
               b"\twith local;\n\tSun, 01 Mar 2026 11:30:00 +0000 (UTC)\nSubject: s\n\nx")
        self.assertEqual(mime.facts(raw).transport, Transport(
            username="alice", mail_from="app@example.com", rcpt_to=("a@example.com",),
            protocol="local"))


class ViewTests(TestCase):
    """view(), part() and their PartIDs."""

    def test_structure(self) -> None:
        raw = stored(rich_message())
        view = mime.view(raw)
        self.assertTrue(view.text.startswith("Hello  text\n\nwith   spaces and ümlauts.\n"))
        self.assertIn('<img src="cid:logo@example.com">', view.html)
        self.assertEqual(view.inline, (Part("1.2.2", "", "image/png", "logo@example.com",
                                            len(PNG)),))
        self.assertEqual(view.attachments, (
            Part("2", "rëport.pdf", "application/pdf", "", len(PDF)),
            Part("3", "photo.png", "image/png", "", len(PNG))))
        self.assertEqual(view.facts, mime.facts(raw))

    def test_partBytes(self) -> None:
        raw = stored(rich_message())
        self.assertEqual(mime.part(raw, "2"), ("application/pdf", "rëport.pdf", PDF))
        self.assertEqual(mime.part(raw, "3"), ("image/png", "photo.png", PNG))
        self.assertEqual(mime.part(raw, "1.2.2"), ("image/png", "", PNG))
        content_type, filename, text = mime.part(raw, "1.1") or ("", "", b"")
        self.assertEqual((content_type, filename), ("text/plain; charset=utf-8", ""))
        self.assertTrue(text.startswith(b"Hello  text\n"))

    def test_partIdsStable(self) -> None:
        """The same IDs and bytes on every read, and whatever the line ends."""
        raw = stored(rich_message())
        first = mime.view(raw)
        self.assertEqual(mime.view(raw), first)
        crlf = raw.replace(b"\n", b"\r\n")
        self.assertEqual([(p.part_id, p.filename, p.size) for p in mime.view(crlf).attachments],
                         [(p.part_id, p.filename, p.size) for p in first.attachments])
        for listed in (*first.inline, *first.attachments):
            self.assertEqual(mime.part(crlf, listed.part_id), mime.part(raw, listed.part_id))

    def test_badPartIds(self) -> None:
        raw = stored(rich_message())
        for part_id in ("", "0", "1.0", "01", "a", "1..2", "1.", ".1", "-1", " 1", "1 ", "4",
                        "2.1", "1.2.3", "9" * 20, "1." * 40 + "1", "\N{ARABIC-INDIC DIGIT ONE}",
                        None, 1):
            with self.subTest(part_id=part_id):
                self.assertIsNone(mime.part(raw, part_id))  # type: ignore[arg-type]
        self.assertIsNone(mime.part(raw, "1"), "a multipart container is not a part")
        self.assertIsNone(mime.part(raw, "1.2"))

    def test_singlePart(self) -> None:
        raw = b"Content-Type: text/plain; charset=us-ascii\n\nhello\n"
        self.assertEqual(mime.part(raw, "1"), ("text/plain; charset=us-ascii", "", b"hello\n"))
        self.assertIsNone(mime.part(raw, "2"))
        pdf = (b"Content-Type: application/pdf; name=\"a.pdf\"\n"
               b"Content-Transfer-Encoding: base64\n\n" + base64.encodebytes(PDF))
        view = mime.view(pdf)
        self.assertEqual(view.attachments, (Part("1", "a.pdf", "application/pdf", "", len(PDF)),))
        self.assertEqual((view.text, view.html), ("", ""))
        self.assertEqual(mime.part(pdf, "1"), ("application/pdf", "a.pdf", PDF))

    def test_attachedMessageIsOnePart(self) -> None:
        inner = EmailMessage()
        inner["Subject"] = "inner"
        inner.set_content("inner text")
        inner.add_attachment(PDF, maintype="application", subtype="pdf", filename="in.pdf")
        outer = EmailMessage()
        outer.set_content("outer text")
        outer.add_attachment(inner)
        view = mime.view(stored(outer))
        self.assertEqual([(p.part_id, p.content_type) for p in view.attachments],
                         [("2", "message/rfc822")])
        self.assertEqual(view.text, "outer text\n")

    def test_encodedFilenames(self) -> None:
        raw = (b"Content-Type: multipart/mixed; boundary=b\n\n--b\n\ntext\n--b\n"
               b"Content-Type: application/octet-stream\n"
               b"Content-Disposition: attachment; filename*=utf-8''%C3%BCber.bin\n\nx\n--b\n"
               b"Content-Type: application/octet-stream; name=\"=?utf-8?q?=C3=A4.bin?=\"\n"
               b"Content-Disposition: attachment\n\ny\n--b--\n")
        self.assertEqual([p.filename for p in mime.view(raw).attachments], ["über.bin", "ä.bin"])

    def test_undecodableSizeIsRawSize(self) -> None:
        raw = (b"Content-Type: multipart/mixed; boundary=b\n\n--b\n\ntext\n--b\n"
               b"Content-Type: application/pdf\nContent-Transfer-Encoding: x-custom\n\n12345\n"
               b"--b\nContent-Type: image/png\nContent-Transfer-Encoding: base64\n\nQUJD=\n--b--")
        self.assertEqual([p.size for p in mime.view(raw).attachments], [5, 3])

    def test_headers(self) -> None:
        raw = stored(rich_message())
        headers = mime.view(raw).headers
        self.assertEqual(headers["Delivered-To"], ["to@example.com", "hidden@example.com"])
        self.assertEqual(headers["Return-Path"], ["<sender@example.com>"])
        self.assertTrue(headers["Received"][0].startswith("from client.example (unknown "))
        self.assertEqual(headers["Message-Id"], ["<rich.1@example.com>"])
        self.assertEqual(headers["Subject"], [SUBJECT])
        self.assertEqual(list(headers)[:3], ["Return-Path", "Delivered-To", "Received"])

    def test_bodyCapped(self) -> None:
        big = b"Content-Type: text/html\n\n" + b"<p>x</p>" * (mime.MAX_BODY // 4)
        view = mime.view(big)
        self.assertEqual(len(view.html), mime.MAX_BODY)


class HtmlCidTests(TestCase):
    """html_with_cid_urls(): cid: images point at the part route."""

    def test_rewrite(self) -> None:
        view = MessageView(facts=Facts(), text="", html="", headers={}, inline=(
            Part("1.2.2", "", "image/png", "logo@example.com", 1),
            Part("1.2.3", "b.png", "image/png", "Pic 1", 1)))
        html = ('<img src="cid:logo@example.com"><img src=\'cid:LOGO@example.com\'>'
                "<img SRC=cid:logo@example.com><td background=\"cid:Pic%201\">"
                "<div style=\"background: url(cid:logo@example.com)\">"
                '<img src="cid:unknown@x"> cid:logo@example.com')
        url = "../api/v1/message/ID1/part/"  # relative to /view/ID1.html
        self.assertEqual(mime.html_with_cid_urls(html, "ID1", view), (
            f'<img src="{url}1.2.2"><img src=\'{url}1.2.2\'><img SRC={url}1.2.2>'
            f'<td background="{url}1.2.3"><div style="background: url({url}1.2.2)">'
            '<img src="cid:unknown@x"> cid:logo@example.com'))

    def test_fromView(self) -> None:
        raw = stored(rich_message())
        view = mime.view(raw)
        self.assertIn('<img src="../api/v1/message/abc/part/1.2.2">',
                      mime.html_with_cid_urls(view.html, "abc", view))


class LimitTests(TestCase):
    """Enormous, deep and broken messages: bounded time and memory, never an exception."""

    def assertQuick(self, seconds: float, function, *args):  # type: ignore[no-untyped-def]
        started = time.perf_counter()
        result = function(*args)
        self.assertLess(time.perf_counter() - started, seconds)
        return result

    def test_deeplyNested(self) -> None:
        depth = 200
        lines = [b"Subject: deep\nContent-Type: multipart/mixed; boundary=b0\n\n"]
        for level in range(1, depth):
            lines.append(b"--b%d\nContent-Type: multipart/mixed; boundary=b%d\n\n"
                         % (level - 1, level))
        lines.append(b"--b%d\nContent-Type: text/plain\n\ndeep text\n" % (depth - 1))
        raw = b"".join(lines)
        facts = self.assertQuick(1.0, mime.facts, raw)
        self.assertEqual(facts.subject, "deep")
        view = self.assertQuick(1.0, mime.view, raw)
        opaque = view.attachments[0]
        self.assertEqual(opaque.part_id, ".".join(["1"] * mime.MAX_DEPTH))
        self.assertEqual(opaque.content_type, "multipart/mixed")
        self.assertIsNotNone(mime.part(raw, opaque.part_id))

    def test_manyParts(self) -> None:
        parts = [b"--b\nContent-Type: application/pdf\n\n%d\n" % n for n in range(5000)]
        raw = b"Content-Type: multipart/mixed; boundary=b\n\n" + b"".join(parts) + b"--b--\n"
        facts = self.assertQuick(2.0, mime.facts, raw)
        self.assertEqual(facts.attachments, mime.MAX_PARTS - 1)
        view = self.assertQuick(2.0, mime.view, raw)
        self.assertEqual(view.attachments[-1].part_id, str(mime.MAX_PARTS - 1))
        self.assertEqual(mime.part(raw, "7"), ("application/pdf", "", b"6"))
        self.assertIsNone(mime.part(raw, "4000"))

    def test_manyNestedParts(self) -> None:
        """The part budget holds across levels: later siblings of a big subtree are dropped."""
        inner = b"".join(b"--i\nContent-Type: image/png\n\n%d\n" % n for n in range(600))
        child = b"--o\nContent-Type: multipart/mixed; boundary=i\n\n" + inner + b"--i--\n"
        raw = b"Content-Type: multipart/mixed; boundary=o\n\n" + child * 3 + b"--o--\n"
        view = mime.view(raw)
        self.assertEqual(len(view.attachments), mime.MAX_PARTS - 3)
        self.assertEqual(view.attachments[-1].part_id, "2.397")

    def test_hugeBody(self) -> None:
        """A 30 MB body: facts() reads its start only, view() caps the text it returns."""
        body = (b"word " * 15 + b"\n") * (30 * 1024 * 1024 // 76)
        raw = stored(b"Subject: big\nContent-Type: text/plain\n\n" + body)
        tracemalloc.start()
        try:
            facts = self.assertQuick(0.5, mime.facts, raw)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        self.assertLess(peak, 2 * 1024 * 1024)
        self.assertEqual(facts.snippet, ("word " * 50).strip())
        view = self.assertQuick(2.0, mime.view, raw)
        self.assertEqual(len(view.text), mime.MAX_BODY)

    def test_hugeBase64Attachment(self) -> None:
        data = bytes(range(256)) * (30 * 1024 * 1024 // 256)
        raw = (b"Content-Type: multipart/mixed; boundary=b\n\n--b\n\ntext\n--b\n"
               b"Content-Type: application/zip\nContent-Transfer-Encoding: base64\n\n"
               + base64.encodebytes(data) + b"--b--\n")
        self.assertEqual(self.assertQuick(0.5, mime.facts, raw).attachments, 1)
        self.assertEqual(self.assertQuick(3.0, mime.view, raw).attachments[0].size, len(data))
        self.assertEqual(mime.part(raw, "2"), ("application/zip", "", data))

    def test_hugeHeaders(self) -> None:
        raw = b"Subject: s\n" + b"X-Junk: " + b"y" * 5_000_000 + b"\n" + b"To: a@b\n" * 200_000
        facts = self.assertQuick(2.0, mime.facts, raw)
        self.assertEqual(facts.subject, "s")

    def test_delimiterLookalikes(self) -> None:
        """Lines that merely start like the boundary cost bounded work."""
        raw = (b"Content-Type: multipart/mixed; boundary=b\n\n--b\n\n"
               + b"--bx\n" * 1_000_000 + b"--b--\n")
        self.assertQuick(2.0, mime.view, raw)

    def test_pathologicalHeaders(self) -> None:
        """Nested comments, stray encoded-word openers, a parameter list of semicolons."""
        raw = (b"From: " + b"(" * 50_000 + b"a@b\nSubject: " + b"=?utf-8?q?" * 20_000 + b"\n"
               b"Content-Type: text/plain; " + b";" * 200_000 + b"charset=utf-8\n\nx")
        self.assertEqual(self.assertQuick(1.0, mime.view, raw).text, "x")


SAMPLES = [stored(rich_message()),
           b"Content-Type: multipart/alternative; boundary=\"b\"\n\n--b\nContent-Type: text/plain;"
           b" charset=x-unknown\nContent-Transfer-Encoding: quoted-printable\n\na=C3=\n--b\n"
           b"Content-Type: text/html\nContent-Transfer-Encoding: base64\n\nPGI+eDwvYj4=\n--b--\n"]
TOKENS = st.sampled_from([
    b"\n", b"\r\n", b"\n\n", b"--", b"--b", b"--b--", b"=?utf-8?b?", b"?=", b"=", b"\x00",
    b"\xff", b"<", b">", b";", b"\"", b"Content-Type: multipart/mixed; boundary=b\n",
    b"Content-Transfer-Encoding: base64\n", b"charset=", b"cid:", b"\t", b":", b"(",
])


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(SAMPLES)))
    for _ in range(draw(st.integers(1, 8))):
        start = draw(st.integers(0, len(data)))
        stop = draw(st.integers(start, min(len(data), start + 64)))
        data[start:stop] = draw(TOKENS | st.binary(max_size=16))
    return bytes(data)


class NeverRaiseTests(TestCase):
    """Any bytes at all: answers of the right shape, no exception."""

    def check(self, raw: bytes) -> None:
        self.assertIsInstance(mime.facts(raw), Facts)
        view = mime.view(raw)
        self.assertIsInstance(view, MessageView)
        self.assertIn(type(mime.part(raw, "1")), (tuple, type(None)))
        for listed in (*view.inline, *view.attachments):
            self.assertIsNotNone(mime.part(raw, listed.part_id))
        mime.html_with_cid_urls(view.html, "x", view)
        # The inner functions cope too, so the outer safety nets stay the last resort.
        self.assertEqual(mime._read_view(raw), view)
        self.assertEqual(mime._read_facts(raw), view.facts)
        mime._read_part(raw, "1")

    @FIXED
    @given(st.binary(max_size=2048))
    def test_arbitraryBytes(self, raw: bytes) -> None:
        self.check(raw)

    @FIXED
    @given(mutated())
    def test_mutatedMessages(self, raw: bytes) -> None:
        self.check(raw)


_HEADER_PIECES = [b"Subject", b"From", b"Content-Type", b"Content-Disposition", b"X-A", b"From ",
                  b" ", b"\t", b":", b"a", b"=?utf-8?q?h=C3=A9?=", b"\r\n", b"\n", b"\r", b"\x85",
                  b"\xc3\xa9", b"multipart/mixed; boundary=\"b\"", b"text/plain; charset=utf-8",
                  b"attachment; filename=x.pdf", b"\x0c", b";", b"\"", b"<a@b>"]


class HeaderFieldsTests(TestCase):
    """The fast header split gives what the standard library's parser gives, always."""

    def assert_same(self, block: bytes) -> None:
        expected = BytesHeaderParser(policy=policy.compat32).parsebytes(block)
        found = header_fields(block)
        self.assertEqual(list(found.raw_items()), list(expected.raw_items()))
        for method in ("get_content_type", "get_content_charset", "get_content_disposition",
                       "get_filename", "get_boundary"):
            self.assertEqual(_outcome(getattr(found, method)),
                             _outcome(getattr(expected, method)), method)

    @settings(max_examples=2000, deadline=None)
    @given(st.lists(st.sampled_from(_HEADER_PIECES), max_size=16))
    def test_any_pieces(self, pieces: list[bytes]) -> None:
        self.assert_same(b"".join(pieces))

    @settings(max_examples=1000, deadline=None)
    @given(st.lists(st.tuples(st.sampled_from([b"Subject", b"Content-Type", b"X-A"]),
                              st.sampled_from([b"", b" ", b"  ", b"\t"]),
                              st.lists(st.sampled_from(_HEADER_PIECES[8:]), max_size=5),
                              st.sampled_from([b"\r\n", b"\n"]),
                              st.sampled_from([b"", b" folded\r\n", b"\tfolded\n"])),
                    max_size=6))
    def test_plain_fields(self, fields: list[tuple[bytes, bytes, list[bytes], bytes,
                                                   bytes]]) -> None:
        self.assert_same(b"".join(name + b":" + space + b"".join(value) + end + fold
                                  for name, space, value, end, fold in fields))

    def test_real_header_blocks(self) -> None:
        for block in (b"", b"Subject: hi\r\n", b"From x\r\nSubject: a\r\n",
                      b"Subject:\r\n\tfolded\r\n", b" leading: continuation\r\n",
                      b"Subject: no end", b"Content-Type: multipart/mixed;\r\n boundary=b\r\n"):
            self.assert_same(block)


def _outcome(call: Callable[[], object]) -> object:
    try:
        return call()
    except Exception as error:
        return type(error)


_ADDRESS_PIECES = ["a", "b.c", "x@y", "@", "<", ">", " ", ",", "John", "Doe", "\t", "\"", "(",
                   ")", "j@x.org", "<j@x.org>", "a+b@c-d.e", ".", "..", ";", ":", "é",
                   "=?utf-8?q?x?=", "\\", "A1", "_", "-"]


class PlainAddressTests(TestCase):
    """The fast reading of plain address lists agrees with C{email.utils.getaddresses}."""

    @settings(max_examples=3000, deadline=None)
    @given(st.lists(st.lists(st.sampled_from(_ADDRESS_PIECES), max_size=8), min_size=1,
                    max_size=2))
    def test_agrees_whenever_it_answers(self, values: list[list[str]]) -> None:
        joined = ["".join(value) for value in values]
        found = mime._plain_addresses(joined)
        if found is not None:
            expected = email.utils.getaddresses(joined)
            self.assertEqual([pair for pair in found if pair[1].strip()],
                             [pair for pair in expected if pair[1].strip()])

    def test_common_forms_take_the_fast_path(self) -> None:
        for values in (["<b@localhost>"], ["John Doe <j@x.org>"], ["a@b.c, <d@e.f>"],
                       ["alice@example.com"], ["Bob <b@c.d>, carol@d.e"],
                       ["x@y.z", " Ann Lee  <ann@lee.org> "]):
            found = mime._plain_addresses(values)
            self.assertIsNotNone(found, values)
            self.assertEqual(found, email.utils.getaddresses(values))
        for values in (['"Doe, John" <j@x.org>'], ["<a@b>\x0b"], ["Name a@b"]):
            self.assertIsNone(mime._plain_addresses(values), values)
