"""
Odd messages of the kinds real mailers and scripts send, as the Maildir stores them (LF line
ends): the corpus the malformed-message tests (unit and end to end) read through every view.
"""

from __future__ import annotations

import base64

_FORWARDED = (
    b"From: Fwd <fwd@example.com>\nSubject: Fwd: report\nMIME-Version: 1.0\n"
    b"Content-Type: multipart/mixed; boundary=outer\n\n"
    b"--outer\nContent-Type: text/plain\n\nSee below.\n"
    b"--outer\nContent-Type: message/rfc822\nContent-Disposition: inline\n\n"
    b"From: Inner <inner@example.com>\nTo: boss@example.com\nSubject: inner report\n"
    b"Message-ID: <inner@example.com>\n"
    b"Content-Type: multipart/alternative; boundary=\"inner\"; report\n\n"
    b"--inner\nContent-Type: text/plain; charset=utf-8; format\n\ninner text\n"
    b"--inner\nContent-Type: text/html; charset\n\n<p>inner html</p>\n"
    b"--inner--\n"
    b"--outer--\n"
)

SAMPLES: dict[str, bytes] = {
    # The message: a Content-Type parameter without "=", as old mailers wrote it.
    "parameter_without_equals": (
        b"From: old@example.com\nTo: you@example.com\nSubject: no equals\n"
        b"Content-Type: text/plain; charset=us-ascii; format\n\nold mailer\n"),
    "multipart_parameter_without_equals": (
        b"From: old@example.com\nSubject: alternative without equals\n"
        b"Content-Type: multipart/alternative; boundary=xyz; report; =; ;\n\n"
        b"--xyz\nContent-Type: text/plain; flowed\n\nplain\n"
        b"--xyz\nContent-Type: text/html; charset=\"utf-8\n\n<b>html</b>\n--xyz--\n"),
    "broken_parameters": (
        b"Subject: broken parameters\n"
        b"Content-Type: text/html; charset=\"utf-8; name=\"a;b\"; ;;; =x; \"quoted\"=1\n"
        b"Content-Disposition: attachment; filename; size=\n\n<p>hi</p>\n"),
    "missing_boundary": (
        b"Subject: missing boundary\nContent-Type: multipart/mixed\n\n"
        b"--x\nContent-Type: text/plain\n\nhidden part\n--x--\n"),
    "unclosed_boundary": (
        b"Subject: unclosed boundary\nContent-Type: multipart/mixed; boundary=b\n\n"
        b"--b\nContent-Type: text/plain\n\nfirst\n"
        b"--b\nContent-Type: application/pdf; name=a.pdf\n"
        b"Content-Transfer-Encoding: base64\n\nJVBERi0xLjQK\n"),
    "boundary_never_used": (
        b"Subject: boundary never used\nContent-Type: multipart/related; boundary=nope\n\n"
        b"just text, no delimiter lines\n"),
    "nested_rfc822": _FORWARDED,
    "rfc822_at_top": (
        b"Subject: a message that is a message\nContent-Type: message/rfc822\n\n"
        b"Subject: inside\nFrom: in@example.com\n\ninner body\n"),
    "digest": (
        b"Subject: digest\nContent-Type: multipart/digest; boundary=d\n\n"
        b"--d\n\nSubject: one\n\nfirst\n--d\n\nSubject: two\nContent-Type: text/plain; x\n\n"
        b"second\n--d--\n"),
    "unknown_charsets": (
        b"Subject: =?x-unknown-42?q?caf=E9?= and =?utf-8?b?!!!?=\n"
        b"Content-Type: multipart/alternative; boundary=c\n\n"
        b"--c\nContent-Type: text/plain; charset=x-unknown-42\n"
        b"Content-Transfer-Encoding: 8bit\n\ncaf\xe9 \xff\xfe\n"
        b"--c\nContent-Type: text/html; charset=\"utf-8\\\"\"\n\n<p>\xc3\xa9</p>\n--c--\n"),
    "odd_charset_codecs": (
        b"Subject: =?unicode_escape?q?=5Cud800?= =?base64?q?aGk=?=\n"
        b"Content-Type: multipart/mixed; boundary=u\n\n"
        b"--u\nContent-Type: text/plain; charset=unicode_escape\n\n\\ud800 lone surrogate\n"
        b"--u\nContent-Type: text/html; charset=utf-7\n\n+2AA- utf-7 surrogate\n"
        b"--u\nContent-Type: text/plain; charset=base64\n\naGk=\n--u--\n"),
    "headers_without_values": (
        b"Subject:\nFrom:\nTo:\nCc: \nDate:\nMessage-ID:\nContent-Type:\n"
        b"Content-Transfer-Encoding:\nContent-Disposition:\n\nbody of a header-less mail\n"),
    "eight_bit_headers": (
        "From: Jörg Müller <jörg@exämple.com>\nTo: Zoë <zoe@example.com>\n"
        "Subject: Grüße aus Köln ✓\n"
        "Content-Type: text/plain; charset=utf-8; name=\"Bericht ü.txt\"\n"
        "Content-Disposition: attachment; filename=\"Bericht ü.txt\"\n").encode()
        + b"X-Latin: caf\xe9\n\n" + "Inhalt äöü\n".encode(),
    "latin1_headers": (
        b"From: Andr\xe9 <andre@example.com>\nSubject: r\xe9sum\xe9\n\nbody\n"),
    "empty": b"",
    "header_only": b"Subject: only a header\nFrom: h@example.com",
    "body_only": b"\njust a body, no header at all\n",
    "garbage_header_lines": (
        b"From sender@example.com Mon Jan  1 00:00:00 2024\n  continuation first\n"
        b"this line has no colon\nSubject: after garbage\nX-Null: a\x00b\n: no name\n"
        b"X Space In Name: v\n\nbody\n"),
    "bad_addresses": (
        b"From: \"unterminated <a@example.com\nSender: <>\nReply-To: ,,,\n"
        b"To: a@b@c, , <>, undisclosed-recipients:;, x <y\n"
        b"Cc: Group: one@example.com, two@example.com;, (comment only)\n"
        b"Bcc: @\nSubject: bad addresses\n\nbody\n"),
    "bad_dates": (
        b"Date: yesterday at noon\nSubject: bad date\n\nbody\n"),
    "impossible_date": (
        b"Date: Mon, 99 Foo 20 99:99:99 +9999\nSubject: impossible date\n\nbody\n"),
    "deeply_nested": b"".join(
        b"Content-Type: multipart/mixed; boundary=n%d\n\n--n%d\n" % (level, level)
        for level in range(60)) + b"Content-Type: text/plain\n\ndeep\n",
    "broken_base64_attachment": (
        b"Subject: broken base64\nContent-Type: multipart/mixed; boundary=a\n\n"
        b"--a\nContent-Type: text/plain\n\nsee attachment\n"
        b"--a\nContent-Type: image/png\nContent-Transfer-Encoding: base64\n"
        b"Content-Disposition: attachment; filename\n\n" + base64.b64encode(b"\x89PNG")[:-2]
        + b"!!*\n--a--\n"),
    "rfc2231_names": (
        b"Subject: rfc 2231\nContent-Type: multipart/mixed; boundary=r\n\n--r\n"
        b"Content-Type: application/pdf; name*0*=utf-8''caf%C3%A9; name*1*=%20x.pdf\n"
        b"Content-Disposition: attachment; filename*=utf-8''caf%C3%A9%20x.pdf\n\n%PDF\n"
        b"--r\nContent-Type: text/plain; name*=bad''%ZZ\n\nx\n--r--\n"),
    "duplicate_content_type": (
        b"Subject: two content types\nContent-Type: text/html\n"
        b"Content-Type: multipart/mixed; boundary=z\n\n<p>which?</p>\n"),
    "bare_cr_and_nul": b"Subject: bare\rCR\nX-Odd: \x00\n\nline one\rline two\x00\n.\n..\n",
    "long_header_value": b"Subject: " + b"long " * 4000 + b"\nX-Long: " + b"y" * 20000
                         + b"\n\nshort body\n",
}
"""Name -> the message as stored."""
