"""
The shapes of a stored message as the views see it, and their Mailpit JSON form.

L{mailsink.message.mime} fills L{Facts} and L{MessageView} from a message's bytes; the index keeps
one L{Summary} per Maildir file; the web API turns them into Mailpit's JSON shapes
(C{shared/mailpit-api.md}) here, in one place.
"""

from __future__ import annotations

import datetime
from typing import Any

import attrs


@attrs.frozen
class Address:
    """A mailbox as a header names it."""

    name: str
    address: str

    def to_json(self) -> dict[str, str]:
        return {"Name": self.name, "Address": self.address}


@attrs.frozen
class Transport:
    """How a message arrived, read back from the trace headers mailsink wrote."""

    remote_address: str = ""
    helo: str = ""
    tls_version: str | None = None
    tls_cipher: str | None = None
    username: str = ""
    mail_from: str = ""
    rcpt_to: tuple[str, ...] = ()
    listener: str = ""
    protocol: str = ""
    session: str = ""
    """The ID of the SMTP session that brought the message ("" if not known)."""

    def to_json(self) -> dict[str, Any]:
        tls = ({"Version": self.tls_version, "Cipher": self.tls_cipher or ""}
               if self.tls_version else None)
        return {"RemoteAddress": self.remote_address, "Helo": self.helo, "TLS": tls,
                "Username": self.username, "MailFrom": self.mail_from,
                "RcptTo": list(self.rcpt_to), "Listener": self.listener,
                "Protocol": self.protocol, "SessionID": self.session}


@attrs.frozen
class Facts:
    """What one message's bytes say, for lists and search (no bodies but the snippet)."""

    message_id: str = ""
    sender: Address | None = None
    to: tuple[Address, ...] = ()
    cc: tuple[Address, ...] = ()
    bcc: tuple[Address, ...] = ()
    """Envelope recipients (Delivered-To) named in no To or Cc header."""
    reply_to: tuple[Address, ...] = ()
    subject: str = ""
    date: str = ""
    """The Date header as RFC 3339, or "" when missing or unreadable."""
    snippet: str = ""
    """Up to 250 characters of the text body, white space collapsed."""
    attachments: int = 0
    tags: tuple[str, ...] = ()
    """From an C{X-Tags} header, as Mailpit reads it."""
    return_path: str = ""
    transport: Transport = Transport()


@attrs.frozen
class Summary:
    """One indexed message: its file and its facts."""

    id: str
    """Stable, URL-safe, derived from the Maildir unique name (no folder, no flags)."""
    mailbox: str
    """"" for the shared Maildir, else the folder under it: a per-user one or a
    C{[mailbox:NAME]}; the API's C{Mailbox}."""
    read: bool
    created: float
    """When mailsink received it (seconds since the epoch)."""
    size: int
    facts: Facts

    def to_json(self) -> dict[str, Any]:
        """Mailpit's MessageSummary."""
        facts = self.facts
        return {
            "ID": self.id,
            "MessageID": facts.message_id,
            "Read": self.read,
            "From": facts.sender.to_json() if facts.sender else {"Name": "", "Address": ""},
            "To": [a.to_json() for a in facts.to],
            "Cc": [a.to_json() for a in facts.cc],
            "Bcc": [a.to_json() for a in facts.bcc],
            "ReplyTo": [a.to_json() for a in facts.reply_to],
            "Subject": facts.subject,
            "Created": rfc3339(self.created),
            "Username": facts.transport.username,
            "Tags": list(facts.tags),
            "Size": self.size,
            "Attachments": facts.attachments,
            "Snippet": facts.snippet,
            "Mailbox": self.mailbox,
        }


@attrs.frozen
class Part:
    """An attachment or inline part, addressed by its PartID (e.g. C{"1.2"})."""

    part_id: str
    filename: str
    content_type: str
    content_id: str
    size: int

    def to_json(self) -> dict[str, Any]:
        return {"PartID": self.part_id, "FileName": self.filename,
                "ContentType": self.content_type, "ContentID": self.content_id,
                "Size": self.size}


@attrs.frozen
class MessageView:
    """Everything the message page shows, parsed from the bytes once per request."""

    facts: Facts
    text: str
    html: str
    headers: dict[str, list[str]]
    inline: tuple[Part, ...] = ()
    attachments: tuple[Part, ...] = ()

    def to_json(self, summary: Summary) -> dict[str, Any]:
        """Mailpit's Message, plus mailsink's C{Transport}."""
        listed = summary.to_json()
        return {
            "ID": summary.id, "MessageID": listed["MessageID"], "From": listed["From"],
            "To": listed["To"], "Cc": listed["Cc"], "Bcc": listed["Bcc"],
            "ReplyTo": listed["ReplyTo"], "ReturnPath": self.facts.return_path,
            "Subject": self.facts.subject, "Date": self.facts.date or listed["Created"],
            "Tags": listed["Tags"], "Username": listed["Username"], "Text": self.text,
            "HTML": self.html, "Size": summary.size,
            "Inline": [p.to_json() for p in self.inline],
            "Attachments": [p.to_json() for p in self.attachments],
            "Transport": self.facts.transport.to_json(),
            "SessionID": self.facts.transport.session,
            "Mailbox": summary.mailbox,
        }


def rfc3339(seconds: float) -> str:
    """A UTC time as RFC 3339 with an offset, as Mailpit writes times."""
    moment = datetime.datetime.fromtimestamp(seconds, datetime.UTC)
    return moment.isoformat(timespec="milliseconds")
