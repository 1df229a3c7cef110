"""
C{mailsink send}: a test message to any SMTP server, with the chosen TLS mode and AUTH;
failures become the same one-sentence diagnoses as C{mailsink check}.
"""

from __future__ import annotations

import mimetypes
import os
import smtplib
import socket
import ssl
from collections.abc import Sequence
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

from mailsink import sentences
from mailsink.probe import Client, diagnose
from mailsink.sentences import Diagnosis

DEFAULT_FROM = "mailsink-test@example.com"
DEFAULT_TO = "recipient@example.com"
DEFAULT_SUBJECT = "mailsink test message"


def build_message(sender: str, recipients: Sequence[str], subject: str,
                  attachments: Sequence[str] = ()) -> EmailMessage:
    """A short text message with each file in C{attachments} attached (type guessed)."""
    message = EmailMessage()
    message["From"] = sender
    message["To"] = ", ".join(recipients)
    message["Subject"] = subject
    message["Date"] = formatdate(localtime=True)
    message["Message-ID"] = make_msgid(domain=sender.rpartition("@")[2] or None)
    message.set_content(f"A test message sent by mailsink send from {socket.gethostname()}.\n")
    for path in attachments:
        kind, encoding = mimetypes.guess_type(path)
        if kind is None or encoding is not None:
            kind = "application/octet-stream"
        maintype, _, subtype = kind.partition("/")
        try:
            with open(path, "rb") as stream:
                data = stream.read()
        except OSError as e:
            raise Diagnosis(f"cannot read {path}: {e.strerror or e}") from None
        message.add_attachment(data, maintype=maintype, subtype=subtype,
                               filename=os.path.basename(path))
    return message


def send(host: str, port: int, message: EmailMessage, *, mode: str,
         context: ssl.SSLContext, timeout: float, user: str | None = None,
         password: str | None = None, servername: str | None = None) -> str:
    """
    Send C{message} to C{host:port} (C{mode}: none, starttls or implicit), logging in
    first when C{user} is given. Returns the server's reply to the end of data; raises
    L{Diagnosis} with one sentence on failure.
    """
    client = Client(mode=mode, context=context, timeout=timeout, servername=servername)
    try:
        client.open(host, port)
        client.ehlo()
        if mode == "starttls":
            if not client.has_extn("starttls"):
                raise Diagnosis(sentences.no_starttls(f"{host}:{port}"))
            client.upgrade()
        if user is not None:
            if not client.has_extn("auth"):
                if not client.tls and client.has_extn("starttls"):
                    raise Diagnosis(sentences.auth_only_after_starttls(f"{host}:{port}"))
                raise Diagnosis(sentences.no_auth(f"{host}:{port}", client.tls))
            client.login(user, password or "")
        sender = str(message["From"])
        recipients = [address.strip() for address in str(message["To"]).split(",")]
        code, reply = client.mail(sender)
        if code != 250:
            raise smtplib.SMTPSenderRefused(code, reply, sender)
        accepted = 0
        refused: dict[str, tuple[int, bytes]] = {}
        for recipient in recipients:
            code, reply = client.rcpt(recipient)
            if code in (250, 251):
                accepted += 1
            else:
                refused[recipient] = (code, reply)
        if not accepted:
            raise smtplib.SMTPRecipientsRefused(refused)
        code, reply = client.data(message.as_bytes())
        if code != 250:
            raise smtplib.SMTPDataError(code, reply)
        client.quit_quietly()
        text = f"{code} {reply.decode('utf-8', 'replace')}"
        if refused:
            text += "; refused: " + ", ".join(refused)
        return text
    except (OSError, smtplib.SMTPException, ssl.SSLError, Diagnosis) as e:
        client.close()
        raise diagnose(e, client, host, port) from None
