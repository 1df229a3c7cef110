"""
Lint rules over the top-level header fields: C{From}, C{Date} and C{Message-ID} present and
well formed, and no field that RFC 5322 section 3.6 allows once given twice.

Gmail answers "550 5.7.1 ... not RFC 5322 compliant" to a message without a valid From or
Message-ID, with several From addresses, or with a once-only header repeated.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Iterator

from mailsink.checks.address import mailboxes
from mailsink.checks.findings import Finding, Severity, shown
from mailsink.checks.source import Source

_GMAIL = "Gmail refuses such mail (550 5.7.1, not RFC 5322 compliant)"
_ONCE = ("Date", "From", "Sender", "Reply-To", "To", "Cc", "Bcc", "Message-ID",
         "In-Reply-To", "References", "Subject")
"""The fields RFC 5322 section 3.6 allows at most once."""
_ADDRESS_LISTS = ("Reply-To", "To", "Cc", "Bcc")
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_DOT_ATOM = rf"{_ATOM}(?:\.{_ATOM})*"
_MESSAGE_ID = re.compile(rf"<{_DOT_ATOM}@(?:{_DOT_ATOM}|\[[!-Z^-~]*\])>")
_DATE = re.compile(
    r"(?:(?P<weekday>[A-Za-z]+)\s*,\s*)?(?P<day>\d{1,2})\s+(?P<month>[A-Za-z]+)\s+"
    r"(?P<year>\d{4})\s+(?P<hour>\d\d):(?P<minute>\d\d)(?::(?P<second>\d\d))?\s+"
    r"(?P<zone>[+-]\d{4}|UT|GMT|[ECMP][SD]T)(?:\s*\([^()]*\))?")
_WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov",
           "dec")
_DATE_EXAMPLE = "'Tue, 02 Dec 2025 14:30:00 +0100'"


def missing_from(source: Source) -> Iterator[Finding]:
    if not source.root.header("From"):
        yield Finding("missing-from", Severity.ERROR, "From",
                      f"no From header: RFC 5322 requires one and {_GMAIL}; set From to "
                      f"the address the message is sent from",
                      "RFC 5322 3.6.2; Gmail sender guidelines")


def invalid_from(source: Source) -> Iterator[Finding]:
    for field in source.root.header("From")[:1]:
        problem = mailboxes(field.value).problem
        if problem is not None:
            yield Finding("invalid-from", Severity.ERROR, "From",
                          f"From {shown(field.value)} is not a valid address ({problem}): "
                          f"{_GMAIL}; write it as Name <local@domain>, quoting a name that "
                          f"holds punctuation",
                          "RFC 5322 3.4, 3.6.2; Gmail sender guidelines")


def several_from(source: Source) -> Iterator[Finding]:
    for field in source.root.header("From")[:1]:
        count = len(mailboxes(field.value).addresses)
        if count > 1 and not source.root.header("Sender"):
            yield Finding("several-from-without-sender", Severity.ERROR, "From",
                          f"From names {count} addresses and there is no Sender header: "
                          f"RFC 5322 requires one then and {_GMAIL}; keep one address in From "
                          f"(others can go in Reply-To)",
                          "RFC 5322 3.6.2; Gmail sender guidelines")


def missing_date(source: Source) -> Iterator[Finding]:
    if not source.root.header("Date"):
        yield Finding("missing-date", Severity.ERROR, "Date",
                      "no Date header: RFC 5322 requires one, servers such as Postfix add "
                      "the time they relayed it, and SpamAssassin scores it (MISSING_DATE); "
                      "set Date when the message is built (Python: "
                      "email.utils.format_datetime)", "RFC 5322 3.6.1")


def invalid_date(source: Source) -> Iterator[Finding]:
    for field in source.root.header("Date")[:1]:
        problem = date_problem(field.value)
        if problem is not None:
            yield Finding("invalid-date", Severity.WARNING, "Date",
                          f"Date {shown(field.value)} is not an RFC 5322 date ({problem}): "
                          f"clients sort it wrongly or show the time it arrived, and "
                          f"SpamAssassin scores it (INVALID_DATE); write it like "
                          f"{_DATE_EXAMPLE} with your mail library's date formatter",
                          "RFC 5322 3.3")


def date_problem(value: str) -> str | None:
    """Why C{value} is not an RFC 5322 date-time, or None when it is one."""
    found = _DATE.fullmatch(value.strip())
    if found is None:
        return "expected [weekday,] day month year hh:mm[:ss] zone"
    month = found["month"].lower()
    if month not in _MONTHS:
        return f"no month {found['month']!r}"
    weekday = (found["weekday"] or "").lower()
    if weekday and weekday not in _WEEKDAYS:
        return f"no weekday {found['weekday']!r}"
    zone = found["zone"]
    if zone[0] in "+-" and int(zone[3:]) >= 60:
        return f"zone {zone} has over 59 minutes"
    try:
        moment = datetime.datetime(int(found["year"]), _MONTHS.index(month) + 1,
                                   int(found["day"]), int(found["hour"]),
                                   int(found["minute"]), min(int(found["second"] or 0), 59))
    except ValueError as error:
        return str(error)
    if weekday and _WEEKDAYS.index(weekday) != moment.weekday():
        return f"that day is a {moment:%A}, not {found['weekday']}"
    return None


def missing_message_id(source: Source) -> Iterator[Finding]:
    if not source.root.header("Message-ID"):
        yield Finding("missing-message-id", Severity.ERROR, "Message-ID",
                      "no Message-ID header: Gmail refuses such mail (550 5.7.1) and replies "
                      "cannot thread; let your mail library generate one (Python: "
                      "email.utils.make_msgid)", "RFC 5322 3.6.4; Gmail sender guidelines")


def invalid_message_id(source: Source) -> Iterator[Finding]:
    for field in source.root.header("Message-ID")[:1]:
        if not _MESSAGE_ID.fullmatch(field.value.strip()):
            yield Finding("invalid-message-id", Severity.ERROR, "Message-ID",
                          f"Message-ID {shown(field.value)} is not of the form "
                          f"<local@domain>: Gmail refuses such mail (550 5.7.1); let your "
                          f"mail library generate it (Python: email.utils.make_msgid)",
                          "RFC 5322 3.6.4; Gmail sender guidelines")


def duplicate_headers(source: Source) -> Iterator[Finding]:
    counts: dict[str, int] = {}
    for field in source.root.fields:
        counts[field.name.lower()] = counts.get(field.name.lower(), 0) + 1
    for name in _ONCE:
        count = counts.get(name.lower(), 0)
        if count > 1:
            fix = ("list all addresses in one header" if name in _ADDRESS_LISTS
                   else "set it once")
            yield Finding("duplicate-header", Severity.ERROR, name,
                          f"the {name} header appears {count} times but RFC 5322 allows it "
                          f"once: {_GMAIL}; {fix}", "RFC 5322 3.6; Gmail sender guidelines")


RULES = (missing_from, invalid_from, several_from, missing_date, invalid_date,
         missing_message_id, invalid_message_id, duplicate_headers)
