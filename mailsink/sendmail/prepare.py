"""
C{mailsink-sendmail}'s command line and message preparation, as pure functions.

Programs call C{/usr/sbin/sendmail} with the flags of Eric Allman's sendmail (PHP: C{-t -i},
cron: C{-FCronDaemon -i -B8BITMIME -oem USER}, git send-email: C{-f ADDR -i RCPT...},
mutt: C{-oem -oi -- RCPT...}, Symfony and Laravel: C{-bs}). L{parse_arguments} reads them
the way sendmail's getopt does; L{read_message} reads standard input as sendmail does;
L{prepare} adds what sendmail adds to a locally submitted message. Nothing here touches the
network or the disk: L{mailsink.sendmail.deliver} does, and L{mailsink.sendmail.main} ties
the two together.
"""

from __future__ import annotations

import datetime
import email.utils
import getopt
import re
from collections.abc import Iterable, Iterator, Sequence

import attrs

EX_USAGE = 64
"""sysexits.h: the command was used incorrectly."""

_SHORT = "B:C:F:GL:N:O:R:UV:X:b:c:e:f:h:imno:p:qr:tv"
"""Every flag of sendmail's getopt string that takes an argument ends in ':'."""
_LONG = ["smtp=", "config=", "help"]
_IGNORED = frozenset("BGLNORUVehmnpv")
"""Flags that ask for things a sink has no use for (DSN, body type, error mode, verbose):
accepted and ignored, as programs pass them out of habit."""
_REFUSED = {
    "-C": "-C names sendmail's own configuration file; give mailsink's INI with -c",
    "-X": "-X (a traffic log) is not supported",
    "-q": "-q (run the mail queue) is not supported: mailsink-sendmail keeps no queue",
}
_MODES = {"m": "deliver", "s": "smtp"}
_IGNORE_DOTS = {("IgnoreDots", ""), ("IgnoreDots", "true"), ("IgnoreDots", "True")}
"""C{-O IgnoreDots[=true]}: sendmail's long form of C{-oi}."""

_FIELD = re.compile(rb"[!-9;-~]+[ \t]*:")
"""A header field's name and colon (RFC 5322 3.6.8, with the space some programs add)."""
_FOLDED = (b" ", b"\t")


class UsageError(Exception):
    """The command line cannot be used: one sentence, exit status L{EX_USAGE}."""


@attrs.frozen
class Options:
    """What the command line asks for."""

    recipients: tuple[str, ...] = ()
    extract: bool = False
    """C{-t}: recipients from the To, Cc and Bcc headers too; Bcc removed."""
    sender: str | None = None
    """C{-f}/C{-r}: the envelope sender (None: the calling user at the hostname)."""
    full_name: str | None = None
    """C{-F}: the full name for a generated From header."""
    dots_end: bool = True
    """A line holding only a dot ends the message, unless C{-i} or C{-oi}."""
    mode: str = "deliver"
    """C{deliver} (C{-bm}, the default) or C{smtp} (C{-bs}: SMTP on standard input/output)."""
    config: str | None = None
    """C{-c INI} (or C{--config}): mailsink's INI file."""
    smtp: str | None = None
    """C{--smtp HOST:PORT}: deliver there instead of to the INI's listener."""
    help: bool = False


def parse_arguments(argv: Sequence[str]) -> Options:
    """
    Options and recipients as sendmail's getopt reads them: flags first (C{-fADDR} or
    C{-f ADDR}, C{-ti} clustered), then recipients; C{--} ends the flags. Raises
    L{UsageError} for an unknown flag or one mailsink-sendmail cannot honour.
    """
    try:
        flags, rest = getopt.getopt(list(argv), _SHORT, _LONG)
    except getopt.GetoptError as e:
        raise UsageError(f"{e.msg}: see --help") from None
    values: dict[str, object] = {}
    for flag, value in flags:
        if flag in _REFUSED:
            raise UsageError(_REFUSED[flag])
        if flag == "--help":
            values["help"] = True
        elif flag == "-t":
            values["extract"] = True
        elif flag in ("-f", "-r"):
            values["sender"] = _sender(value)
        elif flag == "-F":
            values["full_name"] = value
        elif flag == "-i" or (flag == "-o" and value == "i") or (
                flag == "-O" and value.partition("=")[::2] in _IGNORE_DOTS):
            values["dots_end"] = False
        elif flag == "-b":
            if value not in _MODES:
                raise UsageError(f"-b{value} is not supported: mailsink-sendmail delivers "
                                 "(-bm) or speaks SMTP on standard input (-bs)")
            values["mode"] = _MODES[value]
        elif flag in ("-c", "--config"):
            values["config"] = value
        elif flag == "--smtp":
            values["smtp"] = value
        elif flag.lstrip("-") not in _IGNORED and flag != "-o":
            raise UsageError(f"{flag} is not supported: see --help")
    recipients = tuple(address for argument in rest for address in addresses(argument))
    return Options(recipients=recipients, **values)  # type: ignore[arg-type]


def _sender(value: str) -> str:
    """C{-f}'s address without angle brackets (C{<>} is the null sender)."""
    value = value.strip()
    if value.startswith("<") and value.endswith(">"):
        value = value[1:-1].strip()
    if any(c.isspace() for c in value):
        raise UsageError(f"-f {value!r}: an address has no white space")
    return value


def addresses(text: str) -> list[str]:
    """The addresses in one recipient argument or header value (C{a@x, B <b@y>})."""
    return [address for _, address in email.utils.getaddresses([text]) if address]


def qualify(address: str, hostname: str) -> str:
    """C{root} becomes C{root@HOSTNAME}, as sendmail qualifies local names."""
    return address if "@" in address or not address else f"{address}@{hostname}"


def read_message(lines: Iterable[bytes], dots_end: bool) -> bytes:
    """
    The message from standard input's lines, up to the end, or (C{dots_end}, without
    C{-i}) up to a line holding only a dot, which is not part of it.
    """
    kept: list[bytes] = []
    for line in lines:
        if dots_end and line.rstrip(b"\r\n") == b".":
            break
        kept.append(line)
    return b"".join(kept)


@attrs.frozen
class Identity:
    """Who runs the command and where: the facts sendmail fills in from the system."""

    user: str
    """The calling Unix user's login name."""
    uid: int
    hostname: str
    """The INI's C{[mailsink] hostname}: the domain of generated addresses."""
    gecos_name: str = ""
    """The full name from the password database (or the C{NAME} variable)."""


@attrs.frozen
class Prepared:
    """A message ready to hand over: LF line ends, envelope beside it."""

    data: bytes
    sender: str
    recipients: tuple[str, ...]


def prepare(raw: bytes, options: Options, identity: Identity,
            now: datetime.datetime, recipients: Sequence[str] | None = None,
            sender: str | None = None) -> Prepared:
    """
    The message as sendmail would pass it on: C{-t}'s recipients taken from To, Cc and
    Bcc (added to those given) and the Bcc header removed; From (C{-F}'s or the user's
    full name and the envelope sender), Date and Message-ID added when missing; a blank
    line put between header and body when the input has none. C{recipients} and
    C{sender}, when given, are the envelope (C{-bs}: from the SMTP conversation).
    """
    lines = _lines(raw)
    header, body = _split_header(lines)
    envelope_from = qualify(sender if sender is not None else
                            options.sender if options.sender is not None else
                            identity.user, identity.hostname)
    wanted = list(options.recipients if recipients is None else recipients)
    if options.extract and recipients is None:
        for name, value in _unfolded(header):
            if name.lower() in ("to", "cc", "bcc"):
                wanted += addresses(value)
        header = [field for field in header if _name(field).lower() != "bcc"]
    present = {_name(field).lower() for field in header}
    added: list[bytes] = []
    if "from" not in present:
        name = options.full_name if options.full_name is not None else identity.gecos_name
        address = envelope_from or qualify(identity.user, identity.hostname)
        added.append(_field("From", email.utils.formataddr((name, address), "utf-8")
                            if name else address))
    if "date" not in present:
        added.append(_field("Date", email.utils.format_datetime(now)))
    if "message-id" not in present:
        added.append(_field("Message-ID", email.utils.make_msgid(domain=identity.hostname)))
    separator = [] if body[:1] == [b"\n"] else [b"\n"]
    data = b"".join([*added, *(b"".join(field) for field in header), *separator, *body])
    return Prepared(data=data, sender=envelope_from,
                    recipients=_unique(qualify(a, identity.hostname) for a in wanted))


def local_received(identity: Identity, now: datetime.datetime, note: str = "") -> bytes:
    """
    The command's own trace header (LF line ends), as a local submission's: C{from USER
    (uid N) by HOST (mailsink-sendmail[, NOTE]) with local}. L{mailsink.message.trace} reads it
    back; C{note} says why the message went elsewhere than to the daemon.
    """
    comment = "mailsink-sendmail" + (f", {_comment_safe(note)}" if note else "")
    date = email.utils.format_datetime(now.astimezone(datetime.UTC)).replace("-0000", "+0000")
    return (f"Received: from {_token(identity.user)} (uid {identity.uid})\n"
            f"\tby {_token(identity.hostname)} ({comment}) with local;\n"
            f"\t{date} (UTC)\n").encode("utf-8", "surrogateescape")


def _token(text: str) -> str:
    """One header word: no white space, parentheses or semicolons, no control characters."""
    cleaned = "".join("_" if c.isspace() or c in "();" or ord(c) < 0x20 or ord(c) == 0x7F
                      else c for c in text)
    return cleaned or "_"


def _comment_safe(text: str) -> str:
    return " ".join("".join("[" if c == "(" else "]" if c == ")" else
                            " " if ord(c) < 0x20 or ord(c) == 0x7F else c for c in text).split())


def _lines(raw: bytes) -> list[bytes]:
    """The message's lines, each ending in LF (CRLF read as LF; a last line completed)."""
    lines = raw.replace(b"\r\n", b"\n").splitlines(keepends=True)
    if lines and not lines[-1].endswith(b"\n"):
        lines[-1] += b"\n"
    return lines


def _split_header(lines: list[bytes]) -> tuple[list[list[bytes]], list[bytes]]:
    """Header fields (each its lines) and the rest: the body, from the blank line on."""
    fields: list[list[bytes]] = []
    for index, line in enumerate(lines):
        if line.startswith(_FOLDED) and fields:
            fields[-1].append(line)
        elif _FIELD.match(line):
            fields.append([line])
        else:
            return fields, lines[index:]
    return fields, []


def _name(field: list[bytes]) -> str:
    return field[0].split(b":", 1)[0].strip().decode("ascii", "replace")


def _unfolded(fields: list[list[bytes]]) -> Iterator[tuple[str, str]]:
    for field in fields:
        value = b"".join(field).split(b":", 1)[1]
        text = value.decode("utf-8", "replace")
        yield _name(field), " ".join(text.split())


def _field(name: str, value: str) -> bytes:
    return f"{name}: {value}\n".encode()


def _unique(addresses: Iterable[str]) -> tuple[str, ...]:
    """Each address once (compared without case), in the order first given."""
    seen: set[str] = set()
    kept = []
    for address in addresses:
        if address.lower() not in seen:
            seen.add(address.lower())
            kept.append(address)
    return tuple(kept)
