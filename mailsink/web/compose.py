"""
Building a message from a Mailpit C{POST /api/v1/send} body, with no I/O.

The body names the sender, recipients, subject, text and HTML bodies, extra headers,
tags (written as C{X-Tags}) and base64 attachments (inline when given a C{ContentID}).
L{compose} checks all of it and answers the envelope and the message bytes (LF line ends,
as stored); anything wrong is a L{SendError} whose text says what to change.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import email.policy
import email.utils
import mimetypes
import re
import time
from email.headerregistry import Address
from email.message import EmailMessage
from typing import Any

import attrs

_POLICY = email.policy.default.clone(linesep="\n")
_ADDRESS = re.compile(r"[^\s@<>()\[\],;:\"\\]+@[^\s@<>()\[\],;:\"\\]+")
_HEADER_NAME = re.compile(r"[!-9;-~]+")
_MIME_TYPE = re.compile(r"[A-Za-z0-9!#$&^_.+-]+/[A-Za-z0-9!#$&^_.+-]+")
_BODY_HEADERS = frozenset({"content-type", "content-transfer-encoding", "mime-version",
                           "content-disposition"})


class SendError(ValueError):
    """The send request cannot be turned into a message; the text says why."""


@attrs.frozen
class Composed:
    """A message ready to store, and its envelope."""

    mail_from: str
    recipients: tuple[str, ...]
    message: bytes


def compose(body: Any, *, hostname: str, max_size: int,
            now: float | None = None) -> Composed:
    """
    The message a send request describes. C{Date} and C{Message-ID} are generated unless
    C{Headers} gives them; C{Bcc} recipients are in the envelope only. A message larger
    than C{max_size} bytes is refused.
    """
    if not isinstance(body, dict):
        raise SendError("the body must be a JSON object")
    sender = _address(body.get("From"), "From")
    if sender is None:
        raise SendError("From.Email is required")
    to = _address_list(body, "To")
    cc = _address_list(body, "Cc")
    bcc = _address_list(body, "Bcc")
    reply_to = _address_list(body, "ReplyTo")
    recipients = tuple(a.addr_spec for a in to + cc + bcc)
    if not recipients:
        raise SendError("at least one recipient (To, Cc or Bcc) is required")
    subject = _string(body, "Subject")
    text = _string(body, "Text")
    html = _string(body, "HTML")
    headers = _headers(body.get("Headers"))
    tags = _tags(body.get("Tags"))
    attachments = _attachments(body.get("Attachments"))
    if sum(len(data) for _, _, _, data in attachments) > max_size:
        raise SendError(_too_big(max_size))

    message = EmailMessage(policy=_POLICY)
    message["From"] = sender
    if to:
        message["To"] = to
    if cc:
        message["Cc"] = cc
    if reply_to:
        message["Reply-To"] = reply_to
    message["Subject"] = _one_line(subject, "Subject")
    given = {name.lower() for name in headers}
    if "date" not in given:
        moment = time.time() if now is None else now
        message["Date"] = email.utils.format_datetime(
            datetime.datetime.fromtimestamp(moment, datetime.UTC))
    if "message-id" not in given:
        message["Message-ID"] = email.utils.make_msgid(domain=hostname)
    if tags:
        message["X-Tags"] = ", ".join(tags)
    for name, value in headers.items():
        del message[name]
        try:
            message[name] = value
        except (ValueError, TypeError) as error:
            raise SendError(f"Headers: {name} is not a valid header: {error}") from None

    _bodies(message, text, html)
    html_part = message.get_body(preferencelist=("html",)) if html else None
    for filename, content_type, content_id, data in attachments:
        maintype, subtype = content_type.split("/", 1)
        if content_id and html_part is not None:
            html_part.add_related(data, maintype, subtype, cid=f"<{content_id}>",
                                  filename=filename, disposition="inline")
        elif content_id:
            message.add_attachment(data, maintype, subtype, cid=f"<{content_id}>",
                                   filename=filename, disposition="inline")
    for filename, content_type, content_id, data in attachments:
        if not content_id:
            maintype, subtype = content_type.split("/", 1)
            message.add_attachment(data, maintype, subtype, filename=filename)
    try:
        raw = message.as_bytes()
    except (ValueError, TypeError, UnicodeError) as error:
        raise SendError(f"the message cannot be written: {error}") from None
    if len(raw) > max_size:
        raise SendError(_too_big(max_size))
    return Composed(sender.addr_spec, recipients, raw)


def _too_big(max_size: int) -> str:
    return (f"the message is larger than {max_size} bytes, the limit "
            "([mailsink] max_message_size)")


def _bodies(message: EmailMessage, text: str, html: str) -> None:
    if html and text:
        message.set_content(text)
        message.add_alternative(html, subtype="html")
    elif html:
        message.set_content(html, subtype="html")
    else:
        message.set_content(text)


def _string(body: dict[str, Any], key: str) -> str:
    value = body.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise SendError(f"{key} must be a string")
    return value


def _one_line(value: str, what: str) -> str:
    if "\r" in value or "\n" in value:
        raise SendError(f"{what} must be one line")
    return value


def _address(value: Any, what: str) -> Address | None:
    """An C{{Email, Name}} object (or a bare address string) as an L{Address}."""
    if value is None:
        return None
    if isinstance(value, str):
        value = {"Email": value}
    if not isinstance(value, dict):
        raise SendError(f"{what} must be an object with Email and Name")
    address = value.get("Email")
    name = value.get("Name") or ""
    if not address:
        raise SendError(f"{what}.Email is required")
    if not isinstance(address, str) or not isinstance(name, str):
        raise SendError(f"{what}.Email and {what}.Name must be strings")
    address = address.strip()
    if not _ADDRESS.fullmatch(address):
        raise SendError(f"{what}.Email {address!r} is not a valid email address")
    _one_line(name, f"{what}.Name")
    try:
        return Address(display_name=name, addr_spec=address)
    except (ValueError, TypeError, IndexError) as error:
        raise SendError(f"{what}.Email {address!r} is not a valid email address: "
                        f"{error}") from None


def _address_list(body: dict[str, Any], key: str) -> list[Address]:
    value = body.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise SendError(f"{key} must be a list of {{Email, Name}} objects")
    found = []
    for number, item in enumerate(value):
        address = _address(item, f"{key}[{number}]")
        if address is None:
            raise SendError(f"{key}[{number}].Email is required")
        found.append(address)
    return found


def _headers(value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise SendError('Headers must be an object like {"X-Name": "value"}')
    headers: dict[str, str] = {}
    for name, text in value.items():
        if not _HEADER_NAME.fullmatch(name):
            raise SendError(f"Headers: {name!r} is not a valid header name")
        if not isinstance(text, str):
            raise SendError(f"Headers: the value of {name} must be a string")
        if name.lower() in _BODY_HEADERS:
            raise SendError(f"Headers: {name} is set from Text, HTML and Attachments")
        headers[name] = _one_line(text, f"Headers: {name}")
    return headers


def _tags(value: Any) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(tag, str) for tag in value):
        raise SendError("Tags must be a list of strings")
    tags = []
    for tag in value:
        tag = _one_line(tag, "a tag").strip()
        if tag and tag not in tags:
            tags.append(tag)
    return tags


def _attachments(value: Any) -> list[tuple[str, str, str, bytes]]:
    """(file name, content type, content ID, bytes) of each attachment."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise SendError("Attachments must be a list")
    found = []
    for number, item in enumerate(value):
        what = f"Attachments[{number}]"
        if not isinstance(item, dict):
            raise SendError(f"{what} must be an object with Content and Filename")
        fields = {key: item.get(key) or "" for key in
                  ("Content", "Filename", "ContentType", "ContentID")}
        if not all(isinstance(field, str) for field in fields.values()):
            raise SendError(f"{what}: Content, Filename, ContentType and ContentID must "
                            "be strings")
        filename = _one_line(fields["Filename"], f"{what}.Filename")
        if not filename:
            raise SendError(f"{what}.Filename is required")
        try:
            data = base64.b64decode("".join(fields["Content"].split()), validate=True)
        except (binascii.Error, ValueError):
            raise SendError(f"{what}.Content is not valid base64") from None
        content_type = fields["ContentType"].strip().lower()
        if not content_type:
            content_type = mimetypes.guess_type(filename)[0] or "application/octet-stream"
        if not _MIME_TYPE.fullmatch(content_type):
            raise SendError(f"{what}.ContentType {content_type!r} is not a MIME type "
                            "like image/png")
        content_id = fields["ContentID"].strip().strip("<>")
        if content_id and not _HEADER_NAME.fullmatch(content_id):
            raise SendError(f"{what}.ContentID must be one word without spaces")
        found.append((filename, content_type, content_id, data))
    return found
