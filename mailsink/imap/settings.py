"""
What one [imap] listener is told: read by the protocol (L{mailsink.imap.protocol}) and by
the parts mixed into it (L{mailsink.imap.login}, L{mailsink.imap.fetch},
L{mailsink.imap.updates}), which therefore need not import the protocol back.
"""

from __future__ import annotations

import attrs


@attrs.frozen
class IMAPSettings:
    """What one [imap] listener is told."""

    hostname: str
    listener: str
    tls_mode: str
    allow_insecure: bool
    max_message_size: int
