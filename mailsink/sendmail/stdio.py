"""
C{mailsink-sendmail -bs}: SMTP on standard input and output, as sendmail, Postfix and Exim
speak it for programs that submit mail that way (Symfony Mailer's and Laravel's default
sendmail command is C{sendmail -bs}).

A minimal server: HELO/EHLO, MAIL, RCPT, DATA, RSET, NOOP, VRFY, QUIT. Each message is
handed on (L{Deliver}) when its data ends, and its reply is the outcome of that: 250 once it
is in the sink, the listener's own refusal, or 451 when it could not be kept.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

Deliver = Callable[[str, tuple[str, ...], bytes], str]
"""Hands on one message (sender, recipients, data with LF line ends); returns the reply."""

_PATH = re.compile(r"(?i)(FROM|TO):\s*<([^>]*)>|(FROM|TO):\s*(\S+)")


def framed(answer: str) -> str:
    """
    A delivery's answer as one SMTP reply: C{"550 5.7.1 Denied\\nSee https://..."} (what
    smtplib gives of a multi-line reply) becomes C{550-5.7.1 Denied} and C{550 See ...}.
    """
    code, _, text = answer.partition(" ")
    lines = text.split("\n")
    return "\n".join([f"{code}-{line}" for line in lines[:-1]] + [f"{code} {lines[-1]}"])


def converse(lines: Iterable[bytes], write: Callable[[bytes], None], hostname: str,
             deliver: Deliver) -> None:
    """
    Serve one SMTP session: replies go to C{write} (which must flush), commands come from
    C{lines}; returns after QUIT or at the end of input.
    """
    source = iter(lines)

    def reply(text: str) -> None:
        write(text.replace("\n", "\r\n").encode("utf-8") + b"\r\n")

    reply(f"220 {hostname} ESMTP mailsink-sendmail")
    sender: str | None = None
    recipients: list[str] = []
    for line in source:
        command = line.rstrip(b"\r\n").decode("utf-8", "replace")
        verb, _, argument = command.partition(" ")
        verb = verb.upper()
        if verb == "EHLO":
            sender, recipients = None, []
            reply(f"250-{hostname}\n250-8BITMIME\n250-SMTPUTF8\n250 ENHANCEDSTATUSCODES")
        elif verb == "HELO":
            sender, recipients = None, []
            reply(f"250 {hostname}")
        elif verb == "MAIL":
            address = _path(argument, "FROM")
            if sender is not None:
                reply("503 5.5.1 Error: nested MAIL command")
            elif address is None:
                reply("501 5.5.4 Syntax: MAIL FROM:<address>")
            else:
                sender, recipients = address, []
                reply("250 2.1.0 Ok")
        elif verb == "RCPT":
            address = _path(argument, "TO")
            if sender is None:
                reply("503 5.5.1 Error: need MAIL command")
            elif not address:
                reply("501 5.5.4 Syntax: RCPT TO:<address>")
            else:
                recipients.append(address)
                reply("250 2.1.5 Ok")
        elif verb == "DATA":
            if not recipients or sender is None:
                reply("503 5.5.1 Error: need RCPT command")
                continue
            reply("354 End data with <CR><LF>.<CR><LF>")
            data, ended = _data(source)
            if not ended:
                return
            reply(framed(deliver(sender, tuple(recipients), data)))
            sender, recipients = None, []
        elif verb == "RSET":
            sender, recipients = None, []
            reply("250 2.0.0 Ok")
        elif verb == "NOOP":
            reply("250 2.0.0 Ok")
        elif verb == "VRFY":
            reply("252 2.0.0 Cannot VRFY user, but will accept message")
        elif verb == "QUIT":
            reply("221 2.0.0 Bye")
            return
        else:
            reply("502 5.5.2 Error: command not recognized")


def _path(argument: str, keyword: str) -> str | None:
    """The address of C{FROM:<a>} or C{TO:<a>} (parameters after it ignored)."""
    match = _PATH.match(argument.strip())
    if match is None or (match[1] or match[3]).upper() != keyword:
        return None
    return match[2] if match[2] is not None else match[4]


def _data(source: Iterable[bytes]) -> tuple[bytes, bool]:
    """The message up to the line holding only a dot, dots unstuffed, LF line ends."""
    kept: list[bytes] = []
    for line in source:
        text = line[:-2] if line.endswith(b"\r\n") else line.removesuffix(b"\n")
        if text == b".":
            return b"".join(kept), True
        kept.append((text[1:] if text.startswith(b".") else text) + b"\n")
    return b"".join(kept), False
