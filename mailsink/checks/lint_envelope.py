"""
Lint rules comparing the envelope with the headers: a C{From} domain that DMARC can align
with the MAIL FROM domain, and no C{Bcc} header left in the data.

The envelope comes from mailsink's trace headers; a message without them (a file from
elsewhere) gets one C{info} finding saying the envelope checks were skipped.
"""

from __future__ import annotations

from collections.abc import Iterator

from mailsink.checks.address import domain, mailboxes
from mailsink.checks.findings import Finding, Severity
from mailsink.checks.source import Source

_SECOND_LEVEL = frozenset({"co", "com", "net", "org", "gov", "ac", "edu", "ne", "or"})
"""Labels that, under a two-letter country code, form a public suffix (co.uk, com.au)."""


def organizational_domain(name: str) -> str:
    """
    The domain DMARC's relaxed alignment compares (RFC 7489 3.2), approximated without the
    Public Suffix List: the last two labels, or three under a country's second level.
    """
    labels = name.lower().rstrip(".").split(".")
    keep = 3 if len(labels) >= 3 and len(labels[-1]) == 2 and labels[-2] in _SECOND_LEVEL \
        else 2
    return ".".join(labels[-keep:])


def envelope_unknown(source: Source) -> Iterator[Finding]:
    if source.envelope is None:
        yield Finding("envelope-unknown", Severity.INFO, "message",
                      "the message has no trace headers of mailsink's, so its MAIL FROM and "
                      "whether it used SMTPUTF8 are unknown: the DMARC alignment check was "
                      "skipped; send it through mailsink to check them too",
                      "RFC 5321 4.4")


def from_alignment(source: Source) -> Iterator[Finding]:
    envelope = source.envelope
    if envelope is None or "@" not in envelope.mail_from:
        return
    for field in source.root.header("From")[:1]:
        addresses = mailboxes(field.value).addresses
        if len(addresses) != 1:
            return
        header_domain, envelope_domain = domain(addresses[0]), domain(envelope.mail_from)
        if organizational_domain(header_domain) != organizational_domain(envelope_domain):
            yield Finding("from-domain-not-aligned", Severity.WARNING, "From",
                          f"the From domain {header_domain} differs from the MAIL FROM "
                          f"domain {envelope_domain}: DMARC alignment fails unless DKIM signs "
                          f"with {header_domain}, and Gmail and Yahoo require alignment from "
                          f"bulk senders; send with a MAIL FROM (Return-Path) in "
                          f"{header_domain}", "RFC 7489 3.1")


def bcc_header(source: Source) -> Iterator[Finding]:
    if any(field.value.strip() for field in source.root.header("Bcc")):
        yield Finding("bcc-header", Severity.ERROR, "Bcc",
                      "a Bcc header is left in the data: every recipient can read who was "
                      "blind-copied; give those recipients only as RCPT TO (Python's "
                      "smtplib send_message drops the header for you)", "RFC 5322 3.6.3")


RULES = (envelope_unknown, from_alignment, bcc_header)
