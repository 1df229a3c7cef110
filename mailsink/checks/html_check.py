"""
The HTML check, Mailpit-compatible: which HTML and CSS features a message's HTML body uses,
and how well email clients support each, after caniemail.com.

Pure (no network, no reactor, the data file read once) and run in the worker threads. The
answer is Mailpit's C{HTMLCheckResponse}:

 - C{Warnings}: every feature the message uses (L{html_features}), with the message's
   count (C{Score.Found}), the percentages of client versions that support it, partly or
   not (C{Score.Supported}, C{Partial}, C{Unsupported}) and each client's result; plus
   C{html-script} (100% unsupported, no results) for C{<script>} that is not JSON data;
 - C{Total}: C{Nodes} (L{html_document}), C{Tests} (the features looked for), and the
   message's overall score: a warning weighs its count over the node count (at most 1);
   C{Partial} is the largest weighted partial share of any warning, C{Unsupported} the
   largest weighted unsupported share, C{Supported} what is left of 100 (not below 0);
 - C{Platforms}: every platform with the client families tested on it.

Warnings come worst first (weighted partial plus unsupported share), ties in the feature
table's order.
"""

from __future__ import annotations

from typing import Any

from mailsink.checks import caniemail
from mailsink.checks.html_document import read_document
from mailsink.checks.html_features import FEATURES, css_usage
from mailsink.message import mime

_SCRIPT = {
    "Slug": "html-script", "Title": "<script> element", "Category": "html",
    "Description": "No email client runs JavaScript: most remove the script, and some "
                   "filters treat mail that carries one as suspect.",
    "URL": "", "Tags": [], "Keywords": "", "Results": [], "NotesByNumber": {},
}


def html_check(raw: bytes) -> dict[str, Any] | None:
    """The check of a stored message's HTML body, or None when it has none (or it is
    empty), which Mailpit answers with 400 "message does not contain HTML"."""
    html = mime.view(raw).html
    return check_html(html) if html else None


def check_html(html: str) -> dict[str, Any]:
    """The C{HTMLCheckResponse} for an HTML text."""
    data = caniemail.load()
    document = read_document(html)
    usage = css_usage(document)
    nodes = document.nodes
    scored: list[tuple[int, float, float, dict[str, Any]]] = []
    for slug, count in FEATURES.items():
        found = count(document, usage)
        feature = data.features.get(slug)
        if found and feature is not None:
            partial, unsupported = feature.share("partial"), feature.share("no")
            scored.append((found, partial, unsupported,
                           _warning(feature, found, partial, unsupported)))
    if document.scripts:
        scored.append((document.scripts, 0.0, 100.0,
                       {**_SCRIPT, "Score": _score(document.scripts, 0.0, 0.0, 100.0)}))

    def weight(found: int) -> float:
        return min(1.0, found / nodes) if nodes else 1.0

    partial = max((share * weight(found) for found, share, _, _ in scored), default=0.0)
    unsupported = max((share * weight(found) for found, _, share, _ in scored), default=0.0)
    scored.sort(key=lambda item: -(item[1] + item[2]) * weight(item[0]))
    return {
        "Platforms": data.platforms,
        "Total": {"Nodes": nodes, "Tests": len(FEATURES) + 1,
                  "Supported": _rounded(max(0.0, 100 - partial - unsupported)),
                  "Partial": _rounded(partial), "Unsupported": _rounded(unsupported)},
        "Warnings": [warning for _, _, _, warning in scored],
    }


def _warning(feature: caniemail.Feature, found: int, partial: float,
             unsupported: float) -> dict[str, Any]:
    return {
        "Slug": feature.slug, "Title": feature.title, "Category": feature.category,
        "Description": feature.description, "URL": feature.url, "Tags": list(feature.tags),
        "Keywords": feature.keywords,
        "Results": [result.to_json() for result in feature.results],
        "NotesByNumber": feature.notes,
        "Score": _score(found, feature.share("yes"), partial, unsupported),
    }


def _score(found: int, supported: float, partial: float, unsupported: float) -> dict[str, Any]:
    return {"Found": found, "Supported": _rounded(supported), "Partial": _rounded(partial),
            "Unsupported": _rounded(unsupported)}


def _rounded(percentage: float) -> float:
    return round(percentage, 2)
