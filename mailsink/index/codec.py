"""
Pure helpers of the index: Maildir file names (unique part, flags, read state, receive
time), message IDs, the L{Facts} <-> JSON and search-column forms kept in SQLite, and the
shapes passed between the index's threads and to its callers (L{Page}, L{Stats}).
"""

from __future__ import annotations

import base64
import json
import re
from typing import Any

import attrs

from mailsink.message.search import TAG_SEPARATOR
from mailsink.message.shapes import Address, Facts, Summary, Transport

_SAFE_ID = re.compile(r"[A-Za-z0-9._-]+")
_MAILSINK_NAME = re.compile(r"(\d{1,12})\.M(\d{1,6})P")
_SECONDS_NAME = re.compile(r"(\d{1,12})\.")

SUBDIRS = ("new", "cur")
"""The Maildir sub-folders that hold messages (C{tmp/} holds none yet)."""

Loc = tuple[str, str, str]
"""Where a message file is: (mailbox, C{"new"} or C{"cur"}, file name)."""


def split_name(filename: str) -> tuple[str, str]:
    """
    The unique base name and the flags of a Maildir file name: C{"X:2,RS"} gives
    C{("X", "RS")}; a name without C{":2,"} info has no flags.
    """
    base, _, info = filename.partition(":")
    return base, (info[2:] if info.startswith("2,") else "")


def message_id(base: str) -> str:
    """
    The message ID of a unique base name: the name itself when it is made of
    C{[A-Za-z0-9._-]} only (mailsink's own names are), else C{"x"} and the URL-safe
    base64 of its UTF-8 bytes without padding. Stable across restarts and hosts.
    """
    if _SAFE_ID.fullmatch(base):
        return base
    raw = base.encode("utf-8", "surrogateescape")
    return "x" + base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def is_read(filename: str) -> bool:
    """The Maildir C{S} (seen) flag."""
    return "S" in split_name(filename)[1]


def flagged(subdir: str, filename: str, read: bool) -> tuple[str, str]:
    """
    Where a message goes when marked read or unread (mutt's way): read moves C{new/X} to
    C{cur/X:2,S}; flags are kept, in ASCII order as the Maildir spec asks; an unread
    message in C{new/} stays as it is.
    """
    base, flags = split_name(filename)
    wanted = set(flags)
    if read:
        wanted.add("S")
    else:
        wanted.discard("S")
    if subdir == "new" and not read and ":" not in filename:
        return subdir, filename
    target = "cur" if read else subdir
    return target, f"{base}:2,{''.join(sorted(wanted))}"


def received_at(base: str, mtime: float) -> float:
    """
    When the message was received: the time in its unique name (C{SECS.M<usec>P...}
    from mailsink and most delivery agents, or a leading C{SECS.}), else the file's mtime.
    """
    match = _MAILSINK_NAME.match(base)
    if match:
        return int(match.group(1)) + int(match.group(2)) / 1_000_000
    match = _SECONDS_NAME.match(base)
    if match:
        return float(match.group(1))
    return mtime


def schema_fingerprint() -> str:
    """The field names of the stored shapes: a change to them makes the index rebuild."""
    return ",".join(f"{cls.__name__}:{'/'.join(a.name for a in attrs.fields(cls))}"
                    for cls in (Facts, Address, Transport))


def facts_to_json(facts: Facts) -> str:
    """Compact JSON of C{facts}: fields at their default values are left out."""
    return json.dumps(facts_to_data(facts), ensure_ascii=False, separators=(",", ":"))


def _encode(value: Any) -> Any:
    kind = type(value)
    fields = _ENCODED_FIELDS.get(kind)
    if fields is None:
        if kind is tuple:
            return [_encode(item) for item in value]
        if kind in _PLAIN_TYPES or not attrs.has(kind):
            _PLAIN_TYPES.add(kind)
            return value
        fields = _ENCODED_FIELDS[kind] = tuple(
            (field.name, field.default) for field in attrs.fields(kind))
    out = {}
    for name, default in fields:
        item = getattr(value, name)
        if default is not attrs.NOTHING and item == default:
            continue
        out[name] = _encode(item)
    return out


_ENCODED_FIELDS: dict[type, tuple[tuple[str, Any], ...]] = {}
"""Each attrs class's (field name, default), looked up once: every message is encoded."""
_PLAIN_TYPES: set[type] = set()


def facts_from_json(text: str) -> Facts:
    """The L{Facts} that L{facts_to_json} wrote (unknown keys are ignored)."""
    return facts_from_data(json.loads(text))


def facts_to_data(facts: Facts) -> dict[str, Any]:
    """L{Facts} as JSON-ready data (what L{facts_to_json} writes, not yet a string)."""
    data: dict[str, Any] = _encode(facts)
    return data


def facts_from_data(data: dict[str, Any]) -> Facts:
    """The L{Facts} of L{facts_to_data}'s data (unknown keys are ignored)."""
    names = {field.name for field in attrs.fields(Facts)}
    values: dict[str, Any] = {}
    for name, value in data.items():
        if name not in names:
            continue
        if name == "sender":
            value = _address(value) if value else None
        elif name in ("to", "cc", "bcc", "reply_to"):
            value = tuple(_address(item) for item in value)
        elif name == "transport":
            known = {field.name for field in attrs.fields(Transport)}
            fields: dict[str, Any] = {key: tuple(item) if isinstance(item, list) else item
                                      for key, item in value.items() if key in known}
            value = Transport(**fields)
        elif isinstance(value, list):
            value = tuple(value)
        values[name] = value
    return Facts(**values)


def _address(data: dict[str, str]) -> Address:
    return Address(data.get("name", ""), data.get("address", ""))


def _address_lc(address: Address) -> str:
    if address.name:
        return f"{address.name} <{address.address}>".lower()
    return f"<{address.address}>".lower()


def _addresses_lc(addresses: tuple[Address, ...]) -> str:
    return ", ".join(_address_lc(address) for address in addresses)


SEARCH_COLUMNS = ("subject_lc", "from_lc", "to_lc", "cc_lc", "bcc_lc", "replyto_lc",
                  "msgid_lc", "tags_lc", "snippet_lc")
"""The lower-cased columns L{mailsink.message.search} filters on, in L{search_values} order."""


def search_values(facts: Facts) -> tuple[str, ...]:
    """The values of L{SEARCH_COLUMNS} for C{facts}."""
    tags = ""
    if facts.tags:
        tags = TAG_SEPARATOR + TAG_SEPARATOR.join(t.lower() for t in facts.tags) + TAG_SEPARATOR
    return (
        facts.subject.lower(),
        _address_lc(facts.sender) if facts.sender else "",
        _addresses_lc(facts.to),
        _addresses_lc(facts.cc),
        _addresses_lc(facts.bcc),
        _addresses_lc(facts.reply_to),
        facts.message_id.lower(),
        tags,
        facts.snippet.lower(),
    )


def search_row(summary: Summary) -> dict[str, Any]:
    """The columns of C{summary}'s row that L{mailsink.message.search.matches} reads."""
    row: dict[str, Any] = dict(zip(SEARCH_COLUMNS, search_values(summary.facts), strict=True))
    row.update(read=summary.read, attachments=summary.facts.attachments, size=summary.size,
               created=summary.created)
    return row


@attrs.define
class Parsed:
    """A file read and parsed outside the database thread."""

    loc: Loc
    size: int
    mtime_ns: int
    facts: Facts


@attrs.define
class Changes:
    """What one database-thread call changed: events to publish, files left to parse."""

    events: list[tuple[str, Any]] = attrs.Factory(list)
    to_parse: list[Loc] = attrs.Factory(list)
    deleted: list[str] = attrs.Factory(list)

    def flush(self) -> None:
        """Turn the collected deletions into one C{delete} event."""
        if self.deleted:
            self.events.append(("delete", self.deleted))
            self.deleted = []


@attrs.frozen
class Page:
    """One page of a list or search, with the counts the API shows beside it."""

    total: int
    unread: int
    matches: int
    matches_unread: int
    messages: list[Summary]


@attrs.frozen
class Stats:
    """For C{/api/v1/info}."""

    path: str
    size: int
    total: int
    unread: int
    deleted: int
    pruned: int
