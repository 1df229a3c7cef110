"""
The spam check: a stored message sent to SpamAssassin's spamd over its SPAMC protocol, and
spamd's verdict as Mailpit's C{SpamAssassinResponse}.

mailsink's own small client (none of the PyPI ones runs on Twisted): one C{REPORT} command
per connection (SpamAssassin's C{spamd/PROTOCOL}), on the reactor, the whole exchange (DNS,
connection, sending, spamd's work, the answer) bounded by L{TIMEOUT}. Every failure becomes
an L{SpamResult} whose C{Error} is one sentence saying what to change, never a failure.

C{IsSpam} and C{Score} are spamd's own (its C{Spam:} header, so its C{required_score}
decides); the rules come from the report's table (C{pts rule name description}).
"""

from __future__ import annotations

import re
from typing import Any

import attrs
from twisted.internet import defer
from twisted.internet import error as net
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.endpoints import HostnameEndpoint, connectProtocol
from twisted.internet.interfaces import IReactorTime, IStreamClientEndpoint
from twisted.internet.protocol import Protocol, connectionDone
from twisted.python.failure import Failure

TIMEOUT = 10.0
"""Seconds from asking spamd to having its whole answer."""
MAX_ANSWER = 1 << 20
"""Bytes of answer read at most: a report is a few kilobytes."""
_FIRST_LINE = re.compile(rb"SPAMD/(\d+\.\d+) +(\d+) *(.*)")
_SPAM_HEADER = re.compile(r"(\w+)\s*;\s*(-?[\d.]+)\s*/\s*(-?[\d.]+)")
_RULE_LINE = re.compile(r"\s*(-?\d+(?:\.\d+)?)\s+(\w+)\s+(.*)")
_TABLE_RULE = re.compile(r"-+ +-+ +-+")
_WRAPPED_INDENT = 5
"""A table line indented this far continues the description above (scores are 4 wide)."""


@attrs.frozen
class SpamRule:
    """One rule that hit (Mailpit's C{Rule})."""

    name: str
    score: float
    description: str

    def to_json(self) -> dict[str, Any]:
        return {"Name": self.name, "Score": self.score, "Description": self.description}


@attrs.frozen
class SpamResult:
    """spamd's verdict, or why there is none (Mailpit's C{SpamAssassinResponse})."""

    is_spam: bool = False
    score: float = 0.0
    rules: tuple[SpamRule, ...] = ()
    error: str = ""
    """One sentence when spamd could not be asked or did not answer; "" otherwise."""

    def to_json(self) -> dict[str, Any]:
        return {"IsSpam": self.is_spam, "Score": self.score,
                "Rules": [rule.to_json() for rule in self.rules], "Error": self.error}


class SpamdError(Exception):
    """spamd answered, but not with a verdict: what it did, and what to look at."""

    def __init__(self, what: str, hint: str = "check that [spamassassin] host is spamd's "
                 "address") -> None:
        super().__init__(what)
        self.what = what
        self.hint = hint


def report_request(message: bytes) -> bytes:
    """The SPAMC C{REPORT} command for C{message}, as bytes for the wire."""
    return b"REPORT SPAMC/1.5\r\nContent-length: %d\r\n\r\n%s" % (len(message), message)


def parse_answer(answer: bytes) -> SpamResult:
    """spamd's whole answer to C{REPORT}; L{SpamdError} if it is no verdict."""
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    first = _FIRST_LINE.fullmatch(lines[0])
    if first is None:
        raise SpamdError(f"answered something that is not the SPAMD protocol: "
                         f"{_shown(lines[0])}")
    if first.group(2) != b"0":
        raise SpamdError(f"refused the check with error {int(first.group(2))} "
                         f"({_shown(first.group(3))})", "spamd's log says why")
    headers = dict(_header(line) for line in lines[1:] if b":" in line)
    verdict = _SPAM_HEADER.fullmatch(headers.get("spam", ""))
    if verdict is None:
        raise SpamdError("answered without the Spam: header of a verdict")
    is_spam = verdict.group(1).lower() in ("true", "yes")
    return SpamResult(is_spam=is_spam, score=_number(verdict.group(2)),
                      rules=report_rules(body.decode("utf-8", "replace")))


def report_rules(report: str) -> tuple[SpamRule, ...]:
    """The rules in a report's table; a description spamd wrapped is joined again."""
    rules: list[SpamRule] = []
    in_table = False
    for line in report.splitlines():
        if not in_table:
            in_table = bool(_TABLE_RULE.fullmatch(line.strip()))
            continue
        if not line.strip():
            break
        hit = _RULE_LINE.fullmatch(line)
        if hit and len(line) - len(line.lstrip()) < _WRAPPED_INDENT:
            rules.append(SpamRule(hit.group(2), _number(hit.group(1)), hit.group(3).strip()))
        elif rules:
            last = rules[-1]
            rules[-1] = attrs.evolve(last, description=f"{last.description} {line.strip()}")
    return tuple(rules)


def _header(line: bytes) -> tuple[str, str]:
    name, _, value = line.decode("latin-1").partition(":")
    return name.strip().lower(), value.strip()


def _number(text: str) -> float:
    return float(text) + 0.0  # spamd's "-0.0" (a tiny negative score) as 0.0


def _shown(text: bytes) -> str:
    return repr(text[:80].decode("latin-1"))


class SpamcProtocol(Protocol):
    """Sends one request, then collects the answer until spamd closes the connection."""

    def __init__(self, request: bytes) -> None:
        self._request = request
        self._answer: list[bytes] = []
        self._size = 0
        self.answer: Deferred[bytes] = Deferred(lambda _: self._abort())
        """The whole answer, once spamd has closed the connection."""

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.transport.write(self._request)
        self._request = b""

    def dataReceived(self, data: bytes) -> None:
        self._size += len(data)
        if self._size > MAX_ANSWER:
            self._fail(SpamdError(f"answered more than {MAX_ANSWER} bytes"))
            return
        self._answer.append(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if not self.answer.called:
            self.answer.callback(b"".join(self._answer))

    def _fail(self, error: Exception) -> None:
        if not self.answer.called:
            self.answer.errback(error)
        self._abort()

    def _abort(self) -> None:
        if self.transport is not None:
            self.transport.abortConnection()  # type: ignore[attr-defined]


class Spamd:
    """One spamd, reached through C{endpoint}; C{address} names it in sentences."""

    def __init__(self, endpoint: IStreamClientEndpoint, clock: IReactorTime,
                 address: str) -> None:
        self._endpoint = endpoint
        self._clock = clock
        self.address = address

    @classmethod
    def at(cls, reactor: Any, host: str, port: int) -> Spamd:
        """The spamd at C{host}:C{port} (C{[spamassassin] host})."""
        address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        return cls(HostnameEndpoint(reactor, host, port), reactor, address)

    def check(self, message: bytes) -> Deferred[SpamResult]:
        """spamd's verdict on C{message}, within the timeout; never fails."""
        asked = self._ask(message)
        asked.addTimeout(TIMEOUT, self._clock, onTimeoutCancel=_timed_out)
        asked.addErrback(lambda failure: SpamResult(error=self.sentence(failure)))
        return asked

    @inlineCallbacks
    def _ask(self, message: bytes) -> Any:
        protocol = yield connectProtocol(self._endpoint,
                                         SpamcProtocol(report_request(message)))
        answer = yield protocol.answer
        if not answer:
            raise SpamdError("closed the connection without an answer",
                             "spamd's log may say why")
        return parse_answer(answer)

    def sentence(self, failure: Failure) -> str:
        """Why spamd gave no verdict, and what to change, in one sentence."""
        where = f"spamd at {self.address}"
        error = failure.value
        if isinstance(error, SpamdError):
            return f"{where} {error.what}; {error.hint}"
        if isinstance(error, defer.TimeoutError):
            return (f"{where} did not answer within {TIMEOUT:g} s; it may be overloaded "
                    "or still starting, or the port is not spamd's")
        if isinstance(error, net.DNSLookupError):
            return f"cannot find the host of {self.address}: check [spamassassin] host"
        if isinstance(error, net.ConnectionRefusedError):
            return (f"{where} refused the connection: start spamd, or set [spamassassin] host "
                    "to where it listens")
        if isinstance(error, net.ConnectError):
            return f"cannot connect to {where}: {error}"
        return f"asking {where} failed: {failure.getErrorMessage()}"


def _timed_out(result: object, timeout: float) -> Failure:
    """Cancelled at the deadline, whatever step it was at."""
    return Failure(defer.TimeoutError())
