"""
Reading a message file's facts for the index: the start of the file, parsed. Shared by the
parse worker process (L{mailsink.index.parse_worker}) and the in-process fallback.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable

from twisted.logger import Logger

from mailsink.index.codec import Loc, Parsed
from mailsink.message.shapes import Facts

log = Logger()

PARSE_LIMIT = 256 * 1024
"""Bytes of a message (headers and the start of the body) read to learn its facts."""

FactsOf = Callable[[bytes], Facts]


def read_head(path: str) -> tuple[int, int, bytes] | None:
    """(size, mtime_ns, the first L{PARSE_LIMIT} bytes) of a file, or None if it is gone."""
    try:
        with open(path, "rb") as stream:
            info = os.fstat(stream.fileno())
            head = stream.read(PARSE_LIMIT)
    except OSError:
        return None
    return info.st_size, info.st_mtime_ns, head


def read_facts(files: Iterable[tuple[Loc, str]], facts_of: FactsOf) -> list[Parsed]:
    """Read the start of each file and parse it; vanished files are skipped."""
    parsed = []
    for loc, path in files:
        found = read_head(path)
        if found is None:
            continue
        size, mtime_ns, head = found
        try:
            facts = facts_of(head)
        except Exception:
            log.failure("cannot parse {path}; indexing it without its facts", path=path)
            facts = Facts()
        parsed.append(Parsed(loc, size, mtime_ns, facts))
    return parsed
