"""
What of a client's command line a session's transcript may keep: never a password, however
encoded or spaced, whatever order a pipelining client sends its lines in.
"""

from __future__ import annotations

import re

from mailsink.auth.sasl import MECHANISMS

_MECHANISMS = frozenset(mechanism.name for mechanism in MECHANISMS)
"""The SASL mechanism names mailsink knows: any other word after AUTH is hidden."""
_BASE64 = re.compile(rb"(?:[A-Za-z0-9+/]{4})+(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?"
                     rb"|[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=")


def transcript_line(line: bytes, command: bool = True) -> str:
    """
    A command line as the session's transcript keeps it: whatever follows AUTH's mechanism
    name (or stands where it should be) is C{***}, however the words are spaced; so is a
    line that is no command (C{command} false) but one base64 word -- a SASL response
    sent after the AUTH that would have asked for it was refused (a pipelining client).
    """
    words = line.split(None, 2)
    if not command and len(words) == 1 and _BASE64.fullmatch(words[0]):
        return "***"
    if not words or words[0].upper() != b"AUTH" or len(words) == 1:
        return line.decode("utf-8", "replace")
    if words[1].upper().decode("ascii", "replace") not in _MECHANISMS:
        return "AUTH ***"  # a payload where the name should be, perhaps
    return f"AUTH {words[1].decode('ascii')}{' ***' if len(words) > 2 else ''}"
