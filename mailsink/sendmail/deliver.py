"""
Where C{mailsink-sendmail} hands a message over, and how: SMTP to the INI's listener (or
C{--smtp HOST:PORT}), else the INI's Maildir written directly.

This is a short-lived command, not the daemon: blocking C{smtplib} (through
L{mailsink.probe.Client}, whose failures read as one sentence) and a blocking, fsynced
Maildir write through L{mailsink.store.maildir.Maildir} with a synchronous runner, no reactor.
"""

from __future__ import annotations

import datetime
import os
import re
import smtplib
import ssl
from collections.abc import Sequence

import attrs
from twisted.internet.defer import maybeDeferred
from twisted.python.failure import Failure

from mailsink import probe
from mailsink.config import Config, Listener
from mailsink.sendmail.prepare import Identity, Prepared, local_received
from mailsink.store.maildir import Maildir

EX_UNAVAILABLE = 69
"""sysexits.h: the server refused the message for good."""
EX_TEMPFAIL = 75
"""sysexits.h: the message was not taken; the caller may try again later."""
TIMEOUT = 30.0
"""Seconds each step of the SMTP conversation may take."""
EHLO_NAME = "localhost"
_CLIENT_MODES = {"none": "none", "starttls": "none", "starttls-required": "starttls",
                 "implicit": "implicit"}
"""Listener C{tls} to the client's: optional STARTTLS is not worth it on loopback."""
_COLON = re.compile(r"(?<!\\):")


@attrs.frozen
class Target:
    """An SMTP listener to hand messages to."""

    host: str
    port: int
    mode: str
    """The client's TLS mode: none, starttls or implicit (see L{probe.Client})."""
    servername: str
    """The name the listener's certificate must carry."""
    cafile: str | None = None
    """The certificate to trust besides the system's (the INI's)."""

    @property
    def where(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@attrs.frozen
class Outcome:
    """What became of a message: the exit status, the SMTP reply for C{-bs}, a note."""

    status: int
    reply: str
    note: str = ""
    """One sentence for standard error ("" when all went as asked)."""


class Unreachable(Exception):
    """The message could not be handed over (no connection, TLS, a closing server)."""


class Refused(Exception):
    """The listener answered the message with a 4xx or 5xx reply."""

    def __init__(self, code: int, text: str) -> None:
        super().__init__(f"{code} {text}")
        self.code = code


def endpoint_address(endpoint: str) -> tuple[str, int, bool] | None:
    """
    Where a client reaches a C{tcp:}, C{tcp6:} or C{ssl:} server endpoint string (an
    unspecified interface is loopback), and whether it is implicit TLS; None for
    endpoints that name no port to connect to (C{systemd:}, C{unix:}, C{haproxy:} ...).
    """
    kind, *parts = _COLON.split(endpoint)
    if kind.lower() not in ("tcp", "tcp6", "ssl"):
        return None
    keywords = dict(part.split("=", 1) for part in parts if "=" in part)
    positional = [part for part in parts if "=" not in part]
    port = keywords.get("port") or (positional[0] if positional else "")
    if not port.isdigit() or not 0 < int(port) < 65536:
        return None
    interface = keywords.get("interface", "").replace("\\:", ":")
    if interface in ("", "0.0.0.0", "::"):
        interface = "::1" if kind.lower() == "tcp6" or interface == "::" else "127.0.0.1"
    return interface, int(port), kind.lower() == "ssl"


def certificate_path(config: Config) -> str:
    """The certificate the daemon presents: C{[tls] cert}, or the generated one."""
    return config.tls.cert or os.path.join(config.mailsink.state_dir, "mailsink-cert.pem")


def listener_target(config: Config) -> Target | str:
    """
    The C{[smtp]} listener (else the first other SMTP listener that takes mail without a
    password) as a L{Target}, or the sentence saying why there is none.
    """
    listeners = sorted(config.enabled_listeners("smtp"), key=lambda x: x.section != "smtp")
    unreachable: list[str] = []
    for listener in listeners:
        if listener.auth == "required":
            continue
        for endpoint in listener.endpoints:
            address = endpoint_address(endpoint)
            if address is not None:
                return _target(config, listener, address[0], address[1])
            unreachable.append(f"[{listener.section}] listen = {endpoint}")
    if unreachable:
        return (f"{unreachable[0]} names no address and port to connect to: pass "
                "--smtp HOST:PORT")
    return "the INI has no SMTP listener that takes mail without a password"


def override_target(text: str, config: Config | None) -> Target:
    """C{--smtp HOST:PORT}, with the TLS mode of the INI's listener on that port, if any."""
    host, port = probe.parse_target(text, 25)
    if config is not None:
        for listener in config.enabled_listeners("smtp"):
            for endpoint in listener.endpoints:
                address = endpoint_address(endpoint)
                if address is not None and address[1] == port:
                    return attrs.evolve(_target(config, listener, host, port), servername=host)
    return Target(host=host, port=port, mode="none", servername=host)


def _target(config: Config, listener: Listener, host: str, port: int) -> Target:
    return Target(host=host, port=port, mode=_CLIENT_MODES[listener.tls],
                  servername=config.mailsink.hostname, cafile=certificate_path(config))


def deliver(message: Prepared, identity: Identity, now: datetime.datetime,
            target: Target | str, maildir: str | None) -> Outcome:
    """
    Hand C{message} to C{target} (a sentence: there is none) under the command's own
    C{Received} header; when that fails short of a reply, write it into C{maildir}
    directly. Refusals are the listener's to make and are passed on, not worked around.
    """
    if isinstance(target, Target):
        try:
            reply, refused = hand_over(target, local_received(identity, now) + message.data,
                                       message.sender, message.recipients)
        except Refused as e:
            return Outcome(_status(e.code), str(e), f"{target.where} refused the message: {e}")
        except Unreachable as e:
            why = str(e)
        else:
            if not refused:
                return Outcome(0, reply)
            some = "; ".join(f"{address} ({e})" for address, e in refused)
            return Outcome(max(_status(e.code) for _, e in refused), reply,
                           f"{target.where} took the message but refused {some}")
    else:
        why = target
    if maildir is None:
        return Outcome(EX_TEMPFAIL, f"451 4.3.0 {why}", f"the message was not sent: {why}")
    note = f"written to the Maildir directly: {why}"
    trace = _envelope_headers(message) + local_received(identity, now, note)
    try:
        path = write_maildir(maildir, trace + message.data)
    except OSError as e:
        sentence = (f"the message was not sent: {why}; and the Maildir {maildir} cannot "
                    f"be written ({e.strerror or e})")
        return Outcome(EX_TEMPFAIL, f"451 4.3.0 {sentence}", sentence)
    return Outcome(0, "250 2.0.0 written to the Maildir directly",
                   f"{why}; the message was written to the Maildir directly: {path}")


def _status(code: int) -> int:
    return EX_TEMPFAIL if 400 <= code < 500 else EX_UNAVAILABLE


def hand_over(target: Target, data: bytes, sender: str,
              recipients: Sequence[str]) -> tuple[str, list[tuple[str, Refused]]]:
    """
    Send C{data} (LF line ends) over SMTP; returns the final reply and the recipients
    refused while others were taken. Raises L{Refused} when the listener refuses the
    message (a 4xx or 5xx reply, but 421: it is closing) and L{Unreachable}, with one
    sentence, for everything else that stops the message.
    """
    try:
        context = _context(target)
    except OSError as e:
        raise Unreachable(f"cannot read the certificate {target.cafile} to trust for "
                          f"{target.where} ({e.strerror or e})") from None
    client = probe.Client(mode=target.mode, context=context, timeout=TIMEOUT,
                          servername=target.servername)
    client.local_hostname = EHLO_NAME
    try:
        client.open(target.host, target.port)
        if client.ehlo()[0] != 250:
            _expect(client.helo())
        if target.mode == "starttls":
            client.upgrade()
        _expect(client.mail(sender, _mail_options(client, data, sender, recipients)))
        refused = []
        for recipient in recipients:
            code, text = client.rcpt(recipient)
            if code not in (250, 251):
                refused.append((recipient, Refused(code, text.decode("utf-8", "replace"))))
        if len(refused) == len(recipients):
            raise refused[-1][1]
        code, text = client.data(data.replace(b"\n", b"\r\n"))
        _expect((code, text))
    except smtplib.SMTPResponseException as e:
        if client.stage != "smtp" or e.smtp_code == 421 or e.smtp_code < 400:
            client.close()
            raise Unreachable(str(probe.diagnose(e, client, target.host, target.port))) \
                from None
        client.quit_quietly()
        said = e.smtp_error
        raise Refused(e.smtp_code, said.decode("utf-8", "replace") if isinstance(said, bytes)
                      else str(said)) from None
    except Refused as e:
        if e.code == 421:
            client.close()
            raise Unreachable(f"{target.where} is closing: {e}") from None
        client.quit_quietly()
        raise
    except (OSError, smtplib.SMTPException, ssl.SSLError, probe.Diagnosis) as e:
        client.close()
        raise Unreachable(str(probe.diagnose(e, client, target.host, target.port))) from None
    client.quit_quietly()
    return f"{code} {text.decode('utf-8', 'replace')}", refused


def _expect(answer: tuple[int, bytes]) -> None:
    code, text = answer
    if code >= 400:
        raise Refused(code, text.decode("utf-8", "replace"))


def _mail_options(client: probe.Client, data: bytes, sender: str,
                  recipients: Sequence[str]) -> list[str]:
    options = []
    if not all(a.isascii() for a in (sender, *recipients)) and client.has_extn("smtputf8"):
        options.append("SMTPUTF8")
    if not data.isascii() and client.has_extn("8bitmime"):
        options.append("BODY=8BITMIME")
    return options


def _context(target: Target) -> ssl.SSLContext:
    """The system's CAs and the INI's certificate (a self-signed leaf is its own anchor)."""
    context = ssl.create_default_context()
    if target.mode != "none" and target.cafile:
        context.load_verify_locations(cafile=target.cafile)
        context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    return context


def _envelope_headers(message: Prepared) -> bytes:
    """C{Return-Path} and C{Delivered-To} as the daemon writes them, for the Maildir."""
    lines = [f"Return-Path: <{_one_line(message.sender)}>"]
    lines += [f"Delivered-To: {_one_line(recipient)}" for recipient in message.recipients]
    return ("\n".join(lines) + "\n").encode("utf-8", "surrogateescape")


def _one_line(text: str) -> str:
    return "".join(c for c in text if ord(c) >= 0x20 and ord(c) != 0x7F)


def write_maildir(path: str, data: bytes) -> str:
    """
    Store C{data} in the Maildir at C{path} (created if missing) as the daemon does:
    C{tmp/}, fsync, rename into C{new/}, fsync C{new/}. Returns the new file's path;
    raises L{OSError} when it cannot.
    """
    maildir = Maildir(path, maybeDeferred)
    maildir.create()
    message = maildir.new_message()
    message.write(data)
    results: list[object] = []
    message.finish().addBoth(results.append)
    (result,) = results  # the runner is synchronous: finish() has fired
    if isinstance(result, Failure):
        raise OSError(str(result.value))
    return os.path.join(path, "new", str(result))
