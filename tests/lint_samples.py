"""
Messages for the lint tests: clean ones as real mailers write them, and helpers that store
a message the way mailsink does (trace headers, LF line ends) and read back the findings.
"""

from __future__ import annotations

import email.utils
from email.message import EmailMessage

from mailsink.checks.findings import Finding
from mailsink.checks.lint import lint
from mailsink.store.delivery import Envelope, trace_headers

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4
PDF = b"%PDF-1.4\n" + bytes(range(256)) * 64

THUNDERBIRD = b"""\
Content-Type: multipart/alternative;
 boundary="------------0ZJxv6rLm4y3hXQp1bTf8aKq"
Message-ID: <5b7e0c2a-8f31-4c55-9d0e-1f2a3b4c5d6e@example.org>
Date: Tue, 2 Dec 2025 14:30:12 +0100
MIME-Version: 1.0
User-Agent: Mozilla Thunderbird
Content-Language: de-DE
To: Bob Example <bob@example.net>
From: =?UTF-8?Q?J=C3=B6rg_M=C3=BCller?= <joerg@example.org>
Subject: =?UTF-8?Q?Gr=C3=BC=C3=9Fe_aus_K=C3=B6ln?=

This is a multi-part message in MIME format.
--------------0ZJxv6rLm4y3hXQp1bTf8aKq
Content-Type: text/plain; charset=UTF-8; format=flowed
Content-Transfer-Encoding: 8bit

Hallo Bob,

viele Gr\xc3\xbc\xc3\x9fe aus K\xc3\xb6ln!

J\xc3\xb6rg

--------------0ZJxv6rLm4y3hXQp1bTf8aKq
Content-Type: text/html; charset=UTF-8
Content-Transfer-Encoding: 8bit

<!DOCTYPE html>
<html>
  <head>
    <meta http-equiv="content-type" content="text/html; charset=UTF-8">
  </head>
  <body>
    <p>Hallo Bob,</p>
    <p>viele Gr\xc3\xbc\xc3\x9fe aus K\xc3\xb6ln!</p>
    <p>J\xc3\xb6rg<br>
    </p>
  </body>
</html>

--------------0ZJxv6rLm4y3hXQp1bTf8aKq--
"""
"""A reply as Thunderbird 128 writes it: 8bit UTF-8 bodies, encoded-word headers."""


def clean_message() -> EmailMessage:
    """mixed(alternative(text, related(html, cid image)), pdf), from Python's email library."""
    message = EmailMessage()
    message["From"] = "Shop <orders@shop.example.com>"
    message["To"] = "Customer <customer@example.net>"
    message["Subject"] = "Your order 1234 — thank you"
    message["Date"] = email.utils.format_datetime(
        email.utils.parsedate_to_datetime("Tue, 02 Dec 2025 14:30:00 +0100"))
    message["Message-ID"] = email.utils.make_msgid(domain="shop.example.com")
    message.set_content("Thank you for your order.\n\nGrüße, the shop\n")
    message.add_alternative(
        '<html><body><p>Thank you for your order.</p>'
        '<img src="cid:logo@shop.example.com" alt="Shop"></body></html>', subtype="html")
    html = message.get_payload(1)
    assert isinstance(html, EmailMessage)
    html.add_related(PNG, "image", "png", cid="<logo@shop.example.com>")
    message.add_attachment(PDF, maintype="application", subtype="pdf", filename="invoice.pdf")
    return message


def envelope(**changes: object) -> Envelope:
    """A plain SMTP delivery from shop.example.com's bounce address to one recipient."""
    fields: dict[str, object] = dict(
        mail_from="bounces@shop.example.com", recipients=("customer@example.net",),
        helo="mail.shop.example.com", client_address="127.0.0.1", protocol="ESMTP",
        listener="smtp", received_at=1764682200.0)
    fields.update(changes)
    return Envelope(**fields)  # type: ignore[arg-type]


def stored(message: EmailMessage | bytes, **changes: object) -> bytes:
    """The bytes mailsink stores: its trace headers, then the message with LF line ends."""
    data = message if isinstance(message, bytes) else message.as_bytes()
    return trace_headers(envelope(**changes), "sink.example", "1764682200.M1P1Q1.host") + \
        data.replace(b"\r\n", b"\n")


def message(headers: str = "", body: str | bytes = "Hello.\n", *,
            drop: tuple[str, ...] = ()) -> bytes:
    """
    A one-part message with good From, To, Subject, Date and Message-ID headers (those in
    C{drop} left out) followed by C{headers}, stored as mailsink would.
    """
    base = {"From": "App <app@shop.example.com>", "To": "customer@example.net",
            "Subject": "Hello", "Date": "Tue, 02 Dec 2025 14:30:00 +0100",
            "Message-ID": "<1234.5678@shop.example.com>"}
    lines = [f"{name}: {value}" for name, value in base.items() if name not in drop]
    text = "\n".join(lines) + "\n" + headers
    data = body if isinstance(body, bytes) else body.encode()
    return stored(text.encode() + b"\n" + data)


def findings(raw: bytes, code: str | None = None) -> list[Finding]:
    """The lint findings for C{raw}, or those with C{code}."""
    return [finding for finding in lint(raw).findings if code in (None, finding.code)]


def codes(raw: bytes) -> list[str]:
    """The codes of the lint findings for C{raw}, in report order."""
    return [finding.code for finding in lint(raw).findings]
