"""
caniemail.com's support data, as shipped in C{data/caniemail.json}.

C{tools/refresh-caniemail} writes that file from the C{caniemail} npm package, trimmed to
the features L{mailsink.checks.html_features} tests; the daemon only reads it, once, when
the first HTML check runs. Each client's support is C{y}, C{n}, C{a} (partial), C{u}
(unknown), optionally followed by note numbers (C{a #1 #2}). As in Mailpit, only a bare
C{y} is supported and a bare C{n} unsupported: anything with a note is partial, its last
note the one a result names. Unlike Mailpit, an unknown result is left out rather than
counted as partial: no test is not a caveat.
"""

from __future__ import annotations

import functools
import json
import re
from importlib import resources
from typing import Any

import attrs

_NOTE = re.compile(r"#(\d+)\s*$")
_SUPPORT = {"y": "yes", "n": "no"}


@attrs.frozen
class Result:
    """One client version's support for a feature."""

    family: str
    """caniemail's key, e.g. C{outlook}."""
    platform: str
    version: str
    support: str
    """C{yes}, C{no} or C{partial}."""
    note: str
    """The number of the note that explains it, or C{""}."""
    name: str
    """Family, platform and version for people: C{Outlook Windows (2019)}."""

    def to_json(self) -> dict[str, str]:
        return {"Name": self.name, "Platform": self.platform, "Family": self.family,
                "Version": self.version, "Support": self.support, "NoteNumber": self.note}


@attrs.frozen
class Feature:
    """One caniemail.com feature and how clients support it."""

    slug: str
    title: str
    description: str
    """HTML (the refresh script turned caniemail's Markdown into it)."""
    url: str
    category: str
    tags: tuple[str, ...]
    keywords: str
    results: tuple[Result, ...]
    notes: dict[str, str]
    """Note number -> HTML."""

    def share(self, support: str) -> float:
        """The percentage of results with this support (0 when none is known)."""
        if not self.results:
            return 0.0
        return 100 * sum(result.support == support for result in self.results) \
            / len(self.results)


@attrs.frozen
class Data:
    features: dict[str, Feature]
    platforms: dict[str, list[str]]
    """Each platform and the client families tested on it, over all caniemail features."""


@functools.cache
def load() -> Data:
    """The shipped data (read once; the file is part of the package)."""
    text = resources.files("mailsink.checks").joinpath("data/caniemail.json").read_text(
        "utf-8")
    return parse(json.loads(text))


def parse(source: dict[str, Any]) -> Data:
    families = source["nicenames"]["family"]
    platforms = source["nicenames"]["platform"]
    features = {}
    for entry in source["data"]:
        results = []
        for family, stats in entry["stats"].items():
            for platform, versions in stats.items():
                for version, value in versions.items():
                    support, note = _support(value)
                    if support:
                        name = f"{families.get(family, family)} " \
                               f"{platforms.get(platform, platform)} ({version})"
                        results.append(Result(family, platform, version, support, note,
                                              name))
        features[entry["slug"]] = Feature(
            slug=entry["slug"], title=entry["title"], description=entry["description"],
            url=entry["url"], category=entry["category"], tags=tuple(entry["tags"]),
            keywords=entry["keywords"], results=tuple(results),
            notes=dict(entry["notes_by_num"]))
    return Data(features, source["platforms"])


def _support(value: str) -> tuple[str, str]:
    """(C{yes}/C{no}/C{partial} or C{""} for unknown, note number) of a stats value."""
    value = value.strip()
    if value in _SUPPORT:
        return _SUPPORT[value], ""
    if value.startswith("u"):
        return "", ""
    note = _NOTE.search(value)
    return "partial", note[1] if note else ""
