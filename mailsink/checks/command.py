"""
C{mailsink lint FILE|-}: the lint findings for a C{.eml} file (CRLF or LF line ends) or
standard input, one a line, for a terminal or a CI job; exit status 1 when one is an error.
"""

from __future__ import annotations

import sys
from typing import TextIO

from mailsink.checks.findings import Severity
from mailsink.checks.lint import lint


def run(path: str, out: TextIO) -> int:
    """Lint the file at C{path} (C{-}: standard input), print the findings, return the status.

    Raises L{OSError} when the file cannot be read.
    """
    if path == "-":
        raw = sys.stdin.buffer.read()
    else:
        with open(path, "rb") as stream:
            raw = stream.read()
    report = lint(raw)
    for finding in report.findings:
        print(finding.line(), file=out)
    errors, warnings = report.count(Severity.ERROR), report.count(Severity.WARNING)
    print(f"{_count(errors, 'error')}, {_count(warnings, 'warning')}", file=out)
    return 1 if errors else 0


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"
