"""
What a check reports: findings, each one sentence saying what is wrong and what to change.

The JSON shape is the lint route's (C{GET /api/v1/message/{ID}/lint}); the command line
prints the same findings one a line.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from typing import Any

import attrs


class Severity(enum.StrEnum):
    """How bad a finding is, in the order reports list them."""

    ERROR = "error"
    """A real server is likely to refuse or alter the message."""
    WARNING = "warning"
    """Some clients or servers will show it wrongly."""
    INFO = "info"
    """Worth knowing; nothing breaks."""


_SHOWN = 60
"""Characters of a quoted value shown in a sentence."""
_ORDER = {Severity.ERROR: 0, Severity.WARNING: 1, Severity.INFO: 2}


@attrs.frozen
class Finding:
    """One problem found in a message."""

    code: str
    """Stable kebab-case name, e.g. C{missing-message-id}."""
    severity: Severity
    field: str
    """The header name, the MIME part number (C{1.2}), C{body} or C{message}."""
    message: str
    """One sentence: what is wrong, who objects, what to change."""
    reference: str
    """The RFC section or provider rule behind it."""

    def to_json(self) -> dict[str, str]:
        return {"Code": self.code, "Severity": str(self.severity), "Field": self.field,
                "Message": self.message, "Reference": self.reference}

    def line(self) -> str:
        """The finding as one line of the command line's output."""
        return f"{self.severity:<7}  {self.code}  [{self.field}]  {self.message} " \
               f"({self.reference})"


@attrs.frozen
class Report:
    """The findings of one check, errors first, then warnings, then the rest."""

    findings: tuple[Finding, ...]

    @classmethod
    def of(cls, findings: Iterable[Finding]) -> Report:
        return cls(tuple(sorted(findings, key=lambda finding: _ORDER[finding.severity])))

    def count(self, severity: Severity) -> int:
        return sum(finding.severity == severity for finding in self.findings)

    def to_json(self) -> dict[str, Any]:
        return {"Findings": [finding.to_json() for finding in self.findings],
                "Errors": self.count(Severity.ERROR),
                "Warnings": self.count(Severity.WARNING)}


def shown(text: str) -> str:
    """C{text} quoted for a sentence: cut to a readable length, control characters escaped."""
    return repr(text if len(text) <= _SHOWN else text[:_SHOWN] + "…")
