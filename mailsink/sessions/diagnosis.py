"""
One sentence per failed SMTP session: what went wrong and what to change in the client.

The same sentences go into the log (the 465-vs-587 warnings) and into the session the web
view and the API show, so the developer reads one wording wherever they look. Every
sentence names the listener to use instead where the configuration has one; none ever
holds a password.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs

from mailsink.values import format_size

if TYPE_CHECKING:
    from mailsink.sessions.record import SessionRecorder

SILENCE_TIMEOUT = 10.0
"""Seconds an implicit-TLS client may stay silent before it is taken for a plaintext one."""


@attrs.frozen
class ListenerHints:
    """What the sentences say about this listener and the ones serving the other modes."""

    listener: str
    implicit_listeners: str = ""
    """e.g. C{[smtp:smtps] port 1465}, "" when no listener has C{tls = implicit}."""
    starttls_listeners: str = ""
    plain_listeners: str = ""
    """Listeners that take mail without AUTH, for the C{530 Authentication required} case."""
    certificate: str = ""
    """The certificate file clients must trust."""
    max_message_size: int = 0


def tls_on_plaintext_port(hints: ListenerHints) -> str:
    where = hints.implicit_listeners or "a listener with tls = implicit (add one)"
    return ("this client began a TLS handshake, but this listener speaks plain SMTP "
            "(STARTTLS on request): the client is set to implicit TLS (SSL/TLS, the port 465 "
            f"style); point it at {where}, or set its security to STARTTLS")


def plaintext_on_implicit_port(hints: ListenerHints, spoke: bool) -> str:
    what = ("sent SMTP commands in the clear" if spoke
            else f"sent no TLS handshake within {SILENCE_TIMEOUT:g} s")
    where = hints.starttls_listeners or "a listener with tls = starttls (add one)"
    return (f"this client {what}, but this listener expects TLS from the first byte: the "
            "client is set to plain SMTP or STARTTLS (the port 587 style) and waits for a "
            f"greeting; point it at {where}, or set its security to SSL/TLS")


_UNTRUSTED = ("unknown ca", "certificate unknown", "bad certificate", "unsupported certificate",
              "certificate expired", "decrypt error")
_VERSION = ("unsupported protocol", "version too low", "wrong version number",
            "protocol version", "no protocols available")


def tls_failed(hints: ListenerHints, reason: str) -> str:
    """A handshake that OpenSSL gave up on, told by its C{reason}."""
    lowered = reason.lower()
    if any(words in lowered for words in _UNTRUSTED):
        return (f"the TLS handshake failed because the client does not trust mailsink's "
                f"certificate ({reason}): add {hints.certificate or 'the certificate'} to the "
                "client's trusted certificates (for example SSL_CERT_FILE, or its CA file "
                "setting), or turn certificate verification off for this development server")
    if any(words in lowered for words in _VERSION):
        return (f"the TLS handshake failed: the client asked for a TLS version mailsink does "
                f"not offer ({reason}); mailsink speaks TLS 1.2 and 1.3, so allow those in the "
                "client (TLS 1.0 and 1.1 are obsolete)")
    if "no shared cipher" in lowered:
        return (f"the TLS handshake failed: the client and mailsink share no cipher ({reason}); "
                "allow the client a modern TLS 1.2 or 1.3 cipher suite")
    return f"the TLS handshake failed ({reason or 'no reason given'})"


def _reply_sentence(session: SessionRecorder, hints: ListenerHints) -> str:
    """The sentence for the last 4xx/5xx reply, by its code and enhanced status."""
    assert session.last_error is not None
    code, text, command = session.last_error
    if code == 538:
        where = f", or point it at {hints.implicit_listeners}" if hints.implicit_listeners else ""
        return ("the client tried AUTH before STARTTLS, and mailsink never takes a password in "
                f"clear text (538): set the client's security to STARTTLS{where}")
    if code == 530 and "STARTTLS" in text:
        where = f", or send to {hints.plain_listeners}" if hints.plain_listeners else ""
        return (f"[{hints.listener}] requires STARTTLS before anything else (530): set the "
                f"client's security to STARTTLS{where}")
    if code == 530:
        where = f", or send to {hints.plain_listeners}" if hints.plain_listeners else ""
        return (f"the client sent MAIL without logging in, and [{hints.listener}] requires AUTH "
                f"(530): give the client a user name and password{where}")
    if code == 535:
        user = f"user {session.user!r}" if session.user else "the client"
        return (f"the login of {user} failed (535): check the user name and password the "
                "client uses against [auth] password_file, MAILSINK_AUTH or accept_any")
    if code == 552:
        limit = format_size(hints.max_message_size) if hints.max_message_size else "the limit"
        return (f"the message is larger than [mailsink] max_message_size ({limit}) (552): "
                "raise max_message_size or send a smaller message")
    if code == 500 and text.startswith("5.5.2 Line too long"):
        return ("a message line is longer than 998 octets and this listener has long_lines = "
                "refuse (500): set long_lines = accept, or have the client use "
                "quoted-printable or base64")
    if code == 421 and "timeout" in text:
        return ("the client sent nothing for too long and mailsink closed the connection "
                "(421): it may have hung, or been waiting for something mailsink does not send")
    if code == 452 and text.startswith("4.3.1"):
        return ("mailsink could not store the message (452): the Maildir's file system is full "
                "or not writable; see mailsink's log")
    if code == 535 or command == "AUTH":
        return f"AUTH was refused ({code} {text}): see the transcript"
    return f"{command or 'a command'} was refused ({code} {text}): see the transcript"


def diagnose(session: SessionRecorder, hints: ListenerHints) -> tuple[str, str]:
    """(diagnosis, error) for a finished session; ("", "") when all went well."""
    problems = session.problems
    error = ""
    if session.last_error is not None:
        error = f"{session.last_error[0]} {session.last_error[1]}"
    if "chaos" in problems:
        return (f"this error was injected on purpose by mailsink's chaos triggers "
                f"({problems['chaos']}), not a real failure: turn them off with PUT "
                "/api/v1/chaos if that was not meant", error)
    if "tls-on-plaintext" in problems:
        return tls_on_plaintext_port(hints), "TLS ClientHello on a plaintext port"
    if "plaintext-on-implicit" in problems:
        return plaintext_on_implicit_port(hints, True), "SMTP in the clear on an implicit-TLS port"
    if "silent-on-implicit" in problems:
        return (plaintext_on_implicit_port(hints, False),
                f"no TLS handshake within {SILENCE_TIMEOUT:g} s")
    if "tls-failed" in problems:
        reason = problems["tls-failed"]
        return tls_failed(hints, reason), f"TLS handshake failed: {reason}"
    if "data-dropped" in problems:
        return (f"the client closed the connection in the middle of the message data (after "
                f"{session.data_octets} octets), so nothing was stored: it may have crashed or "
                "timed out", "connection closed during DATA")
    if session.messages and not session.refused_since_stored:
        return "", error
    if session.last_error is not None:
        sentence = _reply_sentence(session, hints)
        if session.messages:
            stored = len(session.messages)
            sentence = (f"{stored} message{'s' if stored > 1 else ''} stored, but then "
                        f"{sentence}")
        return sentence, error
    if session.in_transaction and not session.quit:
        return ("the client closed the connection after MAIL FROM without sending a message",
                "connection closed during the transaction")
    return "", ""
