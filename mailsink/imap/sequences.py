"""
IMAP sequence sets (C{1:5,9}, C{*}) over a session's messages: the (sequence number, UID)
pairs a set names, whether it is given in sequence numbers or in UIDs.
"""

from __future__ import annotations

import bisect
import contextlib

from twisted.mail import imap4


def select_ids(uids: list[int], messages: imap4.MessageSet, uid: bool
               ) -> list[tuple[int, int]]:
    """(sequence number, UID) pairs of the session's C{uids} in C{messages}, in order."""
    last = (uids[-1] if uids else 0) if uid else len(uids)
    with contextlib.suppress(ValueError):
        messages.last = last
    picked: set[int] = set()
    for low, high in messages.ranges:
        if uid:
            start = bisect.bisect_left(uids, low)
            end = bisect.bisect_right(uids, high)
        else:
            start, end = max(low, 1) - 1, min(high, len(uids))
        picked.update(range(start, end))
    return [(index + 1, uids[index]) for index in sorted(picked)]
