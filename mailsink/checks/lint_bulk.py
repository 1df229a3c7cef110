"""
Lint rules for mail sent in bulk: a C{List-Unsubscribe} that Gmail and Yahoo can use with
one click (RFC 8058, their 2024 bulk sender rules), and a size that big providers take.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from mailsink.checks.findings import Finding, Severity, shown
from mailsink.checks.source import Source

GMAIL_LIMIT = 25 * 1024 * 1024
"""Gmail refuses larger messages (as sent, encodings included)."""
SES_LIMIT = 10 * 1024 * 1024
"""Amazon SES's default maximum message size."""
_URI = re.compile(r"<\s*([^<>]*?)\s*>")
_ONE_CLICK = "List-Unsubscribe=One-Click"
_BULK_RULES = "Gmail and Yahoo bulk sender rules (2024)"


def list_unsubscribe(source: Source) -> Iterator[Finding]:
    for field in source.root.header("List-Unsubscribe")[:1]:
        schemes = [uri.split(":", 1)[0].lower() for uri in _URI.findall(field.value)]
        if "https" not in schemes and "mailto" not in schemes:
            yield Finding("list-unsubscribe-invalid", Severity.ERROR, "List-Unsubscribe",
                          f"List-Unsubscribe {shown(field.value)} holds no <https:...> or "
                          f"<mailto:...> URI: Gmail and Yahoo ignore it and refuse or junk "
                          f"bulk mail without a working unsubscribe; give <https://...> (with "
                          f"List-Unsubscribe-Post) and optionally <mailto:...>, each in angle "
                          f"brackets", f"RFC 2369 3.2; RFC 8058; {_BULK_RULES}")
        elif "https" in schemes and not _one_click(source):
            yield Finding("list-unsubscribe-not-one-click", Severity.ERROR,
                          "List-Unsubscribe-Post",
                          f"List-Unsubscribe has an https URI but no List-Unsubscribe-Post: "
                          f"{_ONE_CLICK} header: Gmail and Yahoo require one-click "
                          f"unsubscribe from bulk senders; add that header (and sign both "
                          f"with DKIM)", f"RFC 8058 3.1; {_BULK_RULES}")


def _one_click(source: Source) -> bool:
    return any(field.value.strip() == _ONE_CLICK
               for field in source.root.header("List-Unsubscribe-Post"))


def size(source: Source) -> Iterator[Finding]:
    if 2 * len(source.data) <= SES_LIMIT:  # even were every byte a line end
        return
    wire_size = len(source.data) + source.data.count(b"\n")  # each LF is a CRLF as sent
    megabytes = f"{wire_size / (1024 * 1024):.1f} MB"
    if wire_size > GMAIL_LIMIT:
        yield Finding("message-over-25mb", Severity.ERROR, "message",
                      f"the message is {megabytes} as sent: Gmail refuses messages over "
                      f"25 MB (552 5.3.4); link to large files instead of attaching them",
                      "Gmail message size limit")
    elif wire_size > SES_LIMIT:
        yield Finding("message-over-10mb", Severity.WARNING, "message",
                      f"the message is {megabytes} as sent: Amazon SES refuses messages over "
                      f"10 MB by default, as do many company servers; link to large files "
                      f"instead of attaching them", "Amazon SES message size quota")


RULES = (list_unsubscribe, size)
