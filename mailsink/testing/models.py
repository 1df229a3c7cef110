"""
The API's JSON as small frozen dataclasses, so a test reads C{message.subject} and its
editor knows the fields; built from Mailpit's shapes, which mailsink's API follows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Address:
    """One mailbox of a header: C{Address("Alice", "alice@example.com")}."""

    name: str
    address: str

    def __str__(self) -> str:
        return f"{self.name} <{self.address}>" if self.name else self.address

    @classmethod
    def from_json(cls, value: dict[str, Any] | None) -> Address:
        """Mailpit's C{{"Name", "Address"}}; None (no such header) is the empty address."""
        value = value or {}
        return cls(name=value.get("Name") or "", address=value.get("Address") or "")


def addresses(values: list[dict[str, Any]] | None) -> tuple[Address, ...]:
    """A JSON list of addresses (None: no such header)."""
    return tuple(Address.from_json(value) for value in values or ())


@dataclass(frozen=True)
class Summary:
    """A message as the list and search answers show it (no bodies but the snippet)."""

    id: str
    message_id: str
    subject: str
    from_: Address
    to: tuple[Address, ...]
    cc: tuple[Address, ...]
    bcc: tuple[Address, ...]
    """Envelope recipients named in no To or Cc header."""
    created: str
    """When the sink received it, RFC 3339."""
    snippet: str
    size: int
    attachments: int
    """How many attachments it has."""
    read: bool
    tags: tuple[str, ...]

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> Summary:
        """Mailpit's MessageSummary."""
        return cls(
            id=value["ID"], message_id=value.get("MessageID") or "",
            subject=value.get("Subject") or "", from_=Address.from_json(value.get("From")),
            to=addresses(value.get("To")), cc=addresses(value.get("Cc")),
            bcc=addresses(value.get("Bcc")), created=value.get("Created") or "",
            snippet=value.get("Snippet") or "", size=int(value.get("Size") or 0),
            attachments=int(value.get("Attachments") or 0), read=bool(value.get("Read")),
            tags=tuple(value.get("Tags") or ()))

    def __str__(self) -> str:
        to = ", ".join(str(address) for address in self.to) or "(no To)"
        return f"{self.subject!r} from {str(self.from_) or '(no From)'} to {to}"


@dataclass(frozen=True)
class Attachment:
    """One attachment or inline part with its decoded content."""

    part_id: str
    """The API's PartID, e.g. C{"2"} or C{"1.2"}."""
    filename: str
    content_type: str
    content_id: str
    content: bytes


@dataclass(frozen=True)
class Message:
    """One whole message: its headers, bodies, parts and the bytes as stored."""

    id: str
    message_id: str
    subject: str
    from_: Address
    to: tuple[Address, ...]
    cc: tuple[Address, ...]
    bcc: tuple[Address, ...]
    reply_to: tuple[Address, ...]
    date: str
    """The Date header as RFC 3339 (when it was received if there is none)."""
    headers: dict[str, list[str]]
    """Every header by name, each with its values in order."""
    text: str
    html: str
    attachments: tuple[Attachment, ...]
    inline: tuple[Attachment, ...]
    """Parts shown inside the HTML (C{cid:} images), not offered as attachments."""
    raw: bytes
    """The message as the sink stored it, with its trace headers (C{Received} ...)."""

    @classmethod
    def from_json(cls, value: dict[str, Any], *, headers: dict[str, list[str]], raw: bytes,
                  attachments: tuple[Attachment, ...],
                  inline: tuple[Attachment, ...]) -> Message:
        """Mailpit's Message, with what other routes answer for the same message."""
        return cls(
            id=value["ID"], message_id=value.get("MessageID") or "",
            subject=value.get("Subject") or "", from_=Address.from_json(value.get("From")),
            to=addresses(value.get("To")), cc=addresses(value.get("Cc")),
            bcc=addresses(value.get("Bcc")), reply_to=addresses(value.get("ReplyTo")),
            date=value.get("Date") or "", headers=headers, text=value.get("Text") or "",
            html=value.get("HTML") or "", attachments=attachments, inline=inline, raw=raw)
