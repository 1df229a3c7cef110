"""
Lint: is this message one that real servers accept unchanged and clients show as meant?

Pure (no network, no reactor, no file) and never raising: L{lint} reads a stored message or
a C{.eml} file (see L{mailsink.checks.source}) and runs every rule of the C{lint_*}
modules. A rule is a function of the L{Source} that yields findings; one that fails on some
input is logged and skipped, so the others still report. Each rule reports at most
L{MAX_PER_RULE} findings.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable

from twisted.logger import Logger

from mailsink.checks import (
    lint_bulk,
    lint_envelope,
    lint_headers,
    lint_html,
    lint_lines,
    lint_mime,
)
from mailsink.checks.findings import Finding, Report
from mailsink.checks.source import Source, read_source

log = Logger()

Rule = Callable[[Source], Iterable[Finding]]

RULES: tuple[Rule, ...] = (*lint_headers.RULES, *lint_lines.RULES, *lint_mime.RULES,
                           *lint_html.RULES, *lint_bulk.RULES, *lint_envelope.RULES)
MAX_PER_RULE = 20


def lint(raw: bytes) -> Report:
    """The findings for a message's bytes (CRLF or LF line ends, trace headers or not)."""
    source = read_source(raw)
    findings: list[Finding] = []
    for rule in RULES:
        try:
            findings += itertools.islice(rule(source), MAX_PER_RULE)
        except Exception:
            log.failure("lint rule {rule} failed", rule=rule.__name__)
    return Report.of(findings)
